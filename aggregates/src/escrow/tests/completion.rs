//! Since rules 9, the decision that completes a commitment records it
//! (`CommitmentCompleted`, after its transfers): a release, a timeout or a
//! claim's resolution that leaves nothing to move. One that leaves
//! anything open records nothing more, nor does any decision under older
//! rules.

use super::releases::submitted_at;
use super::*;
use crate::decide::Decide;

/// Funded, and m2 released whole: only m1's 30000 is left open.
fn m1_left() -> Vec<CommitmentEvent> {
    let mut events = funded();
    events.push(transferred(
        1,
        Direction::Release,
        Some("m2"),
        20_000,
        vec![draw(1, 20_000)],
        Cause::Released,
        4,
    ));
    events
}

fn release_m1(amount: i64, rules: Rules) -> CommitmentCommand {
    CommitmentCommand::Release {
        transfer_id: transfer_id(2),
        milestone_id: "m1".into(),
        amount: Some(cents(amount)),
        accepted: false,
        rules,
        at: at(5),
    }
}

/// What `command` decides under the ninth rules and under the eighth, on
/// `given`.
fn under_both(
    given: Vec<CommitmentEvent>,
    command: impl Fn(Rules) -> CommitmentCommand,
) -> (Vec<CommitmentEvent>, Vec<CommitmentEvent>) {
    let commitment = state(given);
    (
        commitment.decide(command(Rules::NINTH)).unwrap(),
        commitment.decide(command(Rules::EIGHTH)).unwrap(),
    )
}

#[test]
fn the_release_that_completes_a_commitment_records_it() {
    let taken = transferred(
        2,
        Direction::Release,
        Some("m1"),
        30_000,
        vec![draw(2, 15_000), draw(3, 15_000)],
        Cause::Released,
        5,
    );
    Given::with(())
        .given(m1_left())
        .when(release_m1(30_000, Rules::NINTH))
        .then_expect_events(vec![
            taken.clone(),
            CommitmentEvent::CommitmentCompleted { at: at(5) },
        ]);
    let mut done = m1_left();
    done.extend([
        taken.clone(),
        CommitmentEvent::CommitmentCompleted { at: at(5) },
    ]);
    assert_eq!(state(done).status(), Some(CommitmentStatus::Completed));
    // Under the eighth rules, the transfer alone.
    Given::with(())
        .given(m1_left())
        .when(release_m1(30_000, Rules::EIGHTH))
        .then_expect_events(vec![taken]);
}

#[test]
fn a_release_that_leaves_anything_open_records_no_completion() {
    Given::with(())
        .given(m1_left())
        .when(release_m1(29_999, Rules::NINTH))
        .then_expect_events(vec![transferred(
            2,
            Direction::Release,
            Some("m1"),
            29_999,
            vec![draw(2, 15_000), draw(3, 14_999)],
            Cause::Released,
            5,
        )]);
    // Nothing funded of m2 moved: a release of all of m1 leaves m2 open.
    Given::with(())
        .given(funded())
        .when(release_m1(30_000, Rules::NINTH))
        .then_expect_events(vec![transferred(
            2,
            Direction::Release,
            Some("m1"),
            30_000,
            vec![draw(1, 20_000), draw(2, 10_000)],
            Cause::Released,
            5,
        )]);
}

#[test]
fn the_timeout_that_completes_a_commitment_records_it() {
    let mut given = m1_left();
    given.push(submitted_at("m1", 3, 6));
    let (ninth, eighth) = under_both(given, |rules| CommitmentCommand::TimeOut {
        milestone_id: "m1".into(),
        window: 1,
        transfer_id: transfer_id(2),
        rules,
        at: at(6),
    });
    assert_eq!(eighth.len(), 2, "{eighth:?}");
    let mut completed = eighth;
    completed.push(CommitmentEvent::CommitmentCompleted { at: at(6) });
    assert_eq!(ninth, completed);
}

#[test]
fn the_claim_resolution_that_completes_a_commitment_records_it() {
    let mut given = m1_left();
    given.push(CommitmentEvent::ClaimOpened {
        claim_id: claim_id(1),
        milestone_id: "m1".into(),
        amount: cents(30_000),
        reason: None,
        rejection: false,
        hold_id: hold_id(1),
        at: at(4),
    });
    let resolve = |rules| CommitmentCommand::ResolveClaim {
        claim_id: claim_id(1),
        outcome: ClaimOutcome::Split { payee_bps: 2_500 },
        release_id: transfer_id(3),
        refund_id: transfer_id(4),
        rules,
        at: at(6),
    };
    let (ninth, eighth) = under_both(given.clone(), resolve);
    assert!(eighth.len() >= 2, "{eighth:?}");
    assert!(!eighth
        .iter()
        .any(|event| matches!(event, CommitmentEvent::CommitmentCompleted { .. })));
    let mut completed = eighth;
    completed.push(CommitmentEvent::CommitmentCompleted { at: at(6) });
    assert_eq!(ninth, completed);
    // A claim over part of m1 leaves the rest open: no completion.
    let mut part = m1_left();
    part.push(CommitmentEvent::ClaimOpened {
        claim_id: claim_id(1),
        milestone_id: "m1".into(),
        amount: cents(10_000),
        reason: None,
        rejection: false,
        hold_id: hold_id(1),
        at: at(4),
    });
    let (ninth, eighth) = under_both(part, resolve);
    assert_eq!(ninth, eighth);
}
