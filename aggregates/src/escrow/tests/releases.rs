//! Milestones: submitted (an inspection window), accepted or released in
//! part or whole with FIFO or LIFO lineage, timed out by the scheduler.

use super::*;

fn release(n: u128, milestone: &str, amount: Option<i64>, accepted: bool) -> CommitmentCommand {
    CommitmentCommand::Release {
        transfer_id: transfer_id(n),
        milestone_id: milestone.into(),
        amount: amount.map(cents),
        accepted,
        rules: Rules::CURRENT,
        at: at(5),
    }
}

/// `milestone` submitted at 03:00, its window ending at `ends_hour`.
fn submitted(milestone: &str, ends_hour: u32) -> CommitmentEvent {
    submitted_at(milestone, 3, ends_hour)
}

#[test]
fn a_release_draws_from_the_deposits_oldest_first_or_newest_first() {
    // FIFO: 25000 of m1 takes deposit 1 (20000) and 5000 of deposit 2.
    Given::with(())
        .given(funded())
        .when(release(1, "m1", Some(25_000), false))
        .then_expect_events(vec![transferred(
            1,
            Direction::Release,
            Some("m1"),
            25_000,
            vec![draw(1, 20_000), draw(2, 5_000)],
            Cause::Released,
            5,
        )]);
    // LIFO: the same takes deposit 3 (15000) and 10000 of deposit 2.
    let mut lifo = funded();
    lifo[0] = created(Allocation::Lifo);
    Given::with(())
        .given(lifo)
        .when(release(1, "m1", Some(25_000), false))
        .then_expect_events(vec![transferred(
            1,
            Direction::Release,
            Some("m1"),
            25_000,
            vec![draw(3, 15_000), draw(2, 10_000)],
            Cause::Released,
            5,
        )]);
}

#[test]
fn a_release_needs_only_enough_unfrozen_funds_and_never_passes_the_milestone() {
    let partly = vec![created(Allocation::Fifo), deposited(1, 10_000)];
    Given::with(())
        .given(partly.clone())
        .when(release(1, "m1", Some(10_000), false))
        .then_expect_events(vec![transferred(
            1,
            Direction::Release,
            Some("m1"),
            10_000,
            vec![draw(1, 10_000)],
            Cause::Released,
            5,
        )]);
    Given::with(())
        .given(partly)
        .when(release(1, "m1", Some(10_001), false))
        .then_expect_error(EscrowError::InsufficientUnfrozen {
            unfrozen: cents(10_000),
            asked: cents(10_001),
        });
    Given::with(())
        .given(funded())
        .when(release(1, "m2", Some(20_001), false))
        .then_expect_error(EscrowError::ExceedsMilestone {
            open: cents(20_000),
            asked: cents(20_001),
        });
    let mut done = funded();
    done.push(transferred(
        1,
        Direction::Release,
        Some("m2"),
        20_000,
        vec![draw(1, 20_000)],
        Cause::Released,
        5,
    ));
    Given::with(())
        .given(done.clone())
        .when(release(2, "m2", Some(1), false))
        .then_expect_error(EscrowError::MilestoneSettled("m2".into()));
    Given::with(())
        .given(done)
        .when(release(1, "m1", Some(1), false))
        .then_expect_error(EscrowError::IdTaken);
    Given::with(())
        .given(funded())
        .when(release(1, "m9", Some(1), false))
        .then_expect_error(EscrowError::UnknownMilestone("m9".into()));
    Given::with(())
        .given(funded())
        .when(release(1, "m1", Some(0), false))
        .then_expect_error(EscrowError::NonPositive);
}

