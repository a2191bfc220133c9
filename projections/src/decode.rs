//! Decoding stored events into domain events, through the aggregate's
//! upcasters (old versions are upcast on read, never rewritten).
//!
//! An event is decoded once: the domain event is kept with the stored event
//! ([`eventstore::Decoded`]), and every projection reading the same event
//! (the journal, the domain's own tables, the schedule) borrows it.

use crate::runtime::ApplyError;
use aggregates::{Decide, Rejection};
use eventstore::StoredEvent;
use std::borrow::Cow;

/// The domain event stored in `event`, borrowed from the decoding kept with
/// it (decoded now if no reader has yet).
pub fn decoded<A>(event: &StoredEvent) -> Result<Cow<'_, A::Event>, ApplyError>
where
    A: Decide,
    A::Error: Rejection,
    A::Event: 'static,
{
    let kept = event
        .decoded
        .get_or_decode(&event.payload, || decode_text::<A>(event))?;
    Ok(match kept {
        Some(kept) => Cow::Borrowed(kept),
        None => Cow::Owned(decode_text::<A>(event)?),
    })
}

/// The domain event stored in `event`, owned: a copy of the decoding kept
/// with it, or decoded now (and not kept: a reader that takes the event
/// for itself is most often its only reader).
pub fn decode<A>(event: &StoredEvent) -> Result<A::Event, ApplyError>
where
    A: Decide,
    A::Error: Rejection,
    A::Event: 'static,
{
    match event.decoded.get::<A::Event>(&event.payload) {
        Some(kept) => Ok(kept.clone()),
        None => decode_text::<A>(event),
    }
}

/// Decodes the payload of `event`.
fn decode_text<A>(event: &StoredEvent) -> Result<A::Event, ApplyError>
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
    aggregates::decide::upcast_and_decode(&upcasters, serialized).map_err(failed)
}
