//! Auditors' checks against a real PostgreSQL: a clean ledger verifies;
//! tampering behind the triggers is caught with tenant and seq, after the
//! read tables have caught up, and every finding is reported; a history the
//! domain would not have decided is caught even when its chain was
//! recomputed; replays as of any point equal the state a fresh tenant
//! reaches with the same commands, and refuse a broken chain; exports verify
//! and replay offline, and one changed byte is named by line.

use aggregates::plan::PlanCatalog;
use aggregates::quota::{GrantSource, QuotaType};
use aggregates::subscription::CancelAt;
use aggregates::{Amount, GrantId, TenantId};
use chrono::{DateTime, Months, TimeZone, Utc};
use commands::pipeline::Clock;
use commands::requests::quota::{ChangeSeats, ConsumeQuota, IssueGrant, RevokeGrant};
use commands::requests::subscription::{
    CancelSubscription, ChangePlan, RenewSubscription, Subscribe,
};
use commands::{BusConfig, CommandBus, Metrics, Outcome, Request};
use eventstore::testing::TestDatabase;
use eventstore::{ChainFinding, ChainHash, EventStore, IdempotencyKey, GENESIS};
use projections::compare::ReplayFailure;
use replay::as_of::{replay_tenant, AsOf};
use replay::export::{export, replay_file, verify_file};
use replay::source::{page, AuditEvent};
use replay::state::ReplayFinding;
use replay::verify::{verify_database, Finding, VerifyError, VerifyReport};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[path = "audit/compensation.rs"]
mod compensation;
#[path = "audit/escrow.rs"]
mod escrow;
#[path = "audit/owed.rs"]
mod owed;
#[path = "audit/redecision.rs"]
mod redecision;
#[path = "audit/simulation.rs"]
mod simulation;
#[path = "audit/stuck.rs"]
mod stuck;

struct Ledger {
    db: TestDatabase,
    bus: CommandBus,
    tenants: Vec<TenantId>,
    /// The time the pipeline stamps; the system clock while `None`.
    now: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl Ledger {
    async fn new() -> Self {
        Self::under(aggregates::rules::Rules::CURRENT).await
    }

    /// A ledger whose pipeline decides under `rules`.
    async fn under(rules: aggregates::rules::Rules) -> Self {
        let db = TestDatabase::new().await;
        let now: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
        let reading = now.clone();
        let clock = Clock::from_fn(move || {
            // A test never panics while holding the lock.
            reading.lock().unwrap().unwrap_or_else(Utc::now)
        });
        let bus = CommandBus::start(
            db.store().clone(),
            BusConfig {
                clock,
                rules,
                ..BusConfig::default()
            },
            Arc::new(Metrics::default()),
        );
        let mut ledger = Self {
            db,
            bus,
            tenants: Vec::new(),
            now,
        };
        for name in ["acme", "beta"] {
            ledger.add_tenant(name).await;
        }
        ledger
    }

    async fn add_tenant(&mut self, name: &str) -> usize {
        let tenant = self.store().create_tenant(name).await.unwrap().tenant_id;
        self.tenants.push(tenant);
        self.tenants.len() - 1
    }

    fn store(&self) -> &EventStore {
        self.db.store()
    }

    /// Commands from now on are stamped `now`.
    fn set_clock(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap() = Some(now);
    }

    async fn run<R: Request>(&self, tenant: usize, key: &str, request: R) -> Outcome {
        let outcome = self
            .bus
            .execute(
                self.tenants[tenant],
                IdempotencyKey::parse(key).unwrap(),
                request,
            )
            .await
            .unwrap();
        assert!(outcome.accepted(), "{key}: {}", outcome.body);
        outcome
    }

    /// The scenario: for each tenant, subscribe to hobby_v3, buy 300
    /// credits, consume 400, 500 and 250, change to team_v4, consume 1,000
    /// (16 events a tenant). Returns each command's outcome for tenant 0.
    ///
    /// Tenant 0's events: 1 Subscribed; 2, 3, 4 the plan's seats, runs and
    /// credits grants (credits: S, 1,000); 5 the purchase P (300, priority
    /// 80); 6 S:400; 7 S:500; 8 S:100 + P:150; 9 PlanChanged; then, quota by
    /// quota, hobby_v3's grant revoked and team_v4's issued: 10, 11 seats;
    /// 12, 13 runs; 14 S revoked (no breakage), 15 S2 issued (19,000:
    /// team_v4's 20,000 less the 1,000 the period consumed); 16 S2:1,000.
    async fn scenario(&self) -> Vec<Outcome> {
        let plans = PlanCatalog::builtin();
        let mut outcomes = Vec::new();
        for tenant in 0..2 {
            let mut record = |outcome: Outcome| {
                if tenant == 0 {
                    outcomes.push(outcome);
                }
            };
            record(
                self.run(
                    tenant,
                    "sub",
                    Subscribe {
                        plan: plans.get("hobby_v3").unwrap().clone(),
                        trial_ends_at: None,
                    },
                )
                .await,
            );
            record(self.run(tenant, "buy", purchase(300, 80)).await);
            for (index, amount) in [400, 500, 250].into_iter().enumerate() {
                record(
                    self.run(tenant, &format!("use-{index}"), consume(amount))
                        .await,
                );
            }
            record(
                self.run(
                    tenant,
                    "upgrade",
                    ChangePlan {
                        plan: plans.get("team_v4").unwrap().clone(),
                    },
                )
                .await,
            );
            record(self.run(tenant, "use-after", consume(1_000)).await);
        }
        outcomes
    }

    /// Drives every projection's catch-up (the workers' own step) until the
    /// read tables hold every event.
    async fn catch_up(&self) {
        for projection in commands::domains::projections() {
            projections::rebuild::catch_up_live(self.store().pool(), projection.as_ref())
                .await
                .unwrap();
        }
    }

    async fn verify(&self) -> VerifyReport {
        verify_database(self.store(), None, &commands::domains::projections(), true)
            .await
            .unwrap()
    }

    /// Rewrites the rules recorded by the request whose first event is at
    /// `seq` to `version`, and recomputes the tenant's chain: a forger's
    /// consistent rewrite.
    async fn rewrite_rules(&self, tenant: usize, seq: i64, version: u32) {
        let tenant_id = self.tenants[tenant];
        self.tamper(&[format!(
            "UPDATE events SET metadata = jsonb_set(metadata, '{{rules}}', '{version}') \
             WHERE tenant_id = '{tenant_id}' AND tenant_seq = {seq}"
        )])
        .await;
        self.rechain(tenant).await;
    }

    /// Runs `statements` as a superuser with the append-only trigger off.
    async fn tamper(&self, statements: &[String]) {
        let mut connection = self.store().pool().acquire().await.unwrap();
        sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
        for statement in statements {
            sqlx::query(statement)
                .execute(&mut *connection)
                .await
                .unwrap();
        }
        sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
    }

    /// Every event of a tenant, as an audit reads them.
    async fn events(&self, tenant: usize) -> Vec<AuditEvent> {
        let mut connection = self.store().pool().acquire().await.unwrap();
        page(&mut connection, self.tenants[tenant], 0, i64::MAX)
            .await
            .unwrap()
    }

    async fn event(&self, tenant: usize, seq: i64) -> AuditEvent {
        self.events(tenant)
            .await
            .into_iter()
            .find(|event| event.tenant_seq == seq)
            .unwrap()
    }

    /// Rewrites one event's payload (and, when given, event_type) as a
    /// superuser, behind the trigger.
    async fn edit_payload(
        &self,
        tenant: usize,
        seq: i64,
        event_type: Option<&str>,
        edit: impl FnOnce(&mut Value),
    ) {
        let mut payload: Value =
            serde_json::from_str(&self.event(tenant, seq).await.payload).unwrap();
        edit(&mut payload);
        let mut connection = self.store().pool().acquire().await.unwrap();
        sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE events SET payload = $3, event_type = coalesce($4, event_type) \
             WHERE tenant_id = $1 AND tenant_seq = $2",
        )
        .bind(self.tenants[tenant].as_uuid())
        .bind(seq)
        .bind(&payload)
        .bind(event_type)
        .execute(&mut *connection)
        .await
        .unwrap();
        sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
    }

    /// What a careful forger does after editing: recomputes every hash of
    /// the tenant's chain from the stored columns and moves the head to the
    /// new last hash, so that the chain verifies again.
    async fn rechain(&self, tenant: usize) {
        let events = self.events(tenant).await;
        let mut connection = self.store().pool().acquire().await.unwrap();
        sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
        let mut prev = GENESIS;
        for event in &events {
            let hash = event.fields().hash(&prev);
            sqlx::query(
                "UPDATE events SET prev_hash = $3, hash = $4 WHERE tenant_id = $1 AND tenant_seq = $2",
            )
            .bind(self.tenants[tenant].as_uuid())
            .bind(event.tenant_seq)
            .bind(prev.0.to_vec())
            .bind(hash.0.to_vec())
            .execute(&mut *connection)
            .await
            .unwrap();
            prev = hash;
        }
        sqlx::query("UPDATE chain_heads SET last_hash = $2 WHERE tenant_id = $1")
            .bind(self.tenants[tenant].as_uuid())
            .bind(prev.0.to_vec())
            .execute(&mut *connection)
            .await
            .unwrap();
        sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
            .execute(&mut *connection)
            .await
            .unwrap();
    }

    async fn try_replay(&self, tenant: usize, as_of: AsOf) -> Result<Value, VerifyError> {
        let mut connection = self.store().pool().acquire().await.unwrap();
        replay_tenant(&mut connection, self.tenants[tenant], as_of).await
    }

    async fn replay(&self, tenant: usize, as_of: AsOf) -> Value {
        self.try_replay(tenant, as_of).await.unwrap()
    }
}