#[test]
fn submitting_opens_a_window_that_an_acceptance_answers() {
    Given::with(())
        .given(funded())
        // m1's three days end past the expiry (day 1, 20:00): the
        // sixth rules refuse that (see below), the fifth accept it.
        .when(CommitmentCommand::Submit {
            milestone_id: "m1".into(),
            rules: Rules::FIFTH,
            at: at(3),
        })
        .then_expect_events(vec![CommitmentEvent::MilestoneSubmitted {
            milestone_id: "m1".into(),
            window: 1,
            ends_at: at(3) + chrono::Duration::days(3),
            payer: "buyer-1".into(),
            payee: "seller-9".into(),
            asset: Asset::new("USD", 2).unwrap(),
            at: at(3),
        }]);
    let mut events = funded();
    events.push(submitted("m1", 6));
    Given::with(())
        .given(events.clone())
        .when(CommitmentCommand::Submit {
            milestone_id: "m1".into(),
            rules: crate::rules::Rules::CURRENT,
            at: at(4),
        })
        .then_expect_error(EscrowError::InspectionWindowOpen { ends_at: at(6) });
    // Accepting all of it: the window closes, 30000 goes to the payee.
    Given::with(())
        .given(events)
        .when(release(1, "m1", None, true))
        .then_expect_events(vec![
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(5),
            },
            transferred(
                1,
                Direction::Release,
                Some("m1"),
                30_000,
                vec![draw(1, 20_000), draw(2, 10_000)],
                Cause::Accepted,
                5,
            ),
        ]);
}

#[test]
fn a_window_that_ends_unanswered_applies_its_milestones_outcome_then() {
    let mut events = funded();
    events.push(submitted("m2", 6));
    let time_out = |hour| CommitmentCommand::TimeOut {
        milestone_id: "m2".into(),
        window: 1,
        transfer_id: transfer_id(1),
        rules: Rules::CURRENT,
        at: at(hour),
    };
    Given::with(())
        .given(events.clone())
        .when(time_out(5))
        .then_expect_error(EscrowError::InspectionWindowOpen { ends_at: at(6) });
    // m2 refunds on timeout.
    Given::with(())
        .given(events.clone())
        .when(time_out(6))
        .then_expect_events(vec![
            CommitmentEvent::InspectionClosed {
                milestone_id: "m2".into(),
                window: 1,
                at: at(6),
            },
            transferred(
                1,
                Direction::Refund,
                Some("m2"),
                20_000,
                vec![draw(1, 20_000)],
                Cause::TimedOut,
                6,
            ),
        ]);
    events.push(CommitmentEvent::InspectionClosed {
        milestone_id: "m2".into(),
        window: 1,
        at: at(5),
    });
    Given::with(())
        .given(events)
        .when(time_out(7))
        .then_expect_error(EscrowError::NoInspectionWindow);
    // m1 releases on timeout what is held of it.
    let partly = vec![
        created(Allocation::Fifo),
        deposited(1, 12_000),
        submitted("m1", 6),
    ];
    Given::with(())
        .given(partly)
        .when(CommitmentCommand::TimeOut {
            milestone_id: "m1".into(),
            window: 1,
            transfer_id: transfer_id(1),
            rules: Rules::CURRENT,
            at: at(6),
        })
        .then_expect_events(vec![
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(6),
            },
            transferred(
                1,
                Direction::Release,
                Some("m1"),
                12_000,
                vec![draw(1, 12_000)],
                Cause::TimedOut,
                6,
            ),
        ]);
}

#[test]
fn a_milestone_released_in_part_is_submitted_again_in_a_window_of_its_own() {
    let mut events = funded();
    events.push(submitted("m1", 6));
    events.push(CommitmentEvent::InspectionClosed {
        milestone_id: "m1".into(),
        window: 1,
        at: at(4),
    });
    events.push(transferred(
        1,
        Direction::Release,
        Some("m1"),
        10_000,
        vec![draw(1, 10_000)],
        Cause::Accepted,
        4,
    ));
    Given::with(())
        .given(events)
        // m1's three days end past the expiry (day 1, 20:00): the
        // sixth rules refuse that (see below), the fifth accept it.
        .when(CommitmentCommand::Submit {
            milestone_id: "m1".into(),
            rules: Rules::FIFTH,
            at: at(7),
        })
        .then_expect_events(vec![CommitmentEvent::MilestoneSubmitted {
            milestone_id: "m1".into(),
            window: 2,
            ends_at: at(7) + chrono::Duration::days(3),
            payer: "buyer-1".into(),
            payee: "seller-9".into(),
            asset: Asset::new("USD", 2).unwrap(),
            at: at(7),
        }]);
}

