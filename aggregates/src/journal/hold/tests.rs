//! Given/when/then: a hold is placed once and resolves at most once, each
//! late action refused with its own error.

use super::*;
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type Given = TestFramework<Hold>;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn entry(n: u128) -> EntryId {
    EntryId::from_uuid(uuid::Uuid::from_u128(n))
}

fn transfer(amount: i64) -> PendingTransfer {
    PendingTransfer {
        debit: AccountCode::parse("receivable:acme").unwrap(),
        credit: AccountCode::parse("revenue").unwrap(),
        asset: Asset::new("USD", 2).unwrap(),
        amount: cents(amount),
    }
}

/// A hold of 100 placed at 1:00, expiring at 10:00.
fn placed() -> HoldEvent {
    HoldEvent::HoldPlaced {
        transfer: transfer(100),
        expires_at: Some(at(10)),
        at: at(1),
    }
}

fn post(amount: Option<i64>, hour: u32) -> HoldCommand {
    HoldCommand::Post {
        amount: amount.map(cents),
        entry_id: entry(9),
        at: at(hour),
    }
}

fn posted(amount: i64, released: i64, hour: u32) -> HoldEvent {
    HoldEvent::HoldPosted {
        entry_id: entry(9),
        amount: cents(amount),
        released: cents(released),
        at: at(hour),
    }
}

#[test]
fn a_hold_is_placed_once() {
    Given::with(())
        .given_no_previous_events()
        .when(HoldCommand::Place {
            transfer: transfer(100),
            expires_at: Some(at(10)),
            at: at(1),
        })
        .then_expect_events(vec![placed()]);
    Given::with(())
        .given(vec![placed()])
        .when(HoldCommand::Place {
            transfer: transfer(100),
            expires_at: None,
            at: at(2),
        })
        .then_expect_error(HoldError::Exists);
}

#[test]
fn a_malformed_hold_is_refused() {
    let mut same_account = transfer(100);
    same_account.credit = same_account.debit.clone();
    for (transfer, expires_at, error) in [
        (transfer(0), None, HoldError::Malformed),
        (same_account, None, HoldError::Malformed),
        (transfer(5), Some(at(1)), HoldError::ExpiryNotAfterPlacement),
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(HoldCommand::Place {
                transfer,
                expires_at,
                at: at(1),
            })
            .then_expect_error(error);
    }
}

#[test]
fn posting_the_whole_hold_releases_nothing() {
    Given::with(())
        .given(vec![placed()])
        .when(post(None, 2))
        .then_expect_events(vec![posted(100, 0, 2)]);
}

#[test]
fn posting_part_of_a_hold_releases_the_rest() {
    Given::with(())
        .given(vec![placed()])
        .when(post(Some(30), 2))
        .then_expect_events(vec![posted(30, 70, 2)]);
}

#[test]
fn a_post_is_positive_and_at_most_the_hold() {
    Given::with(())
        .given(vec![placed()])
        .when(post(Some(101), 2))
        .then_expect_error(HoldError::PostExceedsHold {
            held: cents(100),
            asked: cents(101),
        });
    Given::with(())
        .given(vec![placed()])
        .when(post(Some(0), 2))
        .then_expect_error(HoldError::NothingToPost);
}

#[test]
fn a_void_releases_the_whole_hold() {
    Given::with(())
        .given(vec![placed()])
        .when(HoldCommand::Void { at: at(3) })
        .then_expect_events(vec![HoldEvent::HoldVoided {
            released: cents(100),
            at: at(3),
        }]);
}

#[test]
fn a_hold_expires_at_its_expiry_time_and_not_before() {
    Given::with(())
        .given(vec![placed()])
        .when(HoldCommand::Expire { at: at(9) })
        .then_expect_error(HoldError::NotYetExpired { expires_at: at(10) });
    Given::with(())
        .given(vec![placed()])
        .when(HoldCommand::Expire { at: at(10) })
        .then_expect_events(vec![HoldEvent::HoldExpired {
            released: cents(100),
            at: at(10),
        }]);
    Given::with(())
        .given(vec![HoldEvent::HoldPlaced {
            transfer: transfer(100),
            expires_at: None,
            at: at(1),
        }])
        .when(HoldCommand::Expire { at: at(23) })
        .then_expect_error(HoldError::NeverExpires);
}

#[test]
fn every_late_action_on_a_posted_hold_is_hold_already_posted() {
    let history = || vec![placed(), posted(30, 70, 2)];
    let already = HoldError::AlreadyPosted { amount: cents(30) };
    Given::with(())
        .given(history())
        .when(post(None, 3))
        .then_expect_error(already.clone());
    Given::with(())
        .given(history())
        .when(HoldCommand::Void { at: at(3) })
        .then_expect_error(already.clone());
    for hour in [3, 11] {
        // Before its expiry time and after it alike.
        Given::with(())
            .given(history())
            .when(HoldCommand::Expire { at: at(hour) })
            .then_expect_error(already.clone());
    }
    assert_eq!(already.code(), "hold_already_posted");
}

#[test]
fn every_late_action_on_a_voided_hold_is_hold_already_voided() {
    let history = || {
        vec![
            placed(),
            HoldEvent::HoldVoided {
                released: cents(100),
                at: at(2),
            },
        ]
    };
    for command in [
        post(None, 3),
        HoldCommand::Void { at: at(3) },
        HoldCommand::Expire { at: at(11) },
    ] {
        Given::with(())
            .given(history())
            .when(command)
            .then_expect_error(HoldError::AlreadyVoided);
    }
    assert_eq!(HoldError::AlreadyVoided.code(), "hold_already_voided");
}

#[test]
fn a_hold_past_its_expiry_is_hold_expired_whether_or_not_it_was_expired() {
    // Not expired by a request yet: a post or void at or after the expiry
    // time is refused all the same, decided from the request's time.
    for command in [post(None, 10), HoldCommand::Void { at: at(12) }] {
        Given::with(())
            .given(vec![placed()])
            .when(command)
            .then_expect_error(HoldError::Expired { expires_at: at(10) });
    }
    let expired = || {
        vec![
            placed(),
            HoldEvent::HoldExpired {
                released: cents(100),
                at: at(10),
            },
        ]
    };
    for command in [
        post(None, 11),
        HoldCommand::Void { at: at(11) },
        HoldCommand::Expire { at: at(11) },
    ] {
        Given::with(())
            .given(expired())
            .when(command)
            .then_expect_error(HoldError::Expired { expires_at: at(10) });
    }
    assert_eq!(
        HoldError::Expired { expires_at: at(10) }.code(),
        "hold_expired"
    );
}

#[test]
fn nothing_resolves_a_hold_that_was_never_placed() {
    for command in [
        post(None, 1),
        HoldCommand::Void { at: at(1) },
        HoldCommand::Expire { at: at(1) },
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(HoldError::Unknown);
    }
}
