//! Bounds on the work one tenant's reads can cause: a lagging `min_seq`
//! read costs a handful of statements however long it waits, with or
//! without workers in the process, and one tenant's flood of waiting reads
//! is refused past its bound while another tenant reads at once.

use commands::http::{routes, HttpConfig};
use commands::server::{serve, ServeConfig};
use commands::BusConfig;
use eventstore::testing::TestDatabase;
use eventstore::EventStore;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{ConnectOptions, Connection};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(30);

/// A `ledger serve` in this process without projection workers (as
/// `serve --no-workers`), on a pool of its own.
struct Served {
    base: String,
    store: EventStore,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(db: &TestDatabase, config: HttpConfig) -> Self {
        let store = EventStore::new(db.database().connect_pool(8).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = store.clone();
        let server = tokio::spawn(async move {
            let config = ServeConfig {
                http: config,
                bus: BusConfig::default(),
                workers: false,
                plans: aggregates::plan::PlanCatalog::builtin(),
                ticker: None,
                read_database_url: None,
                database_time: None,
            };
            serve(
                serving,
                listener,
                config,
                routes(),
                commands::domains::projections(),
                Vec::new(),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        Self {
            base,
            store,
            stop,
            server,
        }
    }

    /// Stops the server and closes its connections.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.server)
            .await
            .expect("the server did not stop")
            .unwrap();
        self.store.pool().close().await;
    }
}

/// Transactions the database has counted, once every session on it has
/// ended (a session reports its counts when it ends at the latest).
async fn transactions(db: &TestDatabase) -> i64 {
    let mut connection = db
        .database()
        .options_for("postgres")
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let (sessions,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(db.name())
                .fetch_one(&mut connection)
                .await
                .unwrap();
        if sessions == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{sessions} sessions still on the database after the server stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut connection)
        .await
        .unwrap();
    let (count,): (i64,) = sqlx::query_as(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db.name())
    .fetch_one(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    count
}

/// Gives `api_key`'s tenant its first event (tenant_seq 1) through a server
/// without workers that is stopped again: no projection applies it, so a
/// read with `min_seq=1` waits (a `min_seq` past the tenant's last seq would
/// be refused at once).
async fn first_event(db: &TestDatabase, api_key: &str) {
    let served = Served::start(db, HttpConfig::new(None, 1 << 20)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/grants", served.base))
        .bearer_auth(api_key)
        .header("Idempotency-Key", "first-event")
        .json(&serde_json::json!({"quota": "runs", "amount": 1, "source": "purchase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    served.stop().await;
}

async fn get(client: &reqwest::Client, url: &str, api_key: &str) -> (StatusCode, Value) {
    let response = client.get(url).bearer_auth(api_key).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_lagging_min_seq_read_without_workers_costs_a_handful_of_transactions() {
    // Proves: in `serve --no-workers`, one read whose min_seq is never
    // reached waits its bound (1 s here) and answers 503 at a cost of a few
    // database transactions beyond what the same server spends on a read
    // that does not wait (it once spun: 52,337 transactions in 5 s).
    let db = TestDatabase::new().await;
    let tenant = db.store().create_tenant("acme").await.unwrap();
    db.store().pool().close().await;
    first_event(&db, &tenant.api_key).await;
    let client = reqwest::Client::new();
    let mut config = HttpConfig::new(None, 1 << 20);
    config.read_wait = Duration::from_secs(1);

    let before = transactions(&db).await;
    let served = Served::start(&db, config.clone()).await;
    let (status, _) = get(
        &client,
        &format!("{}/v1/streams", served.base),
        &tenant.api_key,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    served.stop().await;
    let reading = transactions(&db).await - before;

    let before = transactions(&db).await;
    let served = Served::start(&db, config).await;
    let started = Instant::now();
    let (status, body) = get(
        &client,
        &format!("{}/v1/streams?min_seq=1", served.base),
        &tenant.api_key,
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "projection_lagging");
    assert!(
        waited >= Duration::from_secs(1),
        "answered after {waited:?}"
    );
    served.stop().await;
    let waiting = transactions(&db).await - before;
    // About 10 reads of the watched checkpoints (10 ms doubling to 200
    // ms) and the pool's own; the margin absorbs what a loaded machine
    // adds (once 21), far below a spin.
    assert!(
        waiting - reading <= 40,
        "a lagging read of 1 s cost {} transactions more than a read ({waiting} against {reading})",
        waiting - reading
    );
}

#[tokio::test]
async fn one_tenants_flood_of_waiting_reads_is_bounded_and_another_tenant_reads_at_once() {
    // Proves: with 8 waiting reads allowed per tenant, 40 concurrent reads
    // of one tenant whose min_seq is never reached: 8 wait their bound and
    // answer 503, 32 answer 429 too_many_requests with Retry-After at once;
    // another tenant's reads meanwhile answer 200 at once.
    let db = TestDatabase::new().await;
    let acme = db.store().create_tenant("acme").await.unwrap();
    let beta = db.store().create_tenant("beta").await.unwrap();
    first_event(&db, &acme.api_key).await;
    let mut config = HttpConfig::new(None, 1 << 20);
    config.read_wait = Duration::from_secs(3);
    config.waiters_per_tenant_max = 8;
    let served = Served::start(&db, config).await;
    let client = reqwest::Client::new();
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..40 {
        let request = client
            .get(format!("{}/v1/streams?min_seq=1", served.base))
            .bearer_auth(&acme.api_key);
        let answers = answers.clone();
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_string());
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let _ = answers.send((status, retry_after, body));
        });
    }
    for index in 0..32 {
        let (status, retry_after, body) = tokio::time::timeout(DEADLINE, answered.recv())
            .await
            .unwrap_or_else(|_| panic!("only {index} of 32 refused reads answered in time"))
            .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "too_many_requests");
    }
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = get(
            &client,
            &format!("{}/v1/streams?min_seq=0", served.base),
            &beta.api_key,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "another tenant's read took {elapsed:?} during the flood"
        );
    }
    for index in 0..8 {
        let (status, _, body) = tokio::time::timeout(DEADLINE, answered.recv())
            .await
            .unwrap_or_else(|_| panic!("only {index} of 8 waiting reads answered"))
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "projection_lagging");
    }
    served.stop().await;
}