#[test]
fn accepting_all_of_a_milestone_with_nothing_held_is_insufficient_unfrozen_funds() {
    Given::with(())
        .given(vec![created(Allocation::Fifo), submitted("m1", 9)])
        .when(release(1, "m1", None, true))
        .then_expect_error(EscrowError::InsufficientUnfrozen {
            unfrozen: Amount::ZERO,
            asked: cents(30_000),
        });
}

#[test]
fn once_a_window_has_ended_the_payer_cannot_answer_it_and_its_timeout_decides() {
    let mut events = funded();
    events.push(submitted("m1", 4));
    Given::with(())
        .given(events.clone())
        .when(release(1, "m1", None, true))
        .then_expect_error(EscrowError::InspectionWindowEnded { ends_at: at(4) });
    Given::with(())
        .given(events)
        .when(CommitmentCommand::Claim {
            claim_id: claim_id(1),
            milestone_id: "m1".into(),
            amount: cents(1),
            reason: None,
            rejection: true,
            hold_id: hold_id(1),
            rules: Rules::CURRENT,
            at: at(5),
        })
        .then_expect_error(EscrowError::InspectionWindowEnded { ends_at: at(4) });
}

#[test]
fn past_its_expiry_nothing_moves_but_the_expiry_and_a_completed_one_does_not_expire() {
    let late = CommitmentCommand::Deposit {
        deposit_id: deposit_id(9),
        amount: cents(1),
        reference: None,
        rules: Rules::CURRENT,
        at: at(21),
    };
    Given::with(())
        .given(vec![created(Allocation::Fifo)])
        .when(late)
        .then_expect_error(EscrowError::Expired);
    let mut done = funded();
    for (n, milestone, amount) in [(1, "m1", 30_000), (2, "m2", 20_000)] {
        done.push(transferred(
            n,
            Direction::Release,
            Some(milestone),
            amount,
            Vec::new(),
            Cause::Released,
            5,
        ));
    }
    assert_eq!(
        state(done.clone()).status(),
        Some(CommitmentStatus::Completed)
    );
    Given::with(())
        .given(done)
        .when(CommitmentCommand::Expire {
            transfer_id: transfer_id(9),
            timeouts: Vec::new(),
            at: at(20),
        })
        .then_expect_error(EscrowError::Completed);
}

#[test]
fn a_cancel_closes_the_open_windows_with_it() {
    let mut events = funded();
    events.push(submitted("m2", 6));
    Given::with(())
        .given(events)
        .when(CommitmentCommand::Cancel {
            transfer_id: transfer_id(1),
            rules: Rules::FOURTH,
            at: at(4),
        })
        .then_expect_events(vec![
            CommitmentEvent::CommitmentCanceled { at: at(4) },
            CommitmentEvent::InspectionClosed {
                milestone_id: "m2".into(),
                window: 1,
                at: at(4),
            },
            transferred(
                1,
                Direction::Refund,
                None,
                50_000,
                vec![draw(1, 20_000), draw(2, 15_000), draw(3, 15_000)],
                Cause::Canceled,
                4,
            ),
        ]);
}

#[test]
fn a_cancel_waits_for_the_timeout_of_a_window_that_has_ended() {
    let mut events = funded();
    events.push(submitted("m2", 6));
    Given::with(())
        .given(events)
        .when(CommitmentCommand::Cancel {
            transfer_id: transfer_id(1),
            rules: Rules::FOURTH,
            at: at(7),
        })
        .then_expect_error(EscrowError::InspectionWindowEnded { ends_at: at(6) });
}

