//! The simulation's checks at the end of a seed: the workers' last rounds
//! (nothing due left open, one commission reaction per capture, none
//! refused), and the model: every tenant's recorded requests decided again
//! by a pure in-memory model built from the same aggregates (`TenantFold`),
//! in the ledger's order, and compared with what the ledger recorded,
//! answered and projected.

use super::{register, World};
use aggregates::journal::Side;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use commands::pipeline::fold::TenantFold;
use commands::pipeline::request::AnyRequest;
use commands::pipeline::{METADATA_COMMAND, METADATA_REQUEST};
use commands::Refusal;
use eventstore::IdempotencyKey;
use serde_json::Value;
use std::collections::BTreeMap;

/// A stored request's record: key, status, outcome, the seqs of its events
/// and when it was decided.
type Record = (String, i16, Option<i64>, i64, DateTime<Utc>);

/// A stored event: type, aggregate, seq in it, payload, metadata.
type Stored = (String, String, String, i64, Value, Value);

/// What the model checked.
#[derive(Debug, Default)]
pub(super) struct Checked {
    pub(super) accepted: usize,
    pub(super) refused: usize,
    /// Accepted requests of the process managers and the scheduler.
    pub(super) reactions: usize,
    /// Keys whose first submission had no definite answer.
    pub(super) unknown: usize,
    /// Workers' requests recorded without events (refused or moot); the
    /// scheduler's among them decided by the model too.
    pub(super) quiet_reactions: usize,
    /// The scheduler's quiet requests the model decided.
    pub(super) quiet_decided: usize,
    /// Requests by kind: (accepted, refused).
    pub(super) kinds: BTreeMap<&'static str, (usize, usize)>,
    /// Submissions given up 10 s after a kill.
    pub(super) abandoned: usize,
}

