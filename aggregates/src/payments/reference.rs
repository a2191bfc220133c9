//! A processor's reference, claimed once (its id `<kind>/<processor>/<reference>`):
//! a processor names each charge, capture, refund and dispute by a
//! reference unique per tenant and processor. The first payment request
//! naming it claims it; another claim by anything else is refused
//! (`reference_taken`), and a settlement line finds what its reference
//! names by reading the claim.

use super::settlement::Item;
use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::{PaymentId, TenderId};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Aggregate type of processor references.
pub const REFERENCE_AGGREGATE: &str = "processor_reference";

/// What kind of thing a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    /// A card or bank transfer tender (the processor's charge).
    Charge,
    Capture,
    Refund,
    Dispute,
}

impl ReferenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Capture => "capture",
            Self::Refund => "refund",
            Self::Dispute => "dispute",
        }
    }
}

/// The aggregate id of `reference` of `processor`, of `kind`.
pub fn reference_id(kind: ReferenceKind, processor: &str, reference: &str) -> String {
    format!("{}/{processor}/{reference}", kind.as_str())
}

/// Who holds a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub payment_id: PaymentId,
    /// The item it names (`None`: a charge, the tender itself).
    pub item: Option<Item>,
    /// A charge's tender: a second tender of the payment cannot claim the
    /// same charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tender_id: Option<TenderId>,
}

impl Owner {
    /// `item` of payment `payment_id`.
    pub fn of(payment_id: PaymentId, item: Item) -> Self {
        Self {
            payment_id,
            item: Some(item),
            tender_id: None,
        }
    }

    /// The charge of tender `tender_id` of payment `payment_id` (a claim
    /// recorded under the first rules names no tender).
    pub fn charge(payment_id: PaymentId, tender_id: Option<TenderId>) -> Self {
        Self {
            payment_id,
            item: None,
            tender_id,
        }
    }
}

/// A reference's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorReference {
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceCommand {
    /// Claims the reference for `owner`; claiming it again for the same
    /// owner is nothing.
    Claim { owner: Owner, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferenceEvent {
    ReferenceClaimed { owner: Owner, at: DateTime<Utc> },
}

impl DomainEvent for ReferenceEvent {
    fn event_type(&self) -> String {
        "ReferenceClaimed".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the processor's reference is taken by payment {}", .owner.payment_id)]
    Taken { owner: Owner },
}

impl Rejection for ReferenceError {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RuleBroken
    }

    fn code(&self) -> &'static str {
        "reference_taken"
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::Taken { owner } => json!({"payment_id": owner.payment_id}),
        }
    }
}

impl Aggregate for ProcessorReference {
    const TYPE: &'static str = REFERENCE_AGGREGATE;
    type Command = ReferenceCommand;
    type Event = ReferenceEvent;
    type Error = ReferenceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ReferenceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ReferenceError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: ReferenceEvent) {
        let ReferenceEvent::ReferenceClaimed { owner, .. } = event;
        self.owner = Some(owner);
    }
}

impl Decide for ProcessorReference {
    fn decide(&self, command: ReferenceCommand) -> Result<Vec<ReferenceEvent>, ReferenceError> {
        let ReferenceCommand::Claim { owner, at } = command;
        match &self.owner {
            None => Ok(vec![ReferenceEvent::ReferenceClaimed { owner, at }]),
            Some(held) if *held == owner => Ok(Vec::new()),
            Some(held) => Err(ReferenceError::Taken {
                owner: held.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CaptureId;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<ProcessorReference>;

    fn owner(payment: u128, capture: u128) -> Owner {
        Owner::of(
            PaymentId::from_uuid(uuid::Uuid::from_u128(payment)),
            Item::Capture {
                capture_id: CaptureId::from_uuid(uuid::Uuid::from_u128(capture)),
            },
        )
    }

    fn claim(payment: u128, capture: u128) -> ReferenceCommand {
        ReferenceCommand::Claim {
            owner: owner(payment, capture),
            at: Utc.with_ymd_and_hms(2026, 12, 3, 1, 0, 0).unwrap(),
        }
    }

    fn claimed(payment: u128, capture: u128) -> ReferenceEvent {
        ReferenceEvent::ReferenceClaimed {
            owner: owner(payment, capture),
            at: Utc.with_ymd_and_hms(2026, 12, 3, 1, 0, 0).unwrap(),
        }
    }

    #[test]
    fn a_reference_is_claimed_once_by_one_owner() {
        Given::with(())
            .given_no_previous_events()
            .when(claim(1, 10))
            .then_expect_events(vec![claimed(1, 10)]);
        Given::with(())
            .given(vec![claimed(1, 10)])
            .when(claim(1, 10))
            .then_expect_events(vec![]);
        for (payment, capture) in [(2, 10), (1, 11)] {
            Given::with(())
                .given(vec![claimed(1, 10)])
                .when(claim(payment, capture))
                .then_expect_error(ReferenceError::Taken {
                    owner: owner(1, 10),
                });
        }
    }

    #[test]
    fn a_reference_id_names_its_kind_processor_and_reference() {
        assert_eq!(
            reference_id(ReferenceKind::Capture, "stripe", "cap_1"),
            "capture/stripe/cap_1"
        );
    }
}
