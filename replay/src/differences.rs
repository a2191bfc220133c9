//! How a stored event differs from the one its request's decision gives,
//! in words an auditor reads: each field that differs, the stored value
//! first and then what the domain decides.

use crate::source::AuditEvent;
use crate::state::registry;
use aggregates::journal::JournalEntry;
use eventstore::NewEvent;
use serde_json::{Map, Value};

/// What differs between a stored event and the decided one at its place:
/// `None` when they are the same event (aggregate, type, version, payload
/// and metadata; the aggregate's sequence is checked on its own).
pub fn compare(stored: &AuditEvent, decided: &NewEvent) -> Option<String> {
    let aggregate = &decided.aggregate_type;
    if stored.aggregate_type != decided.aggregate_type
        || stored.aggregate_id != decided.aggregate_id
    {
        return Some(format!(
            "{} of {}/{}{} where the request decides {} of {}/{} {}",
            stored.event_type,
            stored.aggregate_type,
            stored.aggregate_id,
            unregistered(&stored.aggregate_type),
            decided.event_type,
            decided.aggregate_type,
            decided.aggregate_id,
            render_fields(&fields(decided.payload.as_str()))
        ));
    }
    if stored.event_type != decided.event_type {
        return Some(format!(
            "{} where the {aggregate} decides {} {}",
            stored.event_type,
            decided.event_type,
            render_fields(&fields(decided.payload.as_str()))
        ));
    }
    let mut differences = Vec::new();
    if stored.event_version != decided.event_version {
        differences.push(format!(
            "event_version {} where the {aggregate} decides {}",
            stored.event_version, decided.event_version
        ));
    }
    if stored.payload != decided.payload.as_str() {
        let undecodable = registry()
            .aggregate(aggregate)
            .and_then(|kind| kind.decodes(&stored.payload).err());
        match undecodable {
            Some(error) => differences.push(format!(
                "{} does not decode: {error} where the {aggregate} decides {}",
                stored.event_type,
                render_fields(&fields(decided.payload.as_str()))
            )),
            None => differences.extend(field_differences(
                aggregate,
                &stored.payload,
                decided.payload.as_str(),
            )),
        }
    }
    if stored.metadata != decided.metadata.as_str()
        && !same_json(&stored.metadata, decided.metadata.as_str())
    {
        differences.push(format!(
            "metadata {} where the request records {}",
            stored.metadata, decided.metadata
        ));
    }
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// A stored event past the end of what its request decides.
pub fn unexpected(stored: &AuditEvent, kind: &str, decided: usize) -> String {
    format!(
        "{} of {}/{}{} is not decided by its {kind} request (which decides {decided} events)",
        stored.event_type,
        stored.aggregate_type,
        stored.aggregate_id,
        unregistered(&stored.aggregate_type),
    )
}

/// A decided event the history lacks.
pub fn missing(decided: &NewEvent, kind: &str) -> String {
    format!(
        "the {kind} request also decides {} of {}/{} {}, which the history lacks",
        decided.event_type,
        decided.aggregate_type,
        decided.aggregate_id,
        render_fields(&fields(decided.payload.as_str()))
    )
}

/// ` (an aggregate type no domain registers)` when none does.
fn unregistered(aggregate_type: &str) -> &'static str {
    if registry().aggregate(aggregate_type).is_some() {
        ""
    } else {
        " (an aggregate type no domain registers)"
    }
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Each field of the payload that differs, stored value first; first the
/// variant itself (`{"Type": …}`), which two events of the same fields can
/// differ in alone (a payout's `PaidOut` and `PayoutReleased`).
fn field_differences(aggregate: &str, stored: &str, decided: &str) -> Vec<String> {
    let (stored_variant, decided_variant) = (variant(stored), variant(decided));
    if stored_variant != decided_variant {
        let named = |name: Option<String>| name.unwrap_or_else(|| "none".to_string());
        return vec![format!(
            "payload variant {} where the {aggregate} decides {}",
            named(stored_variant),
            named(decided_variant)
        )];
    }
    let stored_fields = fields(stored);
    let decided_fields = fields(decided);
    if stored_fields.is_empty() && decided_fields.is_empty() {
        return if same_json(stored, decided) {
            Vec::new()
        } else {
            vec![format!(
                "payload {stored} where the {aggregate} decides {decided}"
            )]
        };
    }
    let mut names: Vec<&String> = decided_fields.keys().collect();
    names.extend(
        stored_fields
            .keys()
            .filter(|name| !decided_fields.contains_key(*name)),
    );
    names
        .into_iter()
        .filter(|name| stored_fields.get(*name) != decided_fields.get(*name))
        .map(|name| {
            format!(
                "{name} {} where the {aggregate} decides {}",
                render_field(name, stored_fields.get(name).unwrap_or(&Value::Null)),
                render_field(name, decided_fields.get(name).unwrap_or(&Value::Null))
            )
        })
        .collect()
}

/// The variant an event's payload names (`{"Type": …}`), if it is of that
/// shape.
fn variant(payload: &str) -> Option<String> {
    match serde_json::from_str(payload) {
        Ok(Value::Object(variant)) if variant.len() == 1 => {
            variant.into_iter().next().map(|(name, _)| name)
        }
        _ => None,
    }
}

/// An event's fields by name (an event serializes as `{"Type": {fields}}`);
/// empty when the payload is not of that shape.
fn fields(payload: &str) -> Map<String, Value> {
    match serde_json::from_str(payload) {
        Ok(Value::Object(variant)) if variant.len() == 1 => variant
            .into_iter()
            .next()
            .and_then(|(_, fields)| match fields {
                Value::Object(fields) => Some(fields),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Map::new(),
    }
}

fn render_fields(fields: &Map<String, Value>) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{name} {}", render_field(name, value)))
        .collect();
    format!("({})", parts.join(", "))
}

/// A field of an event as a finding shows it: allocations as
/// `amount from grant`, journal entries as their postings.
fn render_field(name: &str, value: &Value) -> String {
    match (name, value) {
        (_, Value::Null) => "none".to_string(),
        ("allocations", Value::Array(allocations)) if allocations.is_empty() => "none".to_string(),
        ("allocations", Value::Array(allocations)) => allocations
            .iter()
            .map(|allocation| {
                format!(
                    "{} from grant {}",
                    render_field("amount", &allocation["amount"]),
                    render_field("grant_id", &allocation["grant_id"])
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        ("entry", value) => serde_json::from_value::<JournalEntry>(value.clone()).map_or_else(
            |_| value.to_string(),
            |entry| {
                let postings: Vec<String> = entry
                    .postings()
                    .iter()
                    .map(|posting| {
                        format!(
                            "{} {} {} {}",
                            posting.side.as_str(),
                            posting.account.code,
                            posting.amount,
                            posting.asset
                        )
                    })
                    .collect();
                format!("[{}]", postings.join(", "))
            },
        ),
        (_, Value::String(text)) => text.clone(),
        (_, value) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use eventstore::JsonText;
    use uuid::Uuid;

    fn decided(aggregate_type: &str, event_type: &str, payload: Value) -> NewEvent {
        NewEvent {
            aggregate_type: aggregate_type.into(),
            aggregate_id: "credits".into(),
            aggregate_seq: 1,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: JsonText::from_value(&payload).unwrap(),
            metadata: JsonText::from_value(&serde_json::json!({"command": "consume_quota"}))
                .unwrap(),
        }
    }

    fn stored_as(event: &NewEvent) -> AuditEvent {
        AuditEvent {
            tenant_id: aggregates::TenantId::from_uuid(Uuid::nil()),
            tenant_seq: 7,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            aggregate_seq: event.aggregate_seq,
            event_id: Uuid::nil(),
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: event.payload.as_str().to_string(),
            metadata: event.metadata.as_str().to_string(),
            idempotency_key: "k7".into(),
            recorded_at: chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            prev_hash: eventstore::GENESIS,
            hash: eventstore::GENESIS,
        }
    }

    #[test]
    fn an_event_equal_to_its_decision_differs_in_nothing() {
        let event = decided(
            "quota",
            "Noted",
            serde_json::json!({"Noted": {"amount": 5}}),
        );
        assert_eq!(compare(&stored_as(&event), &event), None);
    }

    #[test]
    fn each_differing_field_is_named_stored_value_first() {
        // An aggregate type no domain registers: its payload is not
        // decoded, only compared.
        let event = decided(
            "counter",
            "Noted",
            serde_json::json!({"Noted": {"amount": 5, "reference": null, "same": 1}}),
        );
        let mut stored = stored_as(&event);
        stored.payload = JsonText::from_value(
            &serde_json::json!({"Noted": {"amount": 7, "reference": "x", "same": 1}}),
        )
        .unwrap()
        .into_string();
        assert_eq!(
            compare(&stored, &event).as_deref(),
            Some(
                "amount 7 where the counter decides 5; reference x where the counter decides none"
            )
        );
    }

    #[test]
    fn another_aggregate_or_type_is_named_with_what_is_decided() {
        let event = decided(
            "quota",
            "Noted",
            serde_json::json!({"Noted": {"amount": 5}}),
        );
        let mut stored = stored_as(&event);
        stored.aggregate_type = "loyalty".into();
        assert_eq!(
            compare(&stored, &event).as_deref(),
            Some(
                "Noted of loyalty/credits (an aggregate type no domain registers) where the \
                 request decides Noted of quota/credits (amount 5)"
            )
        );
        let mut stored = stored_as(&event);
        stored.event_type = "Other".into();
        assert_eq!(
            compare(&stored, &event).as_deref(),
            Some("Other where the quota decides Noted (amount 5)")
        );
    }

    #[test]
    fn metadata_other_than_the_recorded_request_is_named() {
        let event = decided(
            "quota",
            "Noted",
            serde_json::json!({"Noted": {"amount": 5}}),
        );
        let mut stored = stored_as(&event);
        stored.metadata = r#"{"command": "issue_grant"}"#.into();
        assert_eq!(
            compare(&stored, &event).as_deref(),
            Some(
                r#"metadata {"command": "issue_grant"} where the request records {"command": "consume_quota"}"#
            )
        );
    }

    #[test]
    fn an_event_past_the_decision_and_one_missing_from_the_history_are_named() {
        let event = decided(
            "quota",
            "Noted",
            serde_json::json!({"Noted": {"amount": 5}}),
        );
        assert_eq!(
            unexpected(&stored_as(&event), "consume_quota", 0),
            "Noted of quota/credits is not decided by its consume_quota request (which decides 0 events)"
        );
        assert_eq!(
            missing(&event, "consume_quota"),
            "the consume_quota request also decides Noted of quota/credits (amount 5), which the history lacks"
        );
    }
}