fn consume(amount: i64) -> ConsumeQuota {
    ConsumeQuota {
        quota: QuotaType::Credits,
        account: None,
        amount: Amount::new(amount).unwrap(),
        reference: None,
    }
}

fn purchase(amount: i64, priority: u8) -> IssueGrant {
    IssueGrant {
        quota: QuotaType::Credits,
        account: None,
        source: GrantSource::Purchase,
        amount: Some(Amount::new(amount).unwrap()),
        priority,
        effective_at: None,
        expires_at: None,
    }
}

/// The grant of `quota` a subscription outcome issued.
fn plan_grant(outcome: &Outcome, quota: &str) -> String {
    outcome.body["grants_issued"]
        .as_array()
        .unwrap()
        .iter()
        .find(|grant| grant["quota"] == quota)
        .unwrap()["grant_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The credits grant a subscription outcome issued.
fn credits_grant(outcome: &Outcome) -> String {
    plan_grant(outcome, "credits")
}

/// The findings of one tenant; asserts every other tenant is clean.
fn findings_of(report: &VerifyReport, tenant_id: TenantId) -> Vec<Finding> {
    for tenant in &report.tenants {
        if tenant.tenant_id != tenant_id {
            assert_eq!(
                tenant.findings,
                vec![],
                "tenant {} should be clean",
                tenant.tenant_id
            );
        }
    }
    report
        .tenants
        .iter()
        .find(|tenant| tenant.tenant_id == tenant_id)
        .unwrap()
        .findings
        .clone()
}

/// The first of `findings`, which must be a replay finding of the database
/// at `tenant_seq` on `aggregate_type`/`aggregate_id`.
fn first_replay_at<'a>(
    findings: &'a [Finding],
    tenant_seq: i64,
    aggregate_type: &str,
    aggregate_id: &str,
) -> &'a ReplayFinding {
    let Some(Finding::Replay {
        finding,
        line: None,
    }) = findings.first()
    else {
        panic!("{findings:?}");
    };
    assert_eq!(
        (
            finding.tenant_seq,
            finding.aggregate_type.as_str(),
            finding.aggregate_id.as_str()
        ),
        (tenant_seq, aggregate_type, aggregate_id),
        "{findings:?}"
    );
    finding
}

fn chain(tenant_seq: i64, finding: ChainFinding) -> Finding {
    Finding::Chain {
        tenant_seq,
        finding,
        line: None,
    }
}

fn domain(tenant_seq: i64, aggregate: &str, message: &str) -> Finding {
    let (aggregate_type, aggregate_id) = match aggregate {
        "subscription" => ("subscription", "subscription"),
        quota => ("quota", quota),
    };
    Finding::Replay {
        finding: ReplayFinding {
            tenant_seq,
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            message: message.to_string(),
        },
        line: None,
    }
}

/// Each projection's replay failures.
fn failures(report: &VerifyReport) -> Vec<(String, Vec<ReplayFailure>)> {
    report
        .projections
        .iter()
        .map(|projection| (projection.projection.clone(), projection.failures.clone()))
        .collect()
}

/// The same failure for every projection named.
fn failing(
    names: &[&str],
    tenant_id: TenantId,
    tenant_seq: i64,
    message: &str,
) -> Vec<(String, Vec<ReplayFailure>)> {
    [
        "stream_index",
        "subscriptions",
        "quota",
        "accounts",
        "payments",
        "escrow",
        "compensation",
        "journal",
        "scheduled_work",
    ]
    .iter()
    .map(|name| {
        let failures = if names.contains(name) {
            vec![ReplayFailure {
                tenant_id,
                tenant_seq,
                message: message.to_string(),
            }]
        } else {
            vec![]
        };
        (name.to_string(), failures)
    })
    .collect()
}

fn no_differences(report: &VerifyReport) {
    for projection in &report.projections {
        assert_eq!(
            projection.differences,
            vec![],
            "projection {}",
            projection.projection
        );
    }
}

/// The hash a tenant's events have at `seq`.
async fn hash_at(ledger: &Ledger, tenant: usize, seq: i64) -> ChainHash {
    ledger.event(tenant, seq).await.hash
}

/// Relations outside temporary schemas (what a verify must not add to).
async fn lasting_relations(store: &EventStore) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relpersistence <> 't' AND n.nspname NOT LIKE 'pg\\_%' \
           AND n.nspname <> 'information_schema' ORDER BY 1, 2",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_clean_ledger_verifies_and_every_projection_equals_a_replay() {
    // Proves: nothing is found on an untouched ledger with its read tables
    // caught up; the report counts every event, names each tenant's head,
    // and verify leaves no table or schema behind.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let before = lasting_relations(ledger.store()).await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    assert_eq!(report.events, 2 * 16);
    let head = ledger
        .store()
        .chain_head(ledger.tenants[0])
        .await
        .unwrap()
        .unwrap();
    let verdict = report
        .tenants
        .iter()
        .find(|tenant| tenant.tenant_id == ledger.tenants[0])
        .unwrap();
    assert_eq!((verdict.head_seq, verdict.head_hash), (16, head.hash));
    assert_eq!(report.projections.len(), 9);
    assert!(report
        .projections
        .iter()
        .all(|projection| { projection.differences.is_empty() && projection.failures.is_empty() }));
    assert_eq!(lasting_relations(ledger.store()).await, before);
}

/// The scenario with tenant 0's event at seq 7 (its consumption of 500)
/// changed behind the triggers by `set` (an UPDATE's SET list), read tables
/// caught up before: the ledger, its report, and tenant 0's findings (the
/// other tenant clean), the first of which is asserted to be the hash that
/// no longer matches there.
async fn event_7_set(set: &str) -> (Ledger, VerifyReport, Vec<Finding>) {
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "UPDATE events SET {set} WHERE tenant_id = '{tenant}' AND tenant_seq = 7"
        )])
        .await;
    let report = ledger.verify().await;
    assert!(!report.ok);
    let findings = findings_of(&report, tenant);
    assert!(
        matches!(
            &findings[0],
            Finding::Chain {
                tenant_seq: 7,
                finding: ChainFinding::HashMismatch { tenant_seq: 7, .. },
                line: None
            }
        ),
        "{findings:?}"
    );
    (ledger, report, findings)
}

#[tokio::test]
async fn an_edited_payload_is_found_at_its_tenant_and_seq() {
    // Proves: with the read tables caught up, a consumption's amount edited
    // behind the triggers breaks the chain at that event, re-deciding its
    // recorded request names the amount (edited, then decided) at that seq
    // alone, and the read tables built from the original differ from a
    // replay of the edited history.
    let (ledger, report, findings) =
        event_7_set("payload = jsonb_set(payload, '{QuotaConsumed,amount}', '1')").await;
    let tenant = ledger.tenants[0];
    // The recorded request consumed 500: the domain decides 500 where the
    // event says 1, and goes on from its decision (the rest agrees).
    assert_eq!(
        findings[1..],
        [domain(7, "credits", "amount 1 where the quota decides 500")]
    );
    assert_eq!(failures(&report), failing(&[], tenant, 0, ""));
    // The read tables applied 500 where a replay of the edited event
    // applies 1: credits consumed in all differ by 499.
    let differences: Vec<(String, String, Value, Value, Value)> = report
        .projections
        .iter()
        .flat_map(|projection| {
            projection.differences.iter().map(|difference| {
                (
                    projection.projection.clone(),
                    difference.table.clone(),
                    difference.key.clone(),
                    difference.live.as_ref().unwrap()["consumed"].clone(),
                    difference.replay.as_ref().unwrap()["consumed"].clone(),
                )
            })
        })
        .collect();
    assert_eq!(
        differences,
        vec![(
            "quota".into(),
            "quota_totals".into(),
            json!({"tenant_id": tenant, "quota": "credits", "account": ""}),
            json!(2150),
            json!(1651)
        )]
    );
}

