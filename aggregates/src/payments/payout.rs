//! A payout (its id the payout id): settled money moved from a processor's
//! balance to a bank account, naming the settlement batches it pays out;
//! its amount is their net, to the unit. It ends `paid`, or `failed` (its
//! entry reversed, its batches free to be paid out again); since rules 10
//! a paid payout may still fail, as a bank returns a payout days after
//! it arrived.

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::money::{Amount, Asset};
use crate::rules::Rules;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Aggregate type of payouts; the aggregate id is the payout id.
pub const PAYOUT_AGGREGATE: &str = "payout";

/// Where a payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Pending,
    Paid,
    Failed,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Failed => "failed",
        }
    }
}

/// What a payout pays out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutTerms {
    pub processor: String,
    pub asset: Asset,
    pub amount: Amount,
    pub bank_account: String,
    /// The settlement batches (`<processor>:<batch_id>`).
    pub batches: Vec<String>,
}

/// A payout's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub terms: Option<PayoutTerms>,
    pub status: Option<PayoutStatus>,
    pub created_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// When it was marked paid; kept once it failed after (a bank's
    /// return).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayoutCommand {
    /// Creates the payout; `net` is what its batches settled, net of fees
    /// (resolved from them by the request).
    Create {
        terms: PayoutTerms,
        net: i128,
        at: DateTime<Utc>,
    },
    MarkPaid {
        at: DateTime<Utc>,
    },
    MarkFailed {
        reason: Option<String>,
        /// The rules it is decided under (since 10 a paid payout may fail:
        /// the bank returned it).
        rules: Rules,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutEvent {
    PayoutCreated {
        terms: PayoutTerms,
        at: DateTime<Utc>,
    },
    PayoutPaid {
        at: DateTime<Utc>,
    },
    PayoutFailed {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PayoutEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PayoutCreated { .. } => "PayoutCreated",
            Self::PayoutPaid { .. } => "PayoutPaid",
            Self::PayoutFailed { .. } => "PayoutFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutError {
    #[error("the payout exists already")]
    Exists,
    #[error("no such payout")]
    Unknown,
    #[error("a payout is for a positive amount of at least one batch")]
    Empty,
    #[error("the batches pay out {expected}, not {asked}")]
    AmountMismatch { expected: i128, asked: Amount },
    #[error("the payout is {status}, not pending")]
    NotPending { status: &'static str },
}

impl Rejection for PayoutError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown => RejectionKind::NotFound,
            Self::Empty => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "payout_exists",
            Self::Unknown => "unknown_payout",
            Self::Empty => "invalid_payout",
            Self::AmountMismatch { .. } => "payout_amount_mismatch",
            Self::NotPending { .. } => "payout_not_pending",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::AmountMismatch { expected, asked } => {
                json!({"expected": expected.to_string(), "asked": asked})
            }
            Self::NotPending { status } => json!({"status": status}),
            _ => serde_json::Value::Null,
        }
    }
}

impl Payout {
    fn pending(&self) -> Result<(), PayoutError> {
        match self.status {
            None => Err(PayoutError::Unknown),
            Some(PayoutStatus::Pending) => Ok(()),
            Some(status) => Err(PayoutError::NotPending {
                status: status.as_str(),
            }),
        }
    }
}

impl Aggregate for Payout {
    const TYPE: &'static str = PAYOUT_AGGREGATE;
    type Command = PayoutCommand;
    type Event = PayoutEvent;
    type Error = PayoutError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PayoutCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PayoutError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: PayoutEvent) {
        match event {
            PayoutEvent::PayoutCreated { terms, at } => {
                self.terms = Some(terms);
                self.status = Some(PayoutStatus::Pending);
                self.created_at = Some(at);
            }
            PayoutEvent::PayoutPaid { at } => {
                self.status = Some(PayoutStatus::Paid);
                self.paid_at = Some(at);
            }
            PayoutEvent::PayoutFailed { reason, at } => {
                self.status = Some(PayoutStatus::Failed);
                self.reason = reason;
                self.failed_at = Some(at);
            }
        }
    }
}

