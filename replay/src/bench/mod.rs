//! `ledger bench`: a named workload against a fresh database of its own.
//!
//! Workload `mixed` (`mixed`): every domain at once over HTTP.
//!
//! Workload `payments` (`payments`): card payments authorized and captured,
//! then settled in processor batches.
//!
//! Workload `quota`: tenants × quota accounts, one credits grant each; then
//! clients submit consume commands of 1 unit, each with a unique idempotency
//! key, through the same command pipeline the HTTP API uses (or over HTTP to
//! a real `ledger serve` with `--http`), with the projection workers running
//! throughout. Measured: commands/s and latency (p50, p99), the time for the
//! projections to catch up after the last command, the rebuild rate of all
//! projections, the verify rate, and the peak resident memory of the ledger
//! process.

use crate::verify::verify_database;
use aggregates::quota::{GrantSource, QuotaAccount, QuotaType};
use aggregates::{Amount, TenantId};
use commands::metrics::AppendTotals;
use commands::requests::quota::{ConsumeQuota, IssueGrant};
use commands::server::start_bus;
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::database::{drop_database, quote_identifier};
use eventstore::{Database, EventStore, IdempotencyKey};
use projections::Workers;
use serde::Serialize;
use serde_json::json;
use sqlx::{ConnectOptions, Connection};
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most clients a run may use.
pub const CLIENTS_MAX: usize = 1_024;

/// Units in each account's grant: far more than any run consumes.
const GRANT_UNITS: i64 = 1_000_000_000;

/// Longest the projections may take to catch up before the run fails.
const CATCH_UP_BOUND: Duration = Duration::from_secs(120);

/// How often catch-up is checked.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

pub mod mixed;
mod payments;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Consume commands of 1 unit against grants of many quota accounts.
    Quota,
    /// Card payments: each an intent (set up, not measured), then an
    /// authorization and a final capture (the measured command pair); then
    /// one settlement batch per tenant of every capture.
    Payments,
    /// Every domain at once over HTTP: quota consumption, payments with
    /// settlements and commissions, escrow deposits and releases (timed
    /// out ones by the scheduler), hours of work.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::Payments => "payments",
            Self::Mixed => "mixed",
        }
    }
}

/// The sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub workload: Workload,
    pub tenants: usize,
    pub accounts: usize,
    pub clients: usize,
    pub commands: usize,
    /// Drive a `ledger serve` child process over HTTP.
    pub http: bool,
    /// Pipeline shards.
    pub shards: usize,
    /// Appends in flight per shard.
    pub pipeline_depth: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            workload: Workload::Quota,
            tenants: 10,
            accounts: 100,
            clients: 16,
            commands: 20_000,
            http: false,
            shards: BusConfig::default().shards,
            pipeline_depth: BusConfig::default().pipeline_depth,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub workload: &'static str,
    pub mode: &'static str,
    pub tenants: usize,
    pub accounts: usize,
    pub clients: usize,
    pub commands: usize,
    pub shards: usize,
    pub pipeline_depth: usize,
    pub events: i64,
    pub commands_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub catch_up_ms: f64,
    pub rebuild_events_per_s: f64,
    pub verify_events_per_s: f64,
    /// Processor time of the whole machine (database server included) per
    /// command during the command phase, in microseconds.
    pub cpu_us_per_command: f64,
    /// Processor time of the ledger process per command during the command
    /// phase, in microseconds.
    pub ledger_cpu_us_per_command: f64,
    pub peak_rss_mb: f64,
    /// The pipeline's append attempts during the command phase (in process
    /// only: over HTTP the pipeline runs in the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appends: Option<u64>,
    /// Commands per append attempt, on average (in process only; a command
    /// retried after a failed attempt counts again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_commands_mean: Option<f64>,
    /// Time of an append attempt, on average, in milliseconds: from the
    /// call to the store until the statement returned, building its arrays
    /// and waiting for a pooled connection included (in process only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_ms_mean: Option<f64>,
    /// Settlement lines imported (the payments workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_lines: Option<usize>,
    /// Settlement lines imported per second, batches of every tenant at
    /// once (the payments workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_lines_per_s: Option<f64>,
    /// Flows run, by kind (the mixed workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<std::collections::BTreeMap<mixed::Kind, usize>>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("a command failed: {0}")]
    Command(String),
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
    #[error(transparent)]
    Projection(#[from] projections::ProjectionError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
}