#[tokio::test]
async fn an_event_deleted_in_the_middle_is_reported_and_verify_goes_on() {
    // Proves: with the read tables caught up, a missing event is a hole at
    // its seq; the next event no longer chains; the domain notes the
    // aggregate sequence skipped and the breakage the lost consumption
    // leaves, and the plan change's credits grant that the lost
    // consumption would have sized (100 fewer consumed in the period, so
    // 19,100 of team_v4's 20,000 where 19,000 was issued); every projection
    // names the tenant and seq it cannot replay and the other tenant is
    // still compared (verify reports, never aborts).
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let s = credits_grant(&outcomes[0]);
    let s2 = credits_grant(&outcomes[5]);
    let issued: Value = serde_json::from_str(&ledger.event(0, 15).await.payload).unwrap();
    let stored_terms = issued["GrantIssued"]["terms"].clone();
    assert_eq!(stored_terms["amount"], 19_000);
    let mut decided_terms = stored_terms.clone();
    decided_terms["amount"] = json!(19_100);
    let hash_7 = hash_at(&ledger, 0, 7).await;
    let hash_8 = hash_at(&ledger, 0, 8).await;
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 8"
        )])
        .await;
    // The other tenant's read tables are still compared: an edited row of
    // theirs is found.
    let beta = ledger.tenants[1];
    let (beta_purchase,): (uuid::Uuid,) = sqlx::query_as(
        "UPDATE grants SET used = used + 1 WHERE tenant_id = $1 AND source = 'purchase' RETURNING grant_id",
    )
    .bind(beta.as_uuid())
    .fetch_one(ledger.store().pool())
    .await
    .unwrap();
    let report = ledger.verify().await;
    assert!(!report.ok);
    assert_eq!(
        findings_of(&report, tenant),
        vec![
            chain(
                8,
                ChainFinding::Gap {
                    expected_seq: 8,
                    found_seq: 9
                }
            ),
            chain(
                9,
                ChainFinding::PrevHashMismatch {
                    tenant_seq: 9,
                    stored: hash_8,
                    expected: hash_7
                }
            ),
            domain(
                14,
                "credits",
                &format!(
                    "aggregate_seq 6 where 5 was next; breakage 0 where the quota decides 100; \
                     entry none where the quota decides [debit grant:{s} 100 CREDITS/0, credit quota_breakage:credits 100 CREDITS/0]"
                )
            ),
            domain(
                15,
                "credits",
                &format!(
                    "entry [debit quota_issued:credits 19000 CREDITS/0, credit grant:{s2} 19000 CREDITS/0] \
                     where the quota decides [debit quota_issued:credits 19100 CREDITS/0, credit grant:{s2} 19100 CREDITS/0]; \
                     terms {stored_terms} where the quota decides {decided_terms}"
                )
            ),
        ]
    );
    assert_eq!(
        failures(&report),
        failing(
            &[
                "stream_index",
                "subscriptions",
                "quota",
                "accounts",
                "payments",
                "escrow",
                "compensation",
                "journal",
                "scheduled_work"
            ],
            tenant,
            8,
            "tenant_seq 8 is missing: the next event is tenant_seq 9"
        )
    );
    let differences: Vec<(String, String, Value)> = report
        .projections
        .iter()
        .flat_map(|projection| {
            projection.differences.iter().map(|difference| {
                (
                    projection.projection.clone(),
                    difference.table.clone(),
                    difference.key.clone(),
                )
            })
        })
        .collect();
    assert_eq!(
        differences,
        vec![(
            "quota".to_string(),
            "grants".to_string(),
            json!({"tenant_id": beta, "grant_id": beta_purchase})
        )]
    );
    assert_eq!(report.tenants.len(), 2);
    assert_eq!(report.events, 31);
}

#[tokio::test]
async fn the_last_event_deleted_is_found_by_the_head_and_the_read_tables() {
    // Proves: deleting the newest event leaves a chain that verifies on its
    // own, but not against the chain head row, and the read tables (which
    // applied it) name the seq no replay can reach.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let head = ledger.store().chain_head(tenant).await.unwrap().unwrap();
    let hash_15 = hash_at(&ledger, 0, 15).await;
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 16"
        )])
        .await;
    let report = ledger.verify().await;
    assert!(!report.ok);
    assert_eq!(
        findings_of(&report, tenant),
        vec![chain(
            16,
            ChainFinding::HeadMismatch {
                head_seq: 16,
                head_hash: head.hash,
                last_seq: 15,
                last_hash: hash_15
            }
        )]
    );
    assert_eq!(
        failures(&report),
        failing(
            &[
                "stream_index",
                "subscriptions",
                "quota",
                "accounts",
                "payments",
                "escrow",
                "compensation",
                "journal",
                "scheduled_work"
            ],
            tenant,
            16,
            "tenant_seq 16 is missing: the live tables have applied events up to tenant_seq 16"
        )
    );
    no_differences(&report);
}

#[tokio::test]
async fn a_chain_head_moved_forward_in_time_is_found() {
    // Proves: a chain head row whose seq and hash are the last event's but
    // whose time is not (moved 90 days on: every later request would be
    // stamped after it) is one finding at the head's seq, naming both
    // times; the other tenant is clean (`findings_of` checks).
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let last = ledger.events(0).await.pop().unwrap();
    let (moved,): (chrono::DateTime<Utc>,) = sqlx::query_as(
        "UPDATE chain_heads SET last_recorded_at = last_recorded_at + interval '90 days' \
         WHERE tenant_id = $1 RETURNING last_recorded_at",
    )
    .bind(tenant.as_uuid())
    .fetch_one(ledger.store().pool())
    .await
    .unwrap();
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![chain(
            last.tenant_seq,
            ChainFinding::HeadTimeMismatch {
                head_seq: last.tenant_seq,
                head_recorded_at: Some(moved),
                last_recorded_at: Some(last.recorded_at),
            }
        )]
    );
    assert!(!report.ok);
}

#[tokio::test]
async fn a_snapshot_that_is_not_its_events_fold_is_found() {
    // Proves: a snapshot taken as the pipeline takes it (the state its
    // events fold to) verifies clean; one edited (a field the state does not
    // hold) is a finding at the aggregate's last event before it, naming
    // the field both ways; one taken after an event the aggregate never
    // reached is one at the tenant's last event.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let store = ledger.store();
    let key = eventstore::AggregateKey::new("quota", "credits");
    let quota: aggregates::quota::Quota =
        commands::pipeline::load::current_one(store, tenant, "credits")
            .await
            .unwrap();
    let events = ledger.events(0).await;
    let last = events
        .iter()
        .rfind(|event| event.aggregate_type == "quota" && event.aggregate_id == "credits")
        .unwrap();
    let payload = serde_json::to_value(&quota).unwrap();
    assert_eq!(payload["unbacked"], json!(0));
    store
        .save_snapshot(tenant, &key, last.aggregate_seq, &payload)
        .await
        .unwrap();
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    let edit = |statement: &str| {
        let statement =
            format!("{statement} WHERE tenant_id = '{tenant}' AND aggregate_id = 'credits'");
        async move {
            sqlx::query(&statement).execute(store.pool()).await.unwrap();
        }
    };
    edit("UPDATE snapshots SET payload = jsonb_set(payload, '{unbacked}', '7')").await;
    let finding = |tenant_seq: i64, message: String| Finding::Replay {
        finding: ReplayFinding {
            tenant_seq,
            aggregate_type: "quota".into(),
            aggregate_id: "credits".into(),
            message,
        },
        line: None,
    };
    assert_eq!(
        findings_of(&ledger.verify().await, tenant),
        vec![finding(
            last.tenant_seq,
            format!(
                "the snapshot taken after its event {} restores to another state than its \
                 events fold to (the pipeline loads it in their place; deleted, it folds the \
                 events): unbacked 7 where the events give 0",
                last.aggregate_seq
            )
        )]
    );
    edit(
        "UPDATE snapshots SET payload = jsonb_set(payload, '{unbacked}', '0'), \
          last_sequence = last_sequence + 5",
    )
    .await;
    assert_eq!(
        findings_of(&ledger.verify().await, tenant),
        vec![finding(
            events.last().unwrap().tenant_seq,
            format!(
                "a snapshot is taken after its event {}, which no request of it ended at \
                 (its events reach {})",
                last.aggregate_seq + 5,
                last.aggregate_seq
            )
        )]
    );
}

#[tokio::test]
async fn two_events_swapped_are_found_at_their_seqs() {
    // Proves: with the read tables caught up, reordering history changes
    // what each position hashes to and chains from; the two grants belong
    // to one subscribe, whose decision issues runs before credits, so the
    // request's events differ from it at both seqs; the read tables that
    // keep seqs (a grant's issue seq, journal entries) differ from a replay
    // at those two seqs.
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let events = ledger.events(0).await;
    let (hash_2, hash_3, hash_4) = (events[1].hash, events[2].hash, events[3].hash);
    let at = |seq: i64| format!("tenant_id = '{tenant}' AND tenant_seq = {seq}");
    ledger
        .tamper(&[
            format!("UPDATE events SET tenant_seq = 1000003 WHERE {}", at(3)),
            format!("UPDATE events SET tenant_seq = 3 WHERE {}", at(4)),
            format!("UPDATE events SET tenant_seq = 4 WHERE {}", at(1000003)),
        ])
        .await;
    let report = ledger.verify().await;
    assert!(!report.ok);
    let findings = findings_of(&report, tenant);
    // At 3 the old 4th event: it chains from the old 3rd, and its columns
    // (seq 3 now) no longer hash to what it stores; at 4, the reverse; the
    // subscribe they belong to is settled (each out of place) before the
    // 5th, which chains from a hash no longer before it.
    assert_eq!(findings.len(), 7, "{findings:?}");
    assert_eq!(
        findings[0],
        chain(
            3,
            ChainFinding::PrevHashMismatch {
                tenant_seq: 3,
                stored: hash_3,
                expected: hash_2
            }
        )
    );
    assert!(
        matches!(&findings[1], Finding::Chain { finding: ChainFinding::HashMismatch { tenant_seq: 3, stored, .. }, .. } if *stored == hash_4),
        "{findings:?}"
    );
    assert_eq!(
        findings[2],
        chain(
            4,
            ChainFinding::PrevHashMismatch {
                tenant_seq: 4,
                stored: hash_2,
                expected: hash_4
            }
        )
    );
    assert!(
        matches!(&findings[3], Finding::Chain { finding: ChainFinding::HashMismatch { tenant_seq: 4, stored, .. }, .. } if *stored == hash_3),
        "{findings:?}"
    );
    for (finding, (seq, stored, decided)) in findings[4..6]
        .iter()
        .zip([(3, "credits", "runs"), (4, "runs", "credits")])
    {
        let Finding::Replay {
            finding,
            line: None,
        } = finding
        else {
            panic!("{findings:?}");
        };
        assert_eq!(
            (finding.tenant_seq, finding.aggregate_id.as_str()),
            (seq, stored)
        );
        let expected = format!(
            "GrantIssued of quota/{stored} where the request decides GrantIssued of quota/{decided} ("
        );
        assert!(finding.message.starts_with(&expected), "{finding:?}");
    }
    assert_eq!(
        findings[6],
        chain(
            5,
            ChainFinding::PrevHashMismatch {
                tenant_seq: 5,
                stored: hash_4,
                expected: hash_3
            }
        )
    );
    assert_eq!(failures(&report), failing(&[], tenant, 0, ""));
    // Grants keep the seq they were issued at (their issue order), the
    // journal keeps entries by seq, and the scheduled work the seq that
    // scheduled it: the replay puts each grant's issue, its entry and its
    // expiry at the other seq.
    let differences: Vec<(String, String, Value, Value, Value)> = report
        .projections
        .iter()
        .flat_map(|projection| {
            projection.differences.iter().map(|difference| {
                let column = match difference.table.as_str() {
                    "grants" => "issued_seq",
                    "scheduled_work" => "scheduled_seq",
                    _ => "aggregate_id",
                };
                (
                    projection.projection.clone(),
                    difference.table.clone(),
                    difference.key.clone(),
                    difference.live.as_ref().unwrap()[column].clone(),
                    difference.replay.as_ref().unwrap()[column].clone(),
                )
            })
        })
        .collect();
    let grant =
        |quota: &str| json!({"tenant_id": tenant, "grant_id": plan_grant(&outcomes[0], quota)});
    let entry = |seq: i64| json!({"tenant_id": tenant, "tenant_seq": seq});
    let mut grants = vec![
        (
            "quota".to_string(),
            "grants".to_string(),
            grant("runs"),
            json!(3),
            json!(4),
        ),
        (
            "quota".into(),
            "grants".into(),
            grant("credits"),
            json!(4),
            json!(3),
        ),
    ];
    // The comparison lists rows by key.
    grants.sort_by_key(|(_, _, key, _, _)| key["grant_id"].as_str().unwrap().to_string());
    let journal = vec![
        (
            "journal".to_string(),
            "journal_entries".to_string(),
            entry(3),
            json!("runs"),
            json!("credits"),
        ),
        (
            "journal".into(),
            "journal_entries".into(),
            entry(4),
            json!("credits"),
            json!("runs"),
        ),
    ];
    // The plan grants' expiries keep the seq of the event that scheduled
    // them: swapped too.
    let mut expiries: Vec<(String, String, Value, Value, Value)> = grants
        .iter()
        .map(|(_, _, key, live, replay)| {
            let work = format!("grant:{}:expiry", key["grant_id"].as_str().unwrap());
            (
                "scheduled_work".to_string(),
                "scheduled_work".to_string(),
                json!({"tenant_id": tenant, "work": work}),
                live.clone(),
                replay.clone(),
            )
        })
        .collect();
    expiries.sort_by_key(|(_, _, key, _, _)| key["work"].as_str().unwrap().to_string());
    assert_eq!(differences, [grants, journal, expiries].concat());
}