#[test]
fn a_window_ending_at_or_after_the_expiry_never_times_out() {
    // The commitment expires at 20: its expiry's refund decides.
    for ends in [20, 22] {
        let mut events = funded();
        events.push(submitted("m1", ends));
        Given::with(())
            .given(events)
            .when(CommitmentCommand::TimeOut {
                milestone_id: "m1".into(),
                window: 1,
                transfer_id: transfer_id(1),
                rules: Rules::CURRENT,
                at: at(23),
            })
            .then_expect_error(EscrowError::Expired);
    }
}

#[test]
fn a_timeout_times_out_its_own_window_only() {
    let mut events = funded();
    events.push(submitted("m2", 6));
    Given::with(())
        .given(events)
        .when(CommitmentCommand::TimeOut {
            milestone_id: "m2".into(),
            window: 2,
            transfer_id: transfer_id(1),
            rules: Rules::CURRENT,
            at: at(7),
        })
        .then_expect_error(EscrowError::NoInspectionWindow);
}

#[test]
fn an_expiry_times_out_first_the_windows_that_ended_before_it() {
    // m1 (released on timeout) ended at 6 and m2 (refunded on timeout) at
    // 8, neither timed out yet; the expiry at 20 applies both first (as of
    // their ends), then refunds the rest. A window ending at the expiry
    // closes with it, as before.
    let mut events = funded();
    events.push(submitted("m1", 6));
    let expire = |timeouts: Vec<(String, TransferId)>| CommitmentCommand::Expire {
        transfer_id: transfer_id(9),
        timeouts,
        at: at(20),
    };
    let timeouts = vec![
        ("m1".to_string(), transfer_id(1)),
        ("m2".to_string(), transfer_id(2)),
    ];
    Given::with(())
        .given(events.clone())
        .when(expire(timeouts.clone()))
        .then_expect_events(vec![
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(6),
            },
            transferred(
                1,
                Direction::Release,
                Some("m1"),
                30_000,
                vec![draw(1, 20_000), draw(2, 10_000)],
                Cause::TimedOut,
                6,
            ),
            CommitmentEvent::CommitmentExpired { at: at(20) },
            transferred(
                9,
                Direction::Refund,
                None,
                20_000,
                vec![draw(2, 5_000), draw(3, 15_000)],
                Cause::Expired,
                20,
            ),
        ]);
    // m2's window ends at the expiry: it never times out.
    let mut both = events.clone();
    both.push(CommitmentEvent::MilestoneSubmitted {
        milestone_id: "m2".into(),
        window: 1,
        ends_at: at(20),
        payer: "buyer-1".into(),
        payee: "seller-9".into(),
        asset: Asset::new("USD", 2).unwrap(),
        at: at(19),
    });
    let expired = Given::with(()).given(both).when(expire(timeouts.clone()));
    expired.then_expect_events(vec![
        CommitmentEvent::InspectionClosed {
            milestone_id: "m1".into(),
            window: 1,
            at: at(6),
        },
        transferred(
            1,
            Direction::Release,
            Some("m1"),
            30_000,
            vec![draw(1, 20_000), draw(2, 10_000)],
            Cause::TimedOut,
            6,
        ),
        CommitmentEvent::CommitmentExpired { at: at(20) },
        CommitmentEvent::InspectionClosed {
            milestone_id: "m2".into(),
            window: 1,
            at: at(20),
        },
        transferred(
            9,
            Direction::Refund,
            None,
            20_000,
            vec![draw(2, 5_000), draw(3, 15_000)],
            Cause::Expired,
            20,
        ),
    ]);
    // A timeout's transfer id already taken refuses the expiry whole.
    let mut taken = events.clone();
    taken.push(transferred(
        2,
        Direction::Release,
        Some("m2"),
        1_000,
        vec![draw(1, 1_000)],
        Cause::Released,
        5,
    ));
    let clash = vec![("m1".to_string(), transfer_id(2))];
    Given::with(())
        .given(taken)
        .when(expire(clash))
        .then_expect_error(EscrowError::IdTaken);
    // An expiry recorded without timeouts refunds the ended window, as it
    // always did (a recorded history decides the same again).
    Given::with(())
        .given(events)
        .when(expire(Vec::new()))
        .then_expect_events(vec![
            CommitmentEvent::CommitmentExpired { at: at(20) },
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(20),
            },
            transferred(
                9,
                Direction::Refund,
                None,
                50_000,
                vec![draw(1, 20_000), draw(2, 15_000), draw(3, 15_000)],
                Cause::Expired,
                20,
            ),
        ]);
}

