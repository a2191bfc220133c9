//! The `ledger` binary killed with SIGKILL under load, against a real
//! PostgreSQL: no acknowledged command is lost, none is applied twice, and
//! the restarted ledger verifies.

mod support;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Server;
use tokio::sync::Notify;

const ADMIN_TOKEN: &str = "crash-admin-token";

/// Clients sending commands while the server is killed.
const CLIENTS: usize = 8;

/// Kill and restart rounds.
const KILLS: usize = 3;

/// Commands acknowledged in a round before the kill.
const ACKNOWLEDGED_PER_ROUND: usize = 150;

/// Units of the one grant: far more than the test consumes.
const GRANT_UNITS: i64 = 1_000_000;

async fn post(
    client: &reqwest::Client,
    url: String,
    bearer: &str,
    key: &str,
    body: Value,
) -> Result<(u16, bool, Value), reqwest::Error> {
    let response = client
        .post(url)
        .bearer_auth(bearer)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let body = response.json().await?;
    Ok((status, replayed, body))
}

fn consume() -> Value {
    json!({"amount": 1, "reference": "crash-test"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_loses_no_acknowledged_command_and_doubles_none() {
    // Proves: SIGKILL while commands are in flight (at every kill, some
    // commands the server had received were never answered), three times
    // over: every acknowledged command is still there and answers its
    // original body when sent again; every command sent exactly once has
    // exactly one effect whether or not it was acknowledged; the read tables
    // catch up to the same totals; `ledger verify` finds nothing. Each
    // restart comes a month later in the ledger's time (`--clock-offset-
    // seconds`): the subscription renewal that fell due while the server
    // was dead happens after it, by the scheduler, exactly once.
    let db = TestDatabase::new().await;
    let client = support::http_client();
    let mut server = Server::start(db.url(), ADMIN_TOKEN).await;
    let (_, _, tenant) = post(
        &client,
        format!("{}/v1/tenants", server.base),
        ADMIN_TOKEN,
        "tenant",
        json!({"name": "acme"}),
    )
    .await
    .unwrap();
    let api_key = tenant["api_key"].as_str().unwrap().to_string();
    let renewing = subscribed_tenant(&client, &server).await;
    let (status, _, _) = post(
        &client,
        format!("{}/v1/grants", server.base),
        &api_key,
        "grant",
        json!({"quota": "credits", "amount": GRANT_UNITS, "source": "purchase"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);

    // key -> the body of its acknowledged answer; every key ever sent.
    let acknowledged: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let mut sent: Vec<String> = Vec::new();
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let in_round = Arc::new(AtomicUsize::new(0));
        // Commands started before the kill whose connection was cut before
        // an answer came: the server had them when it died.
        let cut = Arc::new(AtomicUsize::new(0));
        let enough = Arc::new(Notify::new());
        let mut clients = Vec::new();
        for index in 0..CLIENTS {
            let (client, base, api_key) = (client.clone(), server.base.clone(), api_key.clone());
            let (acknowledged, stop, killed, in_round, cut, enough) = (
                acknowledged.clone(),
                stop.clone(),
                killed.clone(),
                in_round.clone(),
                cut.clone(),
                enough.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut keys = Vec::new();
                for number in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("consume-{round}-{index}-{number}");
                    keys.push(key.clone());
                    let url = format!("{base}/v1/quota/credits/consume");
                    let before_kill = !killed.load(Ordering::SeqCst);
                    match post(&client, url, &api_key, &key, consume()).await {
                        Ok((200, false, body)) => {
                            acknowledged.lock().unwrap().insert(key, body);
                            if in_round.fetch_add(1, Ordering::SeqCst) + 1 == ACKNOWLEDGED_PER_ROUND
                            {
                                enough.notify_one();
                            }
                        }
                        Ok(other) => panic!("{key}: unexpected answer {other:?}"),
                        // The server is gone: this command's fate is unknown.
                        Err(error) => {
                            // A connection refused never reached the server.
                            if before_kill && !error.is_connect() {
                                cut.fetch_add(1, Ordering::SeqCst);
                            }
                            break;
                        }
                    }
                }
                keys
            }));
        }
        // Kill once enough commands were acknowledged in this round (the
        // clients keep sending: the kill lands with commands in flight).
        tokio::time::timeout(Duration::from_secs(120), enough.notified())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: fewer than {ACKNOWLEDGED_PER_ROUND} commands acknowledged \
                     within 120 s ({} were); the server's log:\n{}",
                    in_round.load(Ordering::SeqCst),
                    server.log()
                )
            });
        killed.store(true, Ordering::SeqCst);
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            sent.extend(client.await.unwrap());
        }
        assert!(
            cut.load(Ordering::SeqCst) >= 1,
            "round {round}: the kill cut no command in flight"
        );
        // Restarted a month later in the ledger's time: the subscription's
        // renewal fell due while the server was dead.
        server = later_server(db.url(), round + 1).await;
    }

    // Every key again: an acknowledged one answers its original body,
    // replayed; an unacknowledged one either was committed (replayed) or
    // runs now, once.
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= KILLS * ACKNOWLEDGED_PER_ROUND);
    let mut last_seq = 0;
    for key in &sent {
        let url = format!("{}/v1/quota/credits/consume", server.base);
        let (status, replayed, body) = post(&client, url, &api_key, key, consume()).await.unwrap();
        assert_eq!(status, 200, "{key}: {body}");
        if let Some(original) = acknowledged.get(key) {
            assert!(replayed, "{key} was acknowledged but executed again");
            assert_eq!(&body, original, "{key}");
        }
        last_seq = last_seq.max(body["tenant_seq"].as_i64().unwrap());
    }

    // Each key took effect exactly once: one consumption event per key, and
    // the read tables agree once caught up.
    let (events, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM events \
         WHERE event_type = 'QuotaConsumed'",
    )
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    assert_eq!(events, sent.len() as i64);
    assert_eq!(distinct, sent.len() as i64);
    let quota = client
        .get(format!(
            "{}/v1/quota/credits?min_seq={last_seq}",
            server.base
        ))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        quota.status(),
        200,
        "the read tables did not reach {last_seq}"
    );
    let quota: Value = quota.json().await.unwrap();
    assert_eq!(quota["consumed"], json!(sent.len()), "{quota}");
    assert_eq!(
        quota["available"],
        json!(GRANT_UNITS - sent.len() as i64),
        "{quota}"
    );
    assert_renewed_once_per_period(&db, &renewing).await;
    drop(server);

    let verified = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["verify", "--json"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify found problems: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// A month and a bit, in seconds: each restart moves the ledger's clock on
/// by this much, past one more period end.
const MONTH_SECONDS: i64 = 32 * 86_400;

/// Renewals due by the end: the periods ending before `KILLS` times
/// [`MONTH_SECONDS`].
const RENEWALS: i64 = KILLS as i64;

/// `ledger serve` with its clock `months` times [`MONTH_SECONDS`] ahead and
/// a fast ticker.
async fn later_server(database_url: &str, months: usize) -> Server {
    let offset = (months as i64 * MONTH_SECONDS).to_string();
    Server::start_with(
        database_url,
        ADMIN_TOKEN,
        &["--tick-ms", "20", "--clock-offset-seconds", &offset],
    )
    .await
}

/// A second tenant, subscribed to `hobby_v3` (monthly): its id.
async fn subscribed_tenant(client: &reqwest::Client, server: &Server) -> String {
    let (status, _, tenant) = post(
        client,
        format!("{}/v1/tenants", server.base),
        ADMIN_TOKEN,
        "tenant-renewing",
        json!({"name": "renewing"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{tenant}");
    let (status, _, subscribed) = post(
        client,
        format!("{}/v1/subscription", server.base),
        tenant["api_key"].as_str().unwrap(),
        "subscribe",
        json!({"plan": "hobby_v3"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{subscribed}");
    tenant["tenant_id"].as_str().unwrap().to_string()
}

/// Waits (bounded) until tenant `tenant_id` has renewed [`RENEWALS`] times,
/// then asserts that each period was renewed once: consecutive periods,
/// each renewal under its own scheduler key, no refused submission.
async fn assert_renewed_once_per_period(db: &TestDatabase, tenant_id: &str) {
    let renewals = || async {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT idempotency_key, payload->'PeriodRenewed' FROM events \
             WHERE tenant_id = $1::uuid AND event_type = 'PeriodRenewed' ORDER BY tenant_seq",
        )
        .bind(tenant_id)
        .fetch_all(db.store().pool())
        .await
        .unwrap();
        rows
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut renewed = renewals().await;
    while (renewed.len() as i64) < RENEWALS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        renewed = renewals().await;
    }
    assert_eq!(renewed.len() as i64, RENEWALS, "{renewed:?}");
    let subscribed: (Value,) = sqlx::query_as(
        "SELECT payload->'Subscribed' FROM events \
         WHERE tenant_id = $1::uuid AND event_type = 'Subscribed'",
    )
    .bind(tenant_id)
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    let mut period_end = subscribed.0["period_end"].clone();
    for (key, renewal) in &renewed {
        assert!(key.starts_with("pm:scheduler:"), "{key}");
        assert_eq!(renewal["period_start"], period_end, "{renewed:?}");
        period_end = renewal["period_end"].clone();
    }
    let refused: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM scheduler_runs WHERE tenant_id = $1::uuid AND outcome = 'refused'",
    )
    .bind(tenant_id)
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    assert_eq!(refused.0, 0);
}

/// A TCP proxy in front of PostgreSQL that the test can take down (every
/// open connection cut, new ones closed at once) and bring back: the
/// database going away and returning, as the ledger sees it.
struct DatabaseProxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<tokio::task::JoinSet<()>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl DatabaseProxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<tokio::task::JoinSet<()>>> = Arc::default();
        let accepting = {
            let (up, connections) = (up.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let target = target.clone();
                    connections.lock().unwrap().spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            })
        };
        Self {
            port,
            up,
            connections,
            accepting,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DatabaseProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.connections.lock().unwrap().abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_gone_requests_answer_503_and_the_ledger_recovers_by_itself() {
    // Proves: with the database unreachable (every connection cut, new ones
    // refused) a command and /healthz answer 503 `database_unavailable` and
    // nothing is written; once it is back, the same server (never
    // restarted) answers again, and the refused command, sent again with its
    // key, takes effect exactly once.
    let db = TestDatabase::new().await;
    let options = db.options();
    let proxy =
        DatabaseProxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        options.get_username(),
        proxy.port,
        options.get_database().unwrap()
    );
    let server = Server::start(&url, ADMIN_TOKEN).await;
    let client = support::http_client();
    let (_, _, tenant) = post(
        &client,
        format!("{}/v1/tenants", server.base),
        ADMIN_TOKEN,
        "tenant",
        json!({"name": "acme"}),
    )
    .await
    .unwrap();
    let api_key = tenant["api_key"].as_str().unwrap().to_string();
    let consume_url = format!("{}/v1/quota/credits/consume", server.base);
    let (status, _, _) = post(
        &client,
        format!("{}/v1/grants", server.base),
        &api_key,
        "grant",
        json!({"quota": "credits", "amount": 100, "source": "purchase"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let (status, _, _) = post(&client, consume_url.clone(), &api_key, "before", consume())
        .await
        .unwrap();
    assert_eq!(status, 200);

    proxy.down();
    let (status, _, body) = post(&client, consume_url.clone(), &api_key, "during", consume())
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    proxy.up();
    // A client retries a 503; connections broken by the outage fail once
    // each and are replaced.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, replayed, body) = loop {
        let (status, replayed, body) =
            post(&client, consume_url.clone(), &api_key, "during", consume())
                .await
                .unwrap();
        if status != 503 {
            break (status, replayed, body);
        }
        assert!(
            Instant::now() < deadline,
            "the command still answered 503 30 s after the database came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((status, replayed), (200, false), "{body}");
    let (status, replayed, again) = post(&client, consume_url, &api_key, "during", consume())
        .await
        .unwrap();
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, body);
    let (consumed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'QuotaConsumed'")
            .fetch_one(db.store().pool())
            .await
            .unwrap();
    assert_eq!(consumed, 2);
    drop(server);
}

/// Payments each client makes in a round before the kill, at least.
const PAYMENTS_PER_ROUND: usize = 60;

/// What one client sent for one payment: the intent's key, its id once
/// known, and the tender's key and reference once sent.
#[derive(Clone, Debug)]
struct SentPayment {
    create: String,
    tender: Option<String>,
    reference: String,
}

/// A sale of 1000 attributed to payee `alice` (10% commission).
fn intent() -> Value {
    json!({"amount": 1_000, "currency": "USD", "attribution": {"payee": "alice"}})
}

/// Plan `sales` (10% commission, payable at once) and payee `alice` on
/// it, for the commission process manager to accrue on every capture.
async fn commission_payee(client: &reqwest::Client, base: &str, api_key: &str) {
    for (path, key, body) in [
        (
            "/v1/compensation/plans",
            "plan",
            json!({"plan_id": "sales", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
                   "rules": [{"kind": "commission", "basis_points": 1_000}]}),
        ),
        (
            "/v1/payees",
            "payee",
            json!({"payee_id": "alice", "name": "Alice", "currency": "USD"}),
        ),
        (
            "/v1/payees/alice/assignment",
            "assign",
            json!({"plan_id": "sales", "from": "2020-01-01T00:00:00Z"}),
        ),
    ] {
        let (status, _, body) = post(client, format!("{base}{path}"), api_key, key, body)
            .await
            .unwrap();
        assert!(status == 200 || status == 201, "{path}: {body}");
    }
}

/// Waits (bounded) until the commission process manager has accrued
/// `expected` lines.
async fn wait_for_commissions(db: &TestDatabase, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (accrued,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'LineAccrued'")
                .fetch_one(db.store().pool())
                .await
                .unwrap();
        if accrued >= expected || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn card(reference: &str) -> Value {
    json!({"method": "card", "amount": 1_000, "processor": "stripe", "reference": reference})
}

/// What the clients of a round share.
#[derive(Clone)]
struct Round {
    client: reqwest::Client,
    base: String,
    api_key: String,
    /// key -> the body of its acknowledged answer.
    acknowledged: Arc<Mutex<BTreeMap<String, Value>>>,
    stop: Arc<AtomicBool>,
    /// Payments tendered and acknowledged in the round.
    paid: Arc<AtomicUsize>,
    /// Told once [`PAYMENTS_PER_ROUND`] were.
    enough: Arc<Notify>,
    /// Commands whose connection the kill cut before an answer came (the
    /// server had them when it died).
    cut: Arc<AtomicUsize>,
}

/// One client's payments until `stop` (or the server is gone): an intent
/// then a card tender (captured at once), each answer acknowledged into
/// `acknowledged`; returns what it sent.
async fn pay_until_stopped(round: Round, prefix: String) -> Vec<SentPayment> {
    let Round {
        client,
        base,
        api_key,
        acknowledged,
        stop,
        paid,
        enough,
        cut,
    } = round;
    let lost = |error: reqwest::Error| {
        // A connection refused never reached the server.
        if !error.is_connect() {
            cut.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut sent = Vec::new();
    for number in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut payment = SentPayment {
            create: format!("{prefix}-{number}-intent"),
            tender: None,
            reference: format!("ch_{prefix}_{number}"),
        };
        let created = post(
            &client,
            format!("{base}/v1/payments"),
            &api_key,
            &payment.create,
            intent(),
        )
        .await;
        let payment_id = match created {
            Ok((201, false, body)) => {
                acknowledged
                    .lock()
                    .unwrap()
                    .insert(payment.create.clone(), body.clone());
                body["payment_id"].as_str().unwrap().to_string()
            }
            Ok(other) => panic!("{}: unexpected answer {other:?}", payment.create),
            Err(error) => {
                lost(error);
                sent.push(payment);
                break;
            }
        };
        let key = format!("{prefix}-{number}-tender");
        payment.tender = Some(key.clone());
        sent.push(payment.clone());
        let url = format!("{base}/v1/payments/{payment_id}/tenders");
        match post(&client, url, &api_key, &key, card(&payment.reference)).await {
            Ok((201, false, body)) => {
                acknowledged.lock().unwrap().insert(key, body);
                if paid.fetch_add(1, Ordering::SeqCst) + 1 == PAYMENTS_PER_ROUND {
                    enough.notify_one();
                }
            }
            Ok(other) => panic!("{key}: unexpected answer {other:?}"),
            Err(error) => {
                lost(error);
                break;
            }
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_payments_load_loses_no_acknowledged_payment_and_doubles_none() {
    // Proves: SIGKILL three times while clients create payments attributed
    // to a payee and tender them by card (captured at once, posting to the
    // journal and claiming the processor's reference) and the commission
    // process manager accrues on each capture: every acknowledged intent
    // and tender answers its original body when sent again; every one sent
    // has exactly one effect (one intent, one capture, one reference claim,
    // one journal entry, one commission line under its reaction key); the
    // receivable, revenue and commission expense hold exactly the captured
    // sums in the read tables; `ledger verify` finds nothing.
    let db = TestDatabase::new().await;
    let client = support::http_client();
    let mut server = Server::start(db.url(), ADMIN_TOKEN).await;
    let (_, _, tenant) = post(
        &client,
        format!("{}/v1/tenants", server.base),
        ADMIN_TOKEN,
        "tenant",
        json!({"name": "shop"}),
    )
    .await
    .unwrap();
    let api_key = tenant["api_key"].as_str().unwrap().to_string();
    commission_payee(&client, &server.base, &api_key).await;
    let acknowledged: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let mut sent: Vec<SentPayment> = Vec::new();
    for round in 0..KILLS {
        let shared = Round {
            client: client.clone(),
            base: server.base.clone(),
            api_key: api_key.clone(),
            acknowledged: acknowledged.clone(),
            stop: Arc::default(),
            paid: Arc::default(),
            enough: Arc::default(),
            cut: Arc::default(),
        };
        let mut clients = Vec::new();
        for index in 0..CLIENTS {
            let prefix = format!("r{round}c{index}");
            clients.push(tokio::spawn(pay_until_stopped(shared.clone(), prefix)));
        }
        tokio::time::timeout(Duration::from_secs(120), shared.enough.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: too few payments; log:\n{}", server.log()));
        server.kill();
        shared.stop.store(true, Ordering::SeqCst);
        for client in clients {
            sent.extend(client.await.unwrap());
        }
        assert!(
            shared.cut.load(Ordering::SeqCst) >= 1,
            "round {round}: the kill cut no command in flight"
        );
        server = Server::start(db.url(), ADMIN_TOKEN).await;
    }

    // Every key again, in order: acknowledged ones answer their original
    // body, replayed; the others were committed (replayed) or run now.
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut last_seq = 0;
    for payment in &sent {
        let url = format!("{}/v1/payments", server.base);
        let (status, replayed, body) = post(&client, url, &api_key, &payment.create, intent())
            .await
            .unwrap();
        assert_eq!(status, 201, "{}: {body}", payment.create);
        if let Some(original) = acknowledged.get(&payment.create) {
            assert!(replayed && &body == original, "{}: {body}", payment.create);
        }
        let Some(key) = &payment.tender else {
            continue;
        };
        let payment_id = body["payment_id"].as_str().unwrap();
        let url = format!("{}/v1/payments/{payment_id}/tenders", server.base);
        let (status, replayed, body) = post(&client, url, &api_key, key, card(&payment.reference))
            .await
            .unwrap();
        assert_eq!(status, 201, "{key}: {body}");
        if let Some(original) = acknowledged.get(key) {
            assert!(replayed && &body == original, "{key}: {body}");
        }
        last_seq = last_seq.max(body["tenant_seq"].as_i64().unwrap());
    }
    let tenders = sent
        .iter()
        .filter(|payment| payment.tender.is_some())
        .count() as i64;
    assert!(tenders >= (KILLS * PAYMENTS_PER_ROUND) as i64);
    wait_for_commissions(&db, tenders).await;
    let (reactions, keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM events \
         WHERE event_type = 'LineAccrued' AND idempotency_key LIKE 'pm:commissions:%'",
    )
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    assert_eq!((reactions, keys), (tenders, tenders));
    let (head,): (i64,) = sqlx::query_as("SELECT max(tenant_seq) FROM events")
        .fetch_one(db.store().pool())
        .await
        .unwrap();
    last_seq = last_seq.max(head);
    for (event_type, expected) in [
        ("PaymentCreated", sent.len() as i64),
        ("Captured", tenders),
        ("ReferenceClaimed", 2 * tenders),
        ("LineAccrued", tenders),
        ("EntryRecorded", 2 * tenders),
    ] {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(db.store().pool())
            .await
            .unwrap();
        assert_eq!(count, expected, "{event_type}");
    }
    let balances: Value = client
        .get(format!(
            "{}/v1/journal/balances?min_seq={last_seq}",
            server.base
        ))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let captured = (tenders * 1_000).to_string();
    let commissions = (tenders * 100).to_string();
    for (account, side, sum) in [
        ("receivable:stripe", "debits", &captured),
        ("revenue", "credits", &captured),
        ("compensation_expense", "debits", &commissions),
    ] {
        let row = balances["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["account"] == account)
            .unwrap_or_else(|| panic!("no {account} in {balances}"));
        assert_eq!(row[side], json!(sum), "{account}: {balances}");
    }
    drop(server);
    let verified = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["verify", "--json"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify found problems: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}