#[tokio::test]
async fn an_edited_read_table_row_is_named_by_table_and_key() {
    // Proves: a read-table row that differs from what its events give is
    // reported by projection, table and primary key.
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let grant_id = outcomes[1].body["grant_id"].as_str().unwrap().to_string();
    sqlx::query(&format!("UPDATE grants SET used = used + 1 WHERE tenant_id = '{tenant}' AND grant_id = '{grant_id}'"))
        .execute(ledger.store().pool())
        .await
        .unwrap();
    let report = ledger.verify().await;
    assert!(!report.ok);
    assert!(report
        .tenants
        .iter()
        .all(|tenant| tenant.findings.is_empty()));
    let quota = report
        .projections
        .iter()
        .find(|projection| projection.projection == "quota")
        .unwrap();
    assert_eq!(quota.differences.len(), 1, "{:?}", quota.differences);
    let difference = &quota.differences[0];
    assert_eq!(difference.table, "grants");
    assert_eq!(
        difference.key,
        serde_json::json!({"tenant_id": tenant, "grant_id": grant_id})
    );
    assert_eq!(
        difference.live.as_ref().unwrap()["used"].as_i64().unwrap(),
        difference.replay.as_ref().unwrap()["used"]
            .as_i64()
            .unwrap()
            + 1
    );
    assert!(report
        .projections
        .iter()
        .filter(|projection| projection.projection != "quota")
        .all(|projection| projection.differences.is_empty()));
}

#[tokio::test]
async fn a_balance_written_at_another_scale_is_a_difference() {
    // Proves: a balance the database holds equal (30000.00 for 30000) but
    // a reader takes otherwise (not an integer) is a difference, named by
    // table and key with the text as stored beside the replay's.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let (account, asset, credits): (String, String, String) = sqlx::query_as(&format!(
        "UPDATE account_balances SET credits = credits + 0.00 \
         WHERE (tenant_id, account, asset) = \
               (SELECT tenant_id, account, asset FROM account_balances \
                WHERE tenant_id = '{tenant}' AND credits > 0 \
                ORDER BY account, asset LIMIT 1) \
         RETURNING account, asset, credits::text"
    ))
    .fetch_one(ledger.store().pool())
    .await
    .unwrap();
    assert!(credits.ends_with(".00"), "{credits}");
    let report = ledger.verify().await;
    let journal = report
        .projections
        .iter()
        .find(|projection| projection.projection == "journal")
        .unwrap();
    assert_eq!(journal.differences.len(), 1, "{:?}", journal.differences);
    let difference = &journal.differences[0];
    assert_eq!(
        (difference.table.as_str(), &difference.key),
        (
            "account_balances",
            &json!({"tenant_id": tenant, "account": account, "asset": asset})
        )
    );
    // As JSON: a number with a fraction beside the replay's integer.
    let whole: i64 = credits.trim_end_matches(".00").parse().unwrap();
    let (live, replay) = (
        &difference.live.as_ref().unwrap()["credits"],
        &difference.replay.as_ref().unwrap()["credits"],
    );
    assert_eq!(
        (live.is_f64(), live.as_f64(), replay.as_i64()),
        (true, Some(whole as f64), Some(whole)),
        "{live} {replay}"
    );
    assert!(!report.ok);
}

#[tokio::test]
async fn journal_entries_edited_removed_or_forged_are_each_a_difference() {
    // Proves: the journal's entries, set beside the replay in memory rather
    // than in a scratch table, still find an entry edited, one removed, and
    // one forged before seq 1, past the tenant's last event or of a tenant
    // with no events at all; each listed by key with both rows as any
    // table's difference is, and all counted.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let pool = ledger.store().pool();
    let seqs: Vec<(i64,)> = sqlx::query_as(
        "SELECT tenant_seq FROM journal_entries WHERE tenant_id = $1 ORDER BY tenant_seq",
    )
    .bind(tenant.as_uuid())
    .fetch_all(pool)
    .await
    .unwrap();
    let (edited, removed) = (seqs[0].0, seqs[1].0);
    let stranger = uuid::Uuid::from_u128(u128::MAX);
    let copy = |tenant_id: String, seq: i64| {
        format!(
            "INSERT INTO journal_entries \
             SELECT {tenant_id}, {seq}, aggregate_type, aggregate_id, event_type, reference, recorded_at, postings \
             FROM journal_entries WHERE tenant_id = '{tenant}' AND tenant_seq = {edited}"
        )
    };
    for statement in [
        format!(
            "UPDATE journal_entries SET postings = jsonb_set(postings, '{{0,amount}}', '7') \
             WHERE tenant_id = '{tenant}' AND tenant_seq = {edited}"
        ),
        format!(
            "DELETE FROM journal_entries WHERE tenant_id = '{tenant}' AND tenant_seq = {removed}"
        ),
        copy(format!("'{tenant}'::uuid"), 0),
        copy(format!("'{tenant}'::uuid"), 1_000),
        copy(format!("'{stranger}'::uuid"), 1),
    ] {
        sqlx::query(&statement).execute(pool).await.unwrap();
    }
    let report = ledger.verify().await;
    assert!(!report.ok);
    let journal = report
        .projections
        .iter()
        .find(|projection| projection.projection == "journal")
        .unwrap();
    let found: Vec<(Value, bool, bool)> = journal
        .differences
        .iter()
        .map(|difference| {
            assert_eq!(difference.table, "journal_entries");
            (
                difference.key.clone(),
                difference.live.is_some(),
                difference.replay.is_some(),
            )
        })
        .collect();
    let key = |tenant_id: String, seq: i64| json!({"tenant_id": tenant_id, "tenant_seq": seq});
    assert_eq!(
        found,
        vec![
            (key(tenant.to_string(), 0), true, false),
            (key(tenant.to_string(), edited), true, true),
            (key(tenant.to_string(), removed), false, true),
            (key(tenant.to_string(), 1_000), true, false),
            (key(stranger.to_string(), 1), true, false),
        ]
    );
    let edit = &journal.differences[1];
    assert_eq!(
        edit.live.as_ref().unwrap()["postings"][0]["amount"],
        json!(7)
    );
    assert_ne!(
        edit.replay.as_ref().unwrap()["postings"][0]["amount"],
        json!(7)
    );
    // The rest of the two rows is the same, as the database renders it.
    let without_postings = |row: &Value| {
        let mut row = row.clone();
        row.as_object_mut().unwrap().remove("postings");
        row
    };
    assert_eq!(
        without_postings(edit.live.as_ref().unwrap()),
        without_postings(edit.replay.as_ref().unwrap())
    );
    assert_eq!(
        journal.differing_rows,
        std::collections::BTreeMap::from([("journal_entries".to_string(), 5)])
    );
    assert!(report
        .projections
        .iter()
        .filter(|projection| projection.projection != "journal")
        .all(|projection| projection.differences.is_empty()));
}