#[test]
fn an_expiry_times_out_the_ended_windows_in_the_order_they_ended() {
    // 25000 held. m2 (refunded on timeout) ended at 5, m1 (released on
    // timeout) at 8: run on time, m2's timeout refunds 20000, then m1's
    // releases the 5000 left. The expiry applies them in that order, not
    // in milestone order (which would release 25000 to the payee).
    let mut events = vec![created(Allocation::Fifo), deposited(1, 25_000)];
    events.push(submitted("m1", 8));
    events.push(CommitmentEvent::MilestoneSubmitted {
        milestone_id: "m2".into(),
        window: 1,
        ends_at: at(5),
        payer: "buyer-1".into(),
        payee: "seller-9".into(),
        asset: Asset::new("USD", 2).unwrap(),
        at: at(4),
    });
    Given::with(())
        .given(events)
        .when(CommitmentCommand::Expire {
            transfer_id: transfer_id(9),
            timeouts: vec![
                ("m1".to_string(), transfer_id(1)),
                ("m2".to_string(), transfer_id(2)),
            ],
            at: at(20),
        })
        .then_expect_events(vec![
            CommitmentEvent::InspectionClosed {
                milestone_id: "m2".into(),
                window: 1,
                at: at(5),
            },
            transferred(
                2,
                Direction::Refund,
                Some("m2"),
                20_000,
                vec![draw(1, 20_000)],
                Cause::TimedOut,
                5,
            ),
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(8),
            },
            transferred(
                1,
                Direction::Release,
                Some("m1"),
                5_000,
                vec![draw(1, 5_000)],
                Cause::TimedOut,
                8,
            ),
            CommitmentEvent::CommitmentExpired { at: at(20) },
        ]);
}

#[test]
fn under_the_third_rules_nothing_moves_while_a_window_has_ended_untimed_out() {
    use crate::decide::Decide;
    // 35,000 of 50,000 funded; m1's window ended at 04:00, and at 05:00
    // its timeout is not recorded yet.
    let mut events = funded();
    events.truncate(3);
    events.push(submitted("m1", 4));
    let ended = EscrowError::InspectionWindowEnded { ends_at: at(4) };
    let moves = |rules: Rules| {
        [
            CommitmentCommand::Deposit {
                deposit_id: deposit_id(9),
                amount: cents(1),
                reference: None,
                rules,
                at: at(5),
            },
            CommitmentCommand::Release {
                transfer_id: transfer_id(9),
                milestone_id: "m2".into(),
                amount: Some(cents(100)),
                accepted: false,
                rules,
                at: at(5),
            },
            CommitmentCommand::Claim {
                claim_id: claim_id(9),
                milestone_id: "m1".into(),
                amount: cents(30_000),
                reason: None,
                rejection: false,
                hold_id: hold_id(9),
                rules,
                at: at(5),
            },
        ]
    };
    for command in moves(Rules::THIRD) {
        Given::with(())
            .given(events.clone())
            .when(command)
            .then_expect_error(ended.clone());
    }
    // Under the second rules each was accepted (what such a history
    // recorded), the claim freezing what the timeout would have released.
    let accepted: Vec<&str> = moves(Rules::SECOND)
        .into_iter()
        .map(|command| {
            let decided = state(events.clone()).decide(command).unwrap();
            match &decided[..] {
                [CommitmentEvent::Deposited { .. }] => "deposited",
                [CommitmentEvent::Transferred(_)] => "released",
                [CommitmentEvent::ClaimOpened { .. }] => "claimed",
                _ => "other",
            }
        })
        .collect();
    assert_eq!(accepted, ["deposited", "released", "claimed"]);
    // Once the timeout is recorded, the commitment moves again.
    let mut timed_out = events;
    timed_out.extend(
        state(timed_out.clone())
            .decide(CommitmentCommand::TimeOut {
                milestone_id: "m1".into(),
                window: 1,
                transfer_id: transfer_id(8),
                rules: Rules::CURRENT,
                at: at(5),
            })
            .unwrap(),
    );
    for command in moves(Rules::THIRD).into_iter().take(2) {
        assert!(state(timed_out.clone()).decide(command).is_ok());
    }
}

