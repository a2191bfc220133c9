//! The `mixed` workload: every domain at once over HTTP, the load behind
//! `ledger bench --workload mixed` and the crash and outage tests.
//!
//! Each client runs **flows**, one after another, each a short business
//! story of one to four commands with keys of its own:
//! - `quota`: one consume of 1 unit from one of the tenant's accounts;
//! - `payment`: an automatic-capture intent attributed to a sales rep, then
//!   a card tender (captured at once, claiming its processor reference);
//!   the `commissions` process manager accrues 10% for the rep, held 30
//!   days, and the scheduler makes it payable then;
//! - `escrow`: a commitment of two milestones (600 with a 1 s inspection
//!   window released on timeout, 400 with a day's), a deposit of 1000, a
//!   release of the 400, and the 600's submission: the scheduler releases
//!   it when its window ends;
//! - `work`: an hour of a rep's time at 25.00;
//! - `settlement`: every [`Load::settle_every`] payments of a client
//!   ([`SETTLE_EVERY`] in the bench), one processor batch settling their
//!   captures (fee 30 each).
//!
//! Flows run every step from the first: a step whose key was answered
//! before answers its first answer again (the replay is checked against
//! it), so running a flow again after a crash or an outage completes it
//! exactly once. [`expected`] gives, for the flows a run started, the
//! events and balances they make once complete.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) mod bench;

/// Payments of a client settled in each batch, in the bench.
pub const SETTLE_EVERY: usize = 10;

/// Sales reps of each tenant (payees on plan `sales`).
pub const REPS: usize = 4;

/// Every payment's amount, in cents.
pub const PAYMENT: i64 = 1_000;

/// The commission on each payment (10%).
pub const COMMISSION: i64 = 100;

/// The processor's fee on each settled capture.
pub const FEE: i64 = 30;

/// An hour of a rep's time.
pub const HOURLY: i64 = 2_500;

/// Each commitment's total: the timed-out milestone and the released one.
pub const COMMITMENT: i64 = 1_000;

/// How long a commission is held, in days.
pub const HOLDING_DAYS: i64 = 30;

/// Units of each account's grant: far more than any run consumes.
const GRANT_UNITS: i64 = 1_000_000_000;

/// How long a client waits before running a flow again after a 503.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(50);

/// A tenant's side of the API.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    /// `http://host:port`.
    pub base: String,
    pub api_key: String,
}

/// An answer to one step.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub replayed: bool,
    pub body: Value,
}

/// Why a flow stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// No answer came. `reached`: the request was sent (the connection was
    /// cut, not refused), so the server may have had it.
    #[error("{key}: no answer ({error})")]
    Lost {
        key: String,
        reached: bool,
        error: String,
        /// When the request was sent.
        sent: Instant,
    },
    /// 503: the database is out of reach; nothing was written.
    #[error("{key}: 503 {body}")]
    Unavailable { key: String, body: Value },
    /// 409: the request kept meeting concurrent writes of the tenant
    /// (another process appending); nothing was written.
    #[error("{key}: 409 {body}")]
    Conflict { key: String, body: Value },
    /// An answer the flow does not expect.
    #[error("{key}: unexpected {status} {body}")]
    Unexpected {
        key: String,
        status: u16,
        body: Value,
    },
    /// A key answered before ran again, or answered differently.
    #[error("{key}: answered {first} before, now {now} (replayed: {replayed})")]
    Doubled {
        key: String,
        first: Value,
        now: Value,
        replayed: bool,
    },
}

/// What a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Quota,
    Payment,
    Escrow,
    Work,
    Settlement,
}

impl Kind {
    /// Commands in a flow of this kind.
    pub fn commands(self) -> usize {
        match self {
            Self::Quota | Self::Work | Self::Settlement => 1,
            Self::Payment => 2,
            Self::Escrow => 4,
        }
    }
}

