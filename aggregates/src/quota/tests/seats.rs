//! Seat allocation, release, moves and unbacked seats.

use super::*;

#[test]
fn seats_are_allocated_and_released_not_consumed() {
    let seats = terms(1, GrantSource::Subscription, Some(3));
    Given::with(())
        .given(vec![issued(QuotaType::Seats, seats.clone())])
        .when(QuotaCommand::Consume {
            quota: QuotaType::Seats,
            amount: units(1),
            reference: None,
            at: at(1),
        })
        .then_expect_error(QuotaError::SeatsAreNotConsumed);
    let allocation = JournalEntry::transfer(
        grant_account(&seats),
        allocated_account(None),
        &QuotaType::Seats.asset(),
        units(2),
    )
    .unwrap();
    let allocated = QuotaEvent::SeatsAllocated {
        amount: units(2),
        allocations: vec![Allocation {
            grant_id: id(1),
            amount: units(2),
        }],
        entry: allocation,
    };
    Given::with(())
        .given(vec![issued(QuotaType::Seats, seats.clone())])
        .when(QuotaCommand::AllocateSeats {
            amount: units(2),
            at: at(1),
        })
        .then_expect_events(vec![allocated.clone()]);
    let release = JournalEntry::transfer(
        allocated_account(None),
        grant_account(&seats),
        &QuotaType::Seats.asset(),
        units(1),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Seats, seats.clone()),
            allocated.clone(),
        ])
        .when(QuotaCommand::ReleaseSeats {
            amount: units(1),
            at: at(2),
        })
        .then_expect_events(vec![QuotaEvent::SeatsReleased {
            amount: units(1),
            allocations: vec![Allocation {
                grant_id: id(1),
                amount: units(1),
            }],
            unbacked: Amount::ZERO,
            entry: release,
        }]);
    Given::with(())
        .given(vec![
            issued(QuotaType::Seats, seats.clone()),
            allocated.clone(),
        ])
        .when(QuotaCommand::AllocateSeats {
            amount: units(2),
            at: at(2),
        })
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Seats,
            requested: 2,
            available: 1,
        });
    Given::with(())
        .given(vec![issued(QuotaType::Seats, seats), allocated])
        .when(QuotaCommand::ReleaseSeats {
            amount: units(3),
            at: at(2),
        })
        .then_expect_error(QuotaError::ReleaseExceedsAllocated {
            requested: 3,
            allocated: 2,
        });
}

#[test]
fn only_seats_are_allocated() {
    Given::with(())
        .given(vec![issued(
            QuotaType::Credits,
            terms(1, GrantSource::Purchase, Some(3)),
        )])
        .when(QuotaCommand::AllocateSeats {
            amount: units(1),
            at: at(1),
        })
        .then_expect_error(QuotaError::WrongQuota {
            expected: QuotaType::Credits,
            requested: QuotaType::Seats,
        });
}

#[test]
fn closing_a_seat_grant_moves_its_allocated_seats_to_an_open_grant_with_room() {
    let plan = terms(1, GrantSource::Subscription, Some(1));
    let mut bought = terms(2, GrantSource::Purchase, Some(10));
    bought.priority = 90;
    Given::with(())
        .given(vec![
            issued(QuotaType::Seats, plan.clone()),
            issued(QuotaType::Seats, bought.clone()),
            seats_allocated(&[(&plan, 1)]),
        ])
        .when(end_subscription(QuotaType::Seats, Ending::Revoked, 2))
        .then_expect_events(vec![
            seats_moved(Some(&plan), &[(&bought, 1)], 0),
            revoked(QuotaType::Seats, &plan, 1, 2),
        ]);
}

#[test]
fn seats_of_a_closed_grant_with_no_room_elsewhere_are_unbacked_until_a_new_grant_takes_them() {
    // hobby (1 seat, allocated) -> team (10): the seat ends up on the
    // team grant, which has 9 left, not 10.
    let hobby = terms(1, GrantSource::Subscription, Some(1));
    let team = terms(2, GrantSource::Subscription, Some(10));
    let before = vec![
        issued(QuotaType::Seats, hobby.clone()),
        seats_allocated(&[(&hobby, 1)]),
    ];
    Given::with(())
        .given(before.clone())
        .when(end_subscription(QuotaType::Seats, Ending::Revoked, 2))
        .then_expect_events(vec![
            seats_moved(Some(&hobby), &[], 1),
            revoked(QuotaType::Seats, &hobby, 1, 2),
        ]);
    let mut ended = before;
    ended.push(seats_moved(Some(&hobby), &[], 1));
    ended.push(revoked(QuotaType::Seats, &hobby, 1, 2));
    Given::with(())
        .given(ended.clone())
        .when(issue(QuotaType::Seats, team.clone(), 2))
        .then_expect_events(vec![
            issued(QuotaType::Seats, team.clone()),
            seats_moved(None, &[(&team, 1)], 0),
        ]);
    let mut quota = Quota::default();
    for event in ended.clone() {
        quota.apply(event);
    }
    assert_eq!(quota.allocated(), Ok(units(1)));
    assert_eq!(quota.available(at(2)), Ok(Available::Units(Amount::ZERO)));
    quota.apply(issued(QuotaType::Seats, team.clone()));
    quota.apply(seats_moved(None, &[(&team, 1)], 0));
    assert_eq!(quota.allocated(), Ok(units(1)));
    assert_eq!(quota.available(at(2)), Ok(Available::Units(units(9))));
    let mut changed = ended;
    changed.push(issued(QuotaType::Seats, team.clone()));
    changed.push(seats_moved(None, &[(&team, 1)], 0));
    Given::with(())
        .given(changed.clone())
        .when(QuotaCommand::AllocateSeats {
            amount: units(10),
            at: at(3),
        })
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Seats,
            requested: 10,
            available: 9,
        });
    // Releasing after the change credits the team grant, never the
    // closed hobby grant.
    let release = JournalEntry::new(vec![
        Posting::debit(allocated_account(None), QuotaType::Seats.asset(), units(1)),
        Posting::credit(grant_account(&team), QuotaType::Seats.asset(), units(1)),
    ])
    .unwrap();
    Given::with(())
        .given(changed)
        .when(QuotaCommand::ReleaseSeats {
            amount: units(1),
            at: at(3),
        })
        .then_expect_events(vec![QuotaEvent::SeatsReleased {
            amount: units(1),
            allocations: vec![Allocation {
                grant_id: id(2),
                amount: units(1),
            }],
            unbacked: Amount::ZERO,
            entry: release,
        }]);
}

