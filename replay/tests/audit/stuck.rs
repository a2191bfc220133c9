//! A projection partition that cannot move past an event is a finding of
//! `verify`, named by tenant, projection, seq and error.

use super::{consume, domain, findings_of, purchase, Ledger};
use projections::compare::ReplayFailure;
use serde_json::json;

const OUT_OF_RANGE: &str = "error returned from database: timestamp out of range";

#[tokio::test]
async fn an_event_a_projection_cannot_apply_is_a_finding_naming_tenant_projection_and_seq() {
    // Proves: an event that a projection cannot apply (a grant effective in
    // the year -5000, as clients could once send, here written behind the
    // triggers with its chain recomputed) holds its tenant back in the live
    // projection at that event; verify reports the partition with tenant,
    // projection, seq and error, says not ok, and the other projections and
    // tenant are clean.
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let original: serde_json::Value =
        serde_json::from_str(&ledger.event(0, 5).await.payload).unwrap();
    ledger
        .edit_payload(0, 5, None, |payload| {
            payload["GrantIssued"]["terms"]["effective_at"] = json!("-5000-01-01T00:00:00Z");
        })
        .await;
    ledger.rechain(0).await;
    let catalog = commands::domains::projections();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    let error = projections::runtime::catch_up_all(ledger.store().pool(), &all, None, 1_000)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection quota, tenant {}: event at tenant_seq 5: {OUT_OF_RANGE}",
            ledger.tenants[0]
        )
    );
    for projection in &catalog {
        let alone = [projection.as_ref()];
        let _ =
            projections::runtime::catch_up_all(ledger.store().pool(), &alone, None, 1_000).await;
    }
    let report = ledger.verify().await;
    assert!(!report.ok);
    let stuck: Vec<(String, Vec<ReplayFailure>)> = report
        .projections
        .iter()
        .map(|projection| (projection.projection.clone(), projection.stuck.clone()))
        .collect();
    let expected: Vec<(String, Vec<ReplayFailure>)> = [
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
        let stuck = if *name == "quota" {
            vec![ReplayFailure {
                tenant_id: ledger.tenants[0],
                tenant_seq: 5,
                message: OUT_OF_RANGE.into(),
            }]
        } else {
            Vec::new()
        };
        (name.to_string(), stuck)
    })
    .collect();
    assert_eq!(stuck, expected);
    for projection in &report.projections {
        assert_eq!(projection.failures, Vec::new(), "{}", projection.projection);
        assert_eq!(
            projection.differences,
            Vec::new(),
            "{}",
            projection.projection
        );
    }
    assert!(
        report.lines().contains(&format!(
            "projection quota: tenant {}: tenant_seq 5: the live projection cannot apply it ({OUT_OF_RANGE}); the tenant is held back before it",
            ledger.tenants[0]
        )),
        "{:?}",
        report.lines()
    );
    // Re-deciding the request the event records finds it too, at seq 5
    // alone: the request set no effective_at.
    let mut stored = original["GrantIssued"]["terms"].clone();
    stored["effective_at"] = json!("-5000-01-01T00:00:00Z");
    let findings = findings_of(&report, ledger.tenants[0]);
    assert_eq!(
        findings,
        vec![domain(
            5,
            "credits",
            &format!(
                "terms {stored} where the quota decides {}",
                original["GrantIssued"]["terms"]
            )
        )]
    );
}

#[tokio::test]
async fn history_the_edge_now_refuses_but_storage_holds_still_verifies_and_replays() {
    // Proves: events an earlier edge accepted and storage holds (a grant
    // effective in 1900, a reference with a tab and a newline), decided
    // through the pipeline as they once were, are applied by every
    // projection and verify clean, and a replay folds them: the decisions
    // keep to what storage needs, so tightening the edge never turns old
    // history into findings.
    let ledger = Ledger::new().await;
    let mut grant = purchase(50, 10);
    grant.effective_at = Some("1900-01-01T00:00:00Z".parse().unwrap());
    ledger.run(0, "old-grant", grant).await;
    let mut consumption = consume(7);
    consumption.reference = Some("job 7\tretry\nsecond line".into());
    ledger.run(0, "old-consume", consumption).await;
    ledger.catch_up().await;
    let report = ledger.verify().await;
    assert!(report.ok, "{:?}", report.lines());
    assert_eq!(findings_of(&report, ledger.tenants[0]), Vec::new());
    let state = ledger.replay(0, replay::as_of::AsOf::Head).await;
    assert_eq!(state["as_of_seq"], 2, "{state}");
}

/// Rewrites the first posting of tenant 0's event 7 (a consumption) to post
/// its account (a grant's, a liability) as an asset, the chain recomputed;
/// returns the account's code.
async fn retype_posting(ledger: &Ledger) -> String {
    let mut account = String::new();
    ledger
        .edit_payload(0, 7, Some("QuotaConsumed"), |payload| {
            let posting = &mut payload["QuotaConsumed"]["entry"]["postings"][0];
            assert_eq!(posting["account"]["type"], "liability", "{posting}");
            account = posting["account"]["code"].as_str().unwrap().to_string();
            posting["account"]["type"] = json!("asset");
        })
        .await;
    ledger.rechain(0).await;
    account
}

