//! Given/when/then: opening, posting and reserving under both flags, and
//! settling holds.

use super::*;
use cqrs_es::test::TestFramework;

type Given = TestFramework<LedgerAccount>;

fn usd() -> Asset {
    Asset::new("USD", 2).unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn code() -> AccountCode {
    AccountCode::parse("held").unwrap()
}

fn entry(n: u128) -> EntryId {
    EntryId::from_uuid(uuid::Uuid::from_u128(n))
}

fn hold(n: u128) -> HoldId {
    HoldId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A liability that may not go below zero (an escrow's held balance).
fn no_overdraft() -> AccountSpec {
    AccountSpec::new(AccountType::Liability).debits_must_not_exceed_credits()
}

/// An asset whose credits may not pass its debits (a receivable).
fn no_overcredit() -> AccountSpec {
    AccountSpec::new(AccountType::Asset).credits_must_not_exceed_debits()
}

fn opened(spec: AccountSpec) -> AccountEvent {
    AccountEvent::AccountOpened { spec }
}

fn debit(value: i64) -> Movement {
    Movement::on(Side::Debit, cents(value))
}

fn credit(value: i64) -> Movement {
    Movement::on(Side::Credit, cents(value))
}

fn posted(n: u128, movement: Movement) -> AccountEvent {
    AccountEvent::Posted {
        entry_id: entry(n),
        asset: usd(),
        movement,
    }
}

fn post(n: u128, movement: Movement) -> AccountCommand {
    AccountCommand::Post {
        entry_id: entry(n),
        asset: usd(),
        movement,
    }
}

fn reserved(n: u128, movement: Movement) -> AccountEvent {
    AccountEvent::Reserved {
        hold_id: hold(n),
        asset: usd(),
        movement,
    }
}

fn reserve(n: u128, movement: Movement) -> AccountCommand {
    AccountCommand::Reserve {
        hold_id: hold(n),
        asset: usd(),
        movement,
    }
}

#[test]
fn an_account_opens_once_and_opening_it_again_as_the_same_is_nothing() {
    Given::with(())
        .given_no_previous_events()
        .when(AccountCommand::Open {
            code: code(),
            spec: no_overdraft(),
        })
        .then_expect_events(vec![opened(no_overdraft())]);
    Given::with(())
        .given(vec![opened(no_overdraft())])
        .when(AccountCommand::Open {
            code: code(),
            spec: no_overdraft(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn an_account_is_never_reopened_with_another_type_or_flags() {
    let unflagged = AccountSpec::new(AccountType::Liability);
    Given::with(())
        .given(vec![opened(no_overdraft())])
        .when(AccountCommand::Open {
            code: code(),
            spec: unflagged,
        })
        .then_expect_error(AccountError::OpenedOtherwise {
            opened: no_overdraft(),
            asked: unflagged,
        });
}

#[test]
fn nothing_posts_to_an_account_that_is_not_opened() {
    Given::with(())
        .given_no_previous_events()
        .when(post(1, credit(100)))
        .then_expect_error(AccountError::NotOpened);
}

#[test]
fn a_posting_of_nothing_is_refused() {
    Given::with(())
        .given(vec![opened(no_overdraft())])
        .when(post(1, Movement::default()))
        .then_expect_error(AccountError::NothingToPost);
}

#[test]
fn debits_up_to_the_credits_post_and_one_unit_more_is_refused() {
    Given::with(())
        .given(vec![opened(no_overdraft()), posted(1, credit(100))])
        .when(post(2, debit(100)))
        .then_expect_events(vec![posted(2, debit(100))]);
    Given::with(())
        .given(vec![opened(no_overdraft()), posted(1, credit(100))])
        .when(post(2, debit(101)))
        .then_expect_error(AccountError::DebitsExceedCredits {
            asset: "USD/2".into(),
            available: 100,
        });
}

#[test]
fn credits_may_not_pass_the_debits_of_an_account_that_forbids_it() {
    Given::with(())
        .given(vec![opened(no_overcredit()), posted(1, debit(50))])
        .when(post(2, credit(50)))
        .then_expect_events(vec![posted(2, credit(50))]);
    Given::with(())
        .given(vec![opened(no_overcredit()), posted(1, debit(50))])
        .when(post(2, credit(51)))
        .then_expect_error(AccountError::CreditsExceedDebits {
            asset: "USD/2".into(),
            available: 50,
        });
}

#[test]
fn an_unflagged_account_may_go_either_way() {
    let plain = AccountSpec::new(AccountType::Revenue);
    Given::with(())
        .given(vec![opened(plain)])
        .when(post(1, debit(500)))
        .then_expect_events(vec![posted(1, debit(500))]);
}

#[test]
fn pending_debits_count_against_the_flag_at_once() {
    // 100 credited; 60 reserved by one hold: a second hold of 41 would let
    // the debits pass the credits if both were posted, so it is refused.
    Given::with(())
        .given(vec![
            opened(no_overdraft()),
            posted(1, credit(100)),
            reserved(7, debit(60)),
        ])
        .when(reserve(8, debit(41)))
        .then_expect_error(AccountError::DebitsExceedCredits {
            asset: "USD/2".into(),
            available: 40,
        });
    Given::with(())
        .given(vec![
            opened(no_overdraft()),
            posted(1, credit(100)),
            reserved(7, debit(60)),
        ])
        .when(post(2, debit(41)))
        .then_expect_error(AccountError::DebitsExceedCredits {
            asset: "USD/2".into(),
            available: 40,
        });
}

#[test]
fn pending_credits_never_count_for_a_debit() {
    // A credit that is only reserved cannot be spent yet.
    Given::with(())
        .given(vec![opened(no_overdraft()), reserved(7, credit(100))])
        .when(post(1, debit(1)))
        .then_expect_error(AccountError::DebitsExceedCredits {
            asset: "USD/2".into(),
            available: 0,
        });
}

#[test]
fn a_hold_reserves_once_per_account() {
    Given::with(())
        .given(vec![
            opened(no_overdraft()),
            posted(1, credit(100)),
            reserved(7, debit(10)),
        ])
        .when(reserve(7, debit(10)))
        .then_expect_error(AccountError::HoldExists(hold(7)));
}

#[test]
fn settling_posts_part_of_a_hold_and_releases_the_rest() {
    Given::with(())
        .given(vec![
            opened(no_overdraft()),
            posted(1, credit(100)),
            reserved(7, debit(60)),
        ])
        .when(AccountCommand::Settle {
            hold_id: hold(7),
            posted: debit(25),
        })
        .then_expect_events(vec![AccountEvent::HoldSettled {
            hold_id: hold(7),
            posted: debit(25),
            released: debit(35),
        }]);
}

#[test]
fn a_settled_hold_frees_what_it_released() {
    let mut account = LedgerAccount::default();
    for event in [
        opened(no_overdraft()),
        posted(1, credit(100)),
        reserved(7, debit(60)),
        AccountEvent::HoldSettled {
            hold_id: hold(7),
            posted: debit(25),
            released: debit(35),
        },
    ] {
        account.apply(event);
    }
    assert_eq!(
        account.balance(&usd()),
        AccountBalance {
            debits_posted: cents(25).into(),
            credits_posted: cents(100).into(),
            debits_pending: Total::ZERO,
            credits_pending: Total::ZERO,
        }
    );
    assert_eq!(
        account.balance(&usd()).available(AccountType::Liability),
        75
    );
    assert!(account.holds.is_empty());
    assert_eq!(
        account.decide(post(2, debit(75))),
        Ok(vec![posted(2, debit(75))])
    );
}

#[test]
fn a_hold_settles_for_at_most_what_it_reserved_and_only_once() {
    let given = || {
        vec![
            opened(no_overdraft()),
            posted(1, credit(100)),
            reserved(7, debit(60)),
        ]
    };
    Given::with(())
        .given(given())
        .when(AccountCommand::Settle {
            hold_id: hold(7),
            posted: debit(61),
        })
        .then_expect_error(AccountError::PostExceedsHold { hold_id: hold(7) });
    let mut settled = given();
    settled.push(AccountEvent::HoldSettled {
        hold_id: hold(7),
        posted: debit(60),
        released: Movement::default(),
    });
    Given::with(())
        .given(settled)
        .when(AccountCommand::Settle {
            hold_id: hold(7),
            posted: debit(1),
        })
        .then_expect_error(AccountError::UnknownHold(hold(7)));
}

#[test]
fn balances_are_kept_per_asset() {
    let eur = Asset::new("EUR", 2).unwrap();
    let mut account = LedgerAccount::default();
    account.apply(opened(no_overdraft()));
    account.apply(posted(1, credit(100)));
    assert_eq!(
        account.decide(AccountCommand::Post {
            entry_id: entry(2),
            asset: eur,
            movement: debit(1),
        }),
        Err(AccountError::DebitsExceedCredits {
            asset: "EUR/2".into(),
            available: 0,
        })
    );
}

#[test]
fn account_codes_are_plain_text_of_bounded_length() {
    assert!(AccountCode::parse("escrow_held:0190abcd").is_ok());
    assert!(AccountCode::parse("quota_issued:credits@user-42").is_ok());
    assert!(AccountCode::parse("").is_err());
    assert!(AccountCode::parse("has space").is_err());
    assert!(AccountCode::parse(&"a".repeat(201)).is_err());
    assert_eq!(
        serde_json::from_str::<AccountCode>("\"a b\"")
            .unwrap_err()
            .to_string(),
        "invalid account code \"a b\": 1-200 characters of A-Z, a-z, 0-9, _, ., :, @, / and -"
    );
}

#[test]
fn the_quota_domains_account_codes_cannot_be_opened() {
    for reserved in [
        "grant:0190",
        "quota_consumed:credits",
        "seats_allocated@user-1",
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(AccountCommand::Open {
                code: AccountCode::parse(reserved).unwrap(),
                spec: no_overdraft(),
            })
            .then_expect_error(AccountError::ReservedCode(reserved.into()));
    }
}

#[test]
fn an_account_takes_postings_past_i64_max_in_all() {
    // An ETH/18 account: 9.22 ETH in wei is i64::MAX; three postings of 4
    // ETH each pass it in all, and the balance keeps every wei.
    let eth = Asset::new("ETH", 18).unwrap();
    let four = Amount::new(4_000_000_000_000_000_000).unwrap();
    let mut account = LedgerAccount::default();
    account.apply(opened(no_overdraft()));
    for n in 1..=3 {
        let events = account
            .decide(AccountCommand::Post {
                entry_id: entry(n),
                asset: eth.clone(),
                movement: Movement::on(Side::Credit, four),
            })
            .unwrap();
        for event in events {
            account.apply(event);
        }
    }
    let balance = account.balance(&eth);
    assert_eq!(balance.credits_posted.value(), 12_000_000_000_000_000_000);
    assert_eq!(
        balance.available(AccountType::Liability),
        12_000_000_000_000_000_000
    );
    // Its state reads back from JSON as it was.
    let text = serde_json::to_string(&account).unwrap();
    assert!(text.contains("\"12000000000000000000\""), "{text}");
    assert_eq!(
        serde_json::from_str::<LedgerAccount>(&text).unwrap(),
        account
    );
}
