//! What answers an inspection window since the eighth rules: a window
//! closes when nothing of its milestone is left open, an answer needs a
//! window; and funding and submissions refused with the codes that say why.

use super::releases::submitted_at;
use super::*;

fn release_under(rules: Rules, amount: i64, accepted: bool) -> CommitmentCommand {
    CommitmentCommand::Release {
        transfer_id: transfer_id(1),
        milestone_id: "m1".into(),
        amount: Some(cents(amount)),
        accepted,
        rules,
        at: at(5),
    }
}

fn reject_under(rules: Rules, amount: i64) -> CommitmentCommand {
    CommitmentCommand::Claim {
        claim_id: claim_id(1),
        milestone_id: "m1".into(),
        amount: cents(amount),
        reason: None,
        rejection: true,
        hold_id: hold_id(1),
        rules,
        at: at(5),
    }
}

fn cancel_under(rules: Rules) -> CommitmentCommand {
    CommitmentCommand::Cancel {
        transfer_id: transfer_id(2),
        rules,
        at: at(6),
    }
}

fn closed(hour: u32) -> CommitmentEvent {
    CommitmentEvent::InspectionClosed {
        milestone_id: "m1".into(),
        window: 1,
        at: at(hour),
    }
}

/// Funded 50,000, m1 (30,000, released on timeout) submitted at 03:00,
/// its window ending at 09:00.
fn in_inspection() -> Vec<CommitmentEvent> {
    let mut events = funded();
    events.push(submitted_at("m1", 3, 9));
    events
}

fn accepted(amount: i64, lineage: Vec<Draw>) -> CommitmentEvent {
    transferred(
        1,
        Direction::Release,
        Some("m1"),
        amount,
        lineage,
        Cause::Accepted,
        5,
    )
}

#[test]
fn a_partial_acceptance_leaves_the_rest_to_the_window_which_a_cancel_cannot_refund() {
    // Accepting 1 of m1's 30,000 closed the window under the seventh rules
    // (a cancel then refunded the 29,999 from under the payee); since the
    // eighth it leaves the window open: a cancel is refused until its
    // timeout, which releases the rest.
    Given::with(())
        .given(in_inspection())
        .when(release_under(Rules::SEVENTH, 1, true))
        .then_expect_events(vec![closed(5), accepted(1, vec![draw(1, 1)])]);
    Given::with(())
        .given(in_inspection())
        .when(release_under(Rules::CURRENT, 1, true))
        .then_expect_events(vec![accepted(1, vec![draw(1, 1)])]);
    let mut events = in_inspection();
    events.push(accepted(1, vec![draw(1, 1)]));
    Given::with(())
        .given(events.clone())
        .when(cancel_under(Rules::CURRENT))
        .then_expect_error(EscrowError::InspectionWindowOpen { ends_at: at(9) });
    Given::with(())
        .given(events)
        .when(CommitmentCommand::TimeOut {
            milestone_id: "m1".into(),
            window: 1,
            transfer_id: transfer_id(3),
            rules: Rules::CURRENT,
            at: at(9),
        })
        .then_expect_events(vec![
            closed(9),
            transferred(
                3,
                Direction::Release,
                Some("m1"),
                29_999,
                vec![draw(1, 19_999), draw(2, 10_000)],
                Cause::TimedOut,
                9,
            ),
        ]);
}

#[test]
fn an_answer_of_everything_open_closes_the_window_and_a_partial_rejection_does_not() {
    Given::with(())
        .given(in_inspection())
        .when(release_under(Rules::CURRENT, 30_000, true))
        .then_expect_events(vec![
            closed(5),
            accepted(30_000, vec![draw(1, 20_000), draw(2, 10_000)]),
        ]);
    let opened = |amount: i64| CommitmentEvent::ClaimOpened {
        claim_id: claim_id(1),
        milestone_id: "m1".into(),
        amount: cents(amount),
        reason: None,
        rejection: true,
        hold_id: hold_id(1),
        at: at(5),
    };
    Given::with(())
        .given(in_inspection())
        .when(reject_under(Rules::SEVENTH, 100))
        .then_expect_events(vec![closed(5), opened(100)]);
    Given::with(())
        .given(in_inspection())
        .when(reject_under(Rules::CURRENT, 100))
        .then_expect_events(vec![opened(100)]);
    Given::with(())
        .given(in_inspection())
        .when(reject_under(Rules::CURRENT, 30_000))
        .then_expect_events(vec![closed(5), opened(30_000)]);
}