#[tokio::test]
async fn an_account_posted_as_another_type_stops_the_journal_at_that_event() {
    // Proves: every code keeps one account type in a tenant. An event whose
    // entry posts to an account as another type than its earlier postings
    // (rewritten behind the triggers) is not applied by the journal, whether
    // the earlier postings are in the same batch or (one event per batch)
    // already in the balances table.
    let catalog = commands::domains::projections();
    let journal = catalog
        .iter()
        .find(|projection| projection.name() == "journal")
        .unwrap();
    for batch_events in [1_000, 1] {
        let ledger = Ledger::new().await;
        ledger.scenario().await;
        let account = retype_posting(&ledger).await;
        let error = projections::runtime::catch_up_all(
            ledger.store().pool(),
            &[journal.as_ref()],
            None,
            batch_events,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "projection journal, tenant {}: event at tenant_seq 7: account {account} posted as asset, earlier as liability",
                ledger.tenants[0]
            ),
            "batches of {batch_events}"
        );
    }
}

/// The scenario with tenant 0's event 8 deleted behind the append-only
/// trigger, the chain recomputed.
async fn with_a_hole() -> Ledger {
    let ledger = Ledger::new().await;
    ledger.scenario().await;
    let tenant = ledger.tenants[0];
    ledger
        .tamper(&[format!(
            "DELETE FROM events WHERE tenant_id = '{tenant}' AND tenant_seq = 8"
        )])
        .await;
    ledger.rechain(0).await;
    ledger
}

#[tokio::test]
async fn an_event_removed_behind_the_triggers_holds_back_its_tenant_only() {
    // Proves: with tenant 0's event 8 deleted behind the append-only
    // trigger (chain recomputed), the live projections apply tenant 0 up to
    // seq 7 and answer an error naming the tenant and the missing seq,
    // while tenant 1 is caught up to its head; a rebuild holds tenant 0
    // back at seq 8 for every projection instead of failing, and the
    // other tenant's rows are rebuilt.
    let ledger = with_a_hole().await;
    let tenant = ledger.tenants[0];
    let pool = ledger.store().pool();
    let catalog = commands::domains::projections();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    let error = projections::runtime::catch_up_all(pool, &all, None, 1_000)
        .await
        .unwrap_err();
    // Every projection stands at 7 for the tenant: the one named is the
    // first by name of those furthest behind.
    assert_eq!(
        error.to_string(),
        format!(
            "projection accounts, tenant {tenant}: event at tenant_seq 8: tenant_seq 8 is missing: the next event is tenant_seq 9"
        )
    );
    let (head,): (i64,) = sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1")
        .bind(ledger.tenants[1].as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(head > 8, "{head}");
    for projection in &catalog {
        let checkpoint =
            |tenant_id| projections::read::checkpoint(pool, projection.name(), tenant_id);
        assert_eq!(
            checkpoint(ledger.tenants[1]).await.unwrap(),
            head,
            "{}",
            projection.name()
        );
        assert_eq!(
            checkpoint(tenant).await.unwrap(),
            7,
            "{}",
            projection.name()
        );
    }
    let report = projections::rebuild::rebuild_many(pool, &all, true)
        .await
        .unwrap();
    let mut held: Vec<(String, i64)> = report
        .held_back
        .iter()
        .map(|held| (held.projection.clone(), held.tenant_seq))
        .collect();
    held.sort();
    let mut expected: Vec<(String, i64)> = catalog
        .iter()
        .map(|projection| (projection.name().to_string(), 8))
        .collect();
    expected.sort();
    assert_eq!(held, expected);
    assert!(report.held_back.iter().all(|held| held.tenant_id == tenant));
}

/// Each projection's state and error, by name.
async fn states(pool: &sqlx::PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT projection, state, error FROM projections ORDER BY projection")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_workers_hold_back_every_projection_behind_a_hole_in_one_round() {
    // Proves: with tenant 0's event 8 deleted behind the append-only
    // trigger, the first round of the live workers that meets the hole
    // holds tenant 0 back in every projection at once, each marked failed
    // naming itself and the missing seq (before the one the error names),
    // instead of one projection per failing round; the other tenant is
    // applied to its head in every projection.
    let ledger = with_a_hole().await;
    let tenant = ledger.tenants[0];
    let pool = ledger.store().pool();
    let catalog = commands::domains::projections();
    projections::status::register(pool, &catalog).await.unwrap();
    let names: Vec<&str> = catalog.iter().map(|projection| projection.name()).collect();
    let workers = projections::Workers::start_polling(
        ledger.store(),
        catalog.clone(),
        Vec::new(),
        std::time::Duration::from_secs(600),
    );
    // The one the error names is marked last: once it is failed, the round
    // has held back and marked every other.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !states(pool)
        .await
        .iter()
        .any(|(name, state, _)| name == "accounts" && state == "failed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            states(pool).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut expected: Vec<(String, String, Option<String>)> = names
        .iter()
        .map(|name| {
            (
                name.to_string(),
                "failed".to_string(),
                Some(format!(
                    "projection {name}, tenant {tenant}: event at tenant_seq 8: tenant_seq 8 is missing: the next event is tenant_seq 9"
                )),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(states(pool).await, expected);
    let (head,): (i64,) = sqlx::query_as("SELECT last_seq FROM chain_heads WHERE tenant_id = $1")
        .bind(ledger.tenants[1].as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    for name in &names {
        let checkpoint = |tenant_id| projections::read::checkpoint(pool, name, tenant_id);
        assert_eq!(checkpoint(ledger.tenants[1]).await.unwrap(), head, "{name}");
        assert_eq!(checkpoint(tenant).await.unwrap(), 7, "{name}");
    }
    workers.stop().await;
}