#[test]
fn an_over_allocated_quota_refuses_allocation_and_releases_unbacked_seats_first() {
    // team (10 seats, all allocated) -> hobby (1): 9 seats are unbacked.
    let team = terms(1, GrantSource::Subscription, Some(10));
    let hobby = terms(2, GrantSource::Subscription, Some(1));
    let history = vec![
        issued(QuotaType::Seats, team.clone()),
        seats_allocated(&[(&team, 10)]),
        seats_moved(Some(&team), &[], 10),
        revoked(QuotaType::Seats, &team, 10, 2),
        issued(QuotaType::Seats, hobby.clone()),
        seats_moved(None, &[(&hobby, 1)], 0),
    ];
    let mut quota = Quota::default();
    for event in history.clone() {
        quota.apply(event);
    }
    assert_eq!(quota.unbacked, units(9));
    assert_eq!(quota.allocated(), Ok(units(10)));
    assert_eq!(quota.available(at(3)), Ok(Available::Units(Amount::ZERO)));
    Given::with(())
        .given(history.clone())
        .when(QuotaCommand::AllocateSeats {
            amount: units(1),
            at: at(3),
        })
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Seats,
            requested: 1,
            available: 0,
        });
    let release = JournalEntry::new(vec![
        Posting::debit(allocated_account(None), QuotaType::Seats.asset(), units(10)),
        Posting::credit(unbacked_account(None), QuotaType::Seats.asset(), units(9)),
        Posting::credit(grant_account(&hobby), QuotaType::Seats.asset(), units(1)),
    ])
    .unwrap();
    Given::with(())
        .given(history.clone())
        .when(QuotaCommand::ReleaseSeats {
            amount: units(10),
            at: at(3),
        })
        .then_expect_events(vec![QuotaEvent::SeatsReleased {
            amount: units(10),
            allocations: vec![Allocation {
                grant_id: id(2),
                amount: units(1),
            }],
            unbacked: units(9),
            entry: release,
        }]);
    Given::with(())
        .given(history)
        .when(QuotaCommand::ReleaseSeats {
            amount: units(11),
            at: at(3),
        })
        .then_expect_error(QuotaError::ReleaseExceedsAllocated {
            requested: 11,
            allocated: 10,
        });
}

#[test]
fn a_seat_grant_coming_into_effect_takes_unbacked_seats_before_any_allocation() {
    let plan = terms(1, GrantSource::Subscription, Some(2));
    let mut later = terms(2, GrantSource::Purchase, Some(5));
    later.effective_at = at(5);
    let history = vec![
        issued(QuotaType::Seats, plan.clone()),
        seats_allocated(&[(&plan, 2)]),
        issued(QuotaType::Seats, later.clone()),
        seats_moved(Some(&plan), &[], 2),
        revoked(QuotaType::Seats, &plan, 2, 2),
    ];
    Given::with(())
        .given(history)
        .when(QuotaCommand::AllocateSeats {
            amount: units(3),
            at: at(6),
        })
        .then_expect_events(vec![
            seats_moved(None, &[(&later, 2)], 0),
            seats_allocated(&[(&later, 3)]),
        ]);
}

#[test]
fn seats_on_a_grant_past_its_expiry_need_room_before_the_scheduler_expires_it() {
    // 8 seats on a grant expiring at hour 5, another grant with room for
    // 5. Past hour 5, before any expiry is recorded, nothing is available:
    // the next decision moves the 8 off first (5 onto the other grant, 3
    // unbacked), and an allocation is refused with 0 available.
    let expiring = GrantTerms {
        expires_at: Some(at(5)),
        ..terms(1, GrantSource::Purchase, Some(10))
    };
    let other = terms(2, GrantSource::Purchase, Some(5));
    let history = vec![
        issued(QuotaType::Seats, expiring.clone()),
        issued(QuotaType::Seats, other),
        seats_allocated(&[(&expiring, 8)]),
    ];
    let mut quota = Quota::default();
    for event in history.clone() {
        quota.apply(event);
    }
    assert_eq!(quota.available(at(4)), Ok(Available::Units(units(7))));
    assert_eq!(quota.available(at(5)), Ok(Available::Units(Amount::ZERO)));
    Given::with(())
        .given(history)
        .when(QuotaCommand::AllocateSeats {
            amount: units(1),
            at: at(6),
        })
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Seats,
            requested: 1,
            available: 0,
        });
}