/// Decides every recorded request of every tenant again in the model, in
/// the ledger's order, and compares.
pub(super) async fn check_against_model(world: &World) -> Checked {
    let mut checked = Checked {
        unknown: world.unknown,
        abandoned: world.abandoned,
        ..Checked::default()
    };
    let pool = world.store.pool();
    for (index, tenant_id) in world.tenants.iter().enumerate() {
        let records: Vec<Record> = sqlx::query_as(
            "SELECT idempotency_key, status, first_seq, tenant_seq, recorded_at \
             FROM idempotency_records WHERE tenant_id = $1 \
             ORDER BY tenant_seq, first_seq IS NULL, first_seq",
        )
        .bind(tenant_id.as_uuid())
        .fetch_all(pool)
        .await
        .unwrap();
        // The accepted requests' events tile the chain, 1 to its head: no
        // event outside a request the model decides.
        let (head,): (i64,) =
            sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1")
                .bind(tenant_id.as_uuid())
                .fetch_one(pool)
                .await
                .unwrap();
        let mut ranges: Vec<(i64, i64)> = records
            .iter()
            .filter_map(|record| record.2.map(|first| (first, record.3)))
            .collect();
        ranges.sort_unstable();
        let mut next = 1;
        for (first, last) in ranges {
            assert_eq!(first, next, "tenant {index}: events {next}.. in no request");
            next = last + 1;
        }
        assert_eq!(
            next,
            head + 1,
            "tenant {index}: events {next}.. in no request"
        );
        // Every key the script had answered is recorded, and nothing else
        // but the workers' requests.
        let recorded_keys: std::collections::BTreeSet<&str> = records
            .iter()
            .map(|record| record.0.as_str())
            .filter(|key| !key.starts_with("pm:"))
            .collect();
        let answered_keys: std::collections::BTreeSet<&str> = world
            .answered
            .keys()
            .filter(|(tenant, _)| *tenant == index)
            .map(|(_, key)| key.as_str())
            .collect();
        assert_eq!(
            recorded_keys, answered_keys,
            "tenant {index}: recorded keys"
        );
        // Each answer as the store replays it (an accepted one gets its
        // list of events back from the chain).
        let keys: Vec<(TenantId, IdempotencyKey)> = records
            .iter()
            .map(|record| (*tenant_id, IdempotencyKey::parse(&record.0).unwrap()))
            .collect();
        let mut answers: BTreeMap<String, Value> = world
            .store
            .idempotency_records(&keys)
            .await
            .unwrap()
            .into_iter()
            .map(|record| (record.key.to_string(), record.outcome))
            .collect();
        let mut fold = TenantFold::new(*tenant_id, false);
        let mut balances: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for (key, status, first_seq, last_seq, decided_at) in records {
            let outcome = answers.remove(&key).unwrap();
            let slot = (index, key.clone());
            if let Some(answer) = world.answered.get(&slot) {
                assert_eq!(i64::from(status), i64::from(answer.status), "{key}");
                assert_eq!(
                    &outcome,
                    answer.body.as_ref(),
                    "{key}: the answer is not the record"
                );
            }
            let stored: Vec<Stored> = match first_seq {
                Some(first) => sqlx::query_as(
                    "SELECT event_type, aggregate_type, aggregate_id, aggregate_seq, payload, metadata \
                     FROM events WHERE tenant_id = $1 AND tenant_seq BETWEEN $2 AND $3 \
                     ORDER BY tenant_seq",
                )
                .bind(tenant_id.as_uuid())
                .bind(first)
                .bind(last_seq)
                .fetch_all(pool)
                .await
                .unwrap(),
                None => Vec::new(),
            };
            let request = match world.sent.get(&slot) {
                Some(op) => op.boxed(),
                None => match stored.first() {
                    // A process manager's or the scheduler's: as recorded.
                    Some(first) => recorded(&first.5),
                    None => {
                        // A worker's request that appended nothing (refused
                        // or moot): the scheduler's, as it is scheduled;
                        // a process manager's body is not recorded (and
                        // none is refused, `settle` checks), so counted.
                        assert!(key.starts_with("pm:"), "{key}: a record nobody sent");
                        checked.quiet_reactions += 1;
                        match scheduled(pool, *tenant_id, &key).await {
                            Some(request) => {
                                checked.quiet_decided += 1;
                                request
                            }
                            None => continue,
                        }
                    }
                },
            };
            let body = request.body().unwrap();
            let at = if stored.is_empty() {
                decided_at
            } else {
                let (at,): (DateTime<Utc>,) = sqlx::query_as(
                    "SELECT recorded_at FROM events WHERE tenant_id = $1 AND tenant_seq = $2",
                )
                .bind(tenant_id.as_uuid())
                .bind(first_seq.unwrap())
                .fetch_one(pool)
                .await
                .unwrap();
                at
            };
            let key_parsed = IdempotencyKey::parse(&key).unwrap();
            let decided = fold.decide(
                (request.as_ref(), &body),
                &key_parsed,
                at,
                aggregates::rules::Rules::CURRENT,
            );
            let accepted = match &decided.decision {
                Ok(reply) => {
                    assert!(
                        status < 300,
                        "{key}: the model accepts, the ledger refused: {outcome}"
                    );
                    assert_eq!(i64::from(status), i64::from(reply.status), "{key}");
                    for (field, value) in reply.body.as_object().unwrap() {
                        assert_eq!(&outcome[field], value, "{key}: {field}");
                    }
                    let model: Vec<_> = decided.events().collect();
                    assert_eq!(model.len(), stored.len(), "{key}: events");
                    for (mine, theirs) in model.iter().zip(&stored) {
                        let payload = mine.payload.to_value().unwrap();
                        let metadata = mine.metadata.to_value().unwrap();
                        let mine = (
                            &mine.event_type,
                            &mine.aggregate_type,
                            &mine.aggregate_id,
                            mine.aggregate_seq,
                        );
                        assert_eq!(mine, (&theirs.0, &theirs.1, &theirs.2, theirs.3), "{key}");
                        assert_eq!((&payload, &metadata), (&theirs.4, &theirs.5), "{key}");
                    }
                    true
                }
                Err(Refusal::Rejected { code, .. }) => {
                    assert!(
                        status >= 400,
                        "{key}: the model refuses ({code}), the ledger accepted"
                    );
                    assert_eq!(
                        outcome["error"]["code"],
                        Value::from(code.as_str()),
                        "{key}"
                    );
                    false
                }
                Err(other) => panic!("{key}: the model cannot decide: {other:?}"),
            };
            let kind = checked.kinds.entry(request.kind()).or_default();
            if accepted {
                kind.0 += 1;
            } else {
                kind.1 += 1;
            }
            if !accepted {
                checked.refused += 1;
            } else if key.starts_with("pm:") {
                checked.reactions += 1;
            } else {
                checked.accepted += 1;
            }
            if accepted {
                for entry in fold.commit(decided, None) {
                    for posting in entry.postings() {
                        let slot = (
                            posting.account.code.clone(),
                            posting.asset.code().to_string(),
                        );
                        let sums = balances.entry(slot).or_default();
                        match posting.side {
                            Side::Debit => sums.0 += posting.amount.value(),
                            Side::Credit => sums.1 += posting.amount.value(),
                        }
                    }
                }
            }
        }
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT account, asset, debits::bigint, credits::bigint \
             FROM account_balances WHERE tenant_id = $1",
        )
        .bind(tenant_id.as_uuid())
        .fetch_all(pool)
        .await
        .unwrap();
        let tables: BTreeMap<(String, String), (i64, i64)> = rows
            .into_iter()
            .filter(|row| row.2 != 0 || row.3 != 0)
            .map(|(code, asset, debits, credits)| {
                let asset = asset.split('/').next().unwrap_or_default().to_string();
                ((code, asset), (debits, credits))
            })
            .collect();
        balances.retain(|_, sums| *sums != (0, 0));
        assert_eq!(tables, balances, "tenant {index}: journal balances");
    }
    checked
}

