//! The fed replay's runs.

use super::*;
use eventstore::{ChainHash, JsonText};

fn event(tenant_id: TenantId, tenant_seq: i64) -> StoredEvent {
    StoredEvent {
        tenant_id,
        tenant_seq,
        global_position: tenant_seq,
        transaction_id: 1,
        aggregate_type: "quota".into(),
        aggregate_id: "q".into(),
        aggregate_seq: tenant_seq,
        event_id: Uuid::nil(),
        event_type: "Consumed".into(),
        event_version: "1".into(),
        payload: JsonText::canonical(&serde_json::json!({})).unwrap(),
        metadata: JsonText::canonical(&serde_json::json!({})).unwrap(),
        idempotency_key: format!("k{tenant_seq}"),
        recorded_at: chrono::DateTime::UNIX_EPOCH,
        prev_hash: ChainHash::from_slice(&[0; 32]).unwrap(),
        hash: ChainHash::from_slice(&[0; 32]).unwrap(),
        decoded: Default::default(),
    }
}

fn seqs(runs: &[Run<'_>]) -> Vec<(TenantId, Vec<i64>)> {
    runs.iter()
        .map(|run| {
            let seqs = run.events.iter().map(|event| event.tenant_seq).collect();
            (run.tenant_id, seqs)
        })
        .collect()
}

#[test]
fn fed_runs_take_each_tenants_next_events_up_to_its_bound_and_stop_at_a_gap() {
    let (a, b, c) = (
        TenantId::from_uuid(Uuid::from_u128(1)),
        TenantId::from_uuid(Uuid::from_u128(2)),
        TenantId::from_uuid(Uuid::from_u128(3)),
    );
    let pages = vec![
        Arc::new(vec![event(a, 2), event(a, 3)]),
        Arc::new(vec![event(b, 1), event(b, 2), event(b, 4), event(b, 5)]),
        Arc::new(vec![event(a, 4), event(a, 5), event(a, 6)]),
        Arc::new(vec![event(c, 1)]),
    ];
    let mut replay = Replay {
        projection: &crate::stream_index::StreamIndex,
        applied: HashMap::from([(a, 1)]),
        failures: BTreeMap::new(),
        unfed: HashSet::new(),
        rows: RowCheck::default(),
    };
    // `a` up to its bound 5, `b` up to its gap at 3, `c` has no bound.
    let bounds = BTreeMap::from([(a, 5), (b, 9)]);
    let runs = replay.fed_runs(&pages, &bounds);
    assert_eq!(seqs(&runs), vec![(a, vec![2, 3, 4, 5]), (b, vec![1, 2])]);
    assert_eq!(replay.unfed, HashSet::from([b]));

    // A tenant already left to the store, or failed, is fed no more.
    replay.applied.insert(a, 5);
    replay.fail(a, 6, "refused".into());
    let pages = vec![Arc::new(vec![event(a, 6), event(b, 3)])];
    assert!(replay.fed_runs(&pages, &bounds).is_empty());
}

#[test]
fn fed_runs_follow_tenants_that_take_turns_within_a_page() {
    let (a, b) = (
        TenantId::from_uuid(Uuid::from_u128(1)),
        TenantId::from_uuid(Uuid::from_u128(2)),
    );
    let pages = vec![Arc::new(vec![
        event(a, 1),
        event(b, 1),
        event(a, 2),
        event(b, 3),
        event(b, 2),
        event(a, 3),
        event(b, 4),
    ])];
    let mut replay = Replay {
        projection: &crate::stream_index::StreamIndex,
        applied: HashMap::new(),
        failures: BTreeMap::new(),
        unfed: HashSet::new(),
        rows: RowCheck::default(),
    };
    let bounds = BTreeMap::from([(a, 2), (b, 9)]);
    let runs = replay.fed_runs(&pages, &bounds);
    // `a` stops at its bound, `b` at its gap, and stays unfed after it
    // (its 2, right after the gap, is not taken).
    assert_eq!(seqs(&runs), vec![(a, vec![1, 2]), (b, vec![1])]);
    assert_eq!(replay.unfed, HashSet::from([b]));
}
