//! End-to-end tests of the `ledger` binary against a real PostgreSQL.

mod support;

use eventstore::testing::TestDatabase;
use replay::bench::mixed;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Server;

/// `ledger args` on `db`, asserted successful (its stderr shown if not).
fn succeeded(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    let output = ledger(db).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

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
    // exactly {"tenant_id": "...", "api_key": "...", "key_id": "..."} with a
    // key that works and the id the tenant's key is listed under.
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
    let key_id = created["key_id"].as_str().unwrap();
    assert_eq!(
        stdout,
        format!(
            "{{\"tenant_id\": \"{tenant_id}\", \"api_key\": \"{api_key}\", \"key_id\": \"{key_id}\"}}\n"
        )
    );
    let keys = db
        .store()
        .api_keys(tenant_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_id.to_string(), key_id);
    assert_eq!(
        db.store()
            .authenticate(api_key)
            .await
            .unwrap()
            .map(|tenant| tenant.to_string()),
        Some(tenant_id.to_string())
    );
    let refused = ledger(&db).args(["tenant", "create", ""]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("tenant name must be 1 to 200 characters"));
}

#[tokio::test]
async fn serve_answers_http_and_stops_cleanly_on_sigterm() {
    // Proves: `ledger serve` listens, serves the API with the admin token from
    // the environment, tells time by the database server's clock (it says
    // so at start, at the default log level), and exits 0 on SIGTERM.
    let db = TestDatabase::new().await;
    let mut server = Server::start(db.url(), "admin-secret").await;
    if std::env::var_os("LEDGER_LOG").is_none() {
        let log = server.process.log.tail();
        assert!(log.contains(commands::pipeline::FOLLOWING), "{log}");
    }
    let address = server.base.trim_start_matches("http://").to_string();
    let client = support::http_client();
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
        .args(["-TERM", &server.process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.process.child.try_wait().unwrap() {
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
async fn serve_reads_on_the_replica_ledger_read_database_url_names() {
    // Proves: `LEDGER_READ_DATABASE_URL` reaches `serve`: its reads go to
    // the database it names (here another database of the same server,
    // migrated, without the primary's tenants: a read there finds none of
    // what the primary holds), which, being no standby, the projections'
    // status names; without it, the status names no replica.
    let (primary, other) = (TestDatabase::new().await, TestDatabase::new().await);
    let server = Server::start_with_env(
        primary.url(),
        "admin-secret",
        &[],
        &[("LEDGER_READ_DATABASE_URL", other.url())],
    )
    .await;
    let client = support::http_client();
    let status = |base: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("{base}/v1/projections"))
                .bearer_auth("admin-secret")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let replicated = status(server.base.clone()).await;
    assert_eq!(
        replicated["replica_error"],
        "the read replica is not a standby (not in recovery): its reads do not follow the primary",
        "{replicated}"
    );
    let tenant = primary.store().create_tenant("acme").await.unwrap();
    let api_key = tenant.api_key.clone();
    let granted = client
        .post(format!("{}/v1/grants", server.base))
        .bearer_auth(&api_key)
        .header("idempotency-key", "grant")
        .json(&json!({"quota": "credits", "amount": 1_000, "source": "purchase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    // Projected on the primary (its workers run beside the server)...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let projected: Option<(i64,)> = sqlx::query_as(
            "SELECT granted::bigint FROM quota_totals WHERE tenant_id = $1 AND quota = 'credits'",
        )
        .bind(tenant.tenant_id.as_uuid())
        .fetch_optional(primary.store().pool())
        .await
        .unwrap();
        if projected == Some((1_000,)) {
            break;
        }
        assert!(Instant::now() < deadline, "the grant was never projected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... but read where the replica URL points.
    let read: Value = client
        .get(format!("{}/v1/quota/credits", server.base))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["granted"], 0, "{read}");
    drop(server);
    let alone = Server::start(primary.url(), "admin-secret").await;
    let unreplicated = status(alone.base.clone()).await;
    assert_eq!(unreplicated["replica_error"], Value::Null, "{unreplicated}");
    assert_eq!(
        unreplicated["replica_replay_lag_seconds"],
        Value::Null,
        "{unreplicated}"
    );
}

#[tokio::test]
async fn project_once_and_rebuild_report_what_they_did() {
    // Proves: `project --once --json` applies every event and says how many;
    // `rebuild --all --json` replays them all into swapped-in tables;
    // `--stale` finds nothing to do; an unknown name is refused with the list;
    // rules this build does not know, and server sizes out of their range,
    // are refused before anything starts.
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
            indexed: Vec::new(),
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
        json!({"applied": {"stream_index": 12, "subscriptions": 12, "quota": 12, "accounts": 12, "payments": 12, "escrow": 12, "compensation": 12, "journal": 12, "scheduled_work": 12}})
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
    // One pass: every event read once, applied by all of them.
    assert_eq!(summary["events"], 12);
    assert_eq!(
        summary["projections"],
        json!([
            "stream_index",
            "subscriptions",
            "quota",
            "accounts",
            "payments",
            "escrow",
            "compensation",
            "journal",
            "scheduled_work"
        ])
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
    // A name given twice is rebuilt once.
    let output = succeeded(&db, &["rebuild", "stream_index", "stream_index", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["projections"],
        json!(["stream_index"])
    );
    let output = ledger(&db).args(["rebuild", "nope"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("unknown projection nope (known: stream_index"));
    // Rules this build does not know are refused before anything starts.
    let known = aggregates::rules::Rules::CURRENT.version();
    let unknown = (known + 1).to_string();
    let output = ledger(&db)
        .args(["project", "--rules", &unknown])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!(
            "invalid value '{unknown}' for '--rules <RULES>': {unknown} is not in 1..={known}"
        )),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // So are sizes that would starve the server or exhaust the machine.
    for (flag, value, range) in [
        ("--shards", "0", "1..=64"),
        ("--pipeline-depth", "1000000000", "1..=64"),
        ("--db-connections", "0", "1..=1000"),
        ("--body-limit-bytes", "0", "1024..=67108864"),
        ("--tenant-waiters-max", "0", "1..=10000"),
        ("--replays-max", "100000", "1..=64"),
        ("--read-wait-ms", "0", "1..="),
    ] {
        let output = ledger(&db).args(["serve", flag, value]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}"))
                && stderr.contains(&format!("{value} is not in {range}")),
            "{stderr}"
        );
    }
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
    // A seq the file does not reach is refused, as from the database.
    let output = offline(&[
        "replay",
        "--file",
        file.to_str().unwrap(),
        "--as-of-seq",
        "8",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("tenant_seq 8 is not in the tenant's history (0 to its last, 7)"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A file of the format before requests were recorded is refused, by
    // both commands, saying which version it is (exit 2).
    let text = std::fs::read_to_string(&file).unwrap();
    let old_file = dir.join("acme-v1.jsonl");
    std::fs::write(
        &old_file,
        text.replacen("\"version\":2", "\"version\":1", 1),
    )
    .unwrap();
    for command in ["verify", "replay"] {
        let output = offline(&[command, "--file", old_file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(
                "line 1: ledger-export version 1 is not read by this binary, which reads version 2 only \
                 (export the ledger again with this binary)"
            ),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
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

#[tokio::test]
async fn tenant_keys_and_revoke_key_list_and_revoke_by_id_and_a_running_server_refuses_the_key() {
    // Proves: `tenant keys --json` lists a key by id and hint only;
    // `tenant revoke-key --json` answers the revocation, the same again, and
    // refuses an unknown key (exit 2, naming it); a running `ledger serve`
    // that had just accepted the key refuses it well within its key cache
    // lifetime (it is notified); `serve --help` states the bounds.
    let db = TestDatabase::new().await;
    let run = |args: &[&str]| {
        let output = ledger(&db).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let created = run(&["tenant", "create", "acme", "--json"]);
    let tenant = created["tenant_id"].as_str().unwrap().to_string();
    let api_key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    let listed = run(&["tenant", "keys", &tenant, "--json"]);
    assert_eq!(
        listed,
        json!({"tenant_id": tenant, "keys": [{
            "key_id": key_id,
            "hint": &api_key[api_key.len() - 4..],
            "created_at": listed["keys"][0]["created_at"],
            "last_used_at": null,
            "revoked_at": null,
        }]})
    );
    assert!(listed["keys"][0]["created_at"].is_string());

    let server = Server::start(db.url(), "admin-secret").await;
    let client = reqwest::Client::new();
    let streams = || {
        client
            .get(format!("{}/v1/streams", server.base))
            .bearer_auth(&api_key)
            .send()
    };
    assert_eq!(streams().await.unwrap().status(), 200);

    let revoked = run(&["tenant", "revoke-key", &tenant, &key_id, "--json"]);
    let revoked_at = revoked["revoked_at"].as_str().unwrap().to_string();
    assert_eq!(
        revoked,
        json!({"tenant_id": tenant, "key_id": key_id, "revoked_at": revoked_at})
    );
    // The server verified the key a moment ago; only the notification can
    // make it refuse the key before its cache lifetime (5 s) has passed.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = streams().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "the server still accepted the revoked key 2 s after the revocation"
        );
    }
    assert_eq!(
        run(&["tenant", "revoke-key", &tenant, &key_id, "--json"]),
        revoked
    );
    let listed = run(&["tenant", "keys", &tenant, "--json"]);
    assert_eq!(listed["keys"][0]["revoked_at"], revoked_at.as_str());
    assert!(listed["keys"][0]["last_used_at"].is_string(), "{listed}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let output = ledger(&db)
        .args(["tenant", "revoke-key", &tenant, &unknown])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains(&format!("tenant {tenant} has no API key {unknown}")));
    let output = ledger(&db)
        .args(["tenant", "keys", &unknown])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("no tenant {unknown}")));
    // Listing keys only reads, and a rebuild writes an existing ledger: a
    // database that is not there is refused, not created (a mistyped name).
    let missing = format!("ledger_no_such_{}", uuid::Uuid::now_v7().simple());
    let url = db
        .url()
        .rsplit_once('/')
        .map(|(server, _)| format!("{server}/{missing}"))
        .unwrap();
    for args in [&["tenant", "keys", &tenant][..], &["rebuild", "--all"]] {
        let output = ledger(&db)
            .env("DATABASE_URL", &url)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let (created,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&missing)
                .fetch_one(db.store().pool())
                .await
                .unwrap();
        assert!(!created, "{args:?} created {missing}");
    }

    let help = ledger(&db).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    use commands::http::auth::{AUTH_CACHE_TTL, FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW};
    use commands::http::metrics::PROJECTION_METRICS_INTERVAL;
    for stated in [
        format!("at the latest after {} s", AUTH_CACHE_TTL.as_secs()),
        format!(
            "{FAILED_AUTH_LIMIT} failed authentications within {} s",
            FAILED_AUTH_WINDOW.as_secs()
        ),
        format!(
            "refreshed every {} s",
            PROJECTION_METRICS_INTERVAL.as_secs()
        ),
        "--metrics-token".to_string(),
    ] {
        assert!(
            help.contains(&stated),
            "serve --help does not say {stated:?}: {help}"
        );
    }
}

/// Polls `condition` every 20 ms until it holds, failing after 30 s with
/// `what` it waited for.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `future`, failing after 30 s with `what` it waited for.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("waited 30 s for {what}"))
}

/// POST with a bearer token and an Idempotency-Key; answers the status and
/// the JSON body.
async fn post(
    client: &reqwest::Client,
    url: String,
    bearer: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(bearer)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every projection's checkpoint of `tenant_id`.
async fn checkpoints(db: &TestDatabase, tenant_id: aggregates::TenantId) -> Vec<i64> {
    let mut seqs = Vec::new();
    for projection in commands::domains::projections() {
        seqs.push(
            projections::read::checkpoint(db.store().pool(), projection.name(), tenant_id)
                .await
                .unwrap(),
        );
    }
    seqs
}

#[tokio::test]
async fn idle_workers_are_woken_by_another_processs_append_not_by_their_poll() {
    // Proves: workers in this process that poll only once an hour, idle
    // after their first round, apply an event that a `ledger serve
    // --no-workers` process appends: only its `NOTIFY ledger_events`,
    // through the workers' `LISTEN`, can have woken them (this process
    // appends nothing).
    let db = TestDatabase::new().await;
    let server = Server::start_with(db.url(), "admin-secret", &["--no-workers"]).await;
    let client = support::http_client();
    let (status, tenant) = post(
        &client,
        format!("{}/v1/tenants", server.base),
        "admin-secret",
        "acme",
        json!({"name": "acme"}),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let api_key = tenant["api_key"].as_str().unwrap();
    let tenant_id = aggregates::TenantId::from_uuid(
        uuid::Uuid::parse_str(tenant["tenant_id"].as_str().unwrap()).unwrap(),
    );
    let (status, body) = post(
        &client,
        format!("{}/v1/grants", server.base),
        api_key,
        "grant",
        json!({"quota": "credits", "amount": 10, "source": "purchase"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let catalog = commands::domains::projections();
    projections::status::register(db.store().pool(), &catalog)
        .await
        .unwrap();
    let workers = projections::Workers::start_polling(
        db.store(),
        catalog,
        Vec::new(),
        Duration::from_secs(3_600),
    );
    let mut progress = workers.progress();
    // A round is over (and the workers idle) when it bumps the progress.
    within(
        "the workers' first round",
        progress.wait_for(|rounds| *rounds >= 1),
    )
    .await
    .unwrap();
    let rounds = *progress.borrow();
    assert_eq!(checkpoints(&db, tenant_id).await, [1; 9]);
    let pool = db.store().pool().clone();
    wait_until("the workers to LISTEN ledger_events", || {
        let pool = pool.clone();
        async move {
            let (listening,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%ledger_events%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            listening >= 1
        }
    })
    .await;

    let (status, body) = post(
        &client,
        format!("{}/v1/quota/credits/consume", server.base),
        api_key,
        "use",
        json!({"amount": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    within(
        "a wake-up from the other process's append",
        progress.wait_for(|now| *now > rounds),
    )
    .await
    .unwrap();
    assert_eq!(checkpoints(&db, tenant_id).await, [2; 9]);
    workers.stop().await;
}

#[tokio::test]
async fn serve_with_two_shards_answers_one_shards_tenant_while_the_others_append_is_held() {
    // Proves: `serve --shards 2 --pipeline-depth 1` decides tenants of
    // different shards (`shard_of`) apart: while the one append of the
    // first tenant's shard is held (the test locks its chain head), a
    // command of a tenant of the other shard is answered; the held command
    // is answered once released.
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut by_shard: [Option<eventstore::NewTenant>; 2] = [None, None];
    for _ in 0..64 {
        let tenant = store.create_tenant("t").await.unwrap();
        let shard = commands::pipeline::shard_of(tenant.tenant_id, 2);
        by_shard[shard].get_or_insert(tenant);
        if by_shard.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(held), Some(free)] = by_shard else {
        panic!("64 tenants, all of one shard");
    };
    let server = Server::start_with(
        db.url(),
        "admin-secret",
        &["--shards", "2", "--pipeline-depth", "1", "--no-workers"],
    )
    .await;
    let client = support::http_client();
    let grant = |api_key: String| {
        let (client, url) = (client.clone(), format!("{}/v1/grants", server.base));
        async move {
            post(
                &client,
                url,
                &api_key,
                "grant",
                json!({"quota": "credits", "amount": 10, "source": "purchase"}),
            )
            .await
        }
    };

    let mut lock = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM chain_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(held.tenant_id.as_uuid())
        .execute(&mut *lock)
        .await
        .unwrap();
    let blocked = tokio::spawn(grant(held.api_key.clone()));
    let pool = store.pool().clone();
    wait_until(
        "the held tenant's append to wait for its chain head",
        || {
            let pool = pool.clone();
            async move {
                let (waiting,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                waiting >= 1
            }
        },
    )
    .await;
    let (status, body) = within(
        "the other shard's tenant's command, while the first shard's append is held",
        grant(free.api_key.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(!blocked.is_finished(), "the held append was answered");
    lock.commit().await.unwrap();
    let (status, body) = within("the released command", blocked).await.unwrap();
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn serve_read_wait_ms_bounds_a_min_seq_read() {
    // Proves: `serve --read-wait-ms 300` answers a read whose min_seq no
    // projection reaches (no workers) with 503 `projection_lagging` after
    // 300 ms, not after the default 5 s.
    let db = TestDatabase::new().await;
    let tenant = db.store().create_tenant("acme").await.unwrap();
    let server = Server::start_with(
        db.url(),
        "admin-secret",
        &["--no-workers", "--read-wait-ms", "300"],
    )
    .await;
    let (status, body) = post(
        &support::http_client(),
        format!("{}/v1/grants", server.base),
        &tenant.api_key,
        "grant",
        json!({"quota": "credits", "amount": 10, "source": "purchase"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    let response = support::http_client()
        .get(format!("{}/v1/streams?min_seq=1", server.base))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "projection_lagging", "{body}");
    assert_eq!(
        body["error"]["details"],
        json!({"projection": "stream_index", "projection_seq": 0, "min_seq": 1})
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(2_500),
        "answered after {elapsed:?}"
    );
}

/// A pipeline on `db` whose clock the test sets.
fn clocked_bus(
    db: &TestDatabase,
) -> (
    commands::CommandBus,
    std::sync::Arc<std::sync::Mutex<chrono::DateTime<chrono::Utc>>>,
) {
    use chrono::TimeZone;
    let now = std::sync::Arc::new(std::sync::Mutex::new(
        chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
    ));
    let reading = now.clone();
    let bus = commands::CommandBus::start(
        db.store().clone(),
        commands::BusConfig {
            clock: commands::Clock::from_fn(move || *reading.lock().unwrap()),
            ..commands::BusConfig::default()
        },
        std::sync::Arc::new(commands::Metrics::default()),
    );
    (bus, now)
}

/// Subscribes `tenant` to `plan`, then consumes each of `credits`, an hour
/// apart from 00:00 on 2025-01-01 (so the subscription is seqs 1 to 4 at
/// 00:00, the first consumption seq 5 at 01:00, ...).
async fn subscribe_and_consume(
    bus: &commands::CommandBus,
    now: &std::sync::Mutex<chrono::DateTime<chrono::Utc>>,
    tenant: aggregates::TenantId,
    plan: &str,
    credits: &[i64],
) {
    let key = |text: String| eventstore::IdempotencyKey::parse(&text).unwrap();
    let plan = aggregates::plan::PlanCatalog::builtin()
        .get(plan)
        .unwrap()
        .clone();
    let subscribed = bus
        .execute(
            tenant,
            key("sub".into()),
            commands::requests::subscription::Subscribe {
                plan,
                trial_ends_at: None,
            },
        )
        .await
        .unwrap();
    assert!(subscribed.accepted(), "{}", subscribed.body);
    for (index, amount) in credits.iter().enumerate() {
        *now.lock().unwrap() += chrono::Duration::hours(1);
        let consume = commands::requests::quota::ConsumeQuota {
            quota: aggregates::quota::QuotaType::Credits,
            account: None,
            amount: aggregates::Amount::new(*amount).unwrap(),
            reference: None,
        };
        let consumed = bus
            .execute(tenant, key(format!("use-{index}")), consume)
            .await
            .unwrap();
        assert!(consumed.accepted(), "{}", consumed.body);
    }
}

#[tokio::test]
async fn verify_tenant_verifies_that_tenant_alone() {
    // Proves: `verify --tenant A --json` reports tenant A alone (its events
    // and head) and exits 0 although tenant B's history was altered;
    // `verify --tenant B` exits 1 naming B's altered seq, and nothing of A.
    let db = TestDatabase::new().await;
    let store = db.store();
    let (bus, now) = clocked_bus(&db);
    let a = store.create_tenant("acme").await.unwrap().tenant_id;
    let b = store.create_tenant("beta").await.unwrap().tenant_id;
    subscribe_and_consume(&bus, &now, a, "team_v4", &[10]).await;
    subscribe_and_consume(&bus, &now, b, "team_v4", &[10, 20]).await;
    let catalog = commands::domains::projections();
    projections::status::register(store.pool(), &catalog)
        .await
        .unwrap();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    projections::runtime::catch_up_all(store.pool(), &all, None, 1_000)
        .await
        .unwrap();
    let mut connection = store.pool().acquire().await.unwrap();
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER events_append_only".to_string(),
        format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{QuotaConsumed,amount}}', '11') \
             WHERE tenant_id = '{b}' AND tenant_seq = 6"
        ),
        "ALTER TABLE events ENABLE TRIGGER events_append_only".to_string(),
    ] {
        sqlx::query(&statement)
            .execute(&mut *connection)
            .await
            .unwrap();
    }

    let (a_text, b_text) = (a.to_string(), b.to_string());
    let output = ledger(&db)
        .args(["verify", "--tenant", &a_text, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], 5);
    let tenants = report["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{report}");
    assert_eq!(tenants[0]["tenant_id"], a_text.as_str());
    assert_eq!(tenants[0]["head_seq"], 5);
    assert_eq!(tenants[0]["findings"], json!([]));

    let output = ledger(&db)
        .args(["verify", "--tenant", &b_text])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("tenant {b_text}: tenant_seq 6: stored hash")),
        "{text}"
    );
    assert!(!text.contains(&a_text), "{text}");
    bus.shutdown().await;
}

#[tokio::test]
async fn replay_as_of_a_time_folds_the_events_recorded_by_then() {
    // Proves: `replay --tenant T --as-of TIME --json` folds exactly the
    // events recorded at or before TIME (the one at TIME in, nothing before
    // the first), equals `--as-of-seq` of the seq reached but for the time
    // reported, and a time that does not parse, or is not 5 s past yet, is
    // refused (exit 2).
    let db = TestDatabase::new().await;
    let store = db.store();
    let (bus, now) = clocked_bus(&db);
    let tenant = store.create_tenant("acme").await.unwrap().tenant_id;
    // Seqs 1-4 at 00:00, 5 at 01:00, 6 at 02:00.
    subscribe_and_consume(&bus, &now, tenant, "hobby_v3", &[10, 20]).await;
    let tenant_text = tenant.to_string();
    let replay = |point: &[&str]| {
        let output = ledger(&db)
            .args(["replay", "--tenant", &tenant_text, "--json"])
            .args(point)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{point:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let credits = |state: &Value| -> Value {
        state["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|quota| quota["quota"] == "credits")
            .unwrap_or_else(|| panic!("no credits in {state}"))
            .clone()
    };

    let at_one = replay(&["--as-of", "2025-01-01T01:00:00Z"]);
    assert_eq!(at_one["as_of_seq"], 5);
    assert_eq!(at_one["as_of"], "2025-01-01T01:00:00Z");
    assert_eq!(
        (
            credits(&at_one)["consumed"].clone(),
            credits(&at_one)["available"].clone()
        ),
        (json!("10"), json!(990))
    );
    let just_before = replay(&["--as-of", "2025-01-01T00:59:59.999999Z"]);
    assert_eq!(just_before["as_of_seq"], 4);
    assert_eq!(credits(&just_before)["consumed"], "0");
    let before = replay(&["--as-of", "2024-12-31T23:59:59Z"]);
    assert_eq!(before["as_of_seq"], 0);
    assert_eq!(before["quotas"], json!([]));

    let mut by_time = replay(&["--as-of", "2025-01-01T01:30:00Z"]);
    let mut by_seq = replay(&["--as-of-seq", "5"]);
    assert_eq!(by_time["as_of"], "2025-01-01T01:30:00Z");
    assert_eq!(by_seq["as_of"], "2025-01-01T01:00:00Z");
    by_time["as_of"] = Value::Null;
    by_seq["as_of"] = Value::Null;
    assert_eq!(by_time, by_seq);

    let output = ledger(&db)
        .args(["replay", "--tenant", &tenant_text, "--as-of", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--as-of"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A time not yet 5 s past (by the database's clock) could still gain
    // events: refused.
    let output = ledger(&db)
        .args(["replay", "--tenant", &tenant_text])
        .args(["--as-of", "2999-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--as-of 2999-01-01T00:00:00Z is not closed yet"),
        "{stderr}"
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn bench_runs_a_small_workload_and_reports_every_figure() {
    // Proves: `ledger bench --tenants 2 --accounts 2 --clients 2 --commands
    // 50 --json` runs the quota workload on a database of its own and prints
    // one JSON line of exactly the documented fields: the parameters as
    // given, 54 events (4 grants, 50 consumptions), positive rates and
    // latencies (p50 at most p99), catch-up, processor time, peak RSS, and
    // the command phase's appends carrying exactly its 50 commands.
    let db = TestDatabase::new().await;
    let output = ledger(&db)
        .args([
            "bench",
            "--tenants",
            "2",
            "--accounts",
            "2",
            "--clients",
            "2",
            "--commands",
            "50",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let mut fields: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "accounts",
            "append_commands_mean",
            "append_ms_mean",
            "appends",
            "catch_up_ms",
            "clients",
            "commands",
            "commands_per_s",
            "cpu_us_per_command",
            "events",
            "latency_ms_p50",
            "latency_ms_p99",
            "ledger_cpu_us_per_command",
            "mode",
            "peak_rss_mb",
            "pipeline_depth",
            "rebuild_events_per_s",
            "shards",
            "tenants",
            "verify_events_per_s",
            "workload",
        ]
    );
    for (field, value) in [
        ("workload", json!("quota")),
        ("mode", json!("in_process")),
        ("tenants", json!(2)),
        ("accounts", json!(2)),
        ("clients", json!(2)),
        ("commands", json!(50)),
        ("shards", json!(1)),
        ("pipeline_depth", json!(2)),
        ("events", json!(54)),
    ] {
        assert_eq!(report[field], value, "{field}: {report}");
    }
    let number = |field: &str| -> f64 {
        report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is not a number: {report}"))
    };
    for field in [
        "commands_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
        "rebuild_events_per_s",
        "verify_events_per_s",
        "peak_rss_mb",
    ] {
        assert!(number(field) > 0.0, "{field}: {report}");
    }
    // Processor time is counted in 10 ms ticks: a short run may see none.
    for field in [
        "catch_up_ms",
        "cpu_us_per_command",
        "ledger_cpu_us_per_command",
    ] {
        assert!(number(field) >= 0.0, "{field}: {report}");
    }
    assert!(
        number("latency_ms_p50") <= number("latency_ms_p99"),
        "{report}"
    );
    assert!(number("peak_rss_mb") < 1_024.0, "{report}");
    // Nothing else writes and nothing conflicts here, so every measured
    // command went through exactly one append attempt.
    let appends = report["appends"].as_u64().unwrap();
    assert!((1..=50).contains(&appends), "{report}");
    assert_eq!(
        (number("append_commands_mean") * appends as f64).round(),
        50.0,
        "{report}"
    );
    assert!(number("append_ms_mean") > 0.0, "{report}");
}

#[tokio::test]
async fn bench_runs_the_payments_workload_and_settles_every_capture() {
    // Proves: `ledger bench --workload payments` authorizes and captures
    // 10 payments (20 measured commands), settles all 10 captures in one
    // batch per tenant, verifies, and reports the settled lines and their
    // rate beside the common figures, with appends carrying exactly the 20
    // measured commands.
    let db = TestDatabase::new().await;
    let output = ledger(&db)
        .args([
            "bench",
            "--workload",
            "payments",
            "--tenants",
            "2",
            "--clients",
            "2",
            "--commands",
            "20",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (field, value) in [
        ("workload", json!("payments")),
        ("commands", json!(20)),
        ("settled_lines", json!(10)),
    ] {
        assert_eq!(report[field], value, "{field}: {report}");
    }
    // The 20 measured commands, in the append statements of their phase
    // only (not the intents set up before it, nor the settlement after).
    let appends = report["appends"].as_u64().unwrap() as f64;
    assert_eq!(
        (report["append_commands_mean"].as_f64().unwrap() * appends).round(),
        20.0,
        "{report}"
    );
    for field in [
        "commands_per_s",
        "settled_lines_per_s",
        "verify_events_per_s",
    ] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
}

#[tokio::test]
async fn bench_runs_the_mixed_workload_over_http_with_every_domain() {
    // Proves: `ledger bench --workload mixed` drives a `ledger serve` child
    // over HTTP with flows of every domain (one client: 60 flows before its
    // first settlement batch of 10 payments), checks that each flow's
    // events, each commission and each scheduled release happened once (it
    // fails otherwise), verifies, and reports the flows by kind (and no
    // append figures: the pipeline ran in the server).
    let db = TestDatabase::new().await;
    let output = ledger(&db)
        .args([
            "bench",
            "--workload",
            "mixed",
            "--tenants",
            "1",
            "--accounts",
            "3",
            "--clients",
            "1",
            "--commands",
            "105",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    // By turn: quota, payment, quota, escrow, quota, work (10 commands per
    // 6 flows); the 57th flow, in a quota's turn, settles the 10 payments
    // before it (94 commands by then); then escrow (98), quota, work,
    // quota, payment (103), quota and escrow, which ends at 108, the first
    // flow to end at 105 or more.
    assert_eq!(report["mode"], json!("http"), "{report}");
    // The pipeline ran in the server: no append figures here.
    for field in ["appends", "append_commands_mean", "append_ms_mean"] {
        assert_eq!(report.get(field), None, "{field}: {report}");
    }
    assert_eq!(
        report["flows"],
        json!({"quota": 31, "payment": 11, "escrow": 11, "work": 10, "settlement": 1}),
        "{report}"
    );
    assert_eq!(report["commands"], json!(108), "{report}");
}

/// A tenant of a running server, posting with its API key.
struct Shop<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    api_key: &'a str,
}

impl Shop<'_> {
    /// POSTs `body` to `path` under `key` and asserts `status`; answers the
    /// body.
    async fn call(&self, path: &str, key: &str, body: Value, status: u16) -> Value {
        let url = format!("{}{path}", self.base);
        let (got, answer) = post(self.client, url, self.api_key, key, body).await;
        assert_eq!(got, status, "{path}: {answer}");
        answer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payments_route_builds_a_ledger_that_verifies_and_replays() {
    // Proves: a ledger built through every payments route of a running
    // `ledger serve` (intents, card, cash and gift-card tenders, captures,
    // a cancel, refunds and a failed refund, a dispute won, gift cards
    // issued and loaded, settlement batches as JSON and as CSV with a
    // break resolved, payouts paid and failed) passes `verify` (every
    // recorded request decided again, every read table equal to a fresh
    // replay) and `replay` shows its payments; its trial balance ties out
    // from the database and from its export (exit 0), and not once a
    // balance is edited behind the ledger's back (exit 1).
    let db = TestDatabase::new().await;
    let server = Server::start(db.url(), "cli-admin").await;
    let client = support::http_client();
    let (_, tenant) = post(
        &client,
        format!("{}/v1/tenants", server.base),
        "cli-admin",
        "tenant",
        json!({"name": "shop"}),
    )
    .await;
    let api_key = tenant["api_key"].as_str().unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap();
    let shop = Shop {
        client: &client,
        base: &server.base,
        api_key,
    };
    let pay = |amount: i64, capture: &str| json!({"amount": amount, "currency": "USD", "capture": capture});
    let card = shop
        .call("/v1/payments", "p1", pay(10_000, "manual"), 201)
        .await;
    let card = card["payment_id"].as_str().unwrap().to_string();
    let path = |payment: &str, tail: &str| format!("/v1/payments/{payment}{tail}");
    let tendered = shop
        .call(
            &path(&card, "/tenders"),
            "p1-card",
            json!({"method": "card", "amount": 10_000, "processor": "stripe", "reference": "ch_1"}),
            201,
        )
        .await;
    let tender = tendered["tender_id"].as_str().unwrap();
    let captured = shop
        .call(
            &path(&card, "/captures"),
            "p1-cap",
            json!({"tender_id": tender, "amount": 6_000, "reference": "cap_1", "final": true}),
            201,
        )
        .await;
    let capture = captured["capture_id"].as_str().unwrap();
    let refund = shop
        .call(
            &path(&card, "/refunds"),
            "p1-refund",
            json!({"amount": 500, "reference": "re_1"}),
            201,
        )
        .await;
    let refund = refund["refund_id"].as_str().unwrap();
    shop.call(
        &format!("/v1/refunds/{refund}/fail"),
        "p1-refund-fail",
        json!({"reason": "closed account"}),
        200,
    )
    .await;
    shop.call(
        &path(&card, "/refunds"),
        "p1-refund-2",
        json!({"amount": 1_000, "reference": "re_2"}),
        201,
    )
    .await;
    let dispute = shop
        .call(
            &path(&card, "/disputes"),
            "p1-dispute",
            json!({"capture_id": capture, "amount": 2_000, "fee": 1_500, "reference": "dp_1"}),
            201,
        )
        .await;
    let dispute = dispute["dispute_id"].as_str().unwrap();
    shop.call(
        &format!("/v1/disputes/{dispute}/evidence"),
        "p1-evidence",
        json!({}),
        200,
    )
    .await;
    shop.call(
        &format!("/v1/disputes/{dispute}/close"),
        "p1-won",
        json!({"outcome": "won"}),
        200,
    )
    .await;

    let cash = shop
        .call("/v1/payments", "p2", pay(3_000, "automatic"), 201)
        .await;
    let cash = cash["payment_id"].as_str().unwrap().to_string();
    shop.call(
        &path(&cash, "/tenders"),
        "p2-cash",
        json!({"method": "cash", "amount": 1_000}),
        201,
    )
    .await;
    shop.call(
        "/v1/gift-cards",
        "gc",
        json!({"code": "GC-1", "currency": "USD", "amount": 1_500}),
        201,
    )
    .await;
    shop.call(
        "/v1/gift-cards/GC-1/load",
        "gc-load",
        json!({"amount": 500}),
        200,
    )
    .await;
    shop.call(
        &path(&cash, "/tenders"),
        "p2-gift",
        json!({"method": "gift_card", "amount": 2_000, "gift_card": "GC-1"}),
        201,
    )
    .await;
    let voided = shop
        .call("/v1/payments", "p3", pay(700, "manual"), 201)
        .await;
    let voided = voided["payment_id"].as_str().unwrap().to_string();
    shop.call(&path(&voided, "/tenders"), "p3-bank",
        json!({"method": "bank_transfer", "amount": 700, "processor": "stripe", "reference": "tr_1"}), 201).await;
    shop.call(&path(&voided, "/cancel"), "p3-cancel", json!({}), 200)
        .await;

    shop.call("/v1/settlements", "b1", json!({"processor": "stripe", "batch_id": "b_1", "settled_at": "2026-12-03T00:00:00Z", "currency": "USD",
               "lines": [{"type": "capture", "reference": "cap_1", "gross": 6_000, "fee": 180, "net": 5_820},
                         {"type": "refund", "reference": "re_2", "gross": -1_000, "fee": 0, "net": -1_000}]}), 201).await;
    let response = client
        .post(format!("{}/v1/settlements?processor=stripe&batch_id=b_2&settled_at=2026-12-03T00:00:00Z&currency=USD", server.base))
        .bearer_auth(api_key)
        .header("idempotency-key", "b2")
        .header("content-type", "text/csv")
        .body("type,reference,gross,fee,net\ncapture,cap_404,100,3,97\nfee,monthly,0,20,-20\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let imported: Value = response.json().await.unwrap();
    let broken = imported["breaks"][0]["break_id"].as_str().unwrap();
    shop.call(
        &format!("/v1/breaks/{broken}/resolve"),
        "resolve",
        json!({"resolution": "adjust", "reason": "a monthly fee"}),
        200,
    )
    .await;
    let payout = |amount: i64, batches: Value| json!({"processor": "stripe", "currency": "USD", "amount": amount, "bank_account": "main", "settlements": batches});
    let first = shop
        .call("/v1/payouts", "po-1", payout(4_820, json!(["b_1"])), 201)
        .await;
    let first = first["payout_id"].as_str().unwrap();
    shop.call(
        &format!("/v1/payouts/{first}/failed"),
        "po-1-failed",
        json!({"reason": "bank closed"}),
        200,
    )
    .await;
    let second = shop
        .call(
            "/v1/payouts",
            "po-2",
            payout(4_897, json!(["b_1", "b_2"])),
            201,
        )
        .await;
    let second = second["payout_id"].as_str().unwrap();
    shop.call(
        &format!("/v1/payouts/{second}/paid"),
        "po-2-paid",
        json!({}),
        200,
    )
    .await;
    drop(server);

    let output = ledger(&db).args(["verify", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let output = ledger(&db)
        .args(["replay", "--tenant", tenant_id, "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replayed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let payments = replayed["payments"]
        .as_array()
        .unwrap_or_else(|| panic!("{replayed}"));
    assert_eq!(payments.len(), 3, "{replayed}");

    // The trial balance ties out (exit 0), from the database and from the
    // export alike; a balance edited behind the ledger's back fails it
    // (exit 1, the header saying so).
    let output = ledger(&db).args(["project", "--once"]).output().unwrap();
    assert!(output.status.success());
    let report_named = |name: &str, source: &[&str]| {
        let mut command = ledger(&db);
        command.args(["report", name, "--format", "json"]);
        command.args(source);
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stdout.is_empty(), "{stderr}");
        (output.status.code(), stdout)
    };
    let report = |source: &[&str]| report_named("trial-balance", source);
    let file = std::env::temp_dir().join(format!("cli-report-{tenant_id}.jsonl"));
    let file = file.to_str().unwrap();
    let output = ledger(&db)
        .args(["export", "--tenant", tenant_id, "--out", file])
        .output()
        .unwrap();
    assert!(output.status.success());
    // Every report of every payments path ties out, the same offline.
    for name in ["trial-balance", "payments", "payroll", "escrow"] {
        let (code, online) = report_named(name, &["--tenant", tenant_id]);
        assert_eq!(code, Some(0), "{name}: {online}");
        assert_eq!(
            report_named(name, &["--file", file]),
            (Some(0), online),
            "{name}"
        );
    }
    std::fs::remove_file(file).unwrap();
    // A time not yet closed (a request stamped before it could still be
    // committing) is refused: exit 2, saying so.
    let now = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let open = ledger(&db)
        .args([
            "report",
            "trial-balance",
            "--tenant",
            tenant_id,
            "--as-of",
            &now,
        ])
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(
        stderr.contains(&format!("{now} is not closed yet")),
        "{stderr}"
    );
    sqlx::query(
        "UPDATE ledger_account_movements SET credits_posted = credits_posted + 1 \
         WHERE code = 'revenue' AND tenant_seq = \
           (SELECT min(tenant_seq) FROM ledger_account_movements WHERE code = 'revenue')",
    )
    .execute(db.store().pool())
    .await
    .unwrap();
    let (code, tampered) = report(&["--tenant", tenant_id]);
    assert_eq!(code, Some(1), "{tampered}");
    let tampered: Value = serde_json::from_str(&tampered).unwrap();
    assert_eq!(tampered["tie_out"]["agrees"], false);
}

/// Starts the three processes of one ledger: `serve` with workers, `serve
/// --no-workers`, and `project`, each ticking every 20 ms with its clock
/// `offset` seconds ahead.
async fn three_processes(db: &TestDatabase, offset: i64) -> (Server, Server, support::Process) {
    let offset = offset.to_string();
    let clock = ["--tick-ms", "20", "--clock-offset-seconds", &offset];
    let with_workers = Server::start_with(db.url(), "three-admin", &clock).await;
    let mut api_only: Vec<&str> = clock.to_vec();
    api_only.push("--no-workers");
    let without = Server::start_with(db.url(), "three-admin", &api_only).await;
    let mut project_args = vec!["project"];
    project_args.extend(clock);
    let project = support::Process::start(db.url(), &project_args);
    (with_workers, without, project)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_database_react_and_tick_exactly_once() {
    // Proves: two `serve` processes (one without workers) and a `project`
    // process on one database, under the mixed workload of `ledger bench`
    // through both APIs (quota, payments captured and settled, escrow with
    // milestones released by the scheduler, work, commissions accrued by
    // the process managers): every flow makes exactly its events, each
    // commission reaction and each scheduled request once under a key of
    // its own (the process managers and tickers of `serve` and `project`
    // share the work by lease, and the keys make a repeat harmless);
    // restarted with their clocks past the holding period, their tickers
    // make every held commission payable once; the journal's totals are
    // exact and `ledger verify` is clean.
    let db = TestDatabase::new().await;
    let (first, second, mut project) = three_processes(&db, 0).await;
    let client = support::http_client();
    let api_key = mixed::set_up_tenant(&client, &first.base, "three-admin", 0, 3)
        .await
        .unwrap();
    let load = Arc::new(mixed::Load::new(240, 2));
    let record = Arc::new(mixed::Record::default());
    let mut clients = Vec::new();
    for index in 0..6 {
        let target = mixed::Target {
            client: client.clone(),
            base: if index % 2 == 0 {
                first.base.clone()
            } else {
                second.base.clone()
            },
            api_key: api_key.clone(),
        };
        let (load, record) = (load.clone(), record.clone());
        clients.push(tokio::spawn(async move {
            mixed::run_client(target, format!("c{index}"), 3, &load, &record).await
        }));
    }
    let mut flows = Vec::new();
    for client in clients {
        let run = client.await.unwrap();
        assert!(run.ended.is_none(), "{:?}", run.ended);
        flows.extend(run.flows);
    }
    assert!(flows
        .iter()
        .any(|flow| flow.kind == mixed::Kind::Settlement));
    eprintln!(
        "409 conflicts retried: {}",
        load.conflicts.load(std::sync::atomic::Ordering::SeqCst)
    );

    // A month on: every held commission becomes payable, once.
    project.assert_running();
    drop((first, second, project));
    let (first, _second, mut project) =
        three_processes(&db, (mixed::HOLDING_DAYS + 1) * 86_400).await;
    support::assert_mixed_effects(&db, &first, &api_key, &flows, true).await;
    project.assert_running();
}

#[tokio::test]
async fn a_password_in_a_database_url_option_reaches_no_log() {
    // Proves: a password among a URL's options (`sslpassword`, which the
    // driver does not know and warns about, value included) appears
    // nowhere in what the ledger prints, even with every log asked for.
    let db = TestDatabase::new().await;
    for log in [None, Some("debug")] {
        let mut command = ledger(&db);
        command.env(
            "DATABASE_URL",
            "postgres://ledger:S3CRETpw@127.0.0.1:1/none?sslpassword=S3CRETpw&connect_timeout=1",
        );
        if let Some(log) = log {
            command.env("LEDGER_LOG", log);
        }
        let output = command.args(["verify"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{log:?}");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!printed.contains("S3CRETpw"), "{log:?}: {printed}");
        assert!(printed.contains("127.0.0.1:1"), "{log:?}: {printed}");
    }
}

#[tokio::test]
async fn replay_and_report_refuse_an_unknown_tenant_a_seq_not_reached_and_a_chain_short_of_its_head(
) {
    // Proves: from the database, `replay` and `report` refuse a tenant the
    // database does not have (exit 2, as `verify --tenant` does) instead of
    // answering an empty state; `replay` refuses a seq the tenant has not
    // reached or below 0 (its answer would change), and a history whose
    // last event was deleted behind the triggers (the chain head row names
    // it), as a replay of the export file does.
    let db = TestDatabase::new().await;
    let store = db.store();
    let (bus, now) = clocked_bus(&db);
    let tenant = store.create_tenant("acme").await.unwrap().tenant_id;
    // Seqs 1-4 subscribe, 5 and 6 consume.
    subscribe_and_consume(&bus, &now, tenant, "hobby_v3", &[10, 20]).await;
    bus.shutdown().await;
    let tenant_text = tenant.to_string();
    let refused = |args: &[&str], expected: &str| {
        let output = ledger(&db).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    let unknown = "00000000-0000-0000-0000-000000000000";
    let unknown_text = format!("unknown tenant {unknown}");
    refused(&["replay", "--tenant", unknown], &unknown_text);
    refused(
        &["report", "trial-balance", "--tenant", unknown],
        &unknown_text,
    );
    refused(
        &["replay", "--tenant", &tenant_text, "--as-of-seq", "7"],
        "tenant_seq 7 is not in the tenant's history (0 to its last, 6)",
    );
    refused(
        &["replay", "--tenant", &tenant_text, "--as-of-seq=-1"],
        "tenant_seq -1 is not in the tenant's history (0 to its last, 6)",
    );
    succeeded(
        &db,
        &["replay", "--tenant", &tenant_text, "--as-of-seq", "6"],
    );
    // A file that cannot be written is named as such.
    succeeded(&db, &["project", "--once"]);
    refused(
        &[
            "export",
            "--tenant",
            &tenant_text,
            "--out",
            "/nonexistent/dir/x.jsonl",
        ],
        "cannot write /nonexistent/dir/x.jsonl",
    );
    refused(
        &[
            "report",
            "trial-balance",
            "--tenant",
            &tenant_text,
            "--out",
            "/nonexistent/x.html",
        ],
        "cannot write /nonexistent/x.html",
    );

    let mut connection = store.pool().acquire().await.unwrap();
    for statement in [
        "SET session_replication_role = replica",
        "DELETE FROM events WHERE tenant_seq = 6",
        "SET session_replication_role = DEFAULT",
    ] {
        sqlx::query(statement)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    refused(
        &["replay", "--tenant", &tenant_text],
        "chain head says tenant_seq 6",
    );
}
