//! The snapshots a tenant's aggregates load from, checked against their
//! events: a snapshot is what the pipeline loads in place of the events
//! before it, so one that restores to another state than they fold to
//! decides every later request of its aggregate on facts the history does
//! not hold (a paid line payable again).

use crate::state::{registry, LocatedFinding, ReplayFinding};
use commands::pipeline::fold::TenantFold;
use eventstore::AggregateKey;
use serde_json::Value;
use std::collections::HashMap;

/// A tenant's snapshots not checked yet: each aggregate's, at the event
/// it was taken after, with its payload.
#[derive(Default)]
pub struct Snapshots {
    expected: HashMap<AggregateKey, (i64, Value)>,
}

impl Snapshots {
    /// The snapshots `rows` (aggregate type and id, the event it was taken
    /// after, payload) name.
    pub fn new(rows: impl IntoIterator<Item = (String, String, i64, Value)>) -> Self {
        let expected = rows
            .into_iter()
            .map(|(aggregate_type, aggregate_id, after, payload)| {
                (
                    AggregateKey::new(aggregate_type, aggregate_id),
                    (after, payload),
                )
            })
            .collect();
        Self { expected }
    }

    /// After a request is folded: the snapshot of each aggregate it moved
    /// (`moved`: the aggregate and the tenant_seq and line of its last event
    /// there), taken where the aggregate now stands, compared with the
    /// state folded. A snapshot that does not restore is left alone: the
    /// pipeline ignores it too, and folds the events.
    pub fn check(
        &mut self,
        fold: &TenantFold,
        moved: &[(AggregateKey, i64, Option<u64>)],
    ) -> Vec<LocatedFinding> {
        let mut findings = Vec::new();
        for (key, tenant_seq, line) in moved {
            let Some((after, _)) = self.expected.get(key) else {
                continue;
            };
            if *after != fold.version(key) {
                continue;
            }
            let Some((after, payload)) = self.expected.remove(key) else {
                continue;
            };
            let restored = registry()
                .aggregate(&key.aggregate_type)
                .and_then(|kind| kind.restores(&payload));
            let Some(restored) = restored else {
                continue;
            };
            let folded = fold.snapshot_of(key);
            if folded.as_ref() != Some(&restored) {
                let finding = ReplayFinding {
                    tenant_seq: *tenant_seq,
                    aggregate_type: key.aggregate_type.clone(),
                    aggregate_id: key.aggregate_id.clone(),
                    message: format!(
                        "the snapshot taken after its event {after} restores to another state \
                         than its events fold to (the pipeline loads it in their place; \
                         deleted, it folds the events): {}",
                        differing_fields(&restored, folded.as_ref())
                    ),
                };
                findings.push((finding, *line));
            }
        }
        findings
    }

    /// At the end of the history: a snapshot no request ended at (taken
    /// after an event its aggregate never reached, or inside a request).
    pub fn unmatched(&mut self, fold: Option<&TenantFold>, last_seq: i64) -> Vec<LocatedFinding> {
        let mut left: Vec<_> = self.expected.drain().collect();
        left.sort_by(|(a, _), (b, _)| {
            (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
        });
        left.into_iter()
            .filter(|(key, (_, payload))| {
                registry()
                    .aggregate(&key.aggregate_type)
                    .and_then(|kind| kind.restores(payload))
                    .is_some()
            })
            .map(|(key, (after, _))| {
                let reached = fold.map_or(0, |fold| fold.version(&key));
                let finding = ReplayFinding {
                    tenant_seq: last_seq,
                    aggregate_type: key.aggregate_type,
                    aggregate_id: key.aggregate_id,
                    message: format!(
                        "a snapshot is taken after its event {after}, which no request of it \
                         ended at (its events reach {reached})"
                    ),
                };
                (finding, None)
            })
            .collect()
    }
}

/// The top-level fields of two states that differ, named; the whole when
/// they are not objects.
fn differing_fields(snapshot: &Value, folded: Option<&Value>) -> String {
    let (Some(Value::Object(snapshot)), Some(Value::Object(folded))) = (Some(snapshot), folded)
    else {
        return format!(
            "{} where the events give {}",
            shortened(snapshot.to_string()),
            shortened(folded.map_or("nothing".to_string(), Value::to_string))
        );
    };
    let mut names: Vec<&String> = snapshot.keys().chain(folded.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| snapshot.get(*name) != folded.get(*name))
        .map(|name| {
            let text = |value: Option<&Value>| {
                let text = value.map_or("none".to_string(), Value::to_string);
                shortened(text)
            };
            format!(
                "{name} {} where the events give {}",
                text(snapshot.get(name)),
                text(folded.get(name))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Longest text of a value a finding quotes.
const QUOTED_MAX: usize = 200;

/// `text`, cut at [`QUOTED_MAX`] characters.
fn shortened(text: String) -> String {
    match text.char_indices().nth(QUOTED_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