impl Decide for Payout {
    fn decide(&self, command: PayoutCommand) -> Result<Vec<PayoutEvent>, PayoutError> {
        match command {
            PayoutCommand::Create { terms, net, at } => {
                if self.status.is_some() {
                    return Err(PayoutError::Exists);
                }
                if terms.amount.is_zero() || terms.batches.is_empty() {
                    return Err(PayoutError::Empty);
                }
                if i128::from(terms.amount.value()) != net {
                    return Err(PayoutError::AmountMismatch {
                        expected: net,
                        asked: terms.amount,
                    });
                }
                Ok(vec![PayoutEvent::PayoutCreated { terms, at }])
            }
            PayoutCommand::MarkPaid { at } => {
                self.pending()?;
                Ok(vec![PayoutEvent::PayoutPaid { at }])
            }
            PayoutCommand::MarkFailed { reason, rules, at } => {
                let returned = rules.since(Rules::TENTH) && self.status == Some(PayoutStatus::Paid);
                if !returned {
                    self.pending()?;
                }
                Ok(vec![PayoutEvent::PayoutFailed { reason, at }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Payout>;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, hour, 0, 0).unwrap()
    }

    fn terms(amount: i64) -> PayoutTerms {
        PayoutTerms {
            processor: "stripe".into(),
            asset: Asset::new("USD", 2).unwrap(),
            amount: Amount::new(amount).unwrap(),
            bank_account: "main".into(),
            batches: vec!["stripe:b_1".into()],
        }
    }

    fn created() -> PayoutEvent {
        PayoutEvent::PayoutCreated {
            terms: terms(3_880),
            at: at(1),
        }
    }

    #[test]
    fn a_payout_pays_out_exactly_the_net_of_its_batches() {
        let create = |amount, net| PayoutCommand::Create {
            terms: terms(amount),
            net,
            at: at(1),
        };
        Given::with(())
            .given_no_previous_events()
            .when(create(3_880, 3_880))
            .then_expect_events(vec![created()]);
        Given::with(())
            .given_no_previous_events()
            .when(create(3_881, 3_880))
            .then_expect_error(PayoutError::AmountMismatch {
                expected: 3_880,
                asked: Amount::new(3_881).unwrap(),
            });
        Given::with(())
            .given_no_previous_events()
            .when(create(0, 0))
            .then_expect_error(PayoutError::Empty);
        Given::with(())
            .given(vec![created()])
            .when(create(3_880, 3_880))
            .then_expect_error(PayoutError::Exists);
    }

    #[test]
    fn a_payout_ends_paid_or_failed_once() {
        let paid = PayoutEvent::PayoutPaid { at: at(2) };
        Given::with(())
            .given(vec![created()])
            .when(PayoutCommand::MarkPaid { at: at(2) })
            .then_expect_events(vec![paid.clone()]);
        let fail = |rules| PayoutCommand::MarkFailed {
            reason: Some("account closed".into()),
            rules,
            at: at(3),
        };
        let failed = PayoutEvent::PayoutFailed {
            reason: Some("account closed".into()),
            at: at(3),
        };
        Given::with(())
            .given(vec![created()])
            .when(fail(Rules::NINTH))
            .then_expect_events(vec![failed.clone()]);
        // A paid payout returned by the bank: failed since the tenth rules.
        Given::with(())
            .given(vec![created(), paid.clone()])
            .when(fail(Rules::NINTH))
            .then_expect_error(PayoutError::NotPending { status: "paid" });
        Given::with(())
            .given(vec![created(), paid.clone()])
            .when(fail(Rules::TENTH))
            .then_expect_events(vec![failed.clone()]);
        for rules in [Rules::NINTH, Rules::TENTH] {
            Given::with(())
                .given(vec![created(), paid.clone(), failed.clone()])
                .when(fail(rules))
                .then_expect_error(PayoutError::NotPending { status: "failed" });
            Given::with(())
                .given(vec![created(), failed.clone()])
                .when(PayoutCommand::MarkPaid { at: at(4) })
                .then_expect_error(PayoutError::NotPending { status: "failed" });
        }
        Given::with(())
            .given_no_previous_events()
            .when(PayoutCommand::MarkPaid { at: at(2) })
            .then_expect_error(PayoutError::Unknown);
    }
}