/// One flow: its kind, the tag its keys and references start with, the
/// account or rep it uses, and (a settlement) the references it settles.
#[derive(Debug, Clone)]
pub struct Flow {
    pub kind: Kind,
    pub tag: String,
    pub account: usize,
    pub rep: usize,
    pub settles: Vec<String>,
}

/// The acknowledged answers of a run, by key, and each step's latency.
#[derive(Default)]
pub struct Record {
    answers: Mutex<BTreeMap<String, Value>>,
    latencies_ms: Mutex<Vec<f64>>,
}

impl Record {
    /// Every acknowledged answer, by key.
    pub fn answers(&self) -> BTreeMap<String, Value> {
        self.answers.lock().expect("not poisoned").clone()
    }

    /// Every step's latency, in milliseconds.
    pub fn latencies_ms(&self) -> Vec<f64> {
        self.latencies_ms.lock().expect("not poisoned").clone()
    }

    /// Files `answer` to `key`: refused when the key was answered before
    /// and this answer is not that answer replayed.
    fn file(&self, key: &str, answer: &Answer) -> Result<(), StepError> {
        let mut answers = self.answers.lock().expect("not poisoned");
        match answers.get(key) {
            Some(first) if !answer.replayed || *first != answer.body => Err(StepError::Doubled {
                key: key.to_string(),
                first: first.clone(),
                now: answer.body.clone(),
                replayed: answer.replayed,
            }),
            Some(_) => Ok(()),
            None => {
                answers.insert(key.to_string(), answer.body.clone());
                Ok(())
            }
        }
    }
}

