//! End-to-end tests of the `ledger` binary against a real PostgreSQL.

mod support;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::Server;

fn ledger(db: &TestDatabase) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
    command
        .env("DATABASE_URL", db.url())
        .env_remove("LEDGER_ADMIN_TOKEN");
    command
}

#[tokio::test]
async fn migrate_is_idempotent_and_tenant_create_prints_exactly_the_json_asked_for() {
    // Proves: `ledger migrate` can run twice; `tenant create --json` prints
    // exactly {"tenant_id": "...", "api_key": "..."} with a key that works.
    let db = TestDatabase::new().await;
    for _ in 0..2 {
        let output = ledger(&db).arg("migrate").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "migrations applied\n"
        );
    }
    let output = ledger(&db)
        .args(["tenant", "create", "acme", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let tenant_id = created["tenant_id"].as_str().unwrap();
    let api_key = created["api_key"].as_str().unwrap();
    assert_eq!(
        stdout,
        format!("{{\"tenant_id\": \"{tenant_id}\", \"api_key\": \"{api_key}\"}}\n")
    );
    assert_eq!(
        db.store()
            .authenticate(api_key)
            .await
            .unwrap()
            .map(|tenant| tenant.to_string()),
        Some(tenant_id.to_string())
    );
    let refused = ledger(&db).args(["tenant", "create", ""]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("tenant name must be 1 to 200 characters"));
}

#[tokio::test]
async fn serve_answers_http_and_stops_cleanly_on_sigterm() {
    // Proves: `ledger serve` listens, serves the API with the admin token from
    // the environment, and exits 0 on SIGTERM.
    let db = TestDatabase::new().await;
    let mut server = Server::start(db.url(), "admin-secret").await;
    let address = server.base.trim_start_matches("http://").to_string();
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let created = client
        .post(format!("http://{address}/v1/tenants"))
        .bearer_auth("admin-secret")
        .header("idempotency-key", "create-acme")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let terminated = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn project_once_and_rebuild_report_what_they_did() {
    // Proves: `project --once --json` applies every event and says how many;
    // `rebuild --all --json` replays them all into swapped-in tables;
    // `--stale` finds nothing to do; an unknown name is refused with the list.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    for index in 0..12 {
        let write = eventstore::CommandWrite {
            key: eventstore::IdempotencyKey::parse(&format!("k{index}")).unwrap(),
            fingerprint: eventstore::Fingerprint::of("test", &json!(index)).unwrap(),
            status: 200,
            events: vec![eventstore::NewEvent {
                aggregate_type: "counter".into(),
                aggregate_id: format!("c{}", index % 3),
                aggregate_seq: index / 3 + 1,
                event_type: "Added".into(),
                event_version: "1".into(),
                payload: eventstore::JsonText::from_value(&json!({"n": index})).unwrap(),
                metadata: eventstore::JsonText::from_value(&json!({})).unwrap(),
            }],
            at: eventstore::chain::to_stored_precision(chrono::Utc::now()),
        };
        store
            .append_command(tenant_id, write, |_, _| json!({}))
            .await
            .unwrap();
    }
    let output = ledger(&db)
        .args(["project", "--once", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    // Every projection reads every event (those of other aggregates it skips).
    assert_eq!(
        summary,
        json!({"applied": {"stream_index": 12, "subscriptions": 12, "quota": 12, "journal": 12}})
    );

    let output = ledger(&db)
        .args(["rebuild", "--all", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    // One pass: every event read once, applied by all four.
    assert_eq!(summary["events"], 12);
    assert_eq!(
        summary["projections"],
        json!(["stream_index", "subscriptions", "quota", "journal"])
    );
    assert!(summary["events_per_s"].as_f64().unwrap() > 0.0);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM stream_index")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3);

    let output = ledger(&db)
        .args(["rebuild", "--stale", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["events"],
        0
    );
    let output = ledger(&db).args(["rebuild", "nope"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("unknown projection nope (known: stream_index"));
}

#[tokio::test]
async fn verify_export_and_replay_work_from_the_command_line_and_offline() {
    // Proves: `verify` exits 0 on a clean ledger and 1 naming tenant and seq
    // after tampering; `export` writes a file that `verify --file` and
    // `replay --file` use with no database at all.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenant = store.create_tenant("acme").await.unwrap().tenant_id;
    let bus = commands::CommandBus::start(
        store.clone(),
        commands::BusConfig::default(),
        std::sync::Arc::new(commands::Metrics::default()),
    );
    let plan = aggregates::plan::PlanCatalog::builtin()
        .get("team_v4")
        .unwrap()
        .clone();
    let key = |text: &str| eventstore::IdempotencyKey::parse(text).unwrap();
    bus.execute(
        tenant,
        key("sub"),
        commands::requests::subscription::Subscribe {
            plan,
            trial_ends_at: None,
        },
    )
    .await
    .unwrap();
    for index in 0..3 {
        let consume = commands::requests::quota::ConsumeQuota {
            quota: aggregates::quota::QuotaType::Credits,
            account: None,
            amount: aggregates::Amount::new(10).unwrap(),
            reference: None,
        };
        bus.execute(tenant, key(&format!("use-{index}")), consume)
            .await
            .unwrap();
    }
    let output = ledger(&db).args(["project", "--once"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = ledger(&db).args(["verify", "--json"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], 7);
    let head_hash = report["tenants"][0]["head_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(head_hash.len(), 64);

    let dir = std::env::temp_dir().join(format!("ledger-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acme.jsonl");
    let tenant_text = tenant.to_string();
    let output = ledger(&db)
        .args([
            "export",
            "--tenant",
            &tenant_text,
            "--out",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains(&format!("exported 7 events of tenant {tenant_text}")));

    // Offline: a database URL that cannot answer proves none is used.
    let offline = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .unwrap()
    };
    let output = offline(&["verify", "--file", file.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains(&format!("head seq 7 hash {head_hash}: ok")));
    let output = offline(&[
        "replay",
        "--file",
        file.to_str().unwrap(),
        "--as-of-seq",
        "5",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let state: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(state["as_of_seq"], 5);
    let credits = state["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|quota| quota["quota"] == "credits")
        .unwrap()
        .clone();
    assert_eq!(credits["consumed"], "10");
    let output = ledger(&db)
        .args([
            "replay",
            "--tenant",
            &tenant_text,
            "--as-of-seq",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        state
    );
    let output = offline(&["replay", "--file", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("subscription: active team_v4"), "{text}");
    assert!(
        text.contains("CREDITS/0  debits        20030 credits        20030 balanced"),
        "{text}"
    );

    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE events SET payload = jsonb_set(payload, '{QuotaConsumed,amount}', '11') WHERE tenant_seq = 6")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(store.pool())
        .await
        .unwrap();
    let output = ledger(&db).args(["verify"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("tenant {tenant_text}: tenant_seq 6: stored hash")),
        "{text}"
    );
    assert!(text.contains("FAILED"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database name the test harness sweeps if the test dies before dropping it.
fn scratch_database_name() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("ledger_test_{seconds}_{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn verify_replay_and_export_never_create_nor_migrate_the_database_they_read() {
    // Proves: the auditors' commands refuse, with a clear message and exit
    // status 2, a database that does not exist (without creating it), one
    // without a ledger schema (without migrating it) and one whose schema
    // is older than the binary (leaving it as it was); `migrate` still
    // creates and migrates.
    let db = TestDatabase::new().await;
    let tenant = uuid::Uuid::now_v7().to_string();
    let out = std::env::temp_dir().join(format!("ledger-cli-{}.jsonl", uuid::Uuid::now_v7()));
    let out = out.to_str().unwrap().to_string();
    let commands: [Vec<&str>; 3] = [
        vec!["verify"],
        vec!["replay", "--tenant", &tenant],
        vec!["export", "--tenant", &tenant, "--out", &out],
    ];
    let run = |url: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    };
    let exists = |name: String| {
        let pool = db.store().pool().clone();
        async move {
            let (count,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
                    .bind(name)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            count == 1
        }
    };

    let missing = scratch_database_name();
    for args in &commands {
        let output = run(&db.database().url_for(&missing), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("has no database {missing}; nothing to read there")),
            "{args:?}: {stderr}"
        );
        assert!(!exists(missing.clone()).await, "{args:?} created it");
    }

    let empty = scratch_database_name();
    sqlx::query(&format!("CREATE DATABASE {empty}"))
        .execute(db.store().pool())
        .await
        .unwrap();
    for args in &commands {
        let output = run(&db.database().url_for(&empty), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "database {empty} holds no ledger schema (no migration applied)"
            )),
            "{args:?}: {stderr}"
        );
    }
    let pool = sqlx::PgPool::connect_with(db.database().options_for(&empty))
        .await
        .unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "an auditor's command wrote to the database");
    pool.close().await;
    // `migrate` is the command that sets a database up.
    let output = run(&db.database().url_for(&empty), &["migrate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&db.database().url_for(&empty), &["verify", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventstore::database::drop_database(&db.database().options(), &empty)
        .await
        .unwrap();

    // A schema one migration behind the binary.
    let (latest, description): (i64, String) = sqlx::query_as(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations) \
         RETURNING version, description",
    )
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    for args in &commands {
        let output = run(db.url(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "has a ledger schema older than this binary: migration {latest} ({description}) \
                 is not applied; run `ledger migrate` first (this command never migrates)"
            )),
            "{args:?}: {stderr}"
        );
    }
    let (applied,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE version = $1")
            .bind(latest)
            .fetch_one(db.store().pool())
            .await
            .unwrap();
    assert_eq!(applied, 0, "an auditor's command migrated the database");
    assert!(!std::path::Path::new(&out).exists());
}