#[test]
fn a_release_by_hand_that_empties_the_milestone_closes_its_window() {
    // Under the seventh rules the window stayed open over nothing and held
    // a cancel of m2's 20,000 back until its timeout; since the eighth the
    // release closes it, and a window over nothing recorded before holds
    // no cancel back.
    let emptied = transferred(
        1,
        Direction::Release,
        Some("m1"),
        30_000,
        vec![draw(1, 20_000), draw(2, 10_000)],
        Cause::Released,
        5,
    );
    Given::with(())
        .given(in_inspection())
        .when(release_under(Rules::CURRENT, 30_000, false))
        .then_expect_events(vec![closed(5), emptied.clone()]);
    Given::with(())
        .given(in_inspection())
        .when(release_under(Rules::SEVENTH, 30_000, false))
        .then_expect_events(vec![emptied.clone()]);
    let mut over_nothing = in_inspection();
    over_nothing.push(emptied);
    Given::with(())
        .given(over_nothing.clone())
        .when(cancel_under(Rules::SEVENTH))
        .then_expect_error(EscrowError::InspectionWindowOpen { ends_at: at(9) });
    let refund = transferred(
        2,
        Direction::Refund,
        None,
        20_000,
        vec![draw(2, 5_000), draw(3, 15_000)],
        Cause::Canceled,
        6,
    );
    Given::with(())
        .given(over_nothing)
        .when(cancel_under(Rules::CURRENT))
        .then_expect_events(vec![
            CommitmentEvent::CommitmentCanceled { at: at(6) },
            closed(6),
            refund,
        ]);
}

#[test]
fn an_acceptance_or_rejection_with_no_window_is_refused_since_the_eighth_rules() {
    Given::with(())
        .given(funded())
        .when(release_under(Rules::CURRENT, 100, true))
        .then_expect_error(EscrowError::NoInspectionWindow);
    Given::with(())
        .given(funded())
        .when(reject_under(Rules::CURRENT, 100))
        .then_expect_error(EscrowError::NoInspectionWindow);
    // The seventh rules recorded an answer to a submission that never was.
    Given::with(())
        .given(funded())
        .when(release_under(Rules::SEVENTH, 100, true))
        .then_expect_events(vec![accepted(100, vec![draw(1, 100)])]);
}

#[test]
fn a_deposit_past_the_total_is_overfunded_however_large() {
    let once = vec![created(Allocation::Fifo), deposited(1, 100)];
    Given::with(())
        .given(once)
        .when(CommitmentCommand::Deposit {
            deposit_id: deposit_id(2),
            amount: Amount::MAX,
            reference: None,
            rules: Rules::CURRENT,
            at: at(2),
        })
        .then_expect_error(EscrowError::Overfunded {
            total: cents(50_000),
            funded: Amount::MAX,
        });
}

#[test]
fn a_submission_over_a_window_that_ended_awaits_its_timeout() {
    let mut ended = funded();
    ended.push(submitted_at("m1", 3, 4));
    Given::with(())
        .given(ended)
        .when(CommitmentCommand::Submit {
            milestone_id: "m1".into(),
            rules: Rules::CURRENT,
            at: at(5),
        })
        .then_expect_error(EscrowError::InspectionWindowEnded { ends_at: at(4) });
}

#[test]
fn accepting_a_milestone_whole_closes_its_window_though_it_is_not_all_funded() {
    // m1 submitted with 100 held: accepting it whole releases the 100 and
    // closes the window (the rest waits for another submission), so its
    // timeout cannot refund deposits made after the acceptance.
    let events = vec![
        created(Allocation::Fifo),
        deposited(1, 100),
        submitted_at("m1", 3, 9),
    ];
    Given::with(())
        .given(events)
        .when(CommitmentCommand::Release {
            transfer_id: transfer_id(1),
            milestone_id: "m1".into(),
            amount: None,
            accepted: true,
            rules: Rules::CURRENT,
            at: at(5),
        })
        .then_expect_events(vec![closed(5), accepted(100, vec![draw(1, 100)])]);
}

#[test]
fn an_answer_to_an_unknown_milestone_is_unknown_milestone() {
    for command in [
        CommitmentCommand::Release {
            transfer_id: transfer_id(1),
            milestone_id: "m9".into(),
            amount: None,
            accepted: true,
            rules: Rules::CURRENT,
            at: at(5),
        },
        CommitmentCommand::Claim {
            claim_id: claim_id(1),
            milestone_id: "m9".into(),
            amount: cents(1),
            reason: None,
            rejection: true,
            hold_id: hold_id(1),
            rules: Rules::CURRENT,
            at: at(5),
        },
    ] {
        Given::with(())
            .given(funded())
            .when(command)
            .then_expect_error(EscrowError::UnknownMilestone("m9".into()));
    }
}
