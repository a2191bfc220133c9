//! The `ledger` binary killed with SIGKILL under load, against a real
//! PostgreSQL: no acknowledged command is lost, none is applied twice, and
//! the restarted ledger verifies.

mod support;

use eventstore::testing::TestDatabase;
use replay::bench::mixed;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{assert_mixed_effects, Server};
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
    // Proves: SIGKILL while commands are in flight (at each counted kill,
    // some commands sent before it were never answered; a kill that cut
    // none is repeated), three times over: every acknowledged command is still there and answers its
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
    // A round whose kill cut nothing (every command was answered before
    // the signal landed) proves nothing of a cut, and runs again.
    let (mut round, mut attempt) = (0, 0);
    while round < KILLS {
        attempt += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let in_round = Arc::new(AtomicUsize::new(0));
        // Commands started before the kill whose connection was cut before
        // an answer came: the server had them when it died.
        let cut = Arc::new(AtomicUsize::new(0));
        // Commands sent and not answered yet.
        let in_flight = Arc::new(AtomicUsize::new(0));
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
            let in_flight = in_flight.clone();
            clients.push(tokio::spawn(async move {
                let mut keys = Vec::new();
                for number in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("consume-{attempt}-{index}-{number}");
                    keys.push(key.clone());
                    let url = format!("{base}/v1/quota/credits/consume");
                    // Read before the command counts as on its way: the
                    // kill waits for one, so this one was sent before it.
                    let before_kill = !killed.load(Ordering::SeqCst);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answer = post(&client, url, &api_key, &key, consume()).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
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
        // On a busy machine every client may be between two commands just
        // then: the kill waits for one to be on its way.
        tokio::time::timeout(Duration::from_secs(60), async {
            while in_flight.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a command in flight within 60 s");
        killed.store(true, Ordering::SeqCst);
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            sent.extend(client.await.unwrap());
        }
        if cut.load(Ordering::SeqCst) == 0 {
            assert!(
                attempt < KILLS + 5,
                "round {round}: no kill cut a command in flight in {attempt} attempts"
            );
            server = later_server(db.url(), round).await;
            continue;
        }
        // Restarted a month later in the ledger's time: the subscription's
        // renewal fell due while the server was dead.
        round += 1;
        server = later_server(db.url(), round).await;
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
    support::assert_verifies(&db);
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
                    // Checked under the lock `down` takes: no connection
                    // accepted before it slips through after it.
                    let mut open = connections.lock().unwrap();
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let target = target.clone();
                    open.spawn(async move {
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
        let mut open = self.connections.lock().unwrap();
        self.up.store(false, Ordering::SeqCst);
        open.abort_all();
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

/// Mixed commands acknowledged in a round before the fault, at least.
const MIXED_PER_ROUND: usize = 150;

/// Payments of a client settled in each batch: a client's share of a
/// round holds a few.
const SETTLE_EVERY: usize = 2;

/// Quota accounts of the mixed workload's tenant.
const ACCOUNTS: usize = 4;

/// The mixed workload's clients: `CLIENTS` of them on `base`, filing their
/// answers in `record`, until `load` stops.
fn mixed_clients(
    target: &mixed::Target,
    round: &str,
    load: &Arc<mixed::Load>,
    record: &Arc<mixed::Record>,
) -> Vec<tokio::task::JoinHandle<mixed::ClientRun>> {
    (0..CLIENTS)
        .map(|index| {
            let (target, load, record) = (target.clone(), load.clone(), record.clone());
            let prefix = format!("{round}c{index}");
            tokio::spawn(async move {
                mixed::run_client(target, prefix, ACCOUNTS, &load, &record).await
            })
        })
        .collect()
}

/// Waits (bounded) until `load` has `commands` acknowledged.
async fn wait_for_commands(load: &mixed::Load, commands: usize, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.commands.load(Ordering::SeqCst) < commands {
        assert!(
            Instant::now() < deadline,
            "{} of {commands} commands acknowledged within 120 s; the server's log:\n{}",
            load.commands.load(Ordering::SeqCst),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every flow again from its first step against `target`: each
/// acknowledged step answers its first answer, replayed; the others were
/// committed (replayed) or run now, once.
async fn complete(flows: &[mixed::Flow], target: &mixed::Target, record: &mixed::Record) {
    for flow in flows {
        flow.run(target, record)
            .await
            .unwrap_or_else(|error| panic!("completing {flow:?}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_mixed_load_loses_nothing_and_reacts_once() {
    // Proves: SIGKILL three times while clients run the mixed workload of
    // `ledger bench` (quota consumption; payments captured by card,
    // attributed to reps, settled in batches, the commission process
    // manager accruing on each capture; escrow commitments deposited,
    // partly released and a milestone submitted for the scheduler to
    // release; hours of work): at each of three kills some command was cut
    // in flight (a kill that cut none is repeated); each restart comes a
    // month later in the ledger's time. Every
    // flow is then run again from its first step: each acknowledged answer
    // comes back replayed and unchanged (no acknowledged command lost or
    // run twice), and the flows made exactly their events: one commission
    // per capture under its reaction key, one scheduled release per
    // milestone and one scheduled payable per commission under the
    // scheduler's keys, none refused; the journal's totals in the read
    // tables are exact; `ledger verify` (every read table equal to a fresh
    // replay, every request decided again) finds nothing.
    let db = TestDatabase::new().await;
    let client = support::http_client();
    let mut server = later_server(db.url(), 0).await;
    let api_key = mixed::set_up_tenant(&client, &server.base, ADMIN_TOKEN, 0, ACCOUNTS)
        .await
        .unwrap();
    let target = |server: &Server| mixed::Target {
        client: client.clone(),
        base: server.base.clone(),
        api_key: api_key.clone(),
    };
    let record = Arc::new(mixed::Record::default());
    let mut flows = Vec::new();
    // A round whose kill cut nothing runs again, as in the quota test.
    let (mut round, mut attempt) = (0, 0);
    while round < KILLS {
        attempt += 1;
        let load = Arc::new(mixed::Load::new(usize::MAX, SETTLE_EVERY));
        let clients = mixed_clients(&target(&server), &format!("r{attempt}"), &load, &record);
        wait_for_commands(&load, MIXED_PER_ROUND, &server).await;
        let killed_at = Instant::now();
        server.kill();
        load.stop.store(true, Ordering::SeqCst);
        // Commands sent before the kill whose connection it cut.
        let mut cut = 0;
        for client in clients {
            let run = client.await.unwrap();
            match run.ended {
                Some(mixed::StepError::Lost { reached, sent, .. }) => {
                    cut += usize::from(reached && sent < killed_at)
                }
                Some(other) => panic!("round {round}: {other}"),
                None => {}
            }
            flows.extend(run.flows);
        }
        if cut == 0 {
            assert!(
                attempt < KILLS + 5,
                "round {round}: no kill cut a command in flight in {attempt} attempts"
            );
            server = later_server(db.url(), round).await;
            continue;
        }
        round += 1;
        server = later_server(db.url(), round).await;
    }
    let acknowledged = record.answers().len();
    complete(&flows, &target(&server), &record).await;
    assert!(acknowledged >= KILLS * MIXED_PER_ROUND);
    assert!(
        flows
            .iter()
            .any(|flow| flow.kind == mixed::Kind::Settlement),
        "no settlement batch in {flows:?}"
    );
    // A month on again: the commissions of the last flows fall due too.
    drop(server);
    let server = later_server(db.url(), KILLS + 1).await;
    assert_mixed_effects(&db, &server, &api_key, &flows, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_gone_requests_answer_503_and_the_ledger_recovers_by_itself() {
    // Proves: under the mixed workload, with the database unreachable
    // (every connection cut, new ones refused) for longer than the
    // escrow milestones' inspection windows, a command and /healthz answer
    // 503 `database_unavailable` and nothing is written; the clients retry
    // their 503s; once it is back, the same server (never restarted)
    // answers again by itself and the clients go on; the refused probe,
    // sent again with its key, takes effect exactly once; and every flow,
    // the scheduled releases whose windows ended during the outage
    // included, made exactly its events, once, with `ledger verify` clean;
    // and the work that fell due during the outage (some always does) was
    // all done once the database was back.
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
    let server = Server::start_with(&url, ADMIN_TOKEN, &["--tick-ms", "20"]).await;
    let client = support::http_client();
    let api_key = mixed::set_up_tenant(&client, &server.base, ADMIN_TOKEN, 0, ACCOUNTS)
        .await
        .unwrap();
    let target = mixed::Target {
        client: client.clone(),
        base: server.base.clone(),
        api_key: api_key.clone(),
    };
    let record = Arc::new(mixed::Record::default());
    let load = Arc::new(mixed::Load::new(usize::MAX, SETTLE_EVERY));
    let clients = mixed_clients(&target, "", &load, &record);
    wait_for_commands(&load, MIXED_PER_ROUND, &server).await;

    let database_now = || async {
        let (now,): (chrono::DateTime<chrono::Utc>,) = sqlx::query_as("SELECT now()")
            .fetch_one(db.store().pool())
            .await
            .unwrap();
        now
    };
    proxy.down();
    // Taken once cut off (its own connection goes around the proxy): work
    // due from here on cannot have been done before the return.
    let went_down = database_now().await;
    let probe = json!({"amount": 1, "account": "acct-0"});
    let consume_url = format!("{}/v1/quota/credits/consume", server.base);
    let (status, _, body) = post(
        &client,
        consume_url.clone(),
        &api_key,
        "during",
        probe.clone(),
    )
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
    let during = load.commands.load(Ordering::SeqCst);
    // Longer than the 1 s inspection windows: releases fall due while the
    // database is gone.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let came_up = database_now().await;
    proxy.up();
    let back = Instant::now();
    wait_for_commands(&load, during + MIXED_PER_ROUND, &server).await;
    eprintln!("recovered in {:?}", back.elapsed());
    load.stop.store(true, Ordering::SeqCst);
    assert!(
        load.unavailable.load(Ordering::SeqCst) >= 1,
        "no client saw a 503"
    );
    let mut flows = Vec::new();
    for client in clients {
        let run = client.await.unwrap();
        if let Some(error) = run.ended {
            panic!("a client stopped: {error}");
        }
        flows.extend(run.flows);
    }
    // The probe, sent again: its first run was refused and wrote nothing.
    let (status, replayed, body) = post(
        &client,
        consume_url.clone(),
        &api_key,
        "during",
        probe.clone(),
    )
    .await
    .unwrap();
    assert_eq!((status, replayed), (200, false), "{body}");
    let (status, replayed, again) = post(&client, consume_url, &api_key, "during", probe)
        .await
        .unwrap();
    assert_eq!((status, replayed, &again), (200, true, &body));
    complete(&flows, &target, &record).await;
    // The probe is one more consumption than the flows make.
    let mut with_probe = flows.clone();
    with_probe.push(mixed::Flow {
        kind: mixed::Kind::Quota,
        tag: "during".into(),
        account: 0,
        rep: 0,
        settles: Vec::new(),
    });
    assert_mixed_effects(&db, &server, &api_key, &with_probe, false).await;
    // The scheduler caught up: work that fell due while the database was
    // gone was done after it came back (none of it before, none left).
    let (fell_due, done_after): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE e.recorded_at >= $2) \
         FROM scheduled_work w \
         LEFT JOIN events e ON e.tenant_id = w.tenant_id AND e.tenant_seq = w.settled_seq \
         WHERE w.due_at >= $1 AND w.due_at < $2",
    )
    .bind(went_down)
    .bind(came_up)
    .fetch_one(db.store().pool())
    .await
    .unwrap();
    eprintln!("{fell_due} scheduled requests fell due during the outage");
    assert!(fell_due > 0, "nothing fell due during the outage");
    assert_eq!(done_after, fell_due, "work due during the outage");
    drop(server);
}
