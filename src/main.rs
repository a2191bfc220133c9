//! `ledger`: the command line. Parses arguments and wires the crates together;
//! everything it runs lives in them.

use clap::{Args, Parser, Subcommand};
use commands::http::connections;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// The allocator: the ledger allocates and frees many small buffers per
/// event (decoding, canonical JSON, rows), where mimalloc's per-thread free
/// lists cost less than the system allocator. Built without transparent
/// huge pages (`no_thp`): mimalloc would otherwise ask the kernel for them,
/// and each 2 MiB page is zeroed whole when first touched, and again when a
/// range the allocator handed back is touched anew.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ledger",
    version,
    about = "Event-sourced, hash-chained ledger on PostgreSQL",
    long_about = "Event-sourced, hash-chained ledger on PostgreSQL.\n\n\
        Without --database-url / DATABASE_URL it uses the local server \
        (postgres://localhost/ledger, created if missing), else a private cluster \
        started from the installed PostgreSQL binaries in .ledger/, reachable by its \
        owner only (mode 0700, password in .ledger/password)."
)]
struct Cli {
    /// PostgreSQL URL, e.g. postgres://user@host/ledger. One with a password
    /// is better given in DATABASE_URL: any local account can read a
    /// process's arguments.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (idempotent).
    Migrate,
    /// Run the HTTP API (migrates first).
    ///
    /// A revoked API key (POST /v1/tenants/{id}/api-keys/{key_id}/revoke, or
    /// `tenant revoke-key`) answers 401 at once on the server that revoked
    /// it; every server on the database is notified (LISTEN ledger_api_keys)
    /// and refuses it within moments, and at the latest after 5 s, the
    /// lifetime of its key cache, should a notification be lost. A client
    /// address with 20 failed authentications within 60 s is answered 429
    /// (with Retry-After) until the 60 s have passed, for API keys, or for
    /// the admin and metrics tokens (counted apart; the right token too).
    /// The projection gauges of /metrics are refreshed every 5 s.
    ///
    /// Every HTTP connection is bounded: a request head must arrive within
    /// --header-timeout-ms, its body and answer within --request-timeout-ms
    /// (408 request_timeout after it), a kept-alive connection with nothing
    /// in flight is closed after --idle-timeout-ms, at most
    /// --connections-max are open at once, and on SIGINT/SIGTERM whatever
    /// is still open after --shutdown-timeout-ms is closed.
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Run the projection workers only (no HTTP), next to `serve --no-workers`
    /// or as extra workers; stops cleanly on SIGINT/SIGTERM.
    Project(ProjectArgs),
    /// Rebuild projections into shadow tables and swap them in, while the
    /// live tables keep serving.
    ///
    /// A tenant whose event a projection cannot apply is held back at that
    /// event (named, with its seq and the error) and every other tenant is
    /// rebuilt and swapped in; the exit status is then 1. A projection that
    /// can apply no tenant at all is not swapped in (exit 2), and neither
    /// is anything when the database fails midway.
    Rebuild(RebuildArgs),
    /// Verify hash chains, seqs, chain heads, that every event is what its
    /// aggregate decides from the state before it, and every projection
    /// against a fresh replay; exit 0 when nothing is found, 1 with every
    /// finding, 2 when it cannot run. With --file, verify an export offline.
    ///
    /// A quota's events of one request are decided together, command by
    /// command (seat moves included): events the quota decides and the
    /// history lacks, and events it does not decide, are findings too.
    ///
    /// Work the events scheduled (an expiry, a timeout, a renewal) or a
    /// process manager's reaction (a commission) that fell due an hour or
    /// more before a tenant's last event, that nothing did and that the
    /// domain would take, is owed: a finding at the seq of the event that
    /// asked for it.
    ///
    /// Every finding names the tenant and tenant_seq (or the line of the
    /// file), or the projection, table and key; a projection partition held
    /// back at an event the projection cannot apply is a finding too
    /// (tenant, projection, seq, error). Verify goes on past every finding
    /// and reports them all. It only reads: it never creates or
    /// migrates the database, and refuses a schema older than this binary.
    /// Projections are replayed into temporary tables of its own session
    /// (the journal's entries, one per event, are set beside the replay in
    /// memory as it goes, and only those not certainly equal written to
    /// one).
    Verify(VerifyArgs),
    /// A tenant's state (subscription, grants and quotas, account balances,
    /// trial balance) as of a tenant_seq or a time, folded from its events.
    ///
    /// Every event up to that point has its hash recomputed and chained and
    /// must be what its aggregate decides; the first one that is not
    /// refuses the replay, naming its tenant_seq (or the line of the file).
    /// A point inside a request also reads the rest of that request's
    /// events of the same quota (they record one command).
    /// The hash printed is the chain recomputed up to the point: if it
    /// equals a hash published for that seq, nothing up to it was
    /// rewritten. A file is checked whole (chain, header's head and count).
    /// Reads only: never creates or migrates the database.
    Replay(ReplayArgs),
    /// A finance report (trial-balance, payments, payroll, escrow) of a tenant, from the read tables,
    /// or from an export file alone (--file, no database): as of a
    /// tenant_seq, a time, or over a period of recorded time, in a table,
    /// JSON, CSV or one self-contained HTML page.
    ///
    /// Every report names the tenant_seq it is as of and the chain hash
    /// there, and ties out: each figure beside an independent one (the
    /// journal's entries beside the accounts' own balances, each asset
    /// against zero). Exit 0 when it ties out, 1 when it does not (the
    /// header says so), 2 when it cannot run. For one tenant and seq the
    /// JSON from the database and from its export are byte-identical.
    Report(ReportArgs),
    /// Write a tenant's events with their hashes to a file an auditor can
    /// verify and replay offline (`verify --file`, `replay --file`). Reads
    /// only: never creates or migrates the database.
    Export(ExportArgs),
    /// Run a benchmark workload on a fresh database of its own (created on
    /// the resolved server and dropped afterwards; user data is never
    /// touched) and print its figures: commands/s, latency p50/p99, catch-up
    /// time, rebuild and verify events/s, peak RSS, processor time per
    /// command (whole machine and ledger process) and, in process, the
    /// append statements (how many; commands and milliseconds of one, on
    /// average). The
    /// set-up's events are projected before the clock starts: only the
    /// measured commands count.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// The workload; `quota`: consume commands of 1 unit against grants of
    /// many quota accounts, projection workers running; `payments`: card
    /// payments, each an intent (set up, not measured), an authorization
    /// and a final capture (the measured pair), then every capture settled
    /// in one processor batch per tenant (reported as settled lines/s);
    /// `mixed`: every domain at once over HTTP against a `ledger serve`
    /// child (clients running flows by turn: a quota consume; a payment
    /// attributed to a sales rep, tendered by card and captured, the
    /// commission accrued by the process manager; an escrow commitment
    /// deposited, part released and a milestone submitted, released by the
    /// scheduler when its 1 s window ends; an hour of work; and every 10
    /// payments of a client a settlement batch), checking that every
    /// flow's events, commissions and scheduled releases happened once.
    #[arg(long, default_value = "quota", value_parser = ["quota", "payments", "mixed"])]
    workload: String,
    /// Print exactly one JSON line.
    #[arg(long)]
    json: bool,
    /// Tenants.
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().tenants)]
    tenants: usize,
    /// Quota accounts per tenant (one grant each).
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().accounts)]
    accounts: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().clients)]
    clients: usize,
    /// Measured commands in all (the payments workload: two per payment;
    /// the mixed workload finishes the flows under way when it is reached).
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().commands)]
    commands: usize,
    /// Command pipeline shards.
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().shards, value_parser = sized(1, 64))]
    shards: usize,
    /// Appends each shard keeps in flight at once.
    #[arg(long, default_value_t = replay::bench::BenchConfig::default().pipeline_depth, value_parser = sized(1, 64))]
    pipeline_depth: usize,
    /// Drive a real `ledger serve` over HTTP instead of the pipeline in
    /// process (the quota workload; the mixed one always is).
    #[arg(long)]
    http: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// Only this tenant.
    #[arg(long, conflicts_with = "file")]
    tenant: Option<uuid::Uuid>,
    /// Verify an export file instead of the database (no database needed).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Print the whole report as JSON (includes each tenant's head hash).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tenant", "file"])))]