impl From<sqlx::Error> for BenchError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Peak resident set size of process `pid` (self when `None`), in MiB.
pub fn peak_rss_mb(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kilobytes| kilobytes / 1024.0)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The account and tenant of the `index`th command: spread evenly.
fn target(config: &BenchConfig, index: usize) -> (usize, usize) {
    (
        index % config.tenants,
        (index / config.tenants) % config.accounts,
    )
}

fn account(index: usize) -> Result<QuotaAccount, BenchError> {
    QuotaAccount::parse(&format!("acct-{index}"))
        .map_err(|error| BenchError::Setup(error.to_string()))
}

fn key(text: String) -> Result<IdempotencyKey, BenchError> {
    IdempotencyKey::parse(&text).map_err(|error| BenchError::Setup(error.to_string()))
}

/// Runs the `quota` workload on a database of its own on `server`'s
/// PostgreSQL, and drops it afterwards.
pub async fn run(
    server: &Database,
    config: BenchConfig,
    quiet: bool,
) -> Result<BenchReport, BenchError> {
    if config.tenants == 0
        || config.accounts == 0
        || config.clients == 0
        || config.clients > CLIENTS_MAX
    {
        return Err(BenchError::Setup(format!(
            "tenants and accounts must be at least 1, clients 1 to {CLIENTS_MAX}"
        )));
    }
    let name = format!(
        "ledger_bench_{}",
        &uuid::Uuid::now_v7().simple().to_string()[..20]
    );
    let mut admin = server.options_for("postgres").connect().await?;
    sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let database = eventstore::resolve(Some(&server.url_for(&name)))
        .await
        .map_err(|error| BenchError::Setup(error.to_string()))?;
    let result = run_on(&database, &config, quiet).await;
    if let Err(error) = drop_database(&server.options(), &name).await {
        tracing::warn!(%error, database = name, "benchmark database not dropped");
    }
    result
}

async fn run_on(
    database: &Database,
    config: &BenchConfig,
    quiet: bool,
) -> Result<BenchReport, BenchError> {
    let store = EventStore::new(database.connect_pool(16).await?);
    store
        .migrate()
        .await
        .map_err(|error| BenchError::Setup(error.to_string()))?;
    let say = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    if config.http && config.workload == Workload::Payments {
        return Err(BenchError::Setup(
            "the payments workload runs in process only".into(),
        ));
    }
    // The mixed workload runs over HTTP only: its process managers and
    // scheduler are `serve`'s.
    let http = config.http || config.workload == Workload::Mixed;
    say(format!(
        "bench: {} workload, {} tenants x {} accounts, {} clients, {} commands{}",
        config.workload.name(),
        config.tenants,
        config.accounts,
        config.clients,
        config.commands,
        if http { ", over HTTP" } else { "" }
    ));
    let catalog = commands::domains::projections();
    projections::status::register(store.pool(), &catalog).await?;
    let (
        Measured {
            latencies,
            elapsed,
            catch_up,
            rss_mb,
            cpu,
            appends,
        },
        settled,
        mix,
    ) = measure(database, &store, config, http, &say).await?;
    // The mixed workload finishes the flows under way at the limit.
    let commands = mix.as_ref().map_or(config.commands, |mix| mix.commands);
    let (events,): (i64,) =
        sqlx::query_as("SELECT coalesce(sum(last_seq), 0)::bigint FROM chain_heads")
            .fetch_one(store.pool())
            .await?;
    let per_command = |seconds: f64| seconds * 1e6 / commands.max(1) as f64;
    say(format!(
        "bench: {} commands in {:.2} s; catching up took {:.0} ms; processor time per command: \
         {:.0} µs on the machine ({:.0}% busy), {:.0} µs in the ledger",
        commands,
        elapsed.as_secs_f64(),
        catch_up.as_secs_f64() * 1000.0,
        per_command(cpu.machine),
        100.0 * cpu.machine / elapsed.as_secs_f64() / cpu_count(),
        per_command(cpu.ledger),
    ));

    let rebuild_started = Instant::now();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    projections::rebuild::rebuild_many(store.pool(), &all, quiet).await?;
    let rebuild_seconds = rebuild_started.elapsed().as_secs_f64();
    let verify = verify_database(&store, None, &catalog, quiet).await?;
    if !verify.ok {
        return Err(BenchError::Setup(format!(
            "verify found problems: {:?}",
            verify.lines()
        )));
    }
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    Ok(BenchReport {
        workload: config.workload.name(),
        mode: if http { "http" } else { "in_process" },
        tenants: config.tenants,
        accounts: config.accounts,
        clients: config.clients,
        commands,
        shards: config.shards,
        pipeline_depth: config.pipeline_depth,
        events,
        commands_per_s: commands as f64 / elapsed.as_secs_f64(),
        latency_ms_p50: percentile(&sorted, 0.50),
        latency_ms_p99: percentile(&sorted, 0.99),
        catch_up_ms: catch_up.as_secs_f64() * 1000.0,
        rebuild_events_per_s: events as f64 / rebuild_seconds,
        verify_events_per_s: verify.events_per_s,
        cpu_us_per_command: per_command(cpu.machine),
        ledger_cpu_us_per_command: per_command(cpu.ledger),
        // In process, everything after the commands ran here too.
        peak_rss_mb: if http { rss_mb } else { peak_rss_mb(None) },
        appends: appends.map(|totals| totals.appends),
        append_commands_mean: appends.and_then(AppendTotals::commands_mean),
        append_ms_mean: appends.and_then(AppendTotals::ms_mean),
        settled_lines: settled.as_ref().map(|settled| settled.lines),
        settled_lines_per_s: settled
            .as_ref()
            .map(|settled| settled.lines as f64 / settled.elapsed.as_secs_f64()),
        flows: mix.map(|mix| mix.flows),
    })
}