/// The request the scheduler submits under `key`, as its work is
/// scheduled (`None` when no work of the tenant has the key now).
async fn scheduled(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    key: &str,
) -> Option<Box<dyn AnyRequest>> {
    let (kind, request): (String, Value) = sqlx::query_as(
        "SELECT request_kind, request FROM scheduled_work \
         WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant_id.as_uuid())
    .bind(key)
    .fetch_optional(pool)
    .await
    .unwrap()?;
    Some(
        replay::state::registry()
            .request(&kind)
            .unwrap()
            .decode(&request)
            .unwrap(),
    )
}

/// The request an event's metadata records.
fn recorded(metadata: &Value) -> Box<dyn AnyRequest> {
    let kind = metadata[METADATA_COMMAND].as_str().unwrap();
    replay::state::registry()
        .request(kind)
        .unwrap()
        .decode(&metadata[METADATA_REQUEST])
        .unwrap()
}

/// The workers' last rounds, none of them allowed to fail: ticks and
/// reactions until they append nothing more, the read tables caught up;
/// then nothing due is left open and every capture had its reaction.
/// Returns how many captures there were and how many commissions the
/// reactions accrued.
pub(super) async fn settle(world: &World) -> (i64, i64) {
    let pool = world.store.pool().clone();
    let catalog = commands::domains::projections();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    let head = || async {
        let (head,): (i64,) =
            sqlx::query_as("SELECT coalesce(sum(last_seq), 0)::bigint FROM chain_heads")
                .fetch_one(&pool)
                .await
                .unwrap();
        head
    };
    let (ticker, reactors) = world.workers();
    register(&pool, &reactors).await.unwrap();
    for round in 0.. {
        assert!(round < 20, "the workers never settled");
        let before = head().await;
        projections::runtime::catch_up_all(&pool, &all, None, 500)
            .await
            .unwrap();
        let ticked = ticker.tick().await.unwrap();
        assert_eq!(ticked.failed, 0, "{ticked:?}");
        for reactor in &reactors {
            projections::reactor::react_catch_up(&pool, reactor.as_ref())
                .await
                .unwrap();
        }
        if head().await == before {
            break;
        }
    }
    projections::runtime::catch_up_all(&pool, &all, None, 500)
        .await
        .unwrap();
    let now = world.now();
    let (open,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM scheduled_work WHERE settled_seq IS NULL AND due_at <= $1",
    )
    .bind(now)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "work due by {now} left open");
    // Every payment here is attributed to a rep: each capture gets one
    // reaction of the commissions process manager, under a key naming it
    // (`pm:commissions:<event id>:<n>`), and no reaction names an event it
    // does not react to (what refunds and lost disputes owe, `verify`
    // checks).
    let (captures, reacted, strangers): (i64, i64, i64) = sqlx::query_as(
        "WITH reactive AS ( \
             SELECT tenant_id, event_id::text AS event_id, event_type FROM events \
             WHERE aggregate_type = 'payment' \
               AND event_type IN ('Captured', 'Refunded', 'RefundFailed', 'DisputeClosed') \
         ), reactions AS ( \
             SELECT tenant_id, split_part(idempotency_key, ':', 3) AS event_id FROM idempotency_records \
             WHERE idempotency_key LIKE 'pm:commissions:%' \
         ) \
         SELECT (SELECT count(*) FROM reactive WHERE event_type = 'Captured'), \
                (SELECT count(*) FROM reactive c JOIN reactions r USING (tenant_id, event_id) \
                 WHERE c.event_type = 'Captured'), \
                (SELECT count(*) FROM reactions r LEFT JOIN reactive c USING (tenant_id, event_id) \
                 WHERE c.event_id IS NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (reacted, strangers),
        (captures, 0),
        "one commission reaction per capture"
    );
    // Every reaction accepted: each made from its event as the payment
    // holds it (rules 7), for a payee created before the payment (rules 8).
    let refused: Vec<(String, Option<Value>)> = sqlx::query_as(
        "SELECT idempotency_key, outcome FROM idempotency_records \
         WHERE idempotency_key LIKE 'pm:commissions:%' AND status >= 300",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(refused, [], "commission reactions refused");
    let (commissions,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM idempotency_records r JOIN events e \
           ON e.tenant_id = r.tenant_id AND e.event_type = 'Captured' \
          AND e.event_id::text = split_part(r.idempotency_key, ':', 3) \
         WHERE r.idempotency_key LIKE 'pm:commissions:%' AND r.status BETWEEN 200 AND 299",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    (captures, commissions)
}