#[test]
fn since_the_fifth_rules_a_cancel_waits_for_an_open_window_and_none_ends_a_completed_commitment() {
    let cancel = |hour| CommitmentCommand::Cancel {
        transfer_id: transfer_id(1),
        rules: Rules::FIFTH,
        at: at(hour),
    };
    // m2 submitted, its window open until 6: the payer answers it, or its
    // timeout decides; a cancel does not refund it from under the payee.
    let mut open = funded();
    open.push(submitted("m2", 6));
    Given::with(())
        .given(open.clone())
        .when(cancel(4))
        .then_expect_error(EscrowError::InspectionWindowOpen { ends_at: at(6) });
    // Once it has ended, its timeout decides first, as before.
    Given::with(())
        .given(open)
        .when(cancel(7))
        .then_expect_error(EscrowError::InspectionWindowEnded { ends_at: at(6) });
    // With no window open, a cancel refunds as before.
    Given::with(())
        .given(funded())
        .when(cancel(4))
        .then_expect_events(vec![
            CommitmentEvent::CommitmentCanceled { at: at(4) },
            transferred(
                1,
                Direction::Refund,
                None,
                50_000,
                vec![draw(1, 20_000), draw(2, 15_000), draw(3, 15_000)],
                Cause::Canceled,
                4,
            ),
        ]);
    // Everything released: nothing is left to cancel.
    let mut done = funded();
    for (n, milestone, amount, lineage) in [
        (2, "m1", 30_000, vec![draw(1, 20_000), draw(2, 10_000)]),
        (3, "m2", 20_000, vec![draw(2, 5_000), draw(3, 15_000)]),
    ] {
        done.push(transferred(
            n,
            Direction::Release,
            Some(milestone),
            amount,
            lineage,
            Cause::Released,
            5,
        ));
    }
    Given::with(())
        .given(done.clone())
        .when(cancel(6))
        .then_expect_error(EscrowError::Completed);
    // Under the fourth rules the same cancel was accepted, moving nothing.
    Given::with(())
        .given(done)
        .when(CommitmentCommand::Cancel {
            transfer_id: transfer_id(1),
            rules: Rules::FOURTH,
            at: at(6),
        })
        .then_expect_events(vec![CommitmentEvent::CommitmentCanceled { at: at(6) }]);
}

#[test]
fn a_window_that_ended_first_times_out_first() {
    // m1's window ends at 6, m2's at 7 (both before the expiry at 20).
    let mut events = funded();
    events.push(submitted("m1", 6));
    events.push(submitted("m2", 7));
    let both = state(events.clone());
    assert_eq!(
        both.earlier_window_awaiting("m2", 1),
        Some(("m1".to_string(), at(6)))
    );
    assert_eq!(both.earlier_window_awaiting("m1", 1), None);
    // Another window number, or an unknown milestone: not this request's.
    assert_eq!(both.earlier_window_awaiting("m2", 2), None);
    assert_eq!(both.earlier_window_awaiting("m9", 1), None);
    // Ending together: milestone order.
    let mut together = funded();
    together.push(submitted("m1", 6));
    together.push(submitted("m2", 6));
    let together = state(together);
    assert_eq!(
        together.earlier_window_awaiting("m2", 1),
        Some(("m1".to_string(), at(6)))
    );
    assert_eq!(together.earlier_window_awaiting("m1", 1), None);
    // Once m1's window is closed (timed out or answered), m2's goes.
    events.push(CommitmentEvent::InspectionClosed {
        milestone_id: "m1".into(),
        window: 1,
        at: at(6),
    });
    assert_eq!(state(events).earlier_window_awaiting("m2", 1), None);
}

