//! Creating a commitment, funding it in parts (never beyond its total),
//! cancel and expiry.

use super::*;

#[test]
fn a_commitment_is_created_once_with_milestones_that_make_its_total() {
    Given::with(())
        .given_no_previous_events()
        .when(CommitmentCommand::Create {
            terms: terms(Allocation::Fifo),
            rules: Rules::CURRENT,
            at: at(1),
        })
        .then_expect_events(vec![created(Allocation::Fifo)]);
    // Under the first rules its expiry refunded what an ended window owed.
    Given::with(())
        .given_no_previous_events()
        .when(CommitmentCommand::Create {
            terms: terms(Allocation::Fifo),
            rules: Rules::FIRST,
            at: at(1),
        })
        .then_expect_events(vec![CommitmentEvent::CommitmentCreated {
            terms: terms(Allocation::Fifo),
            expiry_times_out: false,
            at: at(1),
        }]);
    Given::with(())
        .given(vec![created(Allocation::Fifo)])
        .when(CommitmentCommand::Create {
            terms: terms(Allocation::Fifo),
            rules: Rules::CURRENT,
            at: at(1),
        })
        .then_expect_error(EscrowError::Exists);
    let mut twice = terms(Allocation::Fifo);
    twice.milestones[1].milestone_id = "m1".into();
    let mut empty = terms(Allocation::Fifo);
    empty.milestones.clear();
    let mut zero = terms(Allocation::Fifo);
    zero.milestones[0].amount = Amount::ZERO;
    let mut long = terms(Allocation::Fifo);
    long.milestones[0].inspection_seconds = INSPECTION_SECONDS_MAX + 1;
    let mut late = terms(Allocation::Fifo);
    late.expires_at = Some(at(20));
    late.milestones[0].due_at = Some(at(21));
    for (terms, why) in [
        (twice, "milestone ids are unique"),
        (empty, "a commitment has 1 to 50 milestones"),
        (zero, "a milestone is for a positive amount"),
        (long, "an inspection window is 0 seconds to 90 days"),
        (
            late,
            "a milestone is due on or before the commitment expires",
        ),
    ] {
        Given::with(())
            .given_no_previous_events()
            .when(CommitmentCommand::Create {
                terms,
                rules: Rules::CURRENT,
                at: at(1),
            })
            .then_expect_error(EscrowError::InvalidTerms(why.into()));
    }
    assert_eq!(
        state(vec![created(Allocation::Fifo)]).status(),
        Some(CommitmentStatus::AwaitingFunding)
    );
    assert_eq!(Commitment::default().status(), None);
}

#[test]
fn deposits_fund_it_in_parts_up_to_its_total_and_never_beyond() {
    Given::with(())
        .given(vec![created(Allocation::Fifo), deposited(1, 20_000)])
        .when(deposit(2, 15_000))
        .then_expect_events(vec![deposited(2, 15_000)]);
    Given::with(())
        .given(vec![created(Allocation::Fifo), deposited(1, 20_000)])
        .when(deposit(2, 30_001))
        .then_expect_error(EscrowError::Overfunded {
            total: cents(50_000),
            funded: cents(50_001),
        });
    Given::with(())
        .given(vec![created(Allocation::Fifo), deposited(1, 20_000)])
        .when(deposit(1, 100))
        .then_expect_error(EscrowError::IdTaken);
    Given::with(())
        .given(vec![created(Allocation::Fifo)])
        .when(deposit(1, 0))
        .then_expect_error(EscrowError::NonPositive);
    Given::with(())
        .given_no_previous_events()
        .when(deposit(1, 100))
        .then_expect_error(EscrowError::Unknown);
    let partly = state(vec![created(Allocation::Fifo), deposited(1, 20_000)]);
    assert_eq!(partly.status(), Some(CommitmentStatus::AwaitingFunding));
    assert_eq!(
        (partly.held(), partly.unfrozen()),
        (Ok(cents(20_000)), Ok(cents(20_000)))
    );
    assert_eq!(state(funded()).status(), Some(CommitmentStatus::Funded));
}

#[test]
fn a_cancel_refunds_every_unfrozen_held_amount_with_lineage_and_ends_it() {
    let mut events = funded();
    events.push(CommitmentEvent::ClaimOpened {
        claim_id: claim_id(1),
        milestone_id: "m1".into(),
        amount: cents(5_000),
        reason: None,
        rejection: false,
        hold_id: hold_id(1),
        at: at(3),
    });
    // 50000 held, 5000 frozen: 45000 back to the payer, oldest first.
    Given::with(())
        .given(events.clone())
        .when(CommitmentCommand::Cancel {
            transfer_id: transfer_id(1),
            rules: Rules::FOURTH,
            at: at(4),
        })
        .then_expect_events(vec![
            CommitmentEvent::CommitmentCanceled { at: at(4) },
            transferred(
                1,
                Direction::Refund,
                None,
                45_000,
                vec![draw(1, 20_000), draw(2, 15_000), draw(3, 10_000)],
                Cause::Canceled,
                4,
            ),
        ]);
    events.push(CommitmentEvent::CommitmentCanceled { at: at(4) });
    let canceled = state(events.clone());
    assert_eq!(canceled.status(), Some(CommitmentStatus::Canceled));
    for command in [
        deposit(9, 1),
        CommitmentCommand::Submit {
            milestone_id: "m1".into(),
            rules: crate::rules::Rules::CURRENT,
            at: at(5),
        },
        CommitmentCommand::Cancel {
            transfer_id: transfer_id(2),
            rules: Rules::FOURTH,
            at: at(5),
        },
    ] {
        Given::with(())
            .given(events.clone())
            .when(command)
            .then_expect_error(EscrowError::Canceled);
    }
}

#[test]
fn it_expires_at_its_expiry_refunding_what_is_unfrozen_and_not_before() {
    Given::with(())
        .given(funded())
        .when(CommitmentCommand::Expire {
            transfer_id: transfer_id(1),
            timeouts: Vec::new(),
            at: at(19),
        })
        .then_expect_error(EscrowError::NotExpired { expires_at: at(20) });
    Given::with(())
        .given(funded())
        .when(CommitmentCommand::Expire {
            transfer_id: transfer_id(1),
            timeouts: Vec::new(),
            at: at(20),
        })
        .then_expect_events(vec![
            CommitmentEvent::CommitmentExpired { at: at(20) },
            transferred(
                1,
                Direction::Refund,
                None,
                50_000,
                vec![draw(1, 20_000), draw(2, 15_000), draw(3, 15_000)],
                Cause::Expired,
                20,
            ),
        ]);
    let mut events = funded();
    events.push(CommitmentEvent::CommitmentExpired { at: at(20) });
    Given::with(())
        .given(events)
        .when(deposit(9, 1))
        .then_expect_error(EscrowError::Expired);
}