/// Runs the configured workload's commands and measures them; the
/// payments workload's settlement and the mixed workload's flows beside.
async fn measure(
    database: &Database,
    store: &EventStore,
    config: &BenchConfig,
    http: bool,
    say: &dyn Fn(String),
) -> Result<
    (
        Measured,
        Option<payments::Settled>,
        Option<mixed::bench::Mix>,
    ),
    BenchError,
> {
    Ok(match (config.workload, http) {
        (Workload::Payments, _) => {
            let (measured, settled) = payments::run_in_process(store, config).await?;
            say(format!(
                "bench: {} settlement lines imported in {:.2} s",
                settled.lines,
                settled.elapsed.as_secs_f64()
            ));
            (measured, Some(settled), None)
        }
        (Workload::Mixed, _) => {
            let (measured, mix) = mixed::bench::run_http(database, store, config).await?;
            say(format!("bench: flows run: {:?}", mix.flows));
            (measured, None, Some(mix))
        }
        (Workload::Quota, true) => (run_http(database, store, config).await?, None, None),
        (Workload::Quota, false) => (run_in_process(store, config).await?, None, None),
    })
}

/// Waits until every projection has applied every event; returns how long.
async fn wait_for_catch_up(store: &EventStore, started: Instant) -> Result<Duration, BenchError> {
    let names: Vec<&str> = commands::domains::projections()
        .iter()
        .map(|projection| projection.name())
        .collect();
    loop {
        let statuses = projections::status::status(store.pool(), &names).await?;
        if statuses.iter().all(|status| status.events_behind == 0) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > CATCH_UP_BOUND {
            return Err(BenchError::Setup(format!(
                "projections did not catch up within {CATCH_UP_BOUND:?}"
            )));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// What the command phase measured.
struct Measured {
    latencies: Vec<f64>,
    elapsed: Duration,
    catch_up: Duration,
    rss_mb: f64,
    cpu: CpuUse,
    /// The pipeline's append statements during the command phase, when it
    /// ran in this process.
    appends: Option<AppendTotals>,
}

/// Processor time spent during the command phase, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    /// Every process on the machine (the database server included).
    machine: f64,
    /// The ledger process alone.
    ledger: f64,
}

/// Processors of the machine.
fn cpu_count() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |count| count.get() as f64)
}

/// Clock ticks per second of `/proc` (USER_HZ, 100 on Linux).
const PROC_TICKS_PER_S: f64 = 100.0;

/// Busy time of the whole machine and of process `pid` (self when `None`)
/// so far, from `/proc`; zeros where `/proc` cannot be read.
fn cpu_now(pid: Option<u32>) -> CpuUse {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?.to_string();
            let ticks: Vec<f64> = line
                .split_whitespace()
                .filter_map(|field| field.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let total: f64 = ticks.iter().take(8).sum();
            let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
            Some((total - idle) / PROC_TICKS_PER_S)
        })
        .unwrap_or(0.0);
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let ledger = std::fs::read_to_string(path)
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th fields of the whole line.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / PROC_TICKS_PER_S)
        })
        .unwrap_or(0.0);
    CpuUse { machine, ledger }
}

