//! Event store against a real PostgreSQL: appends, loads, concurrency, the
//! hash chain, immutability, idempotency records and ordered reads.

use aggregates::TenantId;
use chrono::Utc;
use eventstore::chain::ChainFinding;
use eventstore::testing::TestDatabase;
use eventstore::{
    AggregateHistory, AggregateKey, AppendError, CommandWrite, EventStore, Fingerprint,
    GlobalCursor, IdempotencyKey, JsonText, NewEvent, Revocation, StoredEvent, TenantBatch,
    APPEND_WITHIN,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn event(aggregate_id: &str, aggregate_seq: i64, payload: Value) -> NewEvent {
    NewEvent {
        aggregate_type: "counter".to_string(),
        aggregate_id: aggregate_id.to_string(),
        aggregate_seq,
        event_type: "Added".to_string(),
        event_version: "1".to_string(),
        payload: JsonText::from_value(&payload).unwrap(),
        metadata: JsonText::from_value(&json!({"command": "Add"})).unwrap(),
    }
}

fn write(key: &str, events: Vec<NewEvent>) -> CommandWrite {
    let body = json!(format!("{events:?}"));
    CommandWrite {
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: Fingerprint::of("test", &body).unwrap(),
        status: 201,
        events,
        indexed: Vec::new(),
        at: eventstore::chain::to_stored_precision(Utc::now()),
    }
}

/// The outcome recorded for accepted test commands.
fn accepted() -> impl Fn(&[eventstore::AppendedEvent], i64) -> Value {
    |events, tenant_seq| json!({"events": events.len(), "tenant_seq": tenant_seq})
}

async fn tenant(store: &EventStore) -> TenantId {
    store.create_tenant("acme").await.unwrap().tenant_id
}

async fn all_events(store: &EventStore, tenant_id: TenantId) -> Vec<StoredEvent> {
    store.read_tenant(tenant_id, 0, 10_000).await.unwrap()
}

#[tokio::test]
async fn appended_events_load_back_unchanged_and_a_stale_append_writes_nothing() {
    // Proves: append then load returns the same events; a stale aggregate
    // sequence fails with the exact conflict and leaves no trace.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    let first = vec![
        event("c-1", 1, json!({"amount": 5})),
        event(
            "c-1",
            2,
            json!({"amount": 7, "note": "é \"quoted\" \\ \n", "nested": {"b": [1, 2], "a": null}}),
        ),
    ];
    let appended = store
        .append_command(tenant_id, write("k-1", first.clone()), accepted())
        .await
        .unwrap();
    assert_eq!(
        appended
            .iter()
            .map(|event| event.tenant_seq)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    let loaded = store
        .load_events(tenant_id, &AggregateKey::new("counter", "c-1"), 0)
        .await
        .unwrap();
    assert_eq!(loaded.len(), 2);
    for (loaded, sent) in loaded.iter().zip(&first) {
        assert_eq!(loaded.aggregate_type, sent.aggregate_type);
        assert_eq!(loaded.aggregate_id, sent.aggregate_id);
        assert_eq!(loaded.sequence as i64, sent.aggregate_seq);
        assert_eq!(loaded.event_type, sent.event_type);
        assert_eq!(loaded.event_version, sent.event_version);
        assert_eq!(loaded.payload, sent.payload.to_value().unwrap());
        assert_eq!(loaded.metadata, sent.metadata.to_value().unwrap());
    }
    let stored = all_events(store, tenant_id).await;
    assert_eq!(stored[1].hash, appended[1].hash);
    assert_eq!(stored[1].prev_hash, appended[0].hash);
    assert_eq!(stored[0].idempotency_key, "k-1");

    let error = store
        .append_command(
            tenant_id,
            write("k-2", vec![event("c-1", 2, json!({"amount": 1}))]),
            accepted(),
        )
        .await
        .unwrap_err();
    match error {
        AppendError::SequenceConflict {
            tenant_id: conflict_tenant,
            aggregate_type,
            aggregate_id,
            aggregate_seq,
        } => {
            assert_eq!(conflict_tenant, tenant_id);
            assert_eq!(aggregate_type, "counter");
            assert_eq!(aggregate_id, "c-1");
            assert_eq!(aggregate_seq, 2);
        }
        other => panic!("expected a sequence conflict, got {other:?}"),
    }
    assert_eq!(all_events(store, tenant_id).await.len(), 2);
    assert_eq!(store.chain_head(tenant_id).await.unwrap().unwrap().seq, 2);
    let key = IdempotencyKey::parse("k-2").unwrap();
    assert_eq!(
        store.idempotency_record(tenant_id, &key).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_appends_get_seqs_one_to_sixty_four_and_an_intact_chain() {
    // Proves: appends from 64 separate connections to one tenant serialise on
    // the chain head: gapless seqs 1..64 and every stored hash recomputes.
    let db = TestDatabase::new().await;
    let tenant_id = tenant(db.store()).await;
    // Every writer connects first, then all start together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let mut stores = Vec::new();
    for _ in 0..64 {
        stores.push(EventStore::new(
            db.database().connect_pool(1).await.unwrap(),
        ));
    }
    let mut writers = Vec::new();
    for (writer, store) in stores.into_iter().enumerate() {
        let start = start.clone();
        writers.push(tokio::spawn(async move {
            store.ping().await.unwrap();
            start.wait().await;
            let aggregate = format!("c-{writer}");
            store
                .append_command(
                    tenant_id,
                    write(
                        &format!("k-{writer}"),
                        vec![event(&aggregate, 1, json!({"writer": writer}))],
                    ),
                    accepted(),
                )
                .await
                .unwrap()
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = all_events(db.store(), tenant_id).await;
    assert_eq!(
        stored
            .iter()
            .map(|event| event.tenant_seq)
            .collect::<Vec<_>>(),
        (1..=64).collect::<Vec<_>>()
    );
    for pair in stored.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].recorded_at >= pair[0].recorded_at);
    }
    for event in &stored {
        assert_eq!(
            event.recompute_hash().unwrap(),
            event.hash,
            "tenant_seq {}",
            event.tenant_seq
        );
    }
    let report = db.store().check_chain(tenant_id).await.unwrap();
    assert_eq!(report.events, 64);
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.head_hash, stored[63].hash);
}

#[tokio::test]
async fn a_repeated_key_is_answered_from_its_record_and_a_reused_key_is_refused() {
    // Proves: same key + same command -> the stored outcome and no new events;
    // same key + another command -> key reused; both write nothing.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    let original = write("order-7", vec![event("c-1", 1, json!({"amount": 3}))]);
    store
        .append_command(tenant_id, original.clone(), accepted())
        .await
        .unwrap();

    let mut repeat = original.clone();
    repeat.events[0].aggregate_seq = 2;
    match store
        .append_command(tenant_id, repeat, accepted())
        .await
        .unwrap_err()
    {
        AppendError::KeyReplayed(record) => {
            assert_eq!(record.key.as_str(), "order-7");
            assert_eq!(record.status, 201);
            assert_eq!(record.outcome, json!({"events": 1, "tenant_seq": 1}));
            assert_eq!(record.first_seq, Some(1));
            assert_eq!(record.tenant_seq, 1);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    let other = write("order-7", vec![event("c-1", 2, json!({"amount": 4}))]);
    match store
        .append_command(tenant_id, other, accepted())
        .await
        .unwrap_err()
    {
        AppendError::KeyReused(record) => assert_eq!(record.fingerprint, original.fingerprint),
        other => panic!("expected key reused, got {other:?}"),
    }
    assert_eq!(all_events(store, tenant_id).await.len(), 1);

    let record = store
        .idempotency_record(tenant_id, &IdempotencyKey::parse("order-7").unwrap())
        .await
        .unwrap()
        .unwrap();
    let summaries = store.event_summaries(tenant_id, &record).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].tenant_seq, 1);
    assert_eq!(summaries[0].event_type, "Added");
}

/// An accepted answer as the pipeline gives it: its reply and the list of
/// its events.
fn listing(events: &[eventstore::AppendedEvent], tenant_seq: i64) -> Value {
    let listed: Vec<Value> = events
        .iter()
        .map(|event| serde_json::to_value(event.summary()).unwrap())
        .collect();
    json!({"aggregate_id": "c-1", "events": listed, "tenant_seq": tenant_seq})
}

/// The answer recorded for `key`, as the store replays it.
async fn replayed(store: &EventStore, tenant_id: TenantId, key: &str) -> Value {
    store
        .idempotency_record(tenant_id, &IdempotencyKey::parse(key).unwrap())
        .await
        .unwrap()
        .unwrap()
        .outcome
}

#[tokio::test]
async fn an_answer_listing_its_events_is_recorded_without_them_and_replayed_with_them() {
    // Proves: an accepted answer whose `events` member is exactly the
    // command's events is stored without that list (flagged) and replayed
    // equal to the first answer, hashes included, from its own tenant's
    // events only (another tenant's chain has the same seqs); so is one
    // with no event. An answer listing anything else is stored whole and
    // replayed as it is.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    let other = store.create_tenant("other").await.unwrap().tenant_id;
    for seq in 1..=5 {
        let write = write(
            &format!("o{seq}"),
            vec![event("c-1", seq, json!({"n": seq}))],
        );
        store.append_command(other, write, listing).await.unwrap();
    }
    let first = vec![event("c-0", 1, json!({"n": 0}))];
    store
        .append_command(tenant_id, write("first", first), accepted())
        .await
        .unwrap();
    let two = vec![
        event("c-1", 1, json!({"n": 1})),
        event("c-1", 2, json!({"n": 2})),
    ];
    let appended = store
        .append_command(tenant_id, write("listed", two.clone()), listing)
        .await
        .unwrap();
    let first_answer = listing(&appended, 3);
    let only_one =
        |events: &[eventstore::AppendedEvent], tenant_seq: i64| listing(&events[..1], tenant_seq);
    let partial = vec![
        event("c-2", 1, json!({"n": 3})),
        event("c-2", 2, json!({"n": 4})),
    ];
    let partial = store
        .append_command(tenant_id, write("partial", partial), only_one)
        .await
        .unwrap();
    store
        .append_command(tenant_id, write("none", Vec::new()), listing)
        .await
        .unwrap();
    let stored: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT idempotency_key, events_omitted, outcome::text FROM idempotency_records \
         WHERE tenant_id = $1 ORDER BY tenant_seq, first_seq IS NULL",
    )
    .bind(tenant_id.as_uuid())
    .fetch_all(store.pool())
    .await
    .unwrap();
    let row = |key: &str, omitted: bool, text: &str| (key.to_string(), omitted, text.to_string());
    assert_eq!(
        stored[0],
        row("first", false, r#"{"events": 1, "tenant_seq": 1}"#)
    );
    assert_eq!(
        stored[1],
        row(
            "listed",
            true,
            r#"{"tenant_seq": 3, "aggregate_id": "c-1"}"#
        )
    );
    assert_eq!((stored[2].0.as_str(), stored[2].1), ("partial", false));
    assert_eq!(
        stored[3],
        row("none", true, r#"{"tenant_seq": 5, "aggregate_id": "c-1"}"#)
    );
    assert_eq!(replayed(store, tenant_id, "listed").await, first_answer);
    assert_eq!(
        first_answer["events"][1]["hash"],
        json!(appended[1].hash.to_hex())
    );
    assert_eq!(
        replayed(store, tenant_id, "partial").await,
        only_one(&partial, 5)
    );
    assert_eq!(replayed(store, tenant_id, "none").await, listing(&[], 5));
    // The same key again: refused as a replay, with the answer whole.
    let mut again = write("listed", two);
    again.events = vec![
        event("c-9", 1, json!({"n": 1})),
        event("c-9", 2, json!({"n": 2})),
    ];
    match store
        .append_command(tenant_id, again, listing)
        .await
        .unwrap_err()
    {
        AppendError::KeyReplayed(record) => {
            assert_eq!(record.outcome, first_answer);
            assert_eq!((record.first_seq, record.tenant_seq), (Some(2), 3));
        }
        other => panic!("expected a replay, got {other:?}"),
    }
}

#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    // Proves: the append-only triggers refuse every change, even one that
    // matches no row.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    store
        .append_command(
            tenant_id,
            write("k", vec![event("c-1", 1, json!({"amount": 1}))]),
            accepted(),
        )
        .await
        .unwrap();
    for statement in [
        "UPDATE events SET payload = '{\"amount\": 1000}'",
        "UPDATE events SET payload = payload WHERE false",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE idempotency_records SET status = 200",
        "DELETE FROM chain_heads",
        "UPDATE chain_heads SET last_seq = 0",
    ] {
        let error = sqlx::query(statement)
            .execute(store.pool())
            .await
            .unwrap_err();
        let database = error
            .as_database_error()
            .unwrap_or_else(|| panic!("{statement}: {error}"));
        assert_eq!(
            database.code().as_deref(),
            Some("42501"),
            "{statement}: {database}"
        );
    }
    assert_eq!(
        all_events(store, tenant_id).await[0].payload.as_str(),
        r#"{"amount": 1}"#
    );
}

#[tokio::test]
async fn a_payload_edited_behind_the_triggers_breaks_the_chain_at_its_seq() {
    // Proves: a superuser who disables the triggers and edits a payload is
    // caught by the chain check, at exactly that tenant_seq.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    for seq in 1..=5 {
        store
            .append_command(
                tenant_id,
                write(
                    &format!("k-{seq}"),
                    vec![event("c-1", seq, json!({"amount": seq}))],
                ),
                accepted(),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.check_chain(tenant_id).await.unwrap().findings, vec![]);
    let mut connection = store.pool().acquire().await.unwrap();
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "UPDATE events SET payload = '{\"amount\": 3000}' WHERE tenant_seq = 3",
        "ALTER TABLE events ENABLE TRIGGER events_append_only",
    ] {
        sqlx::query(statement)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    let findings = store.check_chain(tenant_id).await.unwrap().findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    match &findings[0] {
        ChainFinding::HashMismatch { tenant_seq, .. } => assert_eq!(*tenant_seq, 3),
        other => panic!("expected a hash mismatch, got {other}"),
    }
}

#[tokio::test]
async fn a_cross_tenant_reader_sees_every_event_once_even_when_one_commits_late() {
    // Proves: a reader following (transaction_id, global_position) while 8
    // writers append reads every event exactly once: it reads while they
    // write (the first half of their events before the second is written),
    // and one transaction that appends halfway and commits after everyone
    // else, behind later ids, is not skipped.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenants: Vec<TenantId> = {
        let mut tenants = Vec::new();
        for _ in 0..5 {
            tenants.push(tenant(&store).await);
        }
        tenants
    };

    // The reader stops once it has read as many events as were written; the
    // unique check below catches a duplicate that would make it stop early.
    // Transactions of other databases on the server hold the snapshot xmin
    // back too, so progress is only bounded, not immediate.
    let expected = 8 * 25 + 1;
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0usize);
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut cursor = GlobalCursor::START;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < expected && tokio::time::Instant::now() < deadline {
            let page = reader_store.read_all(cursor, 37).await.unwrap();
            if let Some(last) = page.last() {
                cursor = last.cursor();
            }
            seen.extend(page.into_iter().map(|event| event.event_id));
            progress.send_replace(seen.len());
            tokio::task::yield_now().await;
        }
        seen
    });
    let (go, halfway) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let tenant_id = tenants[writer % 4];
        let mut halfway = halfway.clone();
        writers.push(tokio::spawn(async move {
            for command in 0..25 {
                if command == 12 {
                    halfway.wait_for(|go| *go).await.unwrap();
                }
                store
                    .append_command(
                        tenant_id,
                        write(
                            &format!("w{writer}-{command}"),
                            vec![event(
                                &format!("w{writer}"),
                                command + 1,
                                json!({"n": command}),
                            )],
                        ),
                        accepted(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    // The reader has read the first half while the writers wait.
    read_so_far
        .wait_for(|read| *read >= 8 * 12)
        .await
        .expect("the reader stopped (60 s deadline) before reading the first half");
    assert_eq!(*read_so_far.borrow(), 8 * 12);

    // The late transaction appends now and stays open while the writers
    // write their second half and commit.
    let late_tenant = tenants[4];
    let mut late = store.pool().begin().await.unwrap();
    let head = store.chain_head(late_tenant).await.unwrap().unwrap();
    let mut late_batch = TenantBatch::new(head);
    late_batch
        .push(
            write("late", vec![event("late", 1, json!({"late": true}))]),
            accepted(),
        )
        .unwrap();
    let report = store
        .append_in_transaction(&mut late, &[late_batch])
        .await
        .unwrap();
    assert!(report.moved.is_empty());
    go.send_replace(true);
    for writer in writers {
        writer.await.unwrap();
    }
    late.commit().await.unwrap();
    let seen = reader.await.unwrap();

    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was read twice");
    let mut stored = HashSet::new();
    for tenant_id in tenants {
        stored.extend(
            all_events(&store, tenant_id)
                .await
                .into_iter()
                .map(|event| event.event_id),
        );
    }
    assert_eq!(stored.len(), expected);
    assert_eq!(unique, stored);
}

#[tokio::test]
async fn a_read_of_several_tenants_comes_back_by_tenant_then_seq_within_each_range() {
    // Proves: whatever order the ranges are asked in, the events come back
    // ordered by tenant id, then seq, each range bounded by its after and
    // until seqs and by the per-tenant limit (the order is the reader's,
    // not the statement's).
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut tenants = Vec::new();
    for name in ["one", "two", "three"] {
        let tenant_id = store.create_tenant(name).await.unwrap().tenant_id;
        for seq in 1..=4 {
            let events = vec![event("c-1", seq, json!({"amount": seq}))];
            store
                .append_command(tenant_id, write(&format!("k-{seq}"), events), accepted())
                .await
                .unwrap();
        }
        tenants.push(tenant_id);
    }
    tenants.sort();
    let [low, middle, high] = [tenants[0], tenants[1], tenants[2]];
    let ranges = [
        eventstore::TenantRange {
            tenant_id: high,
            after_seq: 0,
            until_seq: 4,
        },
        eventstore::TenantRange {
            tenant_id: low,
            after_seq: 1,
            until_seq: 3,
        },
        eventstore::TenantRange {
            tenant_id: middle,
            after_seq: 2,
            until_seq: i64::MAX,
        },
    ];
    let mut connection = store.pool().acquire().await.unwrap();
    let read = EventStore::read_tenants_on(&mut connection, &ranges, 3)
        .await
        .unwrap();
    let got: Vec<(TenantId, i64, String)> = read
        .iter()
        .map(|event| (event.tenant_id, event.tenant_seq, event.payload.to_string()))
        .collect();
    let expected: Vec<(TenantId, i64, String)> = [
        (low, 2),
        (low, 3),
        (middle, 3),
        (middle, 4),
        (high, 1),
        (high, 2),
        (high, 3),
    ]
    .into_iter()
    .map(|(tenant_id, seq)| (tenant_id, seq, format!("{{\"amount\": {seq}}}")))
    .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn canonical_json_is_exactly_the_text_postgres_gives_back_for_jsonb() {
    // Proves: the canonical form hashed at write time equals `payload::text`
    // as stored, for tricky keys, strings and numbers.
    let db = TestDatabase::new().await;
    let values = [
        json!({"b": 1, "a": 2, "aa": 3, "é": 4, "zz": {"y": [true, false, null], "x": {}}}),
        json!({"s": "quote \" backslash \\ slash / tab \t newline \n bell \u{7} del \u{7f} emoji 🦀"}),
        json!({"max": i64::MAX, "min": i64::MIN, "u": u64::MAX, "zero": 0, "neg": -1}),
        json!([[], {}, "", [[1]], {"": ""}]),
        json!("top-level string"),
        json!({"ключ": "значение", "k": "v", "日本": 1}),
    ];
    for value in values {
        let canonical = eventstore::canonical::to_canonical_string(&value).unwrap();
        let (text,): (String,) = sqlx::query_as("SELECT ($1::text)::jsonb::text")
            .bind(serde_json::to_string(&value).unwrap())
            .fetch_one(db.store().pool())
            .await
            .unwrap();
        assert_eq!(canonical, text);
    }
}

#[test]
fn a_float_has_no_canonical_form_and_cannot_become_event_data() {
    // Proves: data without a canonical form never reaches the chain: an
    // event's payload is canonical text, which a float cannot become.
    for refused in [
        JsonText::from_value(&json!({"amount": 1.5})).unwrap_err(),
        JsonText::canonical(&1.5f64).unwrap_err(),
    ] {
        assert_eq!(
            refused.to_string(),
            "floating-point number 1.5 in event data; amounts must be integers"
        );
    }
}

#[tokio::test]
async fn a_snapshot_is_loaded_with_only_the_events_after_it() {
    // Proves: loads start from the newest snapshot; an older one never
    // replaces it. Several aggregates load in one call, each with its own
    // events in sequence order (whatever their types), and one with no
    // event is absent.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    for seq in 1..=6 {
        let mut other = event("c-2", seq, json!({"amount": seq}));
        other.event_type = ["Zeroed", "Added", "Checked"][seq as usize % 3].to_string();
        store
            .append_command(
                tenant_id,
                write(
                    &format!("k{seq}"),
                    vec![event("c-1", seq, json!({"amount": seq})), other],
                ),
                accepted(),
            )
            .await
            .unwrap();
    }
    let key = AggregateKey::new("counter", "c-1");
    store
        .save_snapshot(tenant_id, &key, 3, &json!({"total": 6}))
        .await
        .unwrap();
    store
        .save_snapshot(tenant_id, &key, 2, &json!({"total": 3}))
        .await
        .unwrap();
    let other = AggregateKey::new("counter", "c-2");
    for last_sequence in [1, 2] {
        store
            .save_snapshot(
                tenant_id,
                &other,
                last_sequence,
                &json!({"at": last_sequence}),
            )
            .await
            .unwrap();
    }
    let absent = AggregateKey::new("counter", "c-3");
    let mut histories = store
        .load_histories(tenant_id, &[absent.clone(), other.clone(), key.clone()])
        .await
        .unwrap();
    let history = histories.remove(&key).unwrap();
    let snapshot = history.snapshot.clone().unwrap();
    assert_eq!(snapshot.last_sequence, 3);
    assert_eq!(snapshot.snapshot_version, 1);
    assert_eq!(snapshot.payload, json!({"total": 6}));
    let sequences = |history: &AggregateHistory| -> Vec<usize> {
        history.events.iter().map(|event| event.sequence).collect()
    };
    assert_eq!(sequences(&history), [4, 5, 6]);
    let history = histories.remove(&other).unwrap();
    let snapshot = history.snapshot.clone().unwrap();
    assert_eq!((snapshot.last_sequence, snapshot.snapshot_version), (2, 2));
    assert_eq!(snapshot.payload, json!({"at": 2}));
    // Types out of alphabetical order: the events come in sequence order.
    assert_eq!(sequences(&history), [3, 4, 5, 6]);
    let types: Vec<&str> = history
        .events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(types, ["Zeroed", "Added", "Checked", "Zeroed"]);
    assert_eq!(history.events[3].payload, json!({"amount": 6}));
    assert_eq!(history.events[3].metadata, json!({"command": "Add"}));
    assert_eq!(history.events[3].event_version, "1");
    assert!(histories.is_empty(), "{histories:?}");
}

#[tokio::test]
async fn aggregates_of_several_tenants_load_in_one_call_each_from_its_own_tenant() {
    // Proves: one load of several tenants' aggregates keeps them apart: the
    // same aggregate id in two tenants comes back as two histories, each
    // with its own snapshot and events only; one with no event is absent.
    let db = TestDatabase::new().await;
    let store = db.store();
    let first = tenant(store).await;
    let second = store.create_tenant("other").await.unwrap().tenant_id;
    for (tenant_id, amounts) in [(first, vec![1, 2, 3]), (second, vec![10])] {
        for (seq, amount) in (1..).zip(amounts) {
            let events = vec![event("c-1", seq, json!({"amount": amount}))];
            store
                .append_command(tenant_id, write(&format!("k{seq}"), events), accepted())
                .await
                .unwrap();
        }
    }
    let key = AggregateKey::new("counter", "c-1");
    store
        .save_snapshot(first, &key, 2, &json!({"total": 3}))
        .await
        .unwrap();
    let absent = AggregateKey::new("counter", "c-2");
    let mut histories = store
        .load_tenant_histories(&[(second, &key), (first, &absent), (first, &key)])
        .await
        .unwrap();
    let amounts = |history: &AggregateHistory| -> Vec<(usize, Value)> {
        history
            .events
            .iter()
            .map(|event| (event.sequence, event.payload.clone()))
            .collect()
    };
    let history = histories.remove(&(first, key.clone())).unwrap();
    assert_eq!(amounts(&history), [(3, json!({"amount": 3}))]);
    assert_eq!(history.snapshot.unwrap().payload, json!({"total": 3}));
    let history = histories.remove(&(second, key.clone())).unwrap();
    assert_eq!(history.snapshot, None);
    assert_eq!(amounts(&history), [(1, json!({"amount": 10}))]);
    assert!(histories.is_empty(), "{histories:?}");
}

/// Whether the events table has column statistics.
async fn has_statistics(store: &EventStore) -> bool {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_stats WHERE tablename = 'events'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    count > 0
}

#[tokio::test]
async fn the_events_are_analyzed_once_when_they_have_no_statistics() {
    // Proves: a table without column statistics is analyzed (the planner
    // then knows its rows), even after a VACUUM gave it a row count, and
    // one that has them is left alone.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    for seq in 1..=3 {
        let events = vec![event("c-1", seq, json!({"amount": seq}))];
        store
            .append_command(tenant_id, write(&format!("k{seq}"), events), accepted())
            .await
            .unwrap();
    }
    sqlx::query("VACUUM events")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(!has_statistics(store).await);
    assert!(store.analyze_events_once().await.unwrap());
    assert!(has_statistics(store).await);
    let (reltuples,): (f32,) =
        sqlx::query_as("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(reltuples, 3.0);
    assert!(!store.analyze_events_once().await.unwrap());
}

#[tokio::test]
async fn a_store_analyzes_the_events_once_it_has_appended_a_thousand() {
    // Proves: appends start the analysis at EVENTS_BEFORE_ANALYZE events,
    // not before.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    let below = eventstore::EVENTS_BEFORE_ANALYZE as i64 - 1;
    let events = (1..=below)
        .map(|seq| event("c-1", seq, json!({"amount": seq})))
        .collect();
    store
        .append_command(tenant_id, write("below", events), accepted())
        .await
        .unwrap();
    store.analysis_done().await;
    assert!(!has_statistics(store).await);
    let last = vec![event("c-1", below + 1, json!({"amount": 0}))];
    store
        .append_command(tenant_id, write("last", last), accepted())
        .await
        .unwrap();
    store.analysis_done().await;
    assert!(has_statistics(store).await);
}

#[tokio::test]
async fn a_tenant_is_authenticated_by_its_key_and_by_nothing_else() {
    // Proves: only the digest of the issued key authenticates, and only for
    // its own tenant.
    let db = TestDatabase::new().await;
    let store = db.store();
    let acme = store.create_tenant("acme").await.unwrap();
    let other = store.create_tenant("other").await.unwrap();
    assert_eq!(
        store.authenticate(&acme.api_key).await.unwrap(),
        Some(acme.tenant_id)
    );
    assert_eq!(
        store.authenticate(&other.api_key).await.unwrap(),
        Some(other.tenant_id)
    );
    let forged = format!(
        "lk_{}_{}",
        acme.tenant_id.as_uuid().simple(),
        &other.api_key[36..]
    );
    assert_eq!(store.authenticate(&forged).await.unwrap(), None);
    assert_eq!(store.authenticate("lk_garbage").await.unwrap(), None);
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE key_hint <> ''")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 2);
    assert!(matches!(
        store.create_tenant("  ").await,
        Err(eventstore::TenantError::InvalidName)
    ));
}

#[tokio::test]
async fn a_revoked_key_stops_authenticating_at_once_and_is_announced_by_its_id() {
    // Proves: keys are listed by id and hint only; a use is recorded at most
    // once per resolution; revoking answers the same time twice, refuses
    // another tenant's or an unknown key, stops that key only, and is
    // announced on the revocation channel with the key id.
    use eventstore::tenants::{API_KEYS_CHANNEL, API_KEYS_LISTED_MAX};
    use eventstore::{KeyId, KeyIssue, UsedKey};
    use std::time::Duration;
    let db = TestDatabase::new().await;
    let store = db.store();
    let acme = store.create_tenant("acme").await.unwrap();
    let other = store.create_tenant("other").await.unwrap();
    let KeyIssue::Issued {
        key_id: second_id,
        api_key: second_key,
    } = store
        .issue_api_key(acme.tenant_id, &IdempotencyKey::parse("rotate").unwrap())
        .await
        .unwrap()
    else {
        panic!("no key issued");
    };
    assert_eq!(
        store
            .issue_api_key(acme.tenant_id, &IdempotencyKey::parse("rotate").unwrap())
            .await
            .unwrap(),
        KeyIssue::Replayed(second_id)
    );
    let keys = store.api_keys(acme.tenant_id).await.unwrap().unwrap();
    assert_eq!(
        keys.iter().map(|key| key.key_id).collect::<Vec<_>>(),
        [second_id, acme.key_id],
        "newest first"
    );
    assert_eq!(keys[0].hint, second_key[second_key.len() - 4..]);
    assert_eq!(keys[1].hint, acme.api_key[acme.api_key.len() - 4..]);
    assert!(keys
        .iter()
        .all(|key| key.last_used_at.is_none() && key.revoked_at.is_none()));
    assert_eq!(API_KEYS_LISTED_MAX, 1_000);
    assert_eq!(
        store.api_keys(TenantId::generate()).await.unwrap(),
        None,
        "an unknown tenant has no list"
    );

    let hour = Duration::from_secs(3_600);
    let used = UsedKey {
        tenant_id: acme.tenant_id,
        key_id: acme.key_id,
    };
    assert_eq!(
        store.use_api_key(&acme.api_key, hour).await.unwrap(),
        Some(used)
    );
    let last_used = |store: EventStore| async move {
        store.api_keys(acme.tenant_id).await.unwrap().unwrap()[1].last_used_at
    };
    let first_use = last_used(store.clone()).await.unwrap();
    assert_eq!(
        store.use_api_key(&acme.api_key, hour).await.unwrap(),
        Some(used)
    );
    assert_eq!(
        last_used(store.clone()).await,
        Some(first_use),
        "a second use within the resolution writes nothing"
    );
    store
        .use_api_key(&acme.api_key, Duration::ZERO)
        .await
        .unwrap();
    assert!(last_used(store.clone()).await.unwrap() > first_use);

    let mut listener = sqlx::postgres::PgListener::connect_with(store.pool())
        .await
        .unwrap();
    listener.listen(API_KEYS_CHANNEL).await.unwrap();
    let key = IdempotencyKey::parse("revoke-1").unwrap();
    assert_eq!(
        store
            .revoke_api_key(other.tenant_id, acme.key_id, Some(&key))
            .await
            .unwrap(),
        Revocation::Unknown,
        "another tenant's key"
    );
    assert_eq!(
        store
            .revoke_api_key(acme.tenant_id, KeyId::generate(), Some(&key))
            .await
            .unwrap(),
        Revocation::Unknown,
        "an unknown key"
    );
    let Revocation::Revoked(revoked) = store
        .revoke_api_key(acme.tenant_id, acme.key_id, Some(&key))
        .await
        .unwrap()
    else {
        panic!("not revoked");
    };
    assert_eq!(revoked.key_id, acme.key_id);
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("no revocation announced within 10 s")
        .unwrap();
    assert_eq!(notification.payload(), acme.key_id.to_string());
    assert_eq!(
        store
            .revoke_api_key(acme.tenant_id, acme.key_id, None)
            .await
            .unwrap(),
        Revocation::Revoked(revoked),
        "revoking again answers the first revocation"
    );
    assert_eq!(
        store
            .revoke_api_key(acme.tenant_id, acme.key_id, Some(&key))
            .await
            .unwrap(),
        Revocation::Replayed(revoked),
        "the same key again is a replay"
    );
    assert_eq!(
        store
            .revoke_api_key(acme.tenant_id, second_id, Some(&key))
            .await
            .unwrap(),
        Revocation::KeyReused,
        "the same key naming another API key (which stays valid, below)"
    );
    assert_eq!(
        store
            .revoke_api_key(acme.tenant_id, KeyId::generate(), Some(&key))
            .await
            .unwrap(),
        Revocation::Unknown,
        "the same key naming an API key the tenant does not have"
    );
    assert_eq!(store.use_api_key(&acme.api_key, hour).await.unwrap(), None);
    assert_eq!(store.authenticate(&acme.api_key).await.unwrap(), None);
    assert_eq!(
        store.use_api_key(&second_key, hour).await.unwrap(),
        Some(UsedKey {
            tenant_id: acme.tenant_id,
            key_id: second_id,
        })
    );
    assert_eq!(
        store.use_api_key(&other.api_key, hour).await.unwrap(),
        Some(UsedKey {
            tenant_id: other.tenant_id,
            key_id: other.key_id,
        })
    );
    let keys = store.api_keys(acme.tenant_id).await.unwrap().unwrap();
    assert_eq!(keys[1].revoked_at, Some(revoked.revoked_at));
    assert_eq!(keys[0].revoked_at, None);
}

#[tokio::test]
async fn an_append_past_its_deadline_is_refused_and_a_settle_waits_for_one_in_flight() {
    // Proves: a batch whose deadline passed before it took its head is
    // reported moved and late and writes nothing, one within it is
    // appended, one on a moved head is moved but not late; and
    // `settle` waits while an append holds the tenant's append lock (a
    // transaction not committed yet), then returns.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = tenant(store).await;
    let head = store.chain_head(tenant_id).await.unwrap().unwrap();
    let batch = |key: &str, deadline: std::time::Instant| {
        let mut batch = TenantBatch::new(head).within(deadline);
        batch
            .push(write(key, vec![event(key, 1, json!({}))]), accepted())
            .unwrap();
        batch
    };
    let late = batch("late", std::time::Instant::now());
    let report = store.append(&[late]).await.unwrap();
    assert_eq!(
        (report.moved, report.late),
        (vec![tenant_id], vec![tenant_id])
    );
    assert!(all_events(store, tenant_id).await.is_empty());
    // The deadline is told once the head is held: an append within it
    // when sent, but waiting past it for the head row, is refused too.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM chain_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant_id.as_uuid())
        .execute(&mut *holder)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let (store, slow) = (
            store.clone(),
            batch(
                "slow",
                std::time::Instant::now() + Duration::from_millis(200),
            ),
        );
        async move { store.append(&[slow]).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    holder.commit().await.unwrap();
    let report = waiting.await.unwrap().unwrap();
    assert_eq!(
        (report.moved, report.late),
        (vec![tenant_id], vec![tenant_id])
    );
    assert!(all_events(store, tenant_id).await.is_empty());

    let within = batch("in-time", std::time::Instant::now() + APPEND_WITHIN);
    let mut open = store.pool().begin().await.unwrap();
    let report = store
        .append_in_transaction(&mut open, &[within])
        .await
        .unwrap();
    assert!(report.moved.is_empty() && report.late.is_empty());
    let settling = tokio::spawn({
        let store = store.clone();
        async move { store.settle(tenant_id).await }
    });
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        while !settling.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "settle returned while the append was in flight"
    );
    open.commit().await.unwrap();
    settling.await.unwrap().unwrap();
    assert_eq!(all_events(store, tenant_id).await.len(), 1);
    // A head another append moved, taken in time: moved, not late.
    let stale = batch("stale", std::time::Instant::now() + APPEND_WITHIN);
    let report = store.append(&[stale]).await.unwrap();
    assert_eq!((report.moved, report.late), (vec![tenant_id], vec![]));
}
