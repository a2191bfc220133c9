//! Issuing, revoking and ending grants; holders and aggregate ids.

use super::*;

#[test]
fn issuing_a_grant_credits_the_grant_account_from_issuance() {
    let grant = terms(1, GrantSource::Purchase, Some(500));
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: grant.clone(),
            at: at(1),
        })
        .then_expect_events(vec![issued(QuotaType::Credits, grant)]);
}

#[test]
fn issuing_an_unlimited_grant_posts_no_entry() {
    let grant = terms(1, GrantSource::Promocode, None);
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Runs,
            terms: grant.clone(),
            at: at(1),
        })
        .then_expect_events(vec![QuotaEvent::GrantIssued {
            quota: QuotaType::Runs,
            account: None,
            terms: grant,
            entry: None,
        }]);
}

#[test]
fn issuing_a_grant_id_twice_is_rejected() {
    let grant = terms(1, GrantSource::Purchase, Some(5));
    Given::with(())
        .given(vec![issued(QuotaType::Credits, grant.clone())])
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: grant,
            at: at(1),
        })
        .then_expect_error(QuotaError::GrantExists(id(1)));
}

#[test]
fn a_priority_above_100_is_rejected() {
    let mut grant = terms(1, GrantSource::Purchase, Some(5));
    grant.priority = 101;
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: grant,
            at: at(1),
        })
        .then_expect_error(QuotaError::InvalidPriority);
}

#[test]
fn a_zero_amount_grant_is_rejected() {
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: terms(1, GrantSource::Purchase, Some(0)),
            at: at(1),
        })
        .then_expect_error(QuotaError::AmountNotPositive);
}

#[test]
fn an_expiry_not_after_the_start_or_already_past_is_rejected() {
    let mut backwards = terms(1, GrantSource::Purchase, Some(5));
    backwards.effective_at = at(5);
    backwards.expires_at = Some(at(5));
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: backwards,
            at: at(1),
        })
        .then_expect_error(QuotaError::ExpiryBeforeEffect);
    let mut past = terms(1, GrantSource::Purchase, Some(5));
    past.expires_at = Some(at(2));
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Credits,
            terms: past,
            at: at(3),
        })
        .then_expect_error(QuotaError::ExpiryInThePast);
}

#[test]
fn a_grant_of_another_quota_type_is_rejected() {
    Given::with(())
        .given(vec![issued(
            QuotaType::Credits,
            terms(1, GrantSource::Purchase, Some(5)),
        )])
        .when(QuotaCommand::IssueGrant {
            account: None,
            quota: QuotaType::Runs,
            terms: terms(2, GrantSource::Purchase, Some(5)),
            at: at(1),
        })
        .then_expect_error(QuotaError::WrongQuota {
            expected: QuotaType::Credits,
            requested: QuotaType::Runs,
        });
}

#[test]
fn grant_times_outside_the_storable_range_are_rejected_naming_the_field() {
    let ancient: DateTime<Utc> = "-5000-01-01T00:00:00Z".parse().unwrap();
    let mut early = terms(1, GrantSource::Purchase, Some(5));
    early.effective_at = ancient;
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            quota: QuotaType::Credits,
            account: None,
            terms: early,
            at: at(1),
        })
        .then_expect_error(QuotaError::TimeOutOfRange(crate::time::TimeOutOfRange {
            field: "effective_at",
        }));
    let mut late = terms(1, GrantSource::Purchase, Some(5));
    late.expires_at = Some(ancient);
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            quota: QuotaType::Credits,
            account: None,
            terms: late,
            at: at(1),
        })
        .then_expect_error(QuotaError::TimeOutOfRange(crate::time::TimeOutOfRange {
            field: "expires_at",
        }));
    // What storage holds, the decision accepts (the edge is stricter):
    // history from before the edge's bounds re-decides alike.
    let mut old = terms(1, GrantSource::Purchase, Some(5));
    old.effective_at = "1900-01-01T00:00:00Z".parse().unwrap();
    old.expires_at = Some(crate::time::TIME_MAX);
    assert_eq!(
        Quota::default()
            .decide(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                account: None,
                terms: old,
                at: at(1),
            })
            .map(|events| events.len()),
        Ok(1)
    );
}