/// Sends one command and reads its answer.
pub async fn post(
    target: &Target,
    path: &str,
    key: &str,
    body: &Value,
) -> Result<Answer, StepError> {
    let sent = Instant::now();
    let lost = |error: reqwest::Error| StepError::Lost {
        key: key.to_string(),
        reached: !error.is_connect(),
        error: error.to_string(),
        sent,
    };
    let response = target
        .client
        .post(format!("{}{path}", target.base))
        .bearer_auth(&target.api_key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .map_err(lost)?;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let body = response.json().await.map_err(lost)?;
    Ok(Answer {
        status,
        replayed,
        body,
    })
}

/// Runs one step: `expected` is its success status.
async fn step(
    target: &Target,
    record: &Record,
    path: &str,
    key: String,
    body: Value,
    expected: u16,
) -> Result<Value, StepError> {
    let sent = Instant::now();
    let answer = post(target, path, &key, &body).await?;
    if answer.status == 503 {
        return Err(StepError::Unavailable {
            key,
            body: answer.body,
        });
    }
    if answer.status == 409 && answer.body["error"]["code"] == "conflict" {
        return Err(StepError::Conflict {
            key,
            body: answer.body,
        });
    }
    if answer.status != expected {
        return Err(StepError::Unexpected {
            key,
            status: answer.status,
            body: answer.body,
        });
    }
    record.file(&key, &answer)?;
    record
        .latencies_ms
        .lock()
        .expect("not poisoned")
        .push(sent.elapsed().as_secs_f64() * 1000.0);
    Ok(answer.body)
}

/// The id field `field` of an answer.
fn id_of(body: &Value, field: &str, key: &str) -> Result<String, StepError> {
    body[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StepError::Unexpected {
            key: key.to_string(),
            status: 0,
            body: body.clone(),
        })
}

impl Flow {
    /// The processor reference of a payment flow's card.
    pub fn reference(&self) -> String {
        format!("ch_{}", self.tag)
    }

    /// Runs every step of the flow, from the first.
    pub async fn run(&self, target: &Target, record: &Record) -> Result<(), StepError> {
        let tag = &self.tag;
        match self.kind {
            Kind::Quota => {
                let body = json!({"amount": 1, "account": format!("acct-{}", self.account)});
                step(
                    target,
                    record,
                    "/v1/quota/credits/consume",
                    tag.clone(),
                    body,
                    200,
                )
                .await?;
            }
            Kind::Payment => {
                let key = format!("{tag}-intent");
                let body = json!({"amount": PAYMENT, "currency": "USD", "capture": "automatic",
                                  "attribution": {"payee": format!("rep-{}", self.rep)}});
                let created = step(target, record, "/v1/payments", key.clone(), body, 201).await?;
                let payment = id_of(&created, "payment_id", &key)?;
                let body = json!({"method": "card", "amount": PAYMENT, "processor": "stripe",
                                  "reference": self.reference()});
                let path = format!("/v1/payments/{payment}/tenders");
                step(target, record, &path, format!("{tag}-card"), body, 201).await?;
            }
            Kind::Escrow => self.escrow(target, record).await?,
            Kind::Work => {
                let body = json!({"kind": "time", "minutes": 60,
                                  "worked_at": "2026-01-05T09:00:00Z", "reference": tag});
                let path = format!("/v1/payees/rep-{}/work", self.rep);
                step(target, record, &path, tag.clone(), body, 201).await?;
            }
            Kind::Settlement => {
                let lines: Vec<Value> = self
                    .settles
                    .iter()
                    .map(|reference| {
                        json!({"type": "capture", "reference": reference, "gross": PAYMENT,
                               "fee": FEE, "net": PAYMENT - FEE})
                    })
                    .collect();
                let body = json!({"processor": "stripe", "batch_id": tag,
                                  "settled_at": "2026-01-06T00:00:00Z", "currency": "USD",
                                  "lines": lines});
                step(target, record, "/v1/settlements", tag.clone(), body, 201).await?;
            }
        }
        Ok(())
    }

    async fn escrow(&self, target: &Target, record: &Record) -> Result<(), StepError> {
        let tag = &self.tag;
        let key = format!("{tag}-deal");
        let body = json!({"payer": format!("buyer-{tag}"), "payee": "seller", "currency": "USD",
            "milestones": [
                {"milestone_id": "timed", "amount": 600, "inspection_seconds": 1, "on_timeout": "release"},
                {"milestone_id": "early", "amount": 400, "inspection_seconds": 86_400, "on_timeout": "refund"}]});
        let created = step(target, record, "/v1/commitments", key.clone(), body, 201).await?;
        let deal = id_of(&created, "commitment_id", &key)?;
        let steps = [
            (
                format!("/v1/commitments/{deal}/deposits"),
                "wire",
                json!({"amount": COMMITMENT, "reference": format!("wire-{tag}")}),
                201,
            ),
            (
                format!("/v1/commitments/{deal}/milestones/early/release"),
                "release",
                json!({"amount": 400}),
                201,
            ),
            (
                format!("/v1/commitments/{deal}/milestones/timed/submit"),
                "submit",
                json!({}),
                200,
            ),
        ];
        for (path, suffix, body, status) in steps {
            step(
                target,
                record,
                &path,
                format!("{tag}-{suffix}"),
                body,
                status,
            )
            .await?;
        }
        Ok(())
    }
}

/// Creates tenant `index` (admin `admin_token`) with `accounts` quota
/// accounts of one grant each, plan `sales` and [`REPS`] reps on it;
/// returns its API key. Every step has a key of its own, so it may run
/// again.
pub async fn set_up_tenant(
    client: &reqwest::Client,
    base: &str,
    admin_token: &str,
    index: usize,
    accounts: usize,
) -> Result<String, StepError> {
    let admin = Target {
        client: client.clone(),
        base: base.to_string(),
        api_key: admin_token.to_string(),
    };
    let record = Record::default();
    let key = format!("tenant-{index}");
    let body = json!({"name": format!("mixed-{index}")});
    let tenant = step(&admin, &record, "/v1/tenants", key.clone(), body, 201).await?;
    let target = Target {
        api_key: id_of(&tenant, "api_key", &key)?,
        ..admin
    };
    for account in 0..accounts {
        let body = json!({"quota": "credits", "amount": GRANT_UNITS, "source": "purchase",
                          "account": format!("acct-{account}")});
        step(
            &target,
            &record,
            "/v1/grants",
            format!("grant-{account}"),
            body,
            201,
        )
        .await?;
    }
    let plan = json!({"plan_id": "sales", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
        "rules": [{"kind": "hourly", "rate_per_hour": HOURLY},
                  {"kind": "commission", "basis_points": 1_000, "holding_days": HOLDING_DAYS}]});
    step(
        &target,
        &record,
        "/v1/compensation/plans",
        "plan".into(),
        plan,
        201,
    )
    .await?;
    for rep in 0..REPS {
        let body = json!({"payee_id": format!("rep-{rep}"), "name": format!("Rep {rep}"), "currency": "USD"});
        step(
            &target,
            &record,
            "/v1/payees",
            format!("rep-{rep}"),
            body,
            201,
        )
        .await?;
        let body = json!({"plan_id": "sales", "from": "2020-01-01T00:00:00Z"});
        let path = format!("/v1/payees/rep-{rep}/assignment");
        step(
            &target,
            &record,
            &path,
            format!("rep-{rep}-assign"),
            body,
            200,
        )
        .await?;
    }
    Ok(target.api_key)
}

/// What the clients of a run share: when to stop, and the commands
/// acknowledged so far.
pub struct Load {
    /// No flow starts once set.
    pub stop: AtomicBool,
    /// Commands acknowledged (every step of the flows).
    pub commands: AtomicUsize,
    /// No flow starts once this many commands were acknowledged.
    pub limit: usize,
    /// Payments of a client settled in each batch (at least 1).
    pub settle_every: usize,
    /// 503 answers the clients had (and ran their flow again after).
    pub unavailable: AtomicUsize,
    /// 409 `conflict` answers the clients had (and ran their flow again
    /// after).
    pub conflicts: AtomicUsize,
}

impl Load {
    pub fn new(limit: usize, settle_every: usize) -> Self {
        Self {
            stop: AtomicBool::new(false),
            commands: AtomicUsize::new(0),
            limit,
            settle_every: settle_every.max(1),
            unavailable: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
        }
    }

    fn going(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && self.commands.load(Ordering::SeqCst) < self.limit
    }
}

/// What one client did: every flow it started (the last one maybe not
/// complete), and why it stopped early, if it did.
#[derive(Debug, Default)]
pub struct ClientRun {
    pub flows: Vec<Flow>,
    pub ended: Option<StepError>,
}

/// The `number`th flow of client `prefix` after `paid` unsettled payments:
/// a settlement once `settle_every` are, else by turn: quota, payment,
/// quota, escrow, quota, work.
fn next_flow(
    prefix: &str,
    number: usize,
    accounts: usize,
    settle_every: usize,
    paid: &mut Vec<String>,
) -> Flow {
    let tag = format!("{prefix}-{number}");
    let kind = if paid.len() == settle_every {
        Kind::Settlement
    } else {
        match number % 6 {
            1 => Kind::Payment,
            3 => Kind::Escrow,
            5 => Kind::Work,
            _ => Kind::Quota,
        }
    };
    Flow {
        kind,
        tag,
        // Quota flows fall on even numbers, payments and work once in six:
        // these spread them over every account and every rep.
        account: (number / 2) % accounts.max(1),
        rep: (number / 6) % REPS,
        settles: if kind == Kind::Settlement {
            std::mem::take(paid)
        } else {
            Vec::new()
        },
    }
}

/// Runs flows of client `prefix` until `load` says stop, filing every
/// answer in `record`: a 503 or a 409 `conflict` (nothing written either
/// way) runs the flow again after a pause, as a client retries, unless the
/// load is stopping; any other failure ends the client.
pub async fn run_client(
    target: Target,
    prefix: String,
    accounts: usize,
    load: &Load,
    record: &Record,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut paid = Vec::new();
    let mut number = 0;
    while load.going() {
        let flow = next_flow(&prefix, number, accounts, load.settle_every, &mut paid);
        number += 1;
        run.flows.push(flow.clone());
        loop {
            match flow.run(&target, record).await {
                Ok(()) => break,
                Err(StepError::Unavailable { .. }) if !load.stop.load(Ordering::SeqCst) => {
                    load.unavailable.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(UNAVAILABLE_PAUSE).await;
                }
                Err(StepError::Conflict { .. }) if !load.stop.load(Ordering::SeqCst) => {
                    load.conflicts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(UNAVAILABLE_PAUSE).await;
                }
                Err(error) => {
                    run.ended = Some(error);
                    return run;
                }
            }
        }
        load.commands
            .fetch_add(flow.kind.commands(), Ordering::SeqCst);
        if flow.kind == Kind::Payment {
            paid.push(flow.reference());
        }
    }
    run
}

/// Events of each type in `store`, to compare with [`expected`].
pub async fn event_counts(
    store: &eventstore::EventStore,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY event_type")
            .fetch_all(store.pool())
            .await?;
    Ok(rows.into_iter().collect())
}

/// Events of `event_types` appended under keys like `pattern` (`LIKE`), and
/// the distinct keys they came under: reactions taken once each have as
/// many keys as events.
pub async fn reactions_under(
    store: &eventstore::EventStore,
    pattern: &str,
    event_types: &[&str],
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM events \
         WHERE idempotency_key LIKE $1 AND event_type = ANY($2::text[])",
    )
    .bind(pattern)
    .bind(event_types)
    .fetch_one(store.pool())
    .await
}

