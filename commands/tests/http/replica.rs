//! Reads on a real streaming replica: a private primary and a hot standby
//! (`pg_basebackup -R` from the installed PostgreSQL binaries, in a
//! temporary directory, unix sockets only), a server whose commands go to
//! the primary and whose reads go to the standby; every read with
//! `min_seq` returns the write its command acknowledged.

use super::*;
use commands::server::{serve, ServeConfig};
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;

/// A primary and its hot standby, stopped and removed on drop.
struct Replicated {
    dir: PathBuf,
    bin: PathBuf,
}

const PRIMARY_PORT: u16 = 5611;

/// The admin token of these tests' servers.
const REPLICA_ADMIN: &str = super::ADMIN_TOKEN;
const STANDBY_PORT: u16 = 5612;

impl Replicated {
    /// Runs `tool` of the PostgreSQL binaries as the cluster's owner (the
    /// `postgres` account when the tests run as root, which PostgreSQL
    /// refuses).
    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start() -> Self {
        let initdb = eventstore::database::postgres_bin_dir()
            .expect("the PostgreSQL binaries (initdb, pg_ctl)")
            .join("initdb");
        let bin = std::fs::canonicalize(initdb)
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = std::env::temp_dir().join(format!("ledger-replica-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let cluster = Self { dir, bin };
        let primary = cluster.path("primary");
        cluster.run(
            "initdb",
            &["-D", &primary, "-A", "trust", "-U", "ledger", "--no-sync"],
        );
        let settings = |port: u16| {
            format!(
                "listen_addresses = ''\nunix_socket_directories = '{}'\nport = {port}\n\
                 wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n",
                cluster.dir.display()
            )
        };
        append(
            &cluster.dir.join("primary/postgresql.conf"),
            &settings(PRIMARY_PORT),
        );
        cluster.pg_ctl("primary", "start");
        let socket = cluster.dir.display().to_string();
        let port = PRIMARY_PORT.to_string();
        let standby = cluster.path("standby");
        cluster.run(
            "pg_basebackup",
            &[
                "-h", &socket, "-p", &port, "-U", "ledger", "-D", &standby, "-R", "-X", "stream",
            ],
        );
        append(
            &cluster.dir.join("standby/postgresql.conf"),
            &settings(STANDBY_PORT),
        );
        cluster.pg_ctl("standby", "start");
        cluster
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn pg_ctl(&self, name: &str, action: &str) {
        let data = self.path(name);
        let log = self.path(&format!("{name}.log"));
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-m", "fast", action],
        );
    }

    /// The URL of database `database` on the server at `port`.
    fn url(&self, port: u16, database: &str) -> String {
        format!(
            "postgres://ledger@localhost/{database}?host={}&port={port}",
            self.dir.display()
        )
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for name in ["standby", "primary"] {
            let data = self.path(name);
            let program = self.bin.join("pg_ctl");
            let mut command = if is_root() {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&program);
                command
            } else {
                Command::new(&program)
            };
            let _ = command
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn append(file: &FsPath, text: &str) {
    use std::io::Write;
    let mut opened = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    opened.write_all(text.as_bytes()).unwrap();
}

/// A server on `cluster`: commands on the primary's database `ledger`
/// (created, migrated, with tenant `acme`), reads on the standby once it
/// has replayed them.
struct Served {
    base: String,
    api_key: String,
    /// How far the server's clock runs ahead of the machine's.
    ahead: Arc<Mutex<chrono::Duration>>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), String>>,
}

async fn serve_replicated(cluster: &Replicated) -> Served {
    let admin = sqlx::PgPool::connect(&cluster.url(PRIMARY_PORT, "postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE ledger")
        .execute(&admin)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&cluster.url(PRIMARY_PORT, "ledger"))
        .await
        .unwrap();
    let store = eventstore::EventStore::new(pool);
    store.migrate().await.unwrap();
    let tenant = store.create_tenant("acme").await.unwrap();
    // The standby serves once it has replayed the schema (the database
    // created, migrated) and the tenant: what a replica needs before any
    // read is sent to it.
    let (lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let standby_admin = sqlx::PgPool::connect(&cluster.url(STANDBY_PORT, "postgres"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replayed,): (bool,) =
            sqlx::query_as("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                .bind(&lsn)
                .fetch_one(&standby_admin)
                .await
                .unwrap();
        if replayed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {lsn}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut http = HttpConfig::new(Some(REPLICA_ADMIN), 1 << 20);
    // Long enough for a write to replicate on a busy machine, short enough
    // for the reads the paused replay holds back to run out of it.
    http.read_wait = Duration::from_secs(5);
    let ahead = Arc::new(Mutex::new(chrono::Duration::zero()));
    let reading = ahead.clone();
    let config = ServeConfig {
        http,
        bus: BusConfig {
            clock: commands::Clock::from_fn(move || chrono::Utc::now() + *reading.lock().unwrap()),
            ..BusConfig::default()
        },
        workers: true,
        plans: aggregates::plan::PlanCatalog::builtin(),
        ticker: None,
        read_database_url: Some(cluster.url(STANDBY_PORT, "ledger")),
        database_time: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = store.clone();
    let server = tokio::spawn(async move {
        serve(
            served,
            listener,
            config,
            routes(),
            commands::domains::projections(),
            commands::domains::process_managers(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .map_err(|error| error.to_string())
    });
    Served {
        base,
        api_key: tenant.api_key,
        ahead,
        stop,
        server,
    }
}

/// The JSON body `request` is answered with.
async fn answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// `GET /v1/projections` as the admin (of these tests' servers).
async fn projection_status(client: &reqwest::Client, base: &str) -> Value {
    answer(
        client
            .get(format!("{base}/v1/projections"))
            .bearer_auth(REPLICA_ADMIN),
    )
    .await
}

#[tokio::test]
async fn reads_with_min_seq_on_a_hot_standby_see_every_acknowledged_write() {
    let cluster = Replicated::start();
    let Served {
        base,
        api_key,
        ahead,
        stop,
        server,
    } = serve_replicated(&cluster).await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&api_key)
    };
    let granted: Value = answer(
        call(reqwest::Method::POST, "/v1/grants".into())
            .header("idempotency-key", "grant")
            .json(&json!({"quota": "credits", "amount": 1_000, "source": "purchase"})),
    )
    .await;
    assert_eq!(granted["amount"], 1_000, "{granted}");
    let started = Instant::now();
    for n in 1..=30 {
        let seq = consume_one(&call, &format!("use-{n}")).await;
        let read: Value = answer(call(
            reqwest::Method::GET,
            format!("/v1/quota/credits?min_seq={seq}"),
        ))
        .await;
        assert_eq!(read["consumed"], n, "read {n} on the standby: {read}");
    }
    let per_write = started.elapsed() / 30;
    // The standby is the one read: it is in recovery, and says how far
    // behind it is.
    let standby = sqlx::PgPool::connect(&cluster.url(STANDBY_PORT, "ledger"))
        .await
        .unwrap();
    let (in_recovery,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
        .fetch_one(&standby)
        .await
        .unwrap();
    assert!(in_recovery);
    let status = projection_status(&client, &base).await;
    assert!(status["replica_replay_lag_seconds"].is_number(), "{status}");
    assert_eq!(status["replica_error"], Value::Null, "{status}");
    eprintln!("a write and its read on the standby: {per_write:?} each");
    with_replay_paused(&cluster, &standby, &call, (&client, &base), &ahead).await;
    // Promoted (a failover), it replays nothing more: named, not "caught
    // up".
    cluster.pg_ctl("standby", "promote");
    let status = projection_status(&client, &base).await;
    assert_eq!(
        status["replica_replay_lag_seconds"],
        Value::Null,
        "{status}"
    );
    assert_eq!(
        status["replica_error"],
        "the read replica is not a standby (not in recovery): its reads do not follow the primary",
        "{status}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Consumes one credit under `key` through the primary: its tenant_seq.
async fn consume_one<F>(call: &F, key: &str) -> i64
where
    F: Fn(reqwest::Method, String) -> reqwest::RequestBuilder,
{
    let consumed: Value = answer(
        call(reqwest::Method::POST, "/v1/quota/credits/consume".into())
            .header("idempotency-key", key)
            .json(&json!({"amount": 1})),
    )
    .await;
    consumed["tenant_seq"].as_i64().unwrap()
}

/// With the standby's replay paused, a write the primary acknowledged is
/// not on the standby: a read without `min_seq` answers the standby's
/// older state (so reads do go there), the lag shows, and reads with
/// `min_seq` (one as of a time) wait until the replay resumes and then
/// answer the write.
async fn with_replay_paused<F>(
    cluster: &Replicated,
    standby: &sqlx::PgPool,
    call: &F,
    (client, base): (&reqwest::Client, &str),
    ahead: &Mutex<chrono::Duration>,
) where
    F: Fn(reqwest::Method, String) -> reqwest::RequestBuilder,
{
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(standby)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (state,): (String,) = sqlx::query_as("SELECT pg_get_wal_replay_pause_state()")
            .fetch_one(standby)
            .await
            .unwrap();
        if state == "paused" {
            break;
        }
        assert!(Instant::now() < deadline, "replay did not pause: {state}");
        tokio::task::yield_now().await;
    }
    let seq = consume_one(call, "while-paused").await;
    // On the primary the write is in the read table: an older answer can
    // only come from the standby.
    let primary = sqlx::PgPool::connect(&cluster.url(PRIMARY_PORT, "ledger"))
        .await
        .unwrap();
    let (tenant_id,): (uuid::Uuid,) = sqlx::query_as("SELECT tenant_id FROM tenants")
        .fetch_one(&primary)
        .await
        .unwrap();
    let tenant_id = aggregates::TenantId::from_uuid(tenant_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while projections::read::checkpoint(&primary, projections::quota::NAME, tenant_id)
        .await
        .unwrap()
        < seq
    {
        assert!(Instant::now() < deadline, "the primary did not apply {seq}");
        tokio::task::yield_now().await;
    }
    let stale: Value = answer(call(reqwest::Method::GET, "/v1/quota/credits".into())).await;
    assert_eq!(stale["consumed"], 30, "the standby's own state: {stale}");
    let status = projection_status(client, base).await;
    let lag = status["replica_replay_lag_seconds"].as_f64().unwrap();
    assert!(lag > 0.0, "{status}");
    // Reads that need the write wait for the standby's checkpoints, not the
    // primary's, and a time is taken as the primary's seq: with the replay
    // paused both run out of their wait.
    // A time after the write, closed by the server's clock (two hours on).
    *ahead.lock().unwrap() = chrono::Duration::hours(2);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let balances = |min_seq: Option<i64>| {
        let mut query = vec![("as_of", later.clone())];
        query.extend(min_seq.map(|seq| ("min_seq", seq.to_string())));
        call(reqwest::Method::GET, "/v1/journal/balances".into()).query(&query)
    };
    let quota = || {
        call(
            reqwest::Method::GET,
            format!("/v1/quota/credits?min_seq={seq}"),
        )
    };
    let (by_time, by_seq) = tokio::join!(balances(None).send(), quota().send());
    for (name, response) in [("balances as of a time", by_time), ("quota", by_seq)] {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "projection_lagging",
            "{name}: {body}"
        );
        assert_eq!(body["error"]["details"]["min_seq"], seq, "{name}: {body}");
        assert!(
            body["error"]["details"]["projection_seq"].as_i64().unwrap() < seq,
            "{name}: {body}"
        );
    }
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(standby)
        .await
        .unwrap();
    let quota = answer(quota()).await;
    assert_eq!(quota["consumed"], 31, "{quota}");
    let balances: Value = answer(balances(Some(seq))).await;
    assert_eq!(balances["as_of_seq"], seq, "{balances}");
}

/// A read the replica holds up behind a lock (as a standby's replay of the
/// primary's changes takes one) is cancelled by the replica's statement
/// timeout and answers 503 at once; and the projections list names a
/// replica it cannot ask instead of failing.
#[tokio::test]
async fn a_read_the_replica_cancels_answers_503_and_a_replica_out_of_reach_is_named() {
    let db = Arc::new(TestDatabase::new().await);
    let api_key = db.store().create_tenant("acme").await.unwrap().api_key;
    let options = db.store().pool().connect_options().as_ref().clone();
    let replica = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(options.options([("statement_timeout", "300ms")]));
    let app = spawn_app_on(
        db.clone(),
        api_key,
        AppOptions {
            admin_token: Some(ADMIN_TOKEN),
            read_pool: Some(replica),
            ..AppOptions::default()
        },
    )
    .await;
    let get = || {
        app.client
            .get(format!("{}/v1/quota/credits", app.base))
            .bearer_auth(&app.api_key)
            .send()
    };
    let mut replay = db.store().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE quota_totals IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *replay)
        .await
        .unwrap();
    let held = get().await.unwrap();
    assert_eq!(held.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = held.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the read ran past the read replica's statement timeout"),
        "{body}"
    );
    replay.rollback().await.unwrap();
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    // A replica that answers is healthy for reads too; a parameter
    // /healthz does not take (a monitor's cache-buster) is ignored.
    assert_eq!(
        health(&app.client, &app.base, "?reads=true&nocache=1").await,
        (
            StatusCode::OK,
            json!({"status": "ok", "reads": "replica", "replica_answered": true})
        )
    );
    let (status, body) = health(&app.client, &app.base, "?reads=maybe").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request")),
        "{body}"
    );
    // The same database is no standby: no lag, no error.
    let status = projection_status(&app.client, &app.base).await;
    assert_eq!(
        status["replica_replay_lag_seconds"],
        Value::Null,
        "{status}"
    );
    assert_eq!(status["replica_error"], Value::Null, "{status}");

    let gone = spawn_app_on(
        db.clone(),
        String::new(),
        AppOptions {
            admin_token: Some(ADMIN_TOKEN),
            read_pool: Some(
                sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy("postgres://ledger@127.0.0.1:1/none")
                    .unwrap(),
            ),
            ..AppOptions::default()
        },
    )
    .await;
    let status = projection_status(&gone.client, &gone.base).await;
    assert_eq!(
        status["replica_replay_lag_seconds"],
        Value::Null,
        "{status}"
    );
    assert!(status["replica_error"].is_string(), "{status}");
    assert!(
        status["projections"].as_array().unwrap().len() > 1,
        "{status}"
    );
    // The server still takes commands: healthy, the replica not asked; a
    // load balancer routing reads asks with reads=true.
    let (status, body) = health(&gone.client, &gone.base, "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "reads": "replica", "replica_answered": null})
        )
    );
    let (status, body) = health(&gone.client, &gone.base, "?reads=true").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the read replica is unavailable: "),
        "{body}"
    );
}

/// `/healthz` with `query`: its status and body.
async fn health(client: &reqwest::Client, base: &str, query: &str) -> (StatusCode, Value) {
    let response = client
        .get(format!("{base}/healthz{query}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// How long the measurement's load runs.
const LOAD: Duration = Duration::from_secs(10);

/// The value at `fraction` of `sorted`.
fn at(sorted: &[f64], fraction: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * fraction).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name with --ignored --nocapture"]
async fn measure_replica_lag_and_read_throughput() {
    // Measures, on a private primary and hot standby of this machine (fsync
    // off on both, as in the test above): 8 writers consuming quota on the
    // primary, each write read back on the standby at once with its
    // `min_seq` (the time until that read answers is read-your-writes lag
    // as a client sees it), and 8 readers reading the standby (no
    // `min_seq`) as fast as it answers; the standby's replay lag sampled
    // every 100 ms. Prints one JSON line.
    let cluster = Replicated::start();
    let Served {
        base,
        api_key,
        stop,
        server,
        ..
    } = serve_replicated(&cluster).await;
    let client = reqwest::Client::new();
    let granted = client
        .post(format!("{base}/v1/grants"))
        .bearer_auth(&api_key)
        .header("idempotency-key", "grant")
        .json(&json!({"quota": "credits", "amount": 1_000_000_000, "source": "purchase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let deadline = Instant::now() + LOAD;
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (client, base, api_key) = (client.clone(), base.clone(), api_key.clone());
        writers.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let consumed: Value = answer(
                    client
                        .post(format!("{base}/v1/quota/credits/consume"))
                        .bearer_auth(&api_key)
                        .header("idempotency-key", format!("w{writer}-{n}"))
                        .json(&json!({"amount": 1})),
                )
                .await;
                let seq = consumed["tenant_seq"].as_i64().unwrap();
                let acknowledged = Instant::now();
                let read = client
                    .get(format!("{base}/v1/quota/credits?min_seq={seq}"))
                    .bearer_auth(&api_key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(read.status(), 200);
                waits.push(acknowledged.elapsed().as_secs_f64() * 1000.0);
            }
            waits
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (client, base, api_key) = (client.clone(), base.clone(), api_key.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0_u64;
            while Instant::now() < deadline {
                let read = client
                    .get(format!("{base}/v1/quota/credits"))
                    .bearer_auth(&api_key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(read.status(), 200);
                reads += 1;
            }
            reads
        }));
    }
    let mut lags = Vec::new();
    while Instant::now() < deadline {
        let status = projection_status(&client, &base).await;
        // Null until the standby has replayed a transaction.
        if let Some(lag) = status["replica_replay_lag_seconds"].as_f64() {
            lags.push(lag * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut waits = Vec::new();
    for writer in writers {
        waits.extend(writer.await.unwrap());
    }
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    waits.sort_by(f64::total_cmp);
    lags.sort_by(f64::total_cmp);
    let seconds = LOAD.as_secs_f64();
    println!(
        "{}",
        json!({
            "writes_per_s": waits.len() as f64 / seconds,
            "standby_reads_per_s": reads as f64 / seconds,
            "read_your_write_ms_p50": at(&waits, 0.5),
            "read_your_write_ms_p99": at(&waits, 0.99),
            "replay_lag_ms_p50": at(&lags, 0.5),
            "replay_lag_ms_max": at(&lags, 1.0),
        })
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