#[tokio::test]
async fn journal_entries_differ_as_their_text_and_a_time_past_every_clock_is_listed() {
    // Proves: an entry whose postings are the same JSON to the database in
    // another text (an amount of 400.0 for 400, which a reader of integers
    // refuses) is a difference, listed with the text as stored; so is an
    // entry whose time no clock of the ledger's holds (infinity), and
    // verify still runs to the end.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let pool = ledger.store().pool();
    for statement in [
        format!(
            "UPDATE journal_entries SET postings = jsonb_set(postings, '{{0,amount}}', \
                 ((postings->0->>'amount') || '.0')::jsonb) \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 6"
        ),
        format!(
            "UPDATE journal_entries SET recorded_at = 'infinity' \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 7"
        ),
    ] {
        sqlx::query(&statement).execute(pool).await.unwrap();
    }
    let (amount,): (String,) = sqlx::query_as(&format!(
        "SELECT (postings->0->'amount')::text FROM journal_entries \
         WHERE tenant_id = '{tenant}' AND tenant_seq = 6"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(amount, "400.0");
    let report = ledger.verify().await;
    let journal = report
        .projections
        .iter()
        .find(|projection| projection.projection == "journal")
        .unwrap();
    assert_eq!(journal.differences.len(), 2, "{:?}", journal.differences);
    let (text, time) = (&journal.differences[0], &journal.differences[1]);
    assert_eq!(
        (&text.key, &time.key),
        (
            &json!({"tenant_id": tenant, "tenant_seq": 6}),
            &json!({"tenant_id": tenant, "tenant_seq": 7})
        )
    );
    assert_eq!(
        (
            &text.live.as_ref().unwrap()["postings"][0]["amount"],
            &text.replay.as_ref().unwrap()["postings"][0]["amount"]
        ),
        (&json!(400.0), &json!(400))
    );
    assert_eq!(
        time.live.as_ref().unwrap()["recorded_at"],
        json!("infinity")
    );
    assert_eq!(
        journal.differing_rows,
        std::collections::BTreeMap::from([("journal_entries".to_string(), 2)])
    );
    assert!(!report.ok);
}

#[tokio::test]
async fn an_event_stamped_past_every_clock_is_found_and_verify_goes_on() {
    // Proves: an event whose recorded_at was set behind the triggers to a
    // time no clock of the ledger's holds (infinity) breaks the chain at
    // that event and verify reports it (the other tenant clean), instead of
    // stopping at its read. Its journal entry set to the same time is still
    // a difference (the database's infinity is not the latest time the
    // replay can hold), and a chain head at that time stops nothing (it is
    // a finding of its own: the last event is not at that time).
    let (ledger, _, findings) = event_7_set("recorded_at = 'infinity'").await;
    // Decided again at the end of time, the consumption finds the grants
    // it drew on expired; the next event is earlier than that.
    assert_eq!(
        findings[1..],
        [
            domain(
                7,
                "credits",
                "the domain refuses the recorded consume_quota request: quota_exceeded: not enough credits: requested 500, available 300"
            ),
            chain(8, ChainFinding::TimeWentBackwards { tenant_seq: 8 }),
        ]
    );
    let tenant = ledger.tenants[0];
    for statement in [
        format!(
            "UPDATE journal_entries SET recorded_at = 'infinity' \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 7"
        ),
        format!(
            "UPDATE chain_heads SET last_recorded_at = 'infinity' WHERE tenant_id = '{tenant}'"
        ),
    ] {
        sqlx::query(&statement)
            .execute(ledger.store().pool())
            .await
            .unwrap();
    }
    let report = ledger.verify().await;
    let last = ledger.events(0).await.pop().unwrap();
    let mut with_head = findings.clone();
    with_head.push(chain(
        last.tenant_seq,
        ChainFinding::HeadTimeMismatch {
            head_seq: last.tenant_seq,
            head_recorded_at: Some(DateTime::<Utc>::MAX_UTC),
            last_recorded_at: Some(last.recorded_at),
        },
    ));
    assert_eq!(findings_of(&report, tenant), with_head);
    let journal = report
        .projections
        .iter()
        .find(|projection| projection.projection == "journal")
        .unwrap();
    let keys: Vec<&Value> = journal.differences.iter().map(|d| &d.key).collect();
    assert_eq!(keys, [&json!({"tenant_id": tenant, "tenant_seq": 7})]);
    assert_eq!(
        journal.differences[0].live.as_ref().unwrap()["recorded_at"],
        json!("infinity")
    );
}

#[tokio::test]
async fn a_table_compared_in_memory_has_exactly_the_columns_it_compares() {
    // Proves: every table a projection compares with its replay in memory
    // (one row per event) is keyed by (tenant_id, tenant_seq) and has no
    // column the comparison leaves out: a column added later fails here
    // until the comparison reads it.
    let db = TestDatabase::new().await;
    let mut compared = 0;
    for projection in commands::domains::projections() {
        let Some(rows) = projection.event_rows() else {
            continue;
        };
        assert!(projection.tables().contains(&rows.table()));
        let columns: Vec<(String,)> = sqlx::query_as(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = ('public.' || $1)::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
        )
        .bind(rows.table())
        .fetch_all(db.store().pool())
        .await
        .unwrap();
        let columns: Vec<String> = columns.into_iter().map(|(name,)| name).collect();
        assert_eq!(columns, rows.columns(), "{}", rows.table());
        let key: Vec<(String,)> = sqlx::query_as(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = ('public.' || $1)::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey, a.attnum)",
        )
        .bind(rows.table())
        .fetch_all(db.store().pool())
        .await
        .unwrap();
        assert_eq!(
            key,
            vec![("tenant_id".to_string(),), ("tenant_seq".to_string(),)]
        );
        compared += 1;
    }
    assert_eq!(compared, 1);
}

#[tokio::test]
async fn more_differing_rows_than_are_listed_are_all_counted_and_the_cut_is_said() {
    // Proves: when a table has more differing rows than a report lists, the
    // report counts them all and says that only the first are listed.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let forged = projections::compare::DIFFERENCES_MAX + 50;
    sqlx::query(
        "INSERT INTO stream_index (tenant_id, aggregate_type, aggregate_id, version, last_tenant_seq, created_at, updated_at) \
         SELECT $1, 'forged', 'stream-' || lpad(n::text, 4, '0'), 1, 1, now(), now() FROM generate_series(1, $2) AS n",
    )
    .bind(tenant.as_uuid())
    .bind(forged)
    .execute(ledger.store().pool())
    .await
    .unwrap();
    let report = ledger.verify().await;
    assert!(!report.ok);
    let streams = report
        .projections
        .iter()
        .find(|projection| projection.projection == "stream_index")
        .unwrap();
    let listed = usize::try_from(projections::compare::DIFFERENCES_MAX).unwrap();
    assert_eq!(streams.differences.len(), listed);
    assert_eq!(
        streams.differences[0].key,
        serde_json::json!({"tenant_id": tenant, "aggregate_type": "forged", "aggregate_id": "stream-0001"})
    );
    assert!(streams
        .differences
        .iter()
        .all(|difference| difference.replay.is_none()));
    assert_eq!(
        streams.differing_rows,
        std::collections::BTreeMap::from([("stream_index".to_string(), forged as u64)])
    );
    let lines = report.lines();
    assert_eq!(
        lines.last().unwrap(),
        &format!("projection stream_index: table stream_index: {forged} rows differ; the first {listed} by key are listed")
    );
    assert!(report.render().contains(&format!(
        "projection stream_index: {forged} rows differ from a fresh replay\n"
    )));
}

#[tokio::test]
async fn a_payload_that_no_longer_decodes_is_reported_and_verify_goes_on() {
    // Proves: with the read tables caught up, an event edited into
    // something no aggregate decodes is a chain finding, a domain finding
    // (naming the error and what its recorded request decides), and a
    // replay failure of the projections that decode it, naming tenant and
    // seq; verify still checks everything else and reports it all.
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    let s = credits_grant(&outcomes[0]);
    ledger
        .edit_payload(0, 7, None, |payload| {
            *payload = json!({"QuotaConsumed": {"amount": "five hundred"}})
        })
        .await;
    let report = ledger.verify().await;
    assert!(!report.ok);
    let findings = findings_of(&report, tenant);
    assert!(
        matches!(
            &findings[0],
            Finding::Chain {
                finding: ChainFinding::HashMismatch { tenant_seq: 7, .. },
                ..
            }
        ),
        "{findings:?}"
    );
    let undecodable = "QuotaConsumed does not decode: invalid type: string \"five hundred\", \
                       expected i64 at line 1 column 43";
    // The recorded request consumed 500 from S; what follows is decided
    // from that and agrees.
    assert_eq!(
        findings[1..],
        [domain(
            7,
            "credits",
            &format!(
                "{undecodable} where the quota decides (allocations 500 from grant {s}, amount 500, \
                 entry [debit grant:{s} 500 CREDITS/0, credit quota_consumed:credits 500 CREDITS/0], reference none)"
            )
        )]
    );
    assert_eq!(
        failures(&report),
        failing(
            // The schedule reads a quota's grant events only.
            &["quota", "journal"],
            tenant,
            7,
            undecodable
        )
    );
    no_differences(&report);
    assert!(report
        .lines()
        .contains(&format!("projection quota: tenant {tenant}: tenant_seq 7: cannot be replayed ({undecodable}); its rows were not compared")));
}

#[tokio::test]
async fn a_consumption_drawn_from_the_wrong_grant_is_found_though_the_chain_was_recomputed() {
    // Proves: a consumption rewritten to draw from grants other than the
    // burn-down's (amounts summing up, entry balanced, chain and head
    // recomputed, read tables rebuilt from it) verifies as a chain but is
    // named by the domain, with what it would have drawn; nothing else is
    // found.
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let s = credits_grant(&outcomes[0]);
    let p = outcomes[1].body["grant_id"].as_str().unwrap().to_string();
    let debit = |grant: &str, amount: i64| {
        json!({"account": {"code": format!("grant:{grant}"), "type": "liability", "flags": {"debits_must_not_exceed_credits": true}},
               "asset": "CREDITS/0", "side": "debit", "amount": amount})
    };
    ledger
        .edit_payload(0, 6, None, |payload| {
            let consumed = &mut payload["QuotaConsumed"];
            consumed["allocations"] = json!([
                {"grant_id": p, "amount": 100},
                {"grant_id": s, "amount": 300},
            ]);
            let credit = consumed["entry"]["postings"][1].clone();
            consumed["entry"]["postings"] = json!([debit(&p, 100), debit(&s, 300), credit]);
        })
        .await;
    ledger.rechain(0).await;
    ledger.catch_up().await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![domain(
            6,
            "credits",
            &format!(
                "allocations 100 from grant {p}, 300 from grant {s} where the quota decides 400 from grant {s}; \
                 entry [debit grant:{p} 100 CREDITS/0, debit grant:{s} 300 CREDITS/0, credit quota_consumed:credits 400 CREDITS/0] \
                 where the quota decides [debit grant:{s} 400 CREDITS/0, credit quota_consumed:credits 400 CREDITS/0]"
            )
        )]
    );
    assert_eq!(failures(&report), failing(&[], tenant, 0, ""));
    no_differences(&report);
}