#[test]
fn revoking_a_purchased_grant_posts_its_unused_balance_as_breakage() {
    let grant = terms(1, GrantSource::Purchase, Some(10));
    let breakage = JournalEntry::transfer(
        grant_account(&grant),
        breakage_account(QuotaType::Credits, None),
        &QuotaType::Credits.asset(),
        units(6),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, grant.clone()),
            consumed(QuotaType::Credits, &[(&grant, 4)], None),
        ])
        .when(QuotaCommand::RevokeGrant {
            grant_id: id(1),
            at: at(2),
        })
        .then_expect_events(vec![QuotaEvent::GrantRevoked {
            grant_id: id(1),
            revoked_at: at(2),
            breakage: units(6),
            entry: Some(breakage),
        }]);
}

#[test]
fn revoking_an_unknown_closed_or_subscription_grant_is_rejected() {
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::RevokeGrant {
            grant_id: id(7),
            at: at(1),
        })
        .then_expect_error(QuotaError::UnknownGrant(id(7)));
    let grant = terms(1, GrantSource::Purchase, Some(10));
    let revoked = QuotaEvent::GrantRevoked {
        grant_id: id(1),
        revoked_at: at(1),
        breakage: units(10),
        entry: None,
    };
    Given::with(())
        .given(vec![issued(QuotaType::Credits, grant), revoked])
        .when(QuotaCommand::RevokeGrant {
            grant_id: id(1),
            at: at(2),
        })
        .then_expect_error(QuotaError::GrantClosed {
            grant_id: id(1),
            status: "revoked",
        });
    Given::with(())
        .given(vec![issued(
            QuotaType::Credits,
            terms(2, GrantSource::Subscription, Some(10)),
        )])
        .when(QuotaCommand::RevokeGrant {
            grant_id: id(2),
            at: at(2),
        })
        .then_expect_error(QuotaError::SubscriptionGrant(id(2)));
}

#[test]
fn ending_subscription_grants_leaves_purchases_alone() {
    let subscription = terms(1, GrantSource::Subscription, Some(10));
    let purchase = terms(2, GrantSource::Purchase, Some(10));
    let breakage = JournalEntry::transfer(
        grant_account(&subscription),
        breakage_account(QuotaType::Credits, None),
        &QuotaType::Credits.asset(),
        units(10),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, subscription),
            issued(QuotaType::Credits, purchase),
        ])
        .when(QuotaCommand::EndSubscriptionGrants {
            quota: QuotaType::Credits,
            ending: Ending::Revoked,
            at: at(3),
        })
        .then_expect_events(vec![QuotaEvent::GrantRevoked {
            grant_id: id(1),
            revoked_at: at(3),
            breakage: units(10),
            entry: Some(breakage),
        }]);
}

#[test]
fn quota_aggregate_ids_round_trip() {
    let account = QuotaAccount::parse("user-42").unwrap();
    assert_eq!(quota_aggregate_id(QuotaType::Credits, None), "credits");
    assert_eq!(
        quota_aggregate_id(QuotaType::Runs, Some(&account)),
        "runs@user-42"
    );
    assert_eq!(
        parse_quota_aggregate_id("runs@user-42"),
        Some((QuotaType::Runs, Some(account)))
    );
    assert_eq!(parse_quota_aggregate_id("gold"), None);
    assert!(QuotaAccount::parse("a b").is_err());
    assert_eq!(
        QuotaType::parse("tokens"),
        Err(UnknownQuota("tokens".into()))
    );
}

#[test]
fn journal_account_codes_name_the_quota_and_its_holder() {
    let holder = QuotaAccount::parse("user-42").unwrap();
    let codes = |holder: Option<&QuotaAccount>| {
        [
            issued_account(QuotaType::Credits, holder),
            consumed_account(QuotaType::Runs, holder),
            breakage_account(QuotaType::Seats, holder),
            allocated_account(holder),
            unbacked_account(holder),
        ]
        .map(|account| account.code)
    };
    assert_eq!(
        codes(None),
        [
            "quota_issued:credits",
            "quota_consumed:runs",
            "quota_breakage:seats",
            "seats_allocated",
            "seats_unbacked",
        ]
    );
    assert_eq!(
        codes(Some(&holder)),
        [
            "quota_issued:credits@user-42",
            "quota_consumed:runs@user-42",
            "quota_breakage:seats@user-42",
            "seats_allocated@user-42",
            "seats_unbacked@user-42",
        ]
    );
}

#[test]
fn a_quota_holding_the_most_open_grants_refuses_another() {
    let events: Vec<QuotaEvent> = (0..OPEN_GRANTS_MAX as u128)
        .map(|n| {
            issued(
                QuotaType::Runs,
                terms(n + 1, GrantSource::Purchase, Some(1)),
            )
        })
        .collect();
    Given::with(())
        .given(events)
        .when(issue(
            QuotaType::Runs,
            terms(5_000, GrantSource::Purchase, Some(1)),
            1,
        ))
        .then_expect_error(QuotaError::TooManyGrants);
}

