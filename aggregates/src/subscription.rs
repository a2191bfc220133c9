//! The subscription aggregate: one per tenant. It records the plan and its
//! periods; the grants a plan gives live in the quota aggregates, issued in
//! the same atomic append as the subscription's events (see the
//! `commands` crate).

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::plan::Plan;
use crate::rules::Rules;
use chrono::{DateTime, Datelike, Months, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Aggregate type of subscriptions.
pub const SUBSCRIPTION_AGGREGATE: &str = "subscription";

/// Aggregate id of the tenant's one subscription.
pub const SUBSCRIPTION_ID: &str = "subscription";

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelAt {
    Now,
    PeriodEnd,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    Subscribe {
        plan: Plan,
        trial_ends_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    ChangePlan {
        plan: Plan,
        at: DateTime<Utc>,
    },
    Cancel {
        when: CancelAt,
        at: DateTime<Utc>,
        rules: Rules,
    },
    /// Starts the next period once the current one has ended (at its end,
    /// or now when more than a whole period late); ends the subscription
    /// instead when a cancellation at period end is scheduled.
    Renew {
        at: DateTime<Utc>,
        rules: Rules,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    Subscribed {
        plan: Plan,
        trial_ends_at: Option<DateTime<Utc>>,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    PlanChanged {
        from: String,
        plan: Plan,
    },
    CancellationScheduled {
        effective_at: DateTime<Utc>,
    },
    Cancelled {
        cancelled_at: DateTime<Utc>,
    },
    PeriodRenewed {
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Subscribed { .. } => "Subscribed",
            Self::PlanChanged { .. } => "PlanChanged",
            Self::CancellationScheduled { .. } => "CancellationScheduled",
            Self::Cancelled { .. } => "Cancelled",
            Self::PeriodRenewed { .. } => "PeriodRenewed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the tenant already has an active subscription to {0}")]
    AlreadySubscribed(String),
    #[error("the tenant has no active subscription")]
    NotSubscribed,
    #[error("the subscription is already on {0}")]
    SamePlan(String),
    #[error("trial_ends_at must be in the future")]
    TrialEndInThePast,
    #[error(transparent)]
    TimeOutOfRange(#[from] crate::time::TimeOutOfRange),
    #[error("the cancellation is already scheduled for the end of the period")]
    AlreadyScheduled,
    #[error("the period end is out of range")]
    PeriodOutOfRange,
    #[error("the current period ends at {period_end}; it can be renewed from then on")]
    PeriodNotEnded { period_end: DateTime<Utc> },
    #[error("the current period ended at {period_end}; renew the subscription first")]
    PeriodEnded { period_end: DateTime<Utc> },
}

impl Rejection for SubscriptionError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::NotSubscribed => RejectionKind::NotFound,
            Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            Self::TrialEndInThePast
            | Self::AlreadySubscribed(_)
            | Self::SamePlan(_)
            | Self::AlreadyScheduled
            | Self::PeriodOutOfRange
            | Self::PeriodNotEnded { .. }
            | Self::PeriodEnded { .. } => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::AlreadySubscribed(_) => "already_subscribed",
            Self::NotSubscribed => "not_subscribed",
            Self::SamePlan(_) => "same_plan",
            Self::TrialEndInThePast => "invalid_trial_end",
            Self::TimeOutOfRange(_) => "time_out_of_range",
            Self::AlreadyScheduled => "cancellation_scheduled",
            Self::PeriodOutOfRange => "period_out_of_range",
            Self::PeriodNotEnded { .. } => "period_not_ended",
            Self::PeriodEnded { .. } => "period_ended",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::AlreadySubscribed(plan) | Self::SamePlan(plan) => json!({"plan": plan}),
            Self::PeriodNotEnded { period_end } | Self::PeriodEnded { period_end } => {
                json!({"period_end": period_end})
            }
            Self::TimeOutOfRange(error) => json!({"field": error.field}),
            _ => serde_json::Value::Null,
        }
    }
}

/// A live subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    pub plan: Plan,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    /// Where the periods are counted from: the start of the first, or of
    /// one that began late. Since rules 4 each period ends on this day of
    /// the month (or the month's last day), so a short month does not move
    /// the billing date for good. (Required: a snapshot taken before it
    /// was kept does not deserialize, so the state is folded again.)
    pub billing_anchor: DateTime<Utc>,
}

/// The tenant's subscription: none, active, or ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub active: Option<Active>,
    /// When the last subscription was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
}

