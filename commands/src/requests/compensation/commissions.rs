//! The commission process manager: a capture of a payment attributed to a
//! payee (`payee` on the payment) accrues the payee's commission; a refund
//! or a lost dispute of such a payment claws back the same share, and a
//! refund that fails gives its clawback back.
//!
//! Each reaction is submitted under a key derived from the causing event
//! (`pm:commissions:<event_id>:0`) and fingerprinted by that event alone,
//! so a crash between reaction and checkpoint re-submits it and the
//! pipeline answers from its record: each commission accrues once. What
//! the request carries besides (the payee's currency, the plan assigned
//! at the capture) is resolved from the store and resolved again when it
//! moved before the decision. A domain refusal (no such payee) is final
//! and recorded under the key; a commission in another currency, or with
//! no plan or rule in effect, is a refused line in the payee's ledger.

use super::{AccrueCommission, ClawBack, ReverseClawBack};
use crate::pipeline::fold::TenantFold;
use crate::pipeline::load::{as_of_sequence, current_from_types};
use crate::pipeline::{derive_id, AnyRequest, CommandBus, PipelineError};
use aggregates::compensation::Payee;
use aggregates::ids::{CaptureId, LineId};
use aggregates::money::Amount;
use aggregates::payments::{DisputeOutcome, Payment, PaymentEvent, PAYMENT_AGGREGATE};
use aggregates::rules::Rules;
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::{EventStore, IdempotencyKey, StoredEvent};
use projections::reactor::reaction_key;
use projections::Reactor;
use serde_json::json;
use std::sync::Arc;

/// The process manager's name (its checkpoint, its keys).
pub const NAME: &str = "commissions";

/// How many times a reaction is resolved again when what it was resolved
/// with moved before its decision.
const STALE_RETRIES: u32 = 4;

/// Accrues commissions from payments, and claws them back.
pub struct Commissions {
    bus: CommandBus,
    store: EventStore,
}

/// The payee events a reaction reads: what sets its profile (the currency)
/// and its plan assignments, which is all of the payee a reaction resolves.
/// Its lines, which grow with its history, are left in the store. Stored
/// type names: an upcaster that renamed one would need the old name here
/// too (payees have none).
const PAYEE_TERMS: &[&str] = &["PayeeCreated", "PlanAssigned"];

/// Builds the process manager on `bus`, reading from `store`.
pub fn process_manager(bus: CommandBus, store: EventStore) -> Arc<dyn Reactor> {
    Arc::new(Commissions { bus, store })
}

/// What a payment event asks of its payee's ledger.
enum Reaction {
    Accrue {
        source: String,
        basis: Amount,
        captured_at: DateTime<Utc>,
    },
    ClawBack {
        source: String,
        captures: Vec<String>,
        amount: Amount,
    },
    Reverse {
        clawback_source: String,
        source: String,
    },
}

/// How a commission's line names the capture it accrues from
/// (`capture:<capture_id>`), and a clawback the captures it takes from.
pub fn capture_source(capture_id: CaptureId) -> String {
    format!("capture:{capture_id}")
}

fn reaction(payment: &Payment, event: PaymentEvent) -> Option<Reaction> {
    match event {
        PaymentEvent::Captured {
            capture_id,
            amount,
            at,
            ..
        } => Some(Reaction::Accrue {
            source: capture_source(capture_id),
            basis: amount,
            captured_at: at,
        }),
        PaymentEvent::Refunded {
            refund_id,
            amount,
            parts,
            ..
        } => Some(Reaction::ClawBack {
            source: format!("refund:{refund_id}"),
            // Every capture of the tenders refunded.
            captures: payment
                .tenders
                .iter()
                .filter(|tender| parts.iter().any(|part| part.tender_id == tender.tender_id))
                .flat_map(|tender| &tender.captures)
                .map(|capture| capture_source(capture.capture_id))
                .collect(),
            amount,
        }),
        PaymentEvent::RefundFailed { refund_id, .. } => Some(Reaction::Reverse {
            clawback_source: format!("refund:{refund_id}"),
            source: format!("refund_failed:{refund_id}"),
        }),
        PaymentEvent::DisputeClosed {
            dispute_id,
            outcome: DisputeOutcome::Lost,
            ..
        } => payment
            .disputes
            .iter()
            .find(|dispute| dispute.dispute_id == dispute_id)
            .map(|dispute| Reaction::ClawBack {
                source: format!("dispute:{dispute_id}"),
                captures: vec![capture_source(dispute.capture_id)],
                amount: dispute.amount,
            }),
        _ => None,
    }
}