impl CpuUse {
    fn since(self, start: CpuUse) -> CpuUse {
        CpuUse {
            machine: self.machine - start.machine,
            ledger: self.ledger - start.ledger,
        }
    }
}

async fn run_in_process(store: &EventStore, config: &BenchConfig) -> Result<Measured, BenchError> {
    let metrics = Arc::new(Metrics::default());
    let bus = start_bus(
        store,
        BusConfig {
            shards: config.shards,
            pipeline_depth: config.pipeline_depth,
            ..BusConfig::default()
        },
        metrics.clone(),
    );
    let workers = Workers::start(store, commands::domains::projections(), Vec::new());
    let tenants = Arc::new(set_up_in_process(store, &bus, config).await?);
    // The set-up's events are projected before the clock starts: only the
    // measured commands' work is measured.
    wait_for_catch_up(store, Instant::now()).await?;
    let appends_started = metrics.append_totals();
    let cpu_started = cpu_now(None);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        clients.push(tokio::spawn(consume_in_process(
            bus.clone(),
            tenants.clone(),
            config.clone(),
            client,
        )));
    }
    let mut latencies = Vec::with_capacity(config.commands);
    for client in clients {
        latencies.extend(
            client
                .await
                .map_err(|error| BenchError::Command(error.to_string()))??,
        );
    }
    let elapsed = started.elapsed();
    let cpu = cpu_now(None).since(cpu_started);
    let appends = metrics.append_totals().since(appends_started);
    let catch_up = wait_for_catch_up(store, Instant::now()).await?;
    bus.shutdown().await;
    workers.stop().await;
    Ok(Measured {
        latencies,
        elapsed,
        catch_up,
        rss_mb: peak_rss_mb(None),
        cpu,
        appends: Some(appends),
    })
}

/// Creates the tenants and issues one grant per account through `bus`, not
/// measured; returns the tenants.
async fn set_up_in_process(
    store: &EventStore,
    bus: &CommandBus,
    config: &BenchConfig,
) -> Result<Vec<TenantId>, BenchError> {
    let mut tenants = Vec::with_capacity(config.tenants);
    for index in 0..config.tenants {
        let tenant = store
            .create_tenant(&format!("bench-{index}"))
            .await
            .map_err(|error| BenchError::Setup(error.to_string()))?;
        tenants.push(tenant.tenant_id);
    }
    // One grant per account, not measured.
    for (tenant_index, tenant_id) in tenants.iter().enumerate() {
        for account_index in 0..config.accounts {
            let grant = IssueGrant {
                quota: QuotaType::Credits,
                account: Some(account(account_index)?),
                source: GrantSource::Purchase,
                amount: Some(
                    Amount::new(GRANT_UNITS)
                        .map_err(|error| BenchError::Setup(error.to_string()))?,
                ),
                priority: 50,
                effective_at: None,
                expires_at: None,
            };
            let outcome = bus
                .execute(
                    *tenant_id,
                    key(format!("grant-{tenant_index}-{account_index}"))?,
                    grant,
                )
                .await
                .map_err(|error| BenchError::Command(error.to_string()))?;
            if !outcome.accepted() {
                return Err(BenchError::Command(outcome.body.to_string()));
            }
        }
    }
    Ok(tenants)
}