struct ReplayArgs {
    /// The tenant (from the database).
    #[arg(long)]
    tenant: Option<uuid::Uuid>,
    /// An export file (offline, no database needed).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// State after this tenant_seq.
    #[arg(long, conflicts_with = "as_of")]
    as_of_seq: Option<i64>,
    /// State at this time (RFC 3339, e.g. 2026-11-21T12:00:00Z; from
    /// 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z). At least 5 s
    /// past (from the database; any time with --file).
    #[arg(long)]
    as_of: Option<aggregates::time::BoundedTime>,
    /// Print JSON instead of a readable summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tenant", "file"])))]
struct ReportArgs {
    /// The report: trial-balance, payments, payroll, escrow.
    #[arg(value_parser = ["trial-balance", "payments", "payroll", "escrow"])]
    name: String,
    /// The tenant (from the database).
    #[arg(long)]
    tenant: Option<uuid::Uuid>,
    /// An export file (offline, no database needed).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// As of this tenant_seq.
    #[arg(long, conflicts_with_all = ["as_of", "from", "to"])]
    as_of_seq: Option<i64>,
    /// As of this time (RFC 3339): what was recorded by then. At least 5 s
    /// past (from the database; any time with --file).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    as_of: Option<aggregates::time::BoundedTime>,
    /// The period's start (RFC 3339), included: opening balances are what
    /// was recorded before it. With --to.
    #[arg(long, requires = "to")]
    from: Option<aggregates::time::BoundedTime>,
    /// The period's end (RFC 3339), not included: the next period starts
    /// there. At least 5 s past (from the database). With --from.
    #[arg(long, requires = "from")]
    to: Option<aggregates::time::BoundedTime>,
    /// Days after which a capture or refund in no settlement batch is a
    /// break of class missing_in_settlement (payments), 0 to 365; ages are
    /// counted to --to or --as-of, else to the last event's time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(0..=365))]
    settlement_window_days: i64,
    /// table (readable, amounts in major units), json (minor units,
    /// exact), csv or html.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv", "html"])]
    format: String,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

impl ReportArgs {
    fn options(self) -> replay::cli::ReportOptions {
        use replay::reports::Point;
        let point = match (self.as_of_seq, self.as_of, self.from, self.to) {
            (Some(seq), ..) => Point::Seq(seq),
            (None, Some(time), ..) => Point::Time(time.get()),
            (None, None, Some(from), Some(to)) => Point::Period {
                from: from.get(),
                to: to.get(),
            },
            _ => Point::Head,
        };
        replay::cli::ReportOptions {
            name: replay::reports::ReportName::parse(&self.name)
                .unwrap_or(replay::reports::ReportName::TrialBalance),
            tenant: self.tenant.map(aggregates::TenantId::from_uuid),
            file: self.file,
            point,
            options: replay::reports::Options {
                settlement_window_days: self.settlement_window_days,
            },
            format: replay::reports::render::Format::parse(&self.format)
                .unwrap_or(replay::reports::render::Format::Table),
            out: self.out,
        }
    }
}

#[derive(Args)]
struct ExportArgs {
    /// The tenant to export.
    #[arg(long)]
    tenant: uuid::Uuid,
    /// The file to write (JSON Lines).
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Args)]
struct ProjectArgs {
    /// Catch every projection up, then exit.
    #[arg(long)]
    once: bool,
    /// With --once: print a JSON summary.
    #[arg(long, requires = "once")]
    json: bool,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

/// The scheduler's ticker and the clock it tells due time by.
#[derive(Args)]
struct SchedulerArgs {
    /// Milliseconds between scheduler ticks. Each tick submits the work
    /// that has fallen due (period renewals, grant and hold expiries), each
    /// request deciding at its due time; while a tick finds a full batch
    /// due, the next follows at once.
    #[arg(long, env = "LEDGER_TICK_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    tick_ms: u64,
    /// Most due requests one tick submits.
    #[arg(long, env = "LEDGER_TICK_BATCH", default_value_t = 256, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    tick_batch: i64,
    /// How long a process keeps the due work it took, in milliseconds,
    /// before another process may submit it again (under the same key, so
    /// it takes effect once).
    #[arg(long, env = "LEDGER_TICK_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    tick_lease_ms: u64,
    /// Runs the ledger's clock this many seconds ahead of the database
    /// server's (which it otherwise follows): for
    /// drills of what falls due later (a renewal next month), never for a
    /// live ledger.
    #[arg(long, hide = true, default_value_t = 0)]
    clock_offset_seconds: i64,
    /// The version of the domain rules this process decides requests
    /// under (each request records its version; `verify` decides it again
    /// under the same). Default: the newest this build knows. During a
    /// rolling upgrade, start the new build with the old version until no
    /// process runs the old build, so every process decides alike.
    #[arg(long, env = "LEDGER_RULES", default_value_t = aggregates::rules::Rules::CURRENT.version(), value_parser = clap::value_parser!(u32).range(1..=i64::from(aggregates::rules::Rules::CURRENT.version())))]
    rules: u32,
}

impl SchedulerArgs {
    fn rules(&self) -> aggregates::rules::Rules {
        aggregates::rules::Rules::new(self.rules).unwrap_or_default()
    }