/// What complete flows make: events by type, and journal totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Events of each type, the process managers' and the scheduler's
    /// included.
    pub events: BTreeMap<&'static str, i64>,
    /// `(account, side, total)`: the journal's debits or credits of an
    /// account.
    pub totals: Vec<(&'static str, &'static str, i64)>,
    /// Commission lines the process manager accrues (one per payment).
    pub commissions: i64,
    /// Requests the scheduler submits: each commission made payable, each
    /// timed-out milestone released.
    pub scheduled: i64,
}

/// What `flows`, each complete, make.
pub fn expected(flows: &[Flow]) -> Expected {
    let count = |kind: Kind| flows.iter().filter(|flow| flow.kind == kind).count() as i64;
    let (quota, payments, escrows, works) = (
        count(Kind::Quota),
        count(Kind::Payment),
        count(Kind::Escrow),
        count(Kind::Work),
    );
    let settlements = count(Kind::Settlement);
    let settled: i64 = flows.iter().map(|flow| flow.settles.len() as i64).sum();
    let events = BTreeMap::from([
        ("QuotaConsumed", quota),
        ("PaymentCreated", payments),
        ("Captured", payments),
        ("TenderAuthorized", payments),
        ("ItemSettled", settled),
        ("LineAccrued", payments + works),
        ("LinePayable", payments),
        ("CommitmentCreated", escrows),
        ("Deposited", escrows),
        ("MilestoneSubmitted", escrows),
        ("InspectionClosed", escrows),
        ("Transferred", 2 * escrows),
        ("CommitmentCompleted", escrows),
        ("SettlementImported", settlements),
    ]);
    let totals = vec![
        ("revenue", "credits", PAYMENT * payments),
        ("receivable:stripe", "debits", PAYMENT * payments),
        ("receivable:stripe", "credits", PAYMENT * settled),
        ("processing_fees", "debits", FEE * settled),
        (
            "compensation_expense",
            "debits",
            COMMISSION * payments + HOURLY * works,
        ),
        ("escrow_cash", "debits", COMMITMENT * escrows),
        ("payee_payable:seller", "credits", COMMITMENT * escrows),
    ];
    Expected {
        events,
        totals,
        commissions: payments,
        scheduled: payments + escrows,
    }
}
