//! Decoding stored events into domain events, through the aggregate's
//! upcasters (old versions are upcast on read, never rewritten).

use crate::runtime::ApplyError;
use aggregates::{Decide, Rejection};
use eventstore::StoredEvent;

/// The domain event stored in `event`.
pub fn decode<A>(event: &StoredEvent) -> Result<A::Event, ApplyError>
where
    A: Decide,
    A::Error: Rejection,
{
    let upcasters = A::upcasters();
    let failed = |error: serde_json::Error| ApplyError::Event {
        tenant_seq: event.tenant_seq,
        message: format!("{} does not decode: {error}", event.event_type),
    };
    if upcasters
        .iter()
        .all(|upcaster| !upcaster.can_upcast(&event.event_type, &event.event_version))
    {
        return event.payload.parse::<A::Event>().map_err(failed);
    }
    let serialized = event.to_serialized().map_err(failed)?;
    let upcast = upcasters.iter().fold(serialized, |serialized, upcaster| {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            upcaster.upcast(serialized)
        } else {
            serialized
        }
    });
    serde_json::from_value(upcast.payload).map_err(failed)
}