#[test]
fn a_quota_accounts_grants_post_to_that_accounts_own_journal_accounts() {
    let holder = QuotaAccount::parse("user-42").unwrap();
    let grant = terms(1, GrantSource::Purchase, Some(5));
    let entry = JournalEntry::transfer(
        issued_account(QuotaType::Credits, Some(&holder)),
        grant_account(&grant),
        &QuotaType::Credits.asset(),
        units(5),
    )
    .unwrap();
    assert_eq!(
        entry.postings()[0].account.code,
        "quota_issued:credits@user-42"
    );
    Given::with(())
        .given_no_previous_events()
        .when(QuotaCommand::IssueGrant {
            quota: QuotaType::Credits,
            account: Some(holder.clone()),
            terms: grant.clone(),
            at: at(1),
        })
        .then_expect_events(vec![QuotaEvent::GrantIssued {
            quota: QuotaType::Credits,
            account: Some(holder),
            terms: grant,
            entry: Some(entry),
        }]);
}

#[test]
fn a_grant_for_another_holder_of_the_quota_is_rejected() {
    Given::with(())
        .given(vec![issued(
            QuotaType::Credits,
            terms(1, GrantSource::Purchase, Some(5)),
        )])
        .when(QuotaCommand::IssueGrant {
            quota: QuotaType::Credits,
            account: Some(QuotaAccount::parse("user-42").unwrap()),
            terms: terms(2, GrantSource::Purchase, Some(5)),
            at: at(1),
        })
        .then_expect_error(QuotaError::WrongHolder {
            expected: "the tenant".into(),
            requested: "user-42".into(),
        });
    let user = QuotaAccount::parse("user-42").unwrap();
    assert_eq!(
        (holder_name(None), holder_name(Some(&user))),
        ("the tenant".to_string(), "user-42".to_string())
    );
}

#[test]
fn a_periods_consumption_counts_its_subscription_grants_revoked_or_not() {
    // Two plans' credits grants of the period from hour 10 to hour 20 (the
    // first revoked by a plan change), one of the period before, one of a
    // subscription cancelled before this one began that ended at the same
    // time, a purchase.
    let ending = |n, source, hours: (u32, u32)| GrantTerms {
        effective_at: at(hours.0),
        expires_at: Some(at(hours.1)),
        ..terms(n, source, Some(100))
    };
    let first_plan = ending(1, GrantSource::Subscription, (10, 20));
    let second_plan = ending(2, GrantSource::Subscription, (12, 20));
    let period_before = ending(3, GrantSource::Subscription, (0, 10));
    let purchase = ending(4, GrantSource::Purchase, (10, 20));
    let cancelled = ending(5, GrantSource::Subscription, (5, 20));
    let mut quota = Quota::default();
    for event in [
        issued(QuotaType::Credits, period_before.clone()),
        consumed(QuotaType::Credits, &[(&period_before, 50)], None),
        issued(QuotaType::Credits, cancelled.clone()),
        consumed(QuotaType::Credits, &[(&cancelled, 40)], None),
        revoked(QuotaType::Credits, &cancelled, 60, 8),
        issued(QuotaType::Credits, first_plan.clone()),
        issued(QuotaType::Credits, purchase.clone()),
        consumed(QuotaType::Credits, &[(&first_plan, 30)], None),
        revoked(QuotaType::Credits, &first_plan, 70, 12),
        issued(QuotaType::Credits, second_plan.clone()),
        consumed(
            QuotaType::Credits,
            &[(&second_plan, 5), (&purchase, 7)],
            None,
        ),
    ] {
        quota.apply(event);
    }
    assert_eq!(quota.consumed_in_period(at(10), at(20)), units(35));
    assert_eq!(quota.consumed_in_period(at(5), at(20)), units(75));
    assert_eq!(quota.consumed_in_period(at(0), at(10)), units(50));
    assert_eq!(quota.consumed_in_period(at(10), at(21)), Amount::ZERO);
}

#[test]
fn seats_have_no_period_consumption() {
    let seats = GrantTerms {
        expires_at: Some(at(20)),
        ..terms(1, GrantSource::Subscription, Some(10))
    };
    let mut quota = Quota::default();
    quota.apply(issued(QuotaType::Seats, seats.clone()));
    quota.apply(seats_allocated(&[(&seats, 4)]));
    assert_eq!(quota.grant(id(1)).unwrap().used, units(4));
    assert_eq!(quota.consumed_in_period(at(0), at(20)), Amount::ZERO);
}