/// The request `reaction` to an event of payment `payment_id` (`payment`
/// as that event left it) asks of the payment's payee (`payee`: its
/// profile and plan assignments), under `key`; `None` when the payment is
/// attributed to no payee. An unknown payee is refused by the decision
/// (recorded); its currency is then the payment's. A field the `rules`
/// do not know is left out, so that an older build reads the request back
/// during a rolling upgrade.
fn request_of(
    (tenant_id, key, rules): (TenantId, &IdempotencyKey, Rules),
    (payment_id, payment): (&str, &Payment),
    payee: &Payee,
    reaction: &Reaction,
) -> Option<Box<dyn AnyRequest>> {
    let intent = payment.intent.as_ref()?;
    let payee_id = intent.terms.payee.clone()?;
    let asset = payee
        .profile
        .as_ref()
        .map_or(intent.terms.asset.clone(), |profile| profile.asset.clone());
    let line_id = LineId::from_uuid(derive_id(tenant_id, key, "line"));
    let payment_id = payment_id.to_string();
    Some(match reaction {
        Reaction::Accrue {
            source,
            basis,
            captured_at,
        } => Box::new(AccrueCommission {
            plan_id: payee
                .assignment_at(*captured_at)
                .map(|assignment| assignment.plan_id.clone()),
            payee_id,
            line_id,
            payment_id,
            source: source.clone(),
            basis: *basis,
            currency: intent.terms.asset.clone(),
            captured_at: *captured_at,
            asset,
        }),
        Reaction::ClawBack {
            source,
            captures,
            amount,
        } => Box::new(ClawBack {
            payee_id,
            line_id,
            payment_id,
            source: source.clone(),
            captures: captures.clone(),
            amount: *amount,
            asset,
        }),
        Reaction::Reverse {
            clawback_source,
            source,
        } => Box::new(ReverseClawBack {
            payee_id,
            line_id,
            clawback_source: clawback_source.clone(),
            source: source.clone(),
            asset,
            payment_id: rules.since(Rules::EIGHTH).then_some(payment_id),
        }),
    })
}

/// The stored types of the payment events the process manager reacts to
/// (it decodes no other).
const REACTS_TO: &[&str] = &["Captured", "Refunded", "RefundFailed", "DisputeClosed"];

/// What the process manager asks of a payment's events, read from folded
/// states: verify's check that no commission or clawback is owed.
pub const REACTIONS: crate::domains::ReactionReader = crate::domains::ReactionReader {
    name: NAME,
    aggregate_type: PAYMENT_AGGREGATE,
    events: REACTS_TO,
    read: read_reaction,
};

/// The reaction the process manager makes to `event`, read from `fold`
/// with `event`'s request folded: the payment as that request left it (as
/// the process manager reads it, as of the event). `None` when the payment
/// names a payee not created by then: the process manager may have reacted
/// at once and been refused (`unknown_payee`, final and not in the chain),
/// or after the payee was created; the history cannot tell.
fn read_reaction(
    fold: &TenantFold,
    event: &StoredEvent,
) -> Option<Box<dyn crate::domains::PendingReaction>> {
    let payment = fold.state::<Payment>(&event.aggregate_id)?;
    let payee_id = payment.intent.as_ref()?.terms.payee.as_deref()?;
    fold.state::<Payee>(payee_id)?.profile.as_ref()?;
    let decoded = projections::decode::decode::<Payment>(event).ok()?;
    let reaction = reaction(payment, decoded)?;
    Some(Box::new(Pending {
        key: IdempotencyKey::parse(&reaction_key(NAME, event.event_id, 0)).ok()?,
        payment_id: event.aggregate_id.clone(),
        payment: payment.clone(),
        reaction,
    }))
}

/// A reaction not made yet: the payment as of its event, and what the
/// event asks.
struct Pending {
    key: IdempotencyKey,
    payment_id: String,
    payment: Payment,
    reaction: Reaction,
}

impl crate::domains::PendingReaction for Pending {
    fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// Resolved as the process manager resolves it when it reacts: the
    /// payee as it stands.
    fn request(&self, fold: &TenantFold, rules: Rules) -> Option<Box<dyn AnyRequest>> {
        let payee_id = self.payment.intent.as_ref()?.terms.payee.as_deref()?;
        let payee = fold.state::<Payee>(payee_id)?;
        request_of(
            (fold.tenant_id(), &self.key, rules),
            (&self.payment_id, &self.payment),
            payee,
            &self.reaction,
        )
    }
}

impl Commissions {
    /// The request `reaction` makes for payment `payment_id`'s payee,
    /// resolved from the store as it stands.
    async fn resolve(
        &self,
        tenant_id: TenantId,
        key: &IdempotencyKey,
        (payment_id, payment): (&str, &Payment),
        reaction: &Reaction,
    ) -> Result<Option<Box<dyn AnyRequest>>, String> {
        // A payment's payee and currency never change: only the payee is
        // read again when the request was resolved stale.
        let Some(payee_id) = payment
            .intent
            .as_ref()
            .and_then(|intent| intent.terms.payee.as_deref())
        else {
            return Ok(None);
        };
        let payee: Payee = current_from_types(&self.store, tenant_id, payee_id, PAYEE_TERMS)
            .await
            .map_err(|error| error.to_string())?;
        Ok(request_of(
            (tenant_id, key, self.bus.rules()),
            (payment_id, payment),
            &payee,
            reaction,
        ))
    }
}