    fn ticker(&self) -> commands::scheduler::TickerConfig {
        commands::scheduler::TickerConfig {
            every: Duration::from_millis(self.tick_ms),
            batch: self.tick_batch,
            lease: Duration::from_millis(self.tick_lease_ms),
        }
    }

    /// The database server's clock, measured against this host's.
    async fn database_time(
        &self,
        store: &eventstore::EventStore,
    ) -> Result<commands::DatabaseTime, sqlx::Error> {
        commands::DatabaseTime::measure(store.pool(), commands::Clock::system()).await
    }

    /// The clock the process stamps and tells due time by: the database
    /// server's (`time`'s last reading moved on by the process's monotonic
    /// clock, read again every minute while the process runs), run ahead by
    /// `--clock-offset-seconds` for drills.
    fn clock(&self, time: &commands::DatabaseTime) -> commands::Clock {
        let drill = chrono::Duration::seconds(self.clock_offset_seconds);
        let clock = time.clock();
        if drill.is_zero() {
            return clock;
        }
        commands::Clock::from_fn(move || clock.now() + drill)
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all", "stale"])))]
struct RebuildArgs {
    /// Projections to rebuild.
    names: Vec<String>,
    /// Rebuild every projection.
    #[arg(long)]
    all: bool,
    /// Rebuild the projections whose version in code differs from the one
    /// their tables were built with.
    #[arg(long)]
    stale: bool,
    /// Print a JSON summary (events, seconds, events/s, tenants held back).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Token guarding the admin routes (POST /v1/tenants); admin routes are
    /// disabled without it.
    #[arg(long, env = "LEDGER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Token /metrics then needs (Authorization: Bearer <token>); /metrics
    /// is open without it.
    #[arg(long, env = "LEDGER_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Largest accepted request body, in bytes (1 KiB to 64 MiB).
    #[arg(long, env = "LEDGER_BODY_LIMIT_BYTES", default_value_t = commands::http::BODY_LIMIT_BYTES_DEFAULT, value_parser = sized(1024, 64 << 20))]
    body_limit_bytes: usize,
    /// Command pipeline shards (each decides its tenants' commands in
    /// order; 1 to 64).
    #[arg(long, default_value_t = commands::BusConfig::default().shards, value_parser = sized(1, 64))]
    shards: usize,
    /// Appends each shard keeps in flight at once (1 to 64).
    #[arg(long, default_value_t = commands::BusConfig::default().pipeline_depth, value_parser = sized(1, 64))]
    pipeline_depth: usize,
    /// Database connections in the pool (reads and workers; the pipeline has
    /// one more per shard; 1 to 1,000).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    db_connections: u32,
    /// Plan catalog, JSON: {"plans": [{"id": "team_v4", "seats": 10, "runs":
    /// 100000, "credits": 20000}]} (null is unlimited). Default: the built-in
    /// hobby_v3, team_v4, scale_v1 and enterprise_v1.
    #[arg(long, env = "LEDGER_PLANS")]
    plans: Option<std::path::PathBuf>,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    /// Do not run projection workers, process managers or the scheduler
    /// here (run `ledger project` instead).
    #[arg(long)]
    no_workers: bool,
    /// A streaming replica (hot standby) of the database: every read of a
    /// read table goes there, and ?min_seq= waits on its checkpoints
    /// (read-your-writes across the replication lag); commands,
    /// idempotency and the scheduler stay on the primary.
    #[arg(long, env = "LEDGER_READ_DATABASE_URL")]
    read_database_url: Option<String>,
    /// Longest a read with ?min_seq= waits for its projection, in
    /// milliseconds, before answering 503.
    #[arg(long, default_value_t = 5_000, value_parser = timeout_ms())]
    read_wait_ms: u64,
    /// Reads with ?min_seq= one tenant may have in flight at once; beyond,
    /// 429 too_many_requests with Retry-After (1 to 10,000).
    #[arg(long, env = "LEDGER_TENANT_WAITERS_MAX", default_value_t = commands::http::limits::WAITERS_PER_TENANT_MAX_DEFAULT, value_parser = sized(1, 10_000))]
    tenant_waiters_max: usize,
    /// Replays (GET /v1/replay) one tenant may have in flight at once;
    /// beyond, 429 too_many_requests with Retry-After (1 to 64).
    #[arg(long, env = "LEDGER_TENANT_REPLAYS_MAX", default_value_t = commands::http::limits::REPLAYS_PER_TENANT_MAX_DEFAULT, value_parser = sized(1, 64))]
    tenant_replays_max: usize,
    /// Replays in flight at once over all tenants, each on a connection of
    /// the replays' own pool (of this size); beyond, 429 (1 to 64).
    #[arg(long, env = "LEDGER_REPLAYS_MAX", default_value_t = commands::http::limits::REPLAYS_MAX_DEFAULT, value_parser = sized(1, 64))]
    replays_max: usize,
    /// Failed authentications one client address may make within a minute;
    /// beyond, 429 too_many_requests until the minute is over.
    #[arg(long, env = "LEDGER_FAILED_AUTH_LIMIT", default_value_t = commands::http::auth::FAILED_AUTH_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
    failed_auth_limit: u32,
    /// Longest a client may take to send a request head, in milliseconds,
    /// from its first byte (for a new connection, from connecting); the
    /// connection is then closed.
    #[arg(long, env = "LEDGER_HEADER_TIMEOUT_MS", default_value_t = connections::HEADER_TIMEOUT_MS_DEFAULT, value_parser = timeout_ms())]
    header_timeout_ms: u64,
    /// Longest from a request's head until its answer is ready (receiving
    /// the body and handling it), in milliseconds; then 408 request_timeout.
    /// Keep it above --read-wait-ms.
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_MS", default_value_t = connections::REQUEST_TIMEOUT_MS_DEFAULT, value_parser = timeout_ms())]
    request_timeout_ms: u64,
    /// Longest a kept-alive connection with no request in flight stays open
    /// with nothing read or written, in milliseconds.
    #[arg(long, env = "LEDGER_IDLE_TIMEOUT_MS", default_value_t = connections::IDLE_TIMEOUT_MS_DEFAULT, value_parser = timeout_ms())]
    idle_timeout_ms: u64,
    /// Most HTTP connections open at once; beyond it, new ones wait to be
    /// accepted until one closes. The soft limit of open files is raised to
    /// fit it (with a warning when the hard limit is too low).
    #[arg(long, env = "LEDGER_CONNECTIONS_MAX", default_value_t = connections::CONNECTIONS_MAX_DEFAULT, value_parser = connections_max())]
    connections_max: usize,
    /// On SIGINT/SIGTERM, longest in-flight requests get to finish, in
    /// milliseconds, before their connections are closed.
    #[arg(long, env = "LEDGER_SHUTDOWN_TIMEOUT_MS", default_value_t = connections::SHUTDOWN_TIMEOUT_MS_DEFAULT, value_parser = timeout_ms())]
    shutdown_timeout_ms: u64,
}

/// A timeout flag: 1 ms to [`connections::TIMEOUT_MS_LIMIT`].
fn timeout_ms() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=connections::TIMEOUT_MS_LIMIT)
}

/// A size flag: `min` to `max`.
fn sized(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..=max)
}

/// `--connections-max`: 1 to [`connections::CONNECTIONS_MAX_LIMIT`].
fn connections_max() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=connections::CONNECTIONS_MAX_LIMIT as u64)
}