/// One client's share of the commands (every `config.clients`th, from
/// `client`) through `bus`; returns their latencies in milliseconds.
async fn consume_in_process(
    bus: CommandBus,
    tenants: Arc<Vec<TenantId>>,
    config: BenchConfig,
    client: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut latencies = Vec::with_capacity(config.commands / config.clients + 1);
    let mut index = client;
    while index < config.commands {
        let (tenant, account_index) = target(&config, index);
        let request = ConsumeQuota {
            quota: QuotaType::Credits,
            account: Some(account(account_index)?),
            amount: Amount::new(1).map_err(|error| BenchError::Setup(error.to_string()))?,
            reference: None,
        };
        let sent = Instant::now();
        let outcome = bus
            .execute(tenants[tenant], key(format!("consume-{index}"))?, request)
            .await
            .map_err(|error| BenchError::Command(error.to_string()))?;
        if !outcome.accepted() {
            return Err(BenchError::Command(outcome.body.to_string()));
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        index += config.clients;
    }
    Ok(latencies)
}

/// A `ledger serve` child on port 0 over the bench database.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ADMIN_TOKEN: &str = "bench-admin-token";

fn start_server(database: &Database, shards: usize, depth: usize) -> Result<Server, BenchError> {
    let executable =
        std::env::current_exe().map_err(|error| BenchError::Setup(error.to_string()))?;
    let mut child = std::process::Command::new(executable)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            &shards.to_string(),
            "--pipeline-depth",
            &depth.to_string(),
        ])
        .env("DATABASE_URL", database.url())
        .env("LEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LEDGER_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| BenchError::Setup(format!("cannot start ledger serve: {error}")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| BenchError::Setup("no stderr from ledger serve".into()))?;
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let Some(Ok(line)) = lines.next() else {
            return Err(BenchError::Setup(
                "ledger serve exited before listening".into(),
            ));
        };
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining the child's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        base: format!("http://{address}"),
    })
}

/// A `ledger serve` child on `database` with the run's pipeline, and an
/// HTTP client keeping a connection per client of the run.
fn serve_for(
    database: &Database,
    config: &BenchConfig,
) -> Result<(Server, reqwest::Client), BenchError> {
    let server = start_server(database, config.shards, config.pipeline_depth)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()
        .map_err(|error| BenchError::Setup(error.to_string()))?;
    Ok((server, client))
}

async fn post(
    client: &reqwest::Client,
    url: String,
    bearer: &str,
    key: &str,
    body: serde_json::Value,
) -> Result<(), BenchError> {
    let response = client
        .post(url)
        .bearer_auth(bearer)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .map_err(|error| BenchError::Command(error.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(BenchError::Command(format!("{status}: {text}")))
    }
}

async fn run_http(
    database: &Database,
    store: &EventStore,
    config: &BenchConfig,
) -> Result<Measured, BenchError> {
    let (server, client) = serve_for(database, config)?;
    let mut keys = Vec::with_capacity(config.tenants);
    for index in 0..config.tenants {
        let response = client
            .post(format!("{}/v1/tenants", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", format!("tenant-{index}"))
            .json(&json!({"name": format!("bench-{index}")}))
            .send()
            .await
            .map_err(|error| BenchError::Setup(error.to_string()))?;
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|error| BenchError::Setup(error.to_string()))?;
        let api_key = body["api_key"]
            .as_str()
            .ok_or_else(|| BenchError::Setup(format!("tenant creation answered {body}")))?;
        keys.push(api_key.to_string());
    }
    for (tenant_index, api_key) in keys.iter().enumerate() {
        for account_index in 0..config.accounts {
            post(
                &client,
                format!("{}/v1/grants", server.base),
                api_key,
                &format!("grant-{tenant_index}-{account_index}"),
                json!({"quota": "credits", "amount": GRANT_UNITS, "source": "purchase", "account": format!("acct-{account_index}")}),
            )
            .await?;
        }
    }
    let keys = Arc::new(keys);
    wait_for_catch_up(store, Instant::now()).await?;
    let cpu_started = cpu_now(Some(server.child.id()));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(config.clients);
    for worker in 0..config.clients {
        let client = client.clone();
        let keys = keys.clone();
        let config = config.clone();
        let url = format!("{}/v1/quota/credits/consume", server.base);
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(config.commands / config.clients + 1);
            let mut index = worker;
            while index < config.commands {
                let (tenant, account_index) = target(&config, index);
                let sent = Instant::now();
                post(
                    &client,
                    url.clone(),
                    &keys[tenant],
                    &format!("consume-{index}"),
                    json!({"amount": 1, "account": format!("acct-{account_index}")}),
                )
                .await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                index += config.clients;
            }
            Ok::<_, BenchError>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(config.commands);
    for client in clients {
        latencies.extend(
            client
                .await
                .map_err(|error| BenchError::Command(error.to_string()))??,
        );
    }
    let elapsed = started.elapsed();
    let cpu = cpu_now(Some(server.child.id())).since(cpu_started);
    let catch_up = wait_for_catch_up(store, Instant::now()).await?;
    let rss = peak_rss_mb(Some(server.child.id()));
    drop(server);
    Ok(Measured {
        latencies,
        elapsed,
        catch_up,
        rss_mb: rss,
        cpu,
        appends: None,
    })
}
