//! The decision contract shared by every aggregate.
//!
//! cqrs-es's `Aggregate::handle` mutates the aggregate while it writes events.
//! The pipeline needs more: a decision that cannot leave half-applied state
//! behind when it is rejected, so it can decide several commands against one
//! in-memory state and throw a rejected one away. [`Decide::decide`] is that
//! pure function; `handle` is derived from it with [`handle_by_deciding`], so
//! cqrs-es's given/when/then `TestFramework` exercises the same code.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

/// How a rejected command is classified, independent of any transport.
/// The HTTP layer maps each kind to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The command is malformed or names something that cannot exist.
    Invalid,
    /// The command names something this tenant does not have.
    NotFound,
    /// The command breaks a domain rule in the current state.
    RuleBroken,
    /// There is not enough quota to satisfy the command.
    QuotaExceeded,
}

/// A domain error that can be reported to a caller.
pub trait Rejection: std::error::Error {
    /// The class of the rejection.
    fn kind(&self) -> RejectionKind;
    /// A stable, machine-readable code (`quota_exceeded`, `unknown_plan`, ...).
    fn code(&self) -> &'static str;
    /// Structured details for the caller (`{"available": 3}`); `null` when none.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A pure decision: from the current state and a command to the events that
/// record it, or a rejection. Never mutates, never reads a clock.
pub trait Decide: Aggregate<Services = ()> + Clone
where
    Self::Error: Rejection,
{
    /// Decides `command` against `self`.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Upcasters turning stored events of older versions into the current
    /// form before they are applied. Stored events are never rewritten.
    fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
        Vec::new()
    }

    /// The journal entry `event` records, if any: a replay posts every
    /// aggregate's entries to one journal per tenant and checks it there.
    fn journal_entry(_event: &Self::Event) -> Option<&crate::journal::JournalEntry> {
        None
    }

    /// The external reference of the journal entry `event` records (a
    /// consumption's run id, a manual entry's reference), for the journal's
    /// read tables.
    fn journal_reference(_event: &Self::Event) -> Option<&str> {
        None
    }
}

/// A stored event decoded as its aggregate reads it: upcast first by each
/// of `upcasters` that takes it, in order (an aggregate's
/// [`Decide::upcasters`]).
pub fn upcast_and_decode<E: serde::de::DeserializeOwned>(
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
    event: cqrs_es::persist::SerializedEvent,
) -> Result<E, serde_json::Error> {
    let upcast = upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    });
    serde_json::from_value(upcast.payload)
}

/// Implements cqrs-es `Aggregate::handle` on top of [`Decide::decide`].
pub async fn handle_by_deciding<A>(
    aggregate: &mut A,
    command: A::Command,
    sink: &EventSink<A>,
) -> Result<(), A::Error>
where
    A: Decide,
    A::Error: Rejection,
{
    for event in aggregate.decide(command)? {
        sink.write(event, aggregate).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::upcast_and_decode;
    use crate::journal::asset::AssetEvent;
    use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
    use serde_json::json;

    #[test]
    fn a_stored_event_is_upcast_by_the_upcasters_that_take_it_then_decoded() {
        // Version 0.1 named the asset `code`; the upcaster renames it.
        let rename: Box<dyn EventUpcaster> = Box::new(SemanticVersionEventUpcaster::new(
            "AssetScaleFixed",
            "1",
            Box::new(|mut payload| {
                let fixed = &mut payload["AssetScaleFixed"];
                fixed["asset"] = fixed["code"].take();
                payload
            }),
        ));
        let stored = |version: &str, payload| SerializedEvent {
            aggregate_id: "USD".into(),
            sequence: 1,
            aggregate_type: "asset".into(),
            event_type: "AssetScaleFixed".into(),
            event_version: version.into(),
            payload,
            metadata: json!({}),
        };
        let old = stored("0.1", json!({"AssetScaleFixed": {"code": "USD/2"}}));
        let current = stored("1", json!({"AssetScaleFixed": {"asset": "USD/2"}}));
        let upcasters = [rename];
        let expected: AssetEvent =
            serde_json::from_value(json!({"AssetScaleFixed": {"asset": "USD/2"}})).unwrap();
        for event in [old, current] {
            let decoded: AssetEvent = upcast_and_decode(&upcasters, event).unwrap();
            assert_eq!(decoded, expected);
        }
        let without = stored("0.1", json!({"AssetScaleFixed": {"code": "USD/2"}}));
        assert!(upcast_and_decode::<AssetEvent>(&[], without).is_err());
    }
}