impl ServeArgs {
    /// The HTTP bounds the flags give.
    fn connection_limits(&self) -> connections::ConnectionLimits {
        connections::ConnectionLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            connections_max: self.connections_max,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        }
    }
}

impl BenchArgs {
    /// The workload the flags give.
    fn config(&self) -> replay::bench::BenchConfig {
        replay::bench::BenchConfig {
            workload: match self.workload.as_str() {
                "payments" => replay::bench::Workload::Payments,
                "mixed" => replay::bench::Workload::Mixed,
                _ => replay::bench::Workload::Quota,
            },
            tenants: self.tenants,
            accounts: self.accounts,
            clients: self.clients,
            commands: self.commands,
            http: self.http,
            shards: self.shards,
            pipeline_depth: self.pipeline_depth,
        }
    }
}

impl VerifyArgs {
    fn options(self) -> replay::cli::VerifyOptions {
        replay::cli::VerifyOptions {
            tenant: self.tenant.map(aggregates::TenantId::from_uuid),
            file: self.file,
            json: self.json,
        }
    }
}

impl ReplayArgs {
    fn options(self) -> replay::cli::ReplayOptions {
        let as_of = match (self.as_of_seq, self.as_of) {
            (Some(seq), _) => replay::as_of::AsOf::Seq(seq),
            (None, Some(time)) => replay::as_of::AsOf::Time(time.get()),
            (None, None) => replay::as_of::AsOf::Head,
        };
        replay::cli::ReplayOptions {
            tenant: self.tenant.map(aggregates::TenantId::from_uuid),
            file: self.file,
            as_of,
            json: self.json,
        }
    }
}