fn period_end(plan: &Plan, start: DateTime<Utc>) -> Result<DateTime<Utc>, SubscriptionError> {
    start
        .checked_add_months(Months::new(plan.period_months))
        .filter(|end| crate::time::storable(*end))
        .ok_or(SubscriptionError::PeriodOutOfRange)
}

/// The end of a period of `plan` starting at `start`, on `anchor`'s day
/// of the month, or the month's last day when it has fewer: 31 Jan, 28
/// Feb, 31 Mar, 30 Apr.
fn anchored_period_end(
    plan: &Plan,
    start: DateTime<Utc>,
    anchor: DateTime<Utc>,
) -> Result<DateTime<Utc>, SubscriptionError> {
    let end = period_end(plan, start)?;
    let days_in_month = u32::from(end.num_days_in_month());
    end.with_day(anchor.day().min(days_in_month).max(end.day()))
        .filter(|end| crate::time::storable(*end))
        .ok_or(SubscriptionError::PeriodOutOfRange)
}

impl Subscription {
    fn active(&self) -> Result<&Active, SubscriptionError> {
        self.active.as_ref().ok_or(SubscriptionError::NotSubscribed)
    }
}

impl Aggregate for Subscription {
    const TYPE: &'static str = SUBSCRIPTION_AGGREGATE;
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SubscriptionCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SubscriptionError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Subscribed {
                plan,
                trial_ends_at,
                period_start,
                period_end,
            } => {
                self.active = Some(Active {
                    plan,
                    trial_ends_at,
                    period_start,
                    period_end,
                    cancel_at_period_end: false,
                    billing_anchor: period_start,
                });
            }
            SubscriptionEvent::PlanChanged { plan, .. } => {
                if let Some(active) = &mut self.active {
                    active.plan = plan;
                }
            }
            SubscriptionEvent::CancellationScheduled { .. } => {
                if let Some(active) = &mut self.active {
                    active.cancel_at_period_end = true;
                }
            }
            SubscriptionEvent::Cancelled { cancelled_at } => {
                self.active = None;
                self.cancelled_at = Some(cancelled_at);
            }
            SubscriptionEvent::PeriodRenewed {
                period_start,
                period_end,
            } => {
                if let Some(active) = &mut self.active {
                    // A period that did not start where the last ended (a
                    // renewal more than a whole period late) counts anew.
                    if period_start != active.period_end {
                        active.billing_anchor = period_start;
                    }
                    active.period_start = period_start;
                    active.period_end = period_end;
                    // A trial runs on past a renewal until its own end.
                    if active
                        .trial_ends_at
                        .is_some_and(|trial_end| trial_end <= period_start)
                    {
                        active.trial_ends_at = None;
                    }
                }
            }
        }
    }
}