#[tokio::test]
async fn an_amount_that_is_not_the_sum_of_its_allocations_is_found_though_the_chain_was_recomputed()
{
    // Proves: a consumption whose amount was changed but not its
    // allocations or entry, chain recomputed, is named by re-deciding the
    // request it records (which consumed 1000).
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    ledger
        .edit_payload(0, 16, None, |payload| {
            payload["QuotaConsumed"]["amount"] = json!(999);
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![domain(
            16,
            "credits",
            "amount 999 where the quota decides 1000"
        )]
    );
}

#[tokio::test]
async fn a_breakage_that_is_not_the_unused_balance_is_found_though_the_chain_was_recomputed() {
    // Proves: a revocation rewritten to post breakage the grant did not
    // have left (entry balanced, chain recomputed) is named by the domain.
    let ledger = Ledger::new().await;
    let outcomes = ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let s = credits_grant(&outcomes[0]);
    ledger
        .edit_payload(0, 14, None, |payload| {
            payload["GrantRevoked"]["breakage"] = json!(5);
            payload["GrantRevoked"]["entry"] = json!({"postings": [
                {"account": {"code": format!("grant:{s}"), "type": "liability", "flags": {"debits_must_not_exceed_credits": true}},
                 "asset": "CREDITS/0", "side": "debit", "amount": 5},
                {"account": {"code": "quota_breakage:credits", "type": "revenue"},
                 "asset": "CREDITS/0", "side": "credit", "amount": 5},
            ]});
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, tenant),
        vec![domain(
            14,
            "credits",
            &format!(
                "breakage 5 where the quota decides 0; entry [debit grant:{s} 5 CREDITS/0, \
                 credit quota_breakage:credits 5 CREDITS/0] where the quota decides none"
            )
        )]
    );
}

#[tokio::test]
async fn a_grant_rewritten_to_take_effect_later_is_found_at_its_seq() {
    // Proves: a purchase rewritten to take effect in the future (chain
    // recomputed) is found at its own seq: its recorded request set no
    // effective_at, so the quota decides it in effect at once, and names
    // both terms; the consumptions that drew from it follow from that
    // decision and agree.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let original: Value = serde_json::from_str(&ledger.event(0, 5).await.payload).unwrap();
    ledger
        .edit_payload(0, 5, None, |payload| {
            payload["GrantIssued"]["terms"]["effective_at"] = json!("2999-01-01T00:00:00Z");
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let decided = &original["GrantIssued"]["terms"];
    let mut stored = decided.clone();
    stored["effective_at"] = json!("2999-01-01T00:00:00Z");
    assert_eq!(
        findings_of(&report, tenant),
        vec![domain(
            5,
            "credits",
            &format!("terms {stored} where the quota decides {decided}")
        )]
    );
}

#[tokio::test]
async fn subscription_events_that_break_the_subscription_rules_are_found() {
    // Proves: a plan change rewritten into a second subscription is named
    // with what its recorded request decides (the plan change); a plan
    // change from a plan the tenant was not on is named with the plan it
    // was on.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let plans = PlanCatalog::builtin();
    let (acme, beta) = (ledger.tenants[0], ledger.tenants[1]);
    let event = ledger.event(0, 9).await;
    let period_end = ledger.event(0, 1).await.payload;
    let period_end: Value = serde_json::from_str(&period_end).unwrap();
    ledger
        .edit_payload(0, 9, Some("Subscribed"), |payload| {
            *payload = json!({"Subscribed": {
                "plan": plans.get("team_v4").unwrap(),
                "trial_ends_at": null,
                "period_start": event.recorded_at,
                "period_end": period_end["Subscribed"]["period_end"],
            }});
        })
        .await;
    ledger.rechain(0).await;
    ledger
        .edit_payload(1, 9, None, |payload| {
            payload["PlanChanged"]["from"] = json!("scale_v1");
        })
        .await;
    ledger.rechain(1).await;
    let report = ledger.verify().await;
    let findings: HashMap<TenantId, Vec<Finding>> = report
        .tenants
        .iter()
        .map(|tenant| (tenant.tenant_id, tenant.findings.clone()))
        .collect();
    // The recorded request is a plan change: the subscription decides
    // PlanChanged where the history says Subscribed.
    let team = serde_json::to_value(plans.get("team_v4").unwrap()).unwrap();
    assert_eq!(
        findings[&acme],
        vec![domain(
            9,
            "subscription",
            &format!("Subscribed where the subscription decides PlanChanged (from hobby_v3, plan {team})")
        )]
    );
    assert_eq!(
        findings[&beta],
        vec![domain(
            9,
            "subscription",
            "from scale_v1 where the subscription decides hobby_v3"
        )]
    );
}

#[tokio::test]
async fn a_replay_refuses_a_broken_chain_and_its_hash_proves_the_history_up_to_its_seq() {
    // Proves: replay recomputes the chain up to the seq asked: an edited
    // event refuses every replay that reaches it (naming its seq) but not
    // those before it; a hole is refused though the events past it are not
    // folded; after a forger recomputes the whole chain, the hash a replay
    // prints at a seq no longer equals the one published for it.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let published_10 = ledger.replay(0, AsOf::Seq(10)).await["hash"].clone();
    assert_eq!(published_10, json!(hash_at(&ledger, 0, 10).await.to_hex()));
    let tenant = ledger.tenants[0];
    // A reference changed in the event and in the request it records: the
    // decision agrees, the chain does not.
    ledger
        .tamper(&[format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{QuotaConsumed,reference}}', '\"forged\"'), \
             metadata = jsonb_set(metadata, '{{request,reference}}', '\"forged\"') \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 7"
        )])
        .await;
    for as_of in [AsOf::Seq(7), AsOf::Seq(10), AsOf::Head] {
        match ledger.try_replay(0, as_of).await {
            Err(VerifyError::Refused(Finding::Chain {
                tenant_seq: 7,
                finding: ChainFinding::HashMismatch { tenant_seq: 7, .. },
                line: None,
            })) => {}
            other => panic!("as of {as_of:?}: expected a refusal at seq 7, got {other:?}"),
        }
    }
    assert_eq!(ledger.replay(0, AsOf::Seq(6)).await["as_of_seq"], 6);

    // The forger recomputes the chain: replays run again (and verify finds
    // nothing in the chain), but the hash at 10 is not the one published.
    ledger.rechain(0).await;
    let forged_10 = ledger.replay(0, AsOf::Seq(10)).await;
    assert_eq!(forged_10["as_of_seq"], 10);
    assert_ne!(forged_10["hash"], published_10);
    assert!(ledger.verify().await.ok);

    // A hole right after the point asked is refused too.
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq IN (11, 12)"
        )])
        .await;
    match ledger.try_replay(0, AsOf::Seq(11)).await {
        Err(VerifyError::Refused(Finding::Chain {
            tenant_seq: 11,
            finding:
                ChainFinding::Gap {
                    expected_seq: 11,
                    found_seq: 13,
                },
            ..
        })) => {}
        other => panic!("expected a hole at 11, got {other:?}"),
    }
}