impl ExportArgs {
    fn options(self) -> replay::cli::ExportOptions {
        replay::cli::ExportOptions {
            tenant: aggregates::TenantId::from_uuid(self.tenant),
            out: self.out,
        }
    }
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id, API key and the key's id (the key
    /// is shown once; revoke it later by its id).
    Create {
        /// Name of the business.
        name: String,
        /// Print exactly {"tenant_id": "...", "api_key": "...", "key_id": "..."}.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's API keys, newest first: id, last four characters,
    /// when issued, last used (to within 5 s) and revoked. Never a key.
    Keys {
        /// The tenant.
        tenant_id: uuid::Uuid,
        /// Print {"tenant_id": "...", "keys": [...]}, as GET
        /// /v1/tenants/{id}/api-keys answers.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a tenant's API key (again: answers the first revocation).
    /// Running servers are notified and refuse it within moments; at the
    /// latest after 5 s, the lifetime of their key cache.
    RevokeKey {
        /// The tenant.
        tenant_id: uuid::Uuid,
        /// The key's id, as printed when issued or by `tenant keys`.
        key_id: uuid::Uuid,
        /// Print {"tenant_id": "...", "key_id": "...", "revoked_at": "..."}.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("LEDGER_LOG")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("sqlx", tracing::Level::WARN)
        })
        // Never, whatever LEDGER_LOG asks: the database driver's warnings
        // about a URL's options print their values (an `sslpassword`, a
        // malformed pgpass line), and no password may reach a log. Each
        // module by name too: a filter naming it would otherwise win.
        .with_targets(
            [
                "sqlx_postgres::options",
                "sqlx_postgres::options::parse",
                "sqlx_postgres::options::pgpass",
            ]
            .map(|target| (target, tracing::level_filters::LevelFilter::OFF)),
        );
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

type Failure = Box<dyn std::error::Error>;

/// Opens the store for the commands that set up or write the ledger:
/// creates the database if missing and applies pending migrations.
async fn open_store(
    database_url: Option<&str>,
    connections: u32,
) -> Result<eventstore::EventStore, Failure> {
    migrated(eventstore::resolve(database_url).await?, connections).await
}

/// Opens the store for a command that writes an existing ledger (its read
/// tables): applies pending migrations, but a database that is not there
/// (a mistyped name) is refused, never created.
async fn open_existing_store(
    database_url: Option<&str>,
    connections: u32,
) -> Result<eventstore::EventStore, Failure> {
    migrated(
        eventstore::resolve_existing(database_url).await?,
        connections,
    )
    .await
}

/// The store of `database`, its pending migrations applied.
async fn migrated(
    database: eventstore::database::Database,
    connections: u32,
) -> Result<eventstore::EventStore, Failure> {
    tracing::debug!(url = %eventstore::database::redact(database.url()), source = ?database.source, "database");
    let pool = database.connect_pool(connections).await?;
    let store = eventstore::EventStore::new(pool);
    store.migrate().await?;
    Ok(store)
}

async fn run_tenant(store: &eventstore::EventStore, command: TenantCommand) -> Result<(), Failure> {
    let text = match command {
        TenantCommand::Create { name, json } => {
            commands::tenants::create(store, &name, json).await?
        }
        TenantCommand::Keys { tenant_id, json } => {
            let tenant_id = aggregates::TenantId::from_uuid(tenant_id);
            commands::tenants::keys(store, tenant_id, json).await?
        }
        TenantCommand::RevokeKey {
            tenant_id,
            key_id,
            json,
        } => {
            let tenant_id = aggregates::TenantId::from_uuid(tenant_id);
            let key_id = eventstore::KeyId::from_uuid(key_id);
            commands::tenants::revoke_key(store, tenant_id, key_id, json).await?
        }
    };
    print!("{text}");
    Ok(())
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let database_url = cli.database_url.as_deref();
    match cli.command {
        Command::Migrate => {
            open_store(database_url, 2).await?;
            println!("migrations applied");
        }
        Command::Serve(args) => run_serve(database_url, args).await?,
        Command::Tenant(command) => {
            // Listing keys only reads: a database that is not there (a
            // mistyped name) is refused, never created.
            let store = match command {
                TenantCommand::Keys { .. } => {
                    replay::cli::open_store_to_read(database_url, 2).await?
                }
                _ => open_store(database_url, 2).await?,
            };
            run_tenant(&store, command).await?;
        }
        Command::Project(args) => run_project(database_url, args).await?,
        Command::Rebuild(args) => return run_rebuild(database_url, args).await,
        Command::Verify(args) => {
            let projections = commands::domains::projections();
            return replay::cli::run_verify(database_url, args.options(), &projections).await;
        }
        Command::Replay(args) => replay::cli::run_replay(database_url, args.options()).await?,
        Command::Bench(args) => {
            replay::cli::run_bench(database_url, args.config(), args.json).await?
        }
        Command::Export(args) => replay::cli::run_export(database_url, args.options()).await?,
        Command::Report(args) => {
            return replay::cli::run_report(database_url, args.options()).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_serve(database_url: Option<&str>, args: ServeArgs) -> Result<(), Failure> {
    let store = open_store(database_url, args.db_connections).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let mut http =
        commands::http::HttpConfig::new(args.admin_token.as_deref(), args.body_limit_bytes)
            .with_metrics_token(args.metrics_token.as_deref());
    http.read_wait = Duration::from_millis(args.read_wait_ms);
    http.waiters_per_tenant_max = args.tenant_waiters_max;
    http.replays_per_tenant_max = args.tenant_replays_max;
    http.replays_max = args.replays_max;
    http.failed_auth_limit = args.failed_auth_limit;
    http.connections = args.connection_limits();
    let database_time = args.scheduler.database_time(&store).await?;
    let config = commands::server::ServeConfig {
        http,
        bus: commands::BusConfig {
            shards: args.shards,
            pipeline_depth: args.pipeline_depth,
            clock: args.scheduler.clock(&database_time),
            rules: args.scheduler.rules(),
            ..commands::BusConfig::default()
        },
        workers: !args.no_workers,
        plans: commands::server::plan_catalog(args.plans.as_deref())?,
        ticker: Some(args.scheduler.ticker()),
        read_database_url: args.read_database_url,
        database_time: Some(database_time),
    };
    commands::server::serve(
        store,
        listener,
        config,
        commands::http::routes().merge(replay::http::router()),
        commands::domains::projections(),
        commands::domains::process_managers(),
        commands::server::shutdown_signal(),
    )
    .await
}

async fn run_project(database_url: Option<&str>, args: ProjectArgs) -> Result<(), Failure> {
    let store = open_store(database_url, 8).await?;
    let catalog = commands::domains::projections();
    if !args.once {
        let database_time = args.scheduler.database_time(&store).await?;
        let bus = commands::BusConfig {
            clock: args.scheduler.clock(&database_time),
            rules: args.scheduler.rules(),
            ..commands::BusConfig::default()
        };
        commands::server::project(
            store,
            catalog,
            commands::domains::process_managers(),
            bus,
            args.scheduler.ticker(),
            Some(database_time),
            commands::server::shutdown_signal(),
        )
        .await?;
        return Ok(());
    }
    let report = projections::worker::run_once(store.pool(), &catalog, args.json).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

async fn run_rebuild(database_url: Option<&str>, args: RebuildArgs) -> Result<ExitCode, Failure> {
    use projections::rebuild::Selection;
    let store = open_existing_store(database_url, 8).await?;
    let selection = if args.all {
        Selection::All
    } else if args.stale {
        Selection::Stale
    } else {
        Selection::Named(args.names)
    };
    let report = projections::rebuild::rebuild_selected(
        store.pool(),
        commands::domains::projections(),
        selection,
        args.json,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.held_back.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
