//! The real server (`commands::server::serve`) on port 0 against a fresh
//! database, its projection workers off unless asked for (tests drive the
//! projections with [`TestServer::catch_up`]); and a small HTTP client for
//! tests.

use chrono::{DateTime, Utc};
use commands::http::connections::ConnectionLimits;
use commands::server::{serve, ServeConfig};
use commands::{BusConfig, Clock};
use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "admin-secret";

/// An HTTP client whose every request fails after a minute rather than
/// hang the test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// The database's clock the pipeline follows, with
    /// [`Options::database_time`].
    pub database_time: Option<commands::DatabaseTime>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A tenant of the test server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub client: reqwest::Client,
    pub api_key: String,
    pub tenant_id: String,
}

/// An answer: status, the replay header, and the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub replayed: bool,
    pub body: Value,
}

/// How a test server runs.
#[derive(Default)]
pub struct Options {
    /// The pipeline's clock; the system clock when `None`.
    pub clock: Option<Clock>,
    /// Run the projection workers. Off by default: the test applies the
    /// events with [`TestServer::catch_up`], and a read with `min_seq`
    /// past what it applied answers 503 at once (nothing else would move the
    /// projections while it waits).
    pub workers: bool,
    /// Bounds of HTTP connections; the server's defaults when `None`.
    pub connections: Option<ConnectionLimits>,
    /// Longest a `min_seq` read waits; 10 s with workers and none without
    /// when `None`.
    pub read_wait: Option<Duration>,
    /// The rules the pipeline decides under; the current ones when `None`.
    pub rules: Option<aggregates::rules::Rules>,
    /// The plan catalog served; the built-in one when `None`.
    pub plans: Option<aggregates::plan::PlanCatalog>,
    /// Follow the database server's clock, measured against `clock` (as
    /// `ledger serve` does against the system clock).
    pub database_time: bool,
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(now)))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap() = now;
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    /// The pipeline clock reading this one.
    pub fn clock(&self) -> Clock {
        let now = self.0.clone();
        Clock::from_fn(move || *now.lock().unwrap())
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        Self::serve_on(TestDatabase::new().await, options).await
    }

    /// Stops this server and serves its database again under `options`
    /// (another build or configuration taking over), at another address.
    pub async fn restart_with(mut self, options: Options) -> Self {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        Self::serve_on(self.db, options).await
    }

    async fn serve_on(db: TestDatabase, options: Options) -> Self {
        let store = db.store().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut http = commands::http::HttpConfig::new(
            Some(ADMIN_TOKEN),
            commands::http::BODY_LIMIT_BYTES_DEFAULT,
        );
        http.read_wait = options.read_wait.unwrap_or(if options.workers {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        });
        if let Some(connections) = options.connections {
            http.connections = connections;
        }
        let clock = options.clock.unwrap_or_default();
        let database_time = match options.database_time {
            true => Some(
                commands::DatabaseTime::measure(store.pool(), clock.clone())
                    .await
                    .unwrap(),
            ),
            false => None,
        };
        let config = ServeConfig {
            http,
            bus: BusConfig {
                clock: database_time.as_ref().map_or(clock, |time| time.clock()),
                rules: options.rules.unwrap_or(aggregates::rules::Rules::CURRENT),
                ..BusConfig::default()
            },
            workers: options.workers,
            plans: options
                .plans
                .unwrap_or_else(aggregates::plan::PlanCatalog::builtin),
            ticker: None,
            read_database_url: None,
            database_time: database_time.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(
                store,
                listener,
                config,
                commands::http::routes(),
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
            client: http_client(),
            db,
            database_time,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A new tenant, created through the admin route.
    pub async fn tenant(&self, name: &str) -> Client {
        let response = self
            .client
            .post(format!("{}/v1/tenants", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .header(
                "idempotency-key",
                format!("create-{name}-{}", uuid::Uuid::now_v7()),
            )
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        Client {
            base: self.base.clone(),
            client: self.client.clone(),
            api_key: body["api_key"].as_str().unwrap().to_string(),
            tenant_id: body["tenant_id"].as_str().unwrap().to_string(),
        }
    }

    /// The server's `/openapi.json`.
    pub async fn openapi(&self) -> Value {
        self.client
            .get(format!("{}/openapi.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Applies every event appended so far to every projection (the
    /// single step that stands in for the workers when they are off).
    pub async fn catch_up(&self) {
        let catalog = commands::domains::projections();
        projections::status::register(self.db.store().pool(), &catalog)
            .await
            .unwrap();
        let projections: Vec<&dyn projections::Projection> =
            catalog.iter().map(AsRef::as_ref).collect();
        projections::runtime::catch_up_all(self.db.store().pool(), &projections, None, 1_000)
            .await
            .unwrap();
    }

    /// A pipeline of its own on this server's database deciding under
    /// `rules` (another process's during a rolling upgrade, as it were),
    /// reading `clock`.
    pub fn bus_under(&self, rules: aggregates::rules::Rules, clock: Clock) -> commands::CommandBus {
        commands::CommandBus::start(
            self.db.store().clone(),
            BusConfig {
                rules,
                clock,
                ..BusConfig::default()
            },
            Arc::new(commands::Metrics::default()),
        )
    }

    /// A pipeline of its own on this server's database, reading `clock`
    /// (another process's, as it were).
    pub fn bus(&self, clock: Clock) -> commands::CommandBus {
        commands::CommandBus::start(
            self.db.store().clone(),
            BusConfig {
                clock,
                ..BusConfig::default()
            },
            Arc::new(commands::Metrics::default()),
        )
    }

    /// A scheduler ticker on this server's database, telling time by
    /// `clock` and submitting through a pipeline of its own (as another
    /// process would); tests call its single step, `tick`.
    pub fn ticker(&self, clock: Clock) -> commands::scheduler::Ticker {
        let bus = self.bus(clock.clone());
        commands::scheduler::Ticker::new(
            self.db.store().pool().clone(),
            bus,
            Arc::new(commands::domains::Registry::new()),
            clock,
            commands::scheduler::TickerConfig::default(),
        )
    }

    /// Runs every domain's process manager over everything appended so
    /// far, submitting through a pipeline of its own reading `clock` (the
    /// single step that stands in for their workers).
    pub async fn react(&self, clock: Clock) {
        let bus = self.bus(clock);
        let store = self.db.store().clone();
        let reactors: Vec<_> = commands::domains::process_managers()
            .into_iter()
            .map(|build| build(bus.clone(), store.clone()))
            .collect();
        let names: Vec<&str> = reactors.iter().map(|reactor| reactor.name()).collect();
        projections::status::register_reactors(store.pool(), &names)
            .await
            .unwrap();
        for reactor in &reactors {
            projections::reactor::react_catch_up(store.pool(), reactor.as_ref())
                .await
                .unwrap();
        }
        bus.shutdown().await;
    }

    /// The last tenant_seq of `client`'s tenant (what a process manager or
    /// the scheduler appended included).
    pub async fn tenant_seq(&self, client: &Client) -> i64 {
        let tenant_id: aggregates::TenantId = client.tenant_id.parse().unwrap();
        self.db
            .store()
            .chain_head(tenant_id)
            .await
            .unwrap()
            .map_or(0, |head| head.seq)
    }

    /// Stops the server gracefully (drains the pipeline, stops the workers).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Answer {
    /// Asserts that this is an error answer with `status` and `code` in the
    /// error envelope (with a message and a details object); returns the
    /// error object.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}: {}",
            self.body
        );
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{}", self.body);
        assert!(error["message"].is_string(), "{}", self.body);
        assert!(error["details"].is_object(), "{}", self.body);
        error
    }
}

impl Client {
    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true");
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            replayed,
            body,
        }
    }

    /// POST with an Idempotency-Key and a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        Self::answer(response).await
    }

    /// POST a raw body (for malformed JSON).
    pub async fn post_raw(&self, path: &str, key: &str, body: &str) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Self::answer(response).await
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        Self::answer(response).await
    }

    /// GET a read after the ledger reached `seq` (read-your-writes).
    pub async fn read(&self, path: &str, seq: i64) -> Value {
        let separator = if path.contains('?') { '&' } else { '?' };
        let answer = self.get(&format!("{path}{separator}min_seq={seq}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        answer.body
    }
}