#[test]
fn since_the_fifth_rules_a_commitment_expires_after_it_is_created() {
    let create = |rules, hour| CommitmentCommand::Create {
        terms: terms(Allocation::Fifo),
        rules,
        at: at(hour),
    };
    // It expires at 20: created at 20 or later it could take no deposit.
    for hour in [20, 21] {
        Given::with(())
            .given_no_previous_events()
            .when(create(Rules::FIFTH, hour))
            .then_expect_error(EscrowError::InvalidTerms(
                "a commitment expires after it is created".into(),
            ));
    }
    Given::with(())
        .given_no_previous_events()
        .when(create(Rules::FIFTH, 19))
        .then_expect_events(vec![CommitmentEvent::CommitmentCreated {
            terms: terms(Allocation::Fifo),
            expiry_times_out: true,
            at: at(19),
        }]);
    Given::with(())
        .given_no_previous_events()
        .when(create(Rules::FOURTH, 21))
        .then_expect_events(vec![CommitmentEvent::CommitmentCreated {
            terms: terms(Allocation::Fifo),
            expiry_times_out: true,
            at: at(21),
        }]);
}

#[test]
fn since_the_fifth_rules_a_window_over_nothing_held_does_not_keep_a_commitment_from_cancelling() {
    // Nothing deposited, m1 submitted (its window open until 6): the payer
    // could accept nothing of it, so the cancel ends the commitment and
    // closes the window, moving nothing.
    Given::with(())
        .given(vec![created(Allocation::Fifo), submitted("m1", 6)])
        .when(CommitmentCommand::Cancel {
            transfer_id: transfer_id(1),
            rules: Rules::FIFTH,
            at: at(4),
        })
        .then_expect_events(vec![
            CommitmentEvent::CommitmentCanceled { at: at(4) },
            CommitmentEvent::InspectionClosed {
                milestone_id: "m1".into(),
                window: 1,
                at: at(4),
            },
        ]);
}

#[test]
fn since_the_sixth_rules_a_window_the_expiry_would_end_first_is_refused() {
    let submit = |milestone: &str, hour, rules| CommitmentCommand::Submit {
        milestone_id: milestone.into(),
        rules,
        at: at(hour),
    };
    // m1's three days from 03:00 end after the expiry at 20:00.
    Given::with(())
        .given(funded())
        .when(submit("m1", 3, Rules::SIXTH))
        .then_expect_error(EscrowError::WindowPastExpiry {
            ends_at: at(3) + chrono::Duration::days(3),
            expires_at: at(20),
        });
    // m2's hour from 19:00 ends at the expiry itself: its timeout would
    // never come either.
    Given::with(())
        .given(funded())
        .when(submit("m2", 19, Rules::SIXTH))
        .then_expect_error(EscrowError::WindowPastExpiry {
            ends_at: at(20),
            expires_at: at(20),
        });
    // From 18:00 it ends at 19:00, before the expiry.
    Given::with(())
        .given(funded())
        .when(submit("m2", 18, Rules::SIXTH))
        .then_expect_events(vec![submitted_at("m2", 18, 19)]);
    // The fifth rules accept a window past the expiry.
    Given::with(())
        .given(funded())
        .when(submit("m2", 19, Rules::FIFTH))
        .then_expect_events(vec![submitted_at("m2", 19, 20)]);
}

/// `milestone` submitted at `hour`, its window (the first) ending at `ends`.
pub(super) fn submitted_at(milestone: &str, hour: u32, ends: u32) -> CommitmentEvent {
    CommitmentEvent::MilestoneSubmitted {
        milestone_id: milestone.into(),
        window: 1,
        ends_at: at(ends),
        payer: "buyer-1".into(),
        payee: "seller-9".into(),
        asset: Asset::new("USD", 2).unwrap(),
        at: at(hour),
    }
}