#[async_trait]
impl Reactor for Commissions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&[PAYMENT_AGGREGATE])
    }

    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        if event.aggregate_type != PAYMENT_AGGREGATE {
            return Ok(());
        }
        if !REACTS_TO.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let decoded = projections::decode::decode::<Payment>(event).map_err(|e| e.to_string())?;
        // The payment as the event left it: a refund claws back from the
        // captures made before it, however late this reaction runs.
        let payment: Payment = as_of_sequence(
            &self.store,
            tenant_id,
            &event.aggregate_id,
            event.aggregate_seq,
        )
        .await
        .map_err(|error| error.to_string())?;
        let Some(reaction) = reaction(&payment, decoded) else {
            return Ok(());
        };
        let key = IdempotencyKey::parse(&reaction_key(NAME, event.event_id, 0))
            .map_err(|error| error.to_string())?;
        let asked = json!({ "event_id": event.event_id });
        for _ in 0..=STALE_RETRIES {
            let Some(request) = self
                .resolve(tenant_id, &key, (&event.aggregate_id, &payment), &reaction)
                .await?
            else {
                return Ok(());
            };
            match self
                .bus
                .execute_any_asked(tenant_id, key.clone(), &asked, request)
                .await
            {
                Ok(outcome) => {
                    // Made from the payment event itself, the request can
                    // be refused so only by a defect: recorded, and said.
                    if outcome.body["error"]["code"] == "commission_source_mismatch" {
                        tracing::error!(
                            event_id = %event.event_id,
                            body = %outcome.body,
                            "a request made from its payment event was refused as not the event's"
                        );
                    }
                    return Ok(());
                }
                Err(PipelineError::KeyReused) => return Ok(()),
                Err(PipelineError::Stale(_)) => continue,
                Err(error) => return Err(error.to_string()),
            }
        }
        Err(format!(
            "the reaction to event {} stayed stale",
            event.event_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::PAYEE_TERMS;
    use aggregates::compensation::{Payee, PayeeEvent};
    use aggregates::ids::{LineId, PayRunId};
    use aggregates::money::Asset;
    use chrono::{TimeZone, Utc};
    use cqrs_es::{Aggregate, DomainEvent};

    /// Whether a payee event sets what a reaction reads of the payee. A new
    /// kind of payee event does not compile here until it is classified.
    fn sets_terms(event: &PayeeEvent) -> bool {
        match event {
            PayeeEvent::PayeeCreated { .. } | PayeeEvent::PlanAssigned { .. } => true,
            PayeeEvent::LineAccrued(_)
            | PayeeEvent::LinePayable { .. }
            | PayeeEvent::LinesClaimed { .. }
            | PayeeEvent::LinesReleased { .. }
            | PayeeEvent::RunPaid { .. } => false,
        }
    }

    #[test]
    fn the_payee_terms_are_all_a_reaction_reads_of_a_payee() {
        // Proves: folding only the events named in PAYEE_TERMS gives the
        // profile and plan assignments the whole history gives, and every
        // name there is one a payee event is stored under.
        let at = |day| Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
        let run_id = PayRunId::from_uuid(uuid::Uuid::from_u128(1));
        let history = vec![
            PayeeEvent::PayeeCreated {
                name: "Ada".into(),
                asset: Asset::new("USD", 2).unwrap(),
                role_id: Some("rep".into()),
                at: at(1),
            },
            PayeeEvent::PlanAssigned {
                plan_id: "basic".into(),
                from: at(1),
                at: at(1),
            },
            PayeeEvent::LinePayable {
                line_id: LineId::from_uuid(uuid::Uuid::from_u128(2)),
                at: at(2),
            },
            PayeeEvent::LinesClaimed {
                run_id,
                lines: Vec::new(),
                gross: 0,
                carried_in: 0,
                at: at(3),
            },
            PayeeEvent::LinesReleased { run_id, at: at(4) },
            PayeeEvent::PlanAssigned {
                plan_id: "premium".into(),
                from: at(5),
                at: at(5),
            },
        ];
        let mut named = Vec::new();
        for event in &history {
            let in_terms = PAYEE_TERMS.contains(&event.event_type().as_str());
            assert_eq!(in_terms, sets_terms(event), "{event:?}");
            if in_terms {
                named.push(event.event_type());
            }
        }
        for name in PAYEE_TERMS {
            assert!(named.iter().any(|stored| stored == name), "{name}");
        }
        let mut whole = Payee::default();
        let mut terms = Payee::default();
        for event in history {
            if PAYEE_TERMS.contains(&event.event_type().as_str()) {
                terms.apply(event.clone());
            }
            whole.apply(event);
        }
        assert_eq!(terms.profile, whole.profile);
        assert_eq!(terms.assignments, whole.assignments);
        assert_eq!(terms.assignments.len(), 2);
        assert_eq!(
            terms.assignment_at(at(6)).map(|a| a.plan_id.as_str()),
            Some("premium")
        );
    }
}