impl Decide for Subscription {
    fn decide(
        &self,
        command: SubscriptionCommand,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        match command {
            SubscriptionCommand::Subscribe {
                plan,
                trial_ends_at,
                at,
            } => {
                if let Some(active) = &self.active {
                    return Err(SubscriptionError::AlreadySubscribed(active.plan.id.clone()));
                }
                if let Some(trial_end) = trial_ends_at {
                    crate::time::check("trial_ends_at", trial_end)?;
                }
                if trial_ends_at.is_some_and(|trial_end| trial_end <= at) {
                    return Err(SubscriptionError::TrialEndInThePast);
                }
                let period_end = period_end(&plan, at)?;
                Ok(vec![SubscriptionEvent::Subscribed {
                    plan,
                    trial_ends_at,
                    period_start: at,
                    period_end,
                }])
            }
            SubscriptionCommand::ChangePlan { plan, at } => {
                let active = self.active()?;
                if active.plan.id == plan.id {
                    return Err(SubscriptionError::SamePlan(plan.id));
                }
                // The new plan's grants would expire at a period end already
                // past.
                if at >= active.period_end {
                    return Err(SubscriptionError::PeriodEnded {
                        period_end: active.period_end,
                    });
                }
                Ok(vec![SubscriptionEvent::PlanChanged {
                    from: active.plan.id.clone(),
                    plan,
                }])
            }
            SubscriptionCommand::Cancel { when, at, rules } => {
                let active = self.active()?;
                match when {
                    CancelAt::Now => Ok(vec![SubscriptionEvent::Cancelled { cancelled_at: at }]),
                    CancelAt::PeriodEnd if active.cancel_at_period_end => {
                        Err(SubscriptionError::AlreadyScheduled)
                    }
                    // Since rules 4: the period has ended and awaits its
                    // renewal, so cancelling at its end would reach back
                    // (whether the next period is kept would depend on how
                    // late the renewal runs); cancel now instead.
                    CancelAt::PeriodEnd
                        if rules.since(Rules::FOURTH) && at >= active.period_end =>
                    {
                        Err(SubscriptionError::PeriodEnded {
                            period_end: active.period_end,
                        })
                    }
                    CancelAt::PeriodEnd => Ok(vec![SubscriptionEvent::CancellationScheduled {
                        effective_at: active.period_end,
                    }]),
                }
            }
            SubscriptionCommand::Renew { at, rules } => {
                let active = self.active()?;
                if at < active.period_end {
                    return Err(SubscriptionError::PeriodNotEnded {
                        period_end: active.period_end,
                    });
                }
                if active.cancel_at_period_end {
                    // The scheduled cancellation takes effect at the period end.
                    return Ok(vec![SubscriptionEvent::Cancelled {
                        cancelled_at: active.period_end,
                    }]);
                }
                // Periods follow each other without gaps, so a renewal a
                // little late does not move the billing date; one more than a
                // whole period late starts the period now. Since rules 4 a
                // period ends on the anchor's day of the month (before, a
                // short month moved it for good: 31 Jan, 28 Feb, 28 Mar).
                let mut start = active.period_end;
                let mut end = if rules.since(Rules::FOURTH) {
                    anchored_period_end(&active.plan, start, active.billing_anchor)?
                } else {
                    period_end(&active.plan, start)?
                };
                if end <= at {
                    start = at;
                    end = period_end(&active.plan, at)?;
                }
                Ok(vec![SubscriptionEvent::PeriodRenewed {
                    period_start: start,
                    period_end: end,
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanCatalog;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Subscription>;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap()
    }

    fn plan(id: &str) -> Plan {
        PlanCatalog::builtin().get(id).unwrap().clone()
    }

    fn subscribed(id: &str, day: u32) -> SubscriptionEvent {
        SubscriptionEvent::Subscribed {
            plan: plan(id),
            trial_ends_at: None,
            period_start: at(day),
            period_end: at(day).checked_add_months(Months::new(1)).unwrap(),
        }
    }

    #[test]
    fn subscribing_starts_a_period_of_the_plans_length() {
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Subscribe {
                plan: plan("team_v4"),
                trial_ends_at: None,
                at: at(1),
            })
            .then_expect_events(vec![subscribed("team_v4", 1)]);
    }

    #[test]
    fn subscribing_with_a_trial_records_its_end() {
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Subscribe {
                plan: plan("hobby_v3"),
                trial_ends_at: Some(at(15)),
                at: at(1),
            })
            .then_expect_events(vec![SubscriptionEvent::Subscribed {
                plan: plan("hobby_v3"),
                trial_ends_at: Some(at(15)),
                period_start: at(1),
                period_end: Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap(),
            }]);
    }

    #[test]
    fn a_trial_ending_in_the_past_is_rejected() {
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Subscribe {
                plan: plan("hobby_v3"),
                trial_ends_at: Some(at(1)),
                at: at(2),
            })
            .then_expect_error(SubscriptionError::TrialEndInThePast);
    }

    #[test]
    fn a_trial_ending_outside_the_storable_range_is_rejected_naming_the_field() {
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Subscribe {
                plan: plan("hobby_v3"),
                trial_ends_at: Some(crate::time::STORABLE_MIN - chrono::Duration::seconds(1)),
                at: at(2),
            })
            .then_expect_error(SubscriptionError::TimeOutOfRange(
                crate::time::TimeOutOfRange {
                    field: "trial_ends_at",
                },
            ));
    }

    #[test]
    fn a_second_active_subscription_is_rejected() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::Subscribe {
                plan: plan("scale_v1"),
                trial_ends_at: None,
                at: at(2),
            })
            .then_expect_error(SubscriptionError::AlreadySubscribed("team_v4".into()));
    }

    #[test]
    fn changing_plan_records_from_and_to() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::ChangePlan {
                plan: plan("scale_v1"),
                at: at(3),
            })
            .then_expect_events(vec![SubscriptionEvent::PlanChanged {
                from: "team_v4".into(),
                plan: plan("scale_v1"),
            }]);
    }

    #[test]
    fn changing_to_the_same_plan_or_without_a_subscription_is_rejected() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::ChangePlan {
                plan: plan("team_v4"),
                at: at(3),
            })
            .then_expect_error(SubscriptionError::SamePlan("team_v4".into()));
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::ChangePlan {
                plan: plan("team_v4"),
                at: at(3),
            })
            .then_expect_error(SubscriptionError::NotSubscribed);
    }

    #[test]
    fn since_the_fourth_rules_cancelling_at_an_ended_periods_end_is_refused() {
        // The period ended on 1 Feb and awaits its renewal: cancelling at
        // its end would reach back. The third rules scheduled it (and the
        // renewal then ended the subscription as of 1 Feb); cancelling now
        // still works.
        let cancel = |when, rules| SubscriptionCommand::Cancel {
            when,
            at: february(2),
            rules,
        };
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(cancel(CancelAt::PeriodEnd, Rules::FOURTH))
            .then_expect_error(SubscriptionError::PeriodEnded {
                period_end: february(1),
            });
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(cancel(CancelAt::PeriodEnd, Rules::THIRD))
            .then_expect_events(vec![SubscriptionEvent::CancellationScheduled {
                effective_at: february(1),
            }]);
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(cancel(CancelAt::Now, Rules::FOURTH))
            .then_expect_events(vec![SubscriptionEvent::Cancelled {
                cancelled_at: february(2),
            }]);
    }

    #[test]
    fn cancelling_now_ends_it_and_at_period_end_schedules_it_once() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::Cancel {
                when: CancelAt::Now,
                at: at(4),
                rules: Rules::CURRENT,
            })
            .then_expect_events(vec![SubscriptionEvent::Cancelled {
                cancelled_at: at(4),
            }]);
        let end = at(1).checked_add_months(Months::new(1)).unwrap();
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::Cancel {
                when: CancelAt::PeriodEnd,
                at: at(4),
                rules: Rules::CURRENT,
            })
            .then_expect_events(vec![SubscriptionEvent::CancellationScheduled {
                effective_at: end,
            }]);
        Given::with(())
            .given(vec![
                subscribed("team_v4", 1),
                SubscriptionEvent::CancellationScheduled { effective_at: end },
            ])
            .when(SubscriptionCommand::Cancel {
                when: CancelAt::PeriodEnd,
                at: at(5),
                rules: Rules::CURRENT,
            })
            .then_expect_error(SubscriptionError::AlreadyScheduled);
        Given::with(())
            .given(vec![
                subscribed("team_v4", 1),
                SubscriptionEvent::Cancelled {
                    cancelled_at: at(2),
                },
            ])
            .when(SubscriptionCommand::Cancel {
                when: CancelAt::Now,
                at: at(5),
                rules: Rules::CURRENT,
            })
            .then_expect_error(SubscriptionError::NotSubscribed);
    }

    fn february(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn renewing_before_the_period_ends_is_rejected_with_the_period_end() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::Renew {
                at: at(20),
                rules: Rules::CURRENT,
            })
            .then_expect_error(SubscriptionError::PeriodNotEnded {
                period_end: february(1),
            });
        let error = SubscriptionError::PeriodNotEnded {
            period_end: february(1),
        };
        assert_eq!(error.code(), "period_not_ended");
        assert_eq!(error.kind(), RejectionKind::RuleBroken);
        assert_eq!(
            error.details(),
            json!({"period_end": "2026-02-01T12:00:00Z"})
        );
    }

    #[test]
    fn renewing_at_or_after_the_period_end_starts_the_next_period_where_the_last_ended() {
        for renewed_at in [february(1), february(3)] {
            Given::with(())
                .given(vec![subscribed("team_v4", 1)])
                .when(SubscriptionCommand::Renew {
                    at: renewed_at,
                    rules: Rules::CURRENT,
                })
                .then_expect_events(vec![SubscriptionEvent::PeriodRenewed {
                    period_start: february(1),
                    period_end: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
                }]);
        }
    }

    #[test]
    fn since_the_fourth_rules_a_short_month_does_not_move_the_billing_date() {
        // Subscribed on 31 Jan: the first period ends on 28 Feb. Renewed
        // there, the next ends on 31 Mar (the anchor's day), then 30 Apr;
        // under the third rules it ended on 28 Mar for good.
        let day = |month: u32, day: u32| Utc.with_ymd_and_hms(2026, month, day, 12, 0, 0).unwrap();
        let first = subscribed("team_v4", 31);
        assert_eq!(
            first,
            SubscriptionEvent::Subscribed {
                plan: plan("team_v4"),
                trial_ends_at: None,
                period_start: day(1, 31),
                period_end: day(2, 28),
            }
        );
        let renewed = |start, end| SubscriptionEvent::PeriodRenewed {
            period_start: start,
            period_end: end,
        };
        for (rules, end) in [(Rules::FOURTH, day(3, 31)), (Rules::THIRD, day(3, 28))] {
            Given::with(())
                .given(vec![first.clone()])
                .when(SubscriptionCommand::Renew {
                    at: day(2, 28),
                    rules,
                })
                .then_expect_events(vec![renewed(day(2, 28), end)]);
        }
        Given::with(())
            .given(vec![first.clone(), renewed(day(2, 28), day(3, 31))])
            .when(SubscriptionCommand::Renew {
                at: day(4, 1),
                rules: Rules::FOURTH,
            })
            .then_expect_events(vec![renewed(day(3, 31), day(4, 30))]);
        // A renewal more than a whole period late counts from its own day.
        Given::with(())
            .given(vec![first, renewed(day(5, 2), day(6, 2))])
            .when(SubscriptionCommand::Renew {
                at: day(6, 2),
                rules: Rules::FOURTH,
            })
            .then_expect_events(vec![renewed(day(6, 2), day(7, 2))]);
    }

    #[test]
    fn a_trial_runs_on_past_a_renewal_until_its_own_end() {
        let trial_end = Utc.with_ymd_and_hms(2026, 2, 15, 12, 0, 0).unwrap();
        let mut subscription = Subscription::default();
        subscription.apply(SubscriptionEvent::Subscribed {
            plan: plan("team_v4"),
            trial_ends_at: Some(trial_end),
            period_start: at(1),
            period_end: february(1),
        });
        let renewed = |start: DateTime<Utc>| SubscriptionEvent::PeriodRenewed {
            period_start: start,
            period_end: start.checked_add_months(Months::new(1)).unwrap(),
        };
        subscription.apply(renewed(february(1)));
        let trial =
            |subscription: &Subscription| subscription.active.as_ref().unwrap().trial_ends_at;
        assert_eq!(trial(&subscription), Some(trial_end));
        subscription.apply(renewed(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()));
        assert_eq!(trial(&subscription), None);
    }

    #[test]
    fn renewing_more_than_a_whole_period_late_starts_the_period_now() {
        let late = Utc.with_ymd_and_hms(2026, 3, 5, 12, 0, 0).unwrap();
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::Renew {
                at: late,
                rules: Rules::CURRENT,
            })
            .then_expect_events(vec![SubscriptionEvent::PeriodRenewed {
                period_start: late,
                period_end: Utc.with_ymd_and_hms(2026, 4, 5, 12, 0, 0).unwrap(),
            }]);
    }

    #[test]
    fn a_cancellation_scheduled_for_the_period_end_takes_effect_on_renewal_and_not_before() {
        let scheduled = vec![
            subscribed("team_v4", 1),
            SubscriptionEvent::CancellationScheduled {
                effective_at: february(1),
            },
        ];
        Given::with(())
            .given(scheduled.clone())
            .when(SubscriptionCommand::Renew {
                at: at(30),
                rules: Rules::CURRENT,
            })
            .then_expect_error(SubscriptionError::PeriodNotEnded {
                period_end: february(1),
            });
        Given::with(())
            .given(scheduled)
            .when(SubscriptionCommand::Renew {
                at: february(2),
                rules: Rules::CURRENT,
            })
            .then_expect_events(vec![SubscriptionEvent::Cancelled {
                cancelled_at: february(1),
            }]);
    }

    #[test]
    fn renewing_without_a_subscription_is_rejected() {
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Renew {
                at: at(30),
                rules: Rules::CURRENT,
            })
            .then_expect_error(SubscriptionError::NotSubscribed);
    }

    #[test]
    fn changing_plan_once_the_period_has_ended_is_rejected_until_renewal() {
        Given::with(())
            .given(vec![subscribed("team_v4", 1)])
            .when(SubscriptionCommand::ChangePlan {
                plan: plan("scale_v1"),
                at: february(1),
            })
            .then_expect_error(SubscriptionError::PeriodEnded {
                period_end: february(1),
            });
    }

    #[test]
    fn a_period_that_cannot_be_represented_is_rejected() {
        let mut endless = plan("team_v4");
        endless.period_months = u32::MAX;
        Given::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::Subscribe {
                plan: endless,
                trial_ends_at: None,
                at: at(1),
            })
            .then_expect_error(SubscriptionError::PeriodOutOfRange);
    }

    #[test]
    fn a_cancelled_tenant_may_subscribe_again() {
        Given::with(())
            .given(vec![
                subscribed("team_v4", 1),
                SubscriptionEvent::Cancelled {
                    cancelled_at: at(2),
                },
            ])
            .when(SubscriptionCommand::Subscribe {
                plan: plan("hobby_v3"),
                trial_ends_at: None,
                at: at(3),
            })
            .then_expect_events(vec![subscribed("hobby_v3", 3)]);
    }
}
