//! Auditors' checks against a real PostgreSQL: a clean ledger verifies;
//! tampering behind the triggers is caught with tenant and seq; replays as
//! of any point equal the state at that point; exports verify and replay
//! offline, and one changed byte is named by line.

use aggregates::plan::PlanCatalog;
use aggregates::quota::{GrantSource, QuotaType};
use aggregates::{Amount, TenantId};
use commands::requests::quota::{ChangeSeats, ConsumeQuota, IssueGrant};
use commands::requests::subscription::{ChangePlan, Subscribe};
use commands::{BusConfig, CommandBus, Metrics, Outcome, Request};
use eventstore::testing::TestDatabase;
use eventstore::{ChainFinding, EventStore, IdempotencyKey};
use replay::export::{export, replay_file, replay_tenant, verify_file, AsOf};
use replay::verify::{verify_database, Finding, VerifyReport};
use serde_json::Value;
use std::sync::Arc;

struct Ledger {
    db: TestDatabase,
    bus: CommandBus,
    tenants: Vec<TenantId>,
}

impl Ledger {
    async fn new() -> Self {
        let db = TestDatabase::new().await;
        let bus = CommandBus::start(
            db.store().clone(),
            BusConfig::default(),
            Arc::new(Metrics::default()),
        );
        let mut tenants = Vec::new();
        for name in ["acme", "beta"] {
            tenants.push(db.store().create_tenant(name).await.unwrap().tenant_id);
        }
        Self { db, bus, tenants }
    }