/// A command of the as-of scenario.
enum Step {
    Subscribe(&'static str),
    Buy(i64, u8),
    Consume(i64),
    ChangePlan(&'static str),
    Seats(i64, bool),
    /// Revokes the grant bought by the step at this index.
    Revoke(usize),
    Cancel(CancelAt),
    Renew,
}

impl Step {
    async fn run(
        &self,
        ledger: &Ledger,
        tenant: usize,
        index: usize,
        outcomes: &[Outcome],
    ) -> Outcome {
        let plans = PlanCatalog::builtin();
        let key = format!("step-{index}");
        // Every tenant runs the steps at the same times: a second apart,
        // and the renewal once the first period (a month) has ended.
        let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let start = match self {
            Self::Renew => start.checked_add_months(Months::new(1)).unwrap(),
            _ => start,
        };
        ledger.set_clock(start + chrono::Duration::seconds(i64::try_from(index).unwrap()));
        match self {
            Self::Subscribe(plan) => {
                ledger
                    .run(
                        tenant,
                        &key,
                        Subscribe {
                            plan: plans.get(plan).unwrap().clone(),
                            trial_ends_at: None,
                        },
                    )
                    .await
            }
            Self::Buy(amount, priority) => {
                ledger.run(tenant, &key, purchase(*amount, *priority)).await
            }
            Self::Consume(amount) => ledger.run(tenant, &key, consume(*amount)).await,
            Self::ChangePlan(plan) => {
                ledger
                    .run(
                        tenant,
                        &key,
                        ChangePlan {
                            plan: plans.get(plan).unwrap().clone(),
                        },
                    )
                    .await
            }
            Self::Seats(amount, release) => {
                ledger
                    .run(
                        tenant,
                        &key,
                        ChangeSeats {
                            account: None,
                            amount: Amount::new(*amount).unwrap(),
                            release: *release,
                        },
                    )
                    .await
            }
            Self::Revoke(bought) => {
                let grant_id: GrantId = outcomes[*bought].body["grant_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                ledger
                    .run(
                        tenant,
                        &key,
                        RevokeGrant {
                            grant_id,
                            quota: QuotaType::Credits,
                            account: None,
                        },
                    )
                    .await
            }
            Self::Cancel(at) => {
                ledger
                    .run(tenant, &key, CancelSubscription { at: *at })
                    .await
            }
            Self::Renew => ledger.run(tenant, &key, RenewSubscription::default()).await,
        }
    }
}

/// A replay report with what legitimately differs between two tenants that
/// ran the same commands at other times taken out: the tenant id and hash;
/// grant ids (named by their order in the report's grants, also inside
/// account codes) and times (named by order of appearance).
fn normalized(report: &Value) -> Value {
    fn names(value: &Value, seen: &mut Vec<String>, is_name: &dyn Fn(&str) -> bool) {
        match value {
            Value::String(text) if is_name(text) && !seen.contains(text) => seen.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|item| names(item, seen, is_name)),
            Value::Object(map) => map.values().for_each(|item| names(item, seen, is_name)),
            _ => {}
        }
    }
    fn rename(value: &mut Value, rename_text: &dyn Fn(&str) -> String) {
        match value {
            Value::String(text) => *text = rename_text(text),
            Value::Array(items) => items.iter_mut().for_each(|item| rename(item, rename_text)),
            Value::Object(map) => map.values_mut().for_each(|item| rename(item, rename_text)),
            _ => {}
        }
    }
    let mut value = report.clone();
    value["tenant_id"] = json!("tenant");
    value["hash"] = json!("hash");
    let mut grants = Vec::new();
    for quota in value["quotas"].as_array().unwrap() {
        for grant in quota["grants"].as_array().unwrap() {
            grants.push(grant["grant_id"].as_str().unwrap().to_string());
        }
    }
    rename(&mut value, &|text| {
        let mut text = text.to_string();
        for (index, grant) in grants.iter().enumerate() {
            text = text.replace(grant, &format!("grant#{index}"));
        }
        text
    });
    value["accounts"]
        .as_array_mut()
        .unwrap()
        .sort_by_key(|account| account["account"].as_str().unwrap().to_string());
    let is_time = |text: &str| chrono::DateTime::parse_from_rfc3339(text).is_ok();
    let mut times = Vec::new();
    names(&value, &mut times, &is_time);
    rename(&mut value, &|text| {
        times
            .iter()
            .position(|time| time == text)
            .map_or(text.to_string(), |index| format!("time#{index}"))
    });
    value
}

#[tokio::test]
async fn a_replay_as_of_any_point_equals_a_fresh_tenant_that_ran_the_commands_up_to_it() {
    // Proves: for every cut point k of a scenario of commands, tenant A's
    // state replayed as of the seq the k-th command reached (from the
    // database, and from an export offline) equals the state of a fresh
    // tenant B that ran only the first k commands; as of the k-th command's
    // time it is the same; and a consumption's answer saw what the replay
    // says was available.
    let mut ledger = Ledger::new().await;
    let steps = [
        Step::Subscribe("hobby_v3"),
        Step::Buy(300, 80),
        Step::Consume(400),
        Step::Seats(1, false),
        Step::Consume(700),
        Step::Buy(50, 10),
        Step::ChangePlan("team_v4"),
        Step::Consume(120),
        Step::Revoke(1),
        Step::Seats(1, true),
        Step::Cancel(CancelAt::PeriodEnd),
        Step::Consume(5),
        Step::Renew,
    ];
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let outcome = step.run(&ledger, 0, index, &outcomes).await;
        outcomes.push(outcome);
    }
    let dir = std::env::temp_dir().join(format!("ledger-export-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acme.jsonl");
    export(ledger.store(), ledger.tenants[0], &file, true)
        .await
        .unwrap();
    let events = ledger.events(0).await;
    let recorded_at = |seq: i64| events[usize::try_from(seq - 1).unwrap()].recorded_at;
    for cut in 1..=steps.len() {
        let seq = outcomes[cut - 1].tenant_seq;
        let a = ledger.replay(0, AsOf::Seq(seq)).await;
        assert_eq!(a["as_of_seq"], seq);
        assert_eq!(
            replay_file(&file, AsOf::Seq(seq)).unwrap(),
            a,
            "offline, cut {cut}"
        );

        let b = ledger.add_tenant(&format!("b-{cut}")).await;
        let mut b_outcomes: Vec<Outcome> = Vec::new();
        for (index, step) in steps[..cut].iter().enumerate() {
            let outcome = step.run(&ledger, b, index, &b_outcomes).await;
            b_outcomes.push(outcome);
        }
        assert_eq!(b_outcomes[cut - 1].tenant_seq, seq, "cut {cut}");
        let fresh = ledger.replay(b, AsOf::Head).await;
        assert_eq!(normalized(&a), normalized(&fresh), "cut {cut}");

        // As of the command's time: the same state. Commands run one after
        // the other, each in its own transaction, so the next one is later.
        let time = recorded_at(seq);
        if cut < steps.len() {
            assert!(recorded_at(seq + 1) > time, "cut {cut}");
        }
        assert_eq!(
            ledger.replay(0, AsOf::Time(time)).await,
            a,
            "as of time, cut {cut}"
        );

        if let Step::Consume(_) = steps[cut - 1] {
            let credits = a["quotas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|quota| quota["quota"] == "credits")
                .unwrap();
            assert_eq!(
                credits["available"],
                outcomes[cut - 1].body["available"],
                "cut {cut}"
            );
            assert!(credits["available"].is_i64(), "cut {cut}");
        }
        for line in a["trial_balance"].as_array().unwrap() {
            assert_eq!(line["balanced"], true, "cut {cut}");
        }
    }
    // The end state, spelled out: cancelled at the renewal, 50 of the last
    // purchase left, 1,225 credits consumed in all.
    let end = ledger.replay(0, AsOf::Head).await;
    assert_eq!(end["subscription"]["status"], "cancelled");
    let credits = end["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|quota| quota["quota"] == "credits")
        .unwrap();
    assert_eq!(credits["consumed"], "1225");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `lines` as an export file in `dir`.
fn write_lines(dir: &std::path::Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test]
async fn an_export_verifies_offline_and_one_changed_byte_is_named_by_line() {
    // Proves: the export verifies with no database; changing one byte of an
    // event makes verification fail at that line, and replay refuse at that
    // line; a header whose head is not the file's, a file cut short and a
    // line too long to read are each named too.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let dir = std::env::temp_dir().join(format!("ledger-export-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acme.jsonl");
    let exported = export(ledger.store(), ledger.tenants[0], &file, true)
        .await
        .unwrap();
    assert_eq!((exported.events, exported.head_seq), (16, 16));
    // Offline: the database is not involved from here on.
    drop(ledger);
    let report = verify_file(&file).unwrap();
    assert!(report.ok, "{:?}", report.lines());
    assert_eq!(report.events, 16);
    assert_eq!(
        replay_file(&file, AsOf::Seq(16)).unwrap()["hash"],
        json!(exported.head_hash.to_hex())
    );

    // Line 8 is tenant_seq 7 (line 1 is the header): a consumption of 500.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[7].contains("\"amount\":500"), "{}", lines[7]);
    let mut changed = lines.clone();
    changed[7] = changed[7].replacen("\"amount\":500", "\"amount\":400", 1);
    let tampered = write_lines(&dir, "tampered.jsonl", &changed);
    let report = verify_file(&tampered).unwrap();
    assert!(!report.ok);
    let findings = &report.tenants[0].findings;
    assert!(
        matches!(
            &findings[0],
            Finding::Chain {
                line: Some(8),
                finding: ChainFinding::HashMismatch { tenant_seq: 7, .. },
                ..
            }
        ),
        "{findings:?}"
    );
    assert!(
        report.lines()[0].contains("line 8: tenant_seq 7"),
        "{:?}",
        report.lines()
    );
    // Replay refuses the file even as of a seq before the change: the file
    // as a whole is not the one its header describes.
    for as_of in [AsOf::Seq(3), AsOf::Head] {
        match replay_file(&tampered, as_of) {
            Err(VerifyError::Refused(Finding::Chain {
                line: Some(8),
                finding: ChainFinding::HashMismatch { tenant_seq: 7, .. },
                ..
            })) => {}
            other => panic!("expected a refusal at line 8, got {other:?}"),
        }
    }

    // A header naming another head: the chain is whole, the head is not it.
    let mut header: Value = serde_json::from_str(&lines[0]).unwrap();
    header["head_hash"] = json!("00".repeat(32));
    let mut wrong_head = lines.clone();
    wrong_head[0] = header.to_string();
    let wrong_head = write_lines(&dir, "wrong-head.jsonl", &wrong_head);
    match replay_file(&wrong_head, AsOf::Seq(2)) {
        Err(VerifyError::Refused(Finding::Chain {
            finding:
                ChainFinding::HeadMismatch {
                    head_seq: 16,
                    last_seq: 16,
                    ..
                },
            ..
        })) => {}
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    // The file cut short after tenant_seq 10.
    let cut = write_lines(&dir, "cut.jsonl", &lines[..11]);
    match replay_file(&cut, AsOf::Seq(5)) {
        Err(VerifyError::Refused(Finding::Chain {
            finding:
                ChainFinding::HeadMismatch {
                    head_seq: 16,
                    last_seq: 10,
                    ..
                },
            ..
        })) => {}
        other => panic!("expected a head mismatch, got {other:?}"),
    }

    // A byte that breaks the line's JSON is named too.
    let mut broken = text.clone().into_bytes();
    let offset = text
        .lines()
        .take(4)
        .map(|line| line.len() + 1)
        .sum::<usize>()
        + 1;
    broken[offset] = b'#';
    let broken_file = dir.join("broken.jsonl");
    std::fs::write(&broken_file, broken).unwrap();
    let report = verify_file(&broken_file).unwrap();
    assert!(!report.ok);
    assert!(
        report.tenants[0]
            .findings
            .iter()
            .any(|finding| matches!(finding, Finding::File { line: 5, .. })),
        "{:?}",
        report.lines()
    );
    match replay_file(&broken_file, AsOf::Head) {
        Err(VerifyError::Refused(Finding::File { line: 5, .. })) => {}
        other => panic!("expected a refusal at line 5, got {other:?}"),
    }

    // A key named twice in a payload (the hash taken of the value a reader
    // keeps, another reader keeping the other: 400 where 500 was
    // consumed) is named by its line.
    let mut twice = lines.clone();
    twice[7] = twice[7].replacen("\"amount\":500", "\"amount\":400,\"amount\":500", 1);
    let twice = write_lines(&dir, "twice.jsonl", &twice);
    let report = verify_file(&twice).unwrap();
    let findings = &report.tenants[0].findings;
    assert!(
        matches!(
            findings.first(),
            Some(Finding::File { line: 8, message }) if message.contains("the key \"amount\" appears twice")
        ),
        "{findings:?}"
    );

    // A line longer than the bound is skipped, named, and the lines after
    // it are still read.
    let mut long = lines.clone();
    long[5] = format!("{{\"padding\": \"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let long = write_lines(&dir, "long.jsonl", &long);
    let report = verify_file(&long).unwrap();
    let findings = &report.tenants[0].findings;
    assert_eq!(
        findings[0],
        Finding::File {
            line: 6,
            message: "longer than 16777216 bytes".to_string()
        },
        "{findings:?}"
    );
    assert_eq!(report.events, 15);

    // A blank line at the end is one finding, the line's: the header's
    // count is of events, which the file still holds all of.
    let mut blank = lines.clone();
    blank.push(String::new());
    let blank = write_lines(&dir, "blank.jsonl", &blank);
    let report = verify_file(&blank).unwrap();
    let findings = &report.tenants[0].findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        matches!(&findings[0], Finding::File { line, message }
            if *line == lines.len() as u64 + 1 && message.starts_with("not an event line")),
        "{findings:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn seats_moved_across_plan_changes_verify_and_project_as_a_replay_does() {
    // Proves: the seat model (seats moving off closed grants, unbacked seats
    // after a downgrade, released first) and a quota account's own journal
    // accounts are accepted by the domain's replay, and every read table
    // equals a fresh replay of them.
    let ledger = Ledger::new().await;
    let plans = PlanCatalog::builtin();
    let seats = |amount: i64, release: bool| ChangeSeats {
        account: None,
        amount: Amount::new(amount).unwrap(),
        release,
    };
    ledger
        .run(
            0,
            "sub",
            Subscribe {
                plan: plans.get("team_v4").unwrap().clone(),
                trial_ends_at: None,
            },
        )
        .await;
    ledger.run(0, "ten", seats(10, false)).await;
    let downgrade = ledger
        .run(
            0,
            "downgrade",
            ChangePlan {
                plan: plans.get("hobby_v3").unwrap().clone(),
            },
        )
        .await;
    assert_eq!(downgrade.status, 200);
    let released = ledger.run(0, "release", seats(9, true)).await;
    assert_eq!(released.body["allocated"], 1);
    ledger
        .run(
            0,
            "upgrade",
            ChangePlan {
                plan: plans.get("scale_v1").unwrap().clone(),
            },
        )
        .await;
    ledger
        .run(
            0,
            "user-grant",
            IssueGrant {
                quota: QuotaType::Credits,
                account: Some(aggregates::quota::QuotaAccount::parse("user-42").unwrap()),
                source: GrantSource::Promocode,
                amount: Some(Amount::new(5).unwrap()),
                priority: 50,
                effective_at: None,
                expires_at: None,
            },
        )
        .await;
    ledger.catch_up().await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    let state = ledger.replay(0, AsOf::Head).await;
    let accounts: Vec<&str> = state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|account| account["account"].as_str().unwrap())
        .collect();
    assert!(
        accounts.contains(&"quota_issued:credits@user-42"),
        "{accounts:?}"
    );
    let unbacked = state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["account"] == "seats_unbacked")
        .unwrap();
    assert_eq!(unbacked["balance"], "0");
    let seat_quota = state["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|quota| quota["quota"] == "seats")
        .unwrap();
    assert_eq!(seat_quota["allocated"], "1");
}

#[tokio::test]
async fn a_seat_release_rewritten_is_found_at_its_seq_and_a_replay_inside_a_plan_change_reads_the_rest_of_it(
) {
    // Proves: a downgrade leaves 9 of 10 seats unbacked (`SeatsMoved` off
    // the old grant, the new grant taking 1); a replay as of the first event
    // of that move (inside the plan change's seat events) is not refused,
    // folds only up to it, and shows the 10 seats allocated as unbacked,
    // from the store and offline alike. A release rewritten to give back a
    // seat of the grant before the unbacked ones (balanced, chain
    // recomputed) is named at its seq with what the quota decides, and
    // nothing else is found.
    let ledger = Ledger::new().await;
    let plans = PlanCatalog::builtin();
    let seats = |amount: i64, release: bool| ChangeSeats {
        account: None,
        amount: Amount::new(amount).unwrap(),
        release,
    };
    ledger
        .run(
            0,
            "sub",
            Subscribe {
                plan: plans.get("team_v4").unwrap().clone(),
                trial_ends_at: None,
            },
        )
        .await;
    ledger.run(0, "ten", seats(10, false)).await;
    let downgrade = ledger
        .run(
            0,
            "downgrade",
            ChangePlan {
                plan: plans.get("hobby_v3").unwrap().clone(),
            },
        )
        .await;
    let hobby = plan_grant(&downgrade, "seats");
    ledger.run(0, "release", seats(9, true)).await;
    let events = ledger.events(0).await;
    let types: Vec<(&str, &str)> = events
        .iter()
        .filter(|event| event.aggregate_id == "seats")
        .map(|event| (event.idempotency_key.as_str(), event.event_type.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("sub", "GrantIssued"),
            ("ten", "SeatsAllocated"),
            ("downgrade", "SeatsMoved"),
            ("downgrade", "GrantRevoked"),
            ("downgrade", "GrantIssued"),
            ("downgrade", "SeatsMoved"),
            ("release", "SeatsReleased"),
        ]
    );
    let seq_of = |key: &str, event_type: &str| {
        events
            .iter()
            .find(|event| {
                event.aggregate_id == "seats"
                    && event.idempotency_key == key
                    && event.event_type == event_type
            })
            .unwrap()
            .tenant_seq
    };
    let moved = seq_of("downgrade", "SeatsMoved");
    let released = seq_of("release", "SeatsReleased");

    let dir = std::env::temp_dir().join(format!("ledger-export-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seats.jsonl");
    export(ledger.store(), ledger.tenants[0], &file, true)
        .await
        .unwrap();
    let inside = ledger.replay(0, AsOf::Seq(moved)).await;
    assert_eq!(inside["as_of_seq"], moved);
    assert_eq!(replay_file(&file, AsOf::Seq(moved)).unwrap(), inside);
    let seat_quota = inside["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|quota| quota["quota"] == "seats")
        .unwrap();
    assert_eq!(
        (&seat_quota["allocated"], &seat_quota["unbacked"]),
        (&json!("10"), &json!("10"))
    );
    let statuses: Vec<&str> = seat_quota["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grant| grant["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active"]);
    std::fs::remove_dir_all(&dir).unwrap();

    let seat_posting = |account: Value, side: &str, amount: i64| json!({"account": account, "asset": "SEATS/0", "side": side, "amount": amount});
    ledger
        .edit_payload(0, released, None, |payload| {
            let release = &mut payload["SeatsReleased"];
            release["allocations"] = json!([{"grant_id": hobby, "amount": 1}]);
            release["unbacked"] = json!(8);
            let postings = release["entry"]["postings"].as_array().unwrap().clone();
            let account = |code: &str| {
                postings
                    .iter()
                    .find(|posting| posting["account"]["code"] == code)
                    .unwrap()["account"]
                    .clone()
            };
            release["entry"]["postings"] = json!([
                seat_posting(account("seats_allocated"), "debit", 9),
                seat_posting(account("seats_unbacked"), "credit", 8),
                seat_posting(
                    json!({"code": format!("grant:{hobby}"), "type": "liability", "flags": {"debits_must_not_exceed_credits": true}}),
                    "credit",
                    1
                ),
            ]);
        })
        .await;
    ledger.rechain(0).await;
    ledger.catch_up().await;
    let report = ledger.verify().await;
    assert_eq!(
        findings_of(&report, ledger.tenants[0]),
        vec![domain(
            released,
            "seats",
            &format!(
                "allocations 1 from grant {hobby} where the quota decides none; \
                 entry [debit seats_allocated 9 SEATS/0, credit seats_unbacked 8 SEATS/0, credit grant:{hobby} 1 SEATS/0] \
                 where the quota decides [debit seats_allocated 9 SEATS/0, credit seats_unbacked 9 SEATS/0]; \
                 unbacked 8 where the quota decides 9"
            )
        )]
    );
    assert_eq!(failures(&report), failing(&[], ledger.tenants[0], 0, ""));
    no_differences(&report);
}