    fn store(&self) -> &EventStore {
        self.db.store()
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

    /// The scenario: for each tenant, subscribe, buy credits, consume a few
    /// times, change plan, consume again (16 events a tenant). Returns each
    /// command's outcome for tenant 0.
    async fn scenario(&self) -> Vec<Outcome> {
        let plans = PlanCatalog::builtin();
        let mut outcomes = Vec::new();
        for tenant in 0..self.tenants.len() {
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
            record(
                self.run(
                    tenant,
                    "buy",
                    IssueGrant {
                        quota: QuotaType::Credits,
                        account: None,
                        source: GrantSource::Purchase,
                        amount: Some(Amount::new(300).unwrap()),
                        priority: 80,
                        effective_at: None,
                        expires_at: None,
                    },
                )
                .await,
            );
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

    async fn catch_up(&self) {
        for projection in projections::catalog() {
            projections::rebuild::catch_up_live(self.store().pool(), projection.as_ref())
                .await
                .unwrap();
        }
    }

    async fn verify(&self) -> VerifyReport {
        verify_database(self.store(), None, &projections::catalog(), true)
            .await
            .unwrap()
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

    async fn replay(&self, tenant: usize, as_of: AsOf) -> Value {
        let mut connection = self.store().pool().acquire().await.unwrap();
        replay_tenant(&mut connection, self.tenants[tenant], as_of)
            .await
            .unwrap()
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

fn chain_findings(findings: &[Finding]) -> Vec<ChainFinding> {
    findings
        .iter()
        .filter_map(|finding| match finding {
            Finding::Chain { finding, .. } => Some(finding.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_clean_ledger_verifies_and_every_projection_equals_a_replay() {
    // Proves: nothing is found on an untouched ledger; the report counts
    // every event and names each tenant's head.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
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
    assert_eq!(report.projections.len(), 4);
    assert!(report
        .projections
        .iter()
        .all(|projection| projection.differences.is_empty()));
}

#[tokio::test]
async fn an_edited_payload_is_found_at_its_tenant_and_seq() {
    // Proves: a payload changed behind the triggers breaks the chain at that
    // event and nowhere else.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    ledger.catch_up().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{QuotaConsumed,amount}}', '1') \
             WHERE tenant_id = '{tenant}' AND tenant_seq = 7"
        )])
        .await;
    let report = ledger.verify().await;
    assert!(!report.ok);
    let chain = chain_findings(&findings_of(&report, tenant));
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert!(
        matches!(chain[0], ChainFinding::HashMismatch { tenant_seq: 7, .. }),
        "{chain:?}"
    );
}

#[tokio::test]
async fn an_event_deleted_in_the_middle_is_found_at_its_seq() {
    // Proves: a missing event is a hole at its seq (and the next event no
    // longer chains from its predecessor).
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 8"
        )])
        .await;
    let report = ledger.verify().await;
    let chain = chain_findings(&findings_of(&report, tenant));
    assert_eq!(
        chain[0],
        ChainFinding::Gap {
            expected_seq: 8,
            found_seq: 9
        }
    );
    assert!(
        matches!(
            chain[1],
            ChainFinding::PrevHashMismatch { tenant_seq: 9, .. }
        ),
        "{chain:?}"
    );
}

#[tokio::test]
async fn the_last_event_deleted_is_found_by_the_head() {
    // Proves: deleting the newest event leaves a chain that verifies on its
    // own, but not against the chain head row.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let head = ledger.store().chain_head(tenant).await.unwrap().unwrap();
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 16"
        )])
        .await;
    let report = ledger.verify().await;
    let chain = chain_findings(&findings_of(&report, tenant));
    assert_eq!(chain.len(), 1, "{chain:?}");
    match &chain[0] {
        ChainFinding::HeadMismatch {
            head_seq,
            head_hash,
            last_seq,
            ..
        } => {
            assert_eq!((*head_seq, *head_hash, *last_seq), (16, head.hash, 15));
        }
        other => panic!("expected a head mismatch, got {other}"),
    }
}

#[tokio::test]
async fn two_events_swapped_are_found_at_their_seqs() {
    // Proves: reordering history changes what each position hashes to.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    let at = |seq: i64| format!("tenant_id = '{tenant}' AND tenant_seq = {seq}");
    ledger
        .tamper(&[
            format!("UPDATE events SET tenant_seq = 1000003 WHERE {}", at(3)),
            format!("UPDATE events SET tenant_seq = 3 WHERE {}", at(4)),
            format!("UPDATE events SET tenant_seq = 4 WHERE {}", at(1000003)),
        ])
        .await;
    let report = ledger.verify().await;
    let chain = chain_findings(&findings_of(&report, tenant));
    let at_seq: Vec<i64> = chain.iter().map(ChainFinding::tenant_seq).collect();
    assert_eq!(at_seq.first(), Some(&3), "{chain:?}");
    assert!(chain
        .iter()
        .any(|finding| matches!(finding, ChainFinding::HashMismatch { tenant_seq: 3, .. })));
    assert!(chain
        .iter()
        .any(|finding| matches!(finding, ChainFinding::HashMismatch { tenant_seq: 4, .. })));
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
async fn a_replay_as_of_any_point_equals_the_state_reached_then() {
    // Proves: the state replayed as of each command's seq (or time) equals
    // the state the ledger held right after that command, and what the
    // command answered then; the same later, and from an export offline.
    let ledger = Ledger::new().await;
    let plans = PlanCatalog::builtin();
    let mut points: Vec<(i64, Value, Outcome)> = Vec::new();
    let mut capture =
        |outcome: Outcome, state: Value| points.push((outcome.tenant_seq, state, outcome));
    let outcome = ledger
        .run(
            0,
            "sub",
            Subscribe {
                plan: plans.get("hobby_v3").unwrap().clone(),
                trial_ends_at: None,
            },
        )
        .await;
    capture(outcome, ledger.replay(0, AsOf::Head).await);
    for (index, amount) in [100, 250, 600].into_iter().enumerate() {
        let outcome = ledger
            .run(0, &format!("use-{index}"), consume(amount))
            .await;
        capture(outcome, ledger.replay(0, AsOf::Head).await);
    }
    let outcome = ledger
        .run(
            0,
            "upgrade",
            ChangePlan {
                plan: plans.get("scale_v1").unwrap().clone(),
            },
        )
        .await;
    capture(outcome, ledger.replay(0, AsOf::Head).await);
    let outcome = ledger.run(0, "use-3", consume(5_000)).await;
    capture(outcome, ledger.replay(0, AsOf::Head).await);
    // Later events must not change the past.
    ledger.run(0, "use-4", consume(1)).await;

    let dir = std::env::temp_dir().join(format!("ledger-export-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acme.jsonl");
    export(ledger.store(), ledger.tenants[0], &file, true)
        .await
        .unwrap();
    for (seq, state, outcome) in &points {
        assert_eq!(state["as_of_seq"], *seq);
        assert_eq!(
            &ledger.replay(0, AsOf::Seq(*seq)).await,
            state,
            "as of seq {seq}"
        );
        assert_eq!(
            &replay_file(&file, AsOf::Seq(*seq)).unwrap(),
            state,
            "offline as of seq {seq}"
        );
        if let Some(available) = outcome.body.get("available") {
            let credits = state["quotas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|quota| quota["quota"] == "credits")
                .unwrap();
            assert_eq!(&credits["available"], available, "as of seq {seq}");
        }
        for line in state["trial_balance"].as_array().unwrap() {
            assert_eq!(line["balanced"], true);
        }
    }
    // As of a time: the last command recorded at or before it.
    let (seq, state, _) = &points[2];
    let time: chrono::DateTime<chrono::Utc> = state["as_of"].as_str().unwrap().parse().unwrap();
    let next_time: chrono::DateTime<chrono::Utc> =
        points[3].1["as_of"].as_str().unwrap().parse().unwrap();
    if next_time > time {
        let by_time = ledger.replay(0, AsOf::Time(time)).await;
        assert_eq!(by_time["as_of_seq"], *seq);
        assert_eq!(&by_time, state);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_export_verifies_offline_and_one_changed_byte_is_named_by_line() {
    // Proves: the export verifies with no database; changing one byte of an
    // event makes verification fail at that line.
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

    // Line 8 is tenant_seq 7 (line 1 is the header): a consumption of 500.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[7].contains("\"amount\":500"), "{}", lines[7]);
    lines[7] = lines[7].replacen("\"amount\":500", "\"amount\":400", 1);
    let tampered = dir.join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let report = verify_file(&tampered).unwrap();
    assert!(!report.ok);
    let findings = &report.tenants[0].findings;
    assert!(!findings.is_empty());
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
