//! The auditors' commands and `ledger bench` as the command line runs them:
//! where each reads from (an export file or the database), what it prints
//! and its exit status. `ledger`'s `main` parses the flags into these
//! options and calls them.

use crate::as_of::AsOf;
use crate::bench::BenchConfig;
use aggregates::TenantId;
use eventstore::EventStore;
use projections::Projection;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Why a command could not run (`ledger` prints it and exits 2).
pub type Failure = Box<dyn std::error::Error>;

/// `ledger verify`.
pub struct VerifyOptions {
    /// Only this tenant (of the database).
    pub tenant: Option<TenantId>,
    /// An export file to verify instead of the database.
    pub file: Option<PathBuf>,
    /// Print the whole report as JSON.
    pub json: bool,
}

/// `ledger replay`.
pub struct ReplayOptions {
    /// The tenant (from the database), unless `file` is given.
    pub tenant: Option<TenantId>,
    /// An export file (offline).
    pub file: Option<PathBuf>,
    pub as_of: AsOf,
    /// Print JSON instead of a readable summary.
    pub json: bool,
}

/// `ledger report`.
pub struct ReportOptions {
    pub name: crate::reports::ReportName,
    /// The tenant (from the database), unless `file` is given.
    pub tenant: Option<TenantId>,
    /// An export file (offline).
    pub file: Option<PathBuf>,
    pub point: crate::reports::Point,
    pub options: crate::reports::Options,
    pub format: crate::reports::render::Format,
    /// Where to write it (standard output when `None`).
    pub out: Option<PathBuf>,
}

/// `ledger export`.
pub struct ExportOptions {
    pub tenant: TenantId,
    /// The file to write (JSON Lines).
    pub out: PathBuf,
}

/// Opens the store for the auditors' commands (`verify`, `replay`,
/// `export`), which only read: never creates the database nor migrates it,
/// and refuses a schema older than this binary's.
pub async fn open_store_to_read(
    database_url: Option<&str>,
    connections: u32,
) -> Result<EventStore, Failure> {
    let database = eventstore::resolve_existing(database_url).await?;
    tracing::debug!(url = %eventstore::database::redact(database.url()), source = ?database.source, "database");
    let pool = database.connect_pool(connections).await?;
    let store = EventStore::new(pool);
    store.check_schema().await?;
    Ok(store)
}

/// Verifies the file or the database and prints the report: exit 0 when
/// nothing is found, 1 with findings.
pub async fn run_verify(
    database_url: Option<&str>,
    options: VerifyOptions,
    projections: &[Arc<dyn Projection>],
) -> Result<ExitCode, Failure> {
    let report = match &options.file {
        Some(path) => crate::export::verify_file(path)?,
        None => {
            let store = open_store_to_read(database_url, 4).await?;
            crate::verify::verify_database(&store, options.tenant, projections, options.json)
                .await?
        }
    };
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Refuses a tenant the database does not have (as `verify --tenant` and
/// `export` do), rather than answering its empty state.
async fn known_tenant(store: &EventStore, tenant: TenantId) -> Result<(), Failure> {
    if store.tenant_exists(tenant).await? {
        Ok(())
    } else {
        Err(crate::verify::VerifyError::UnknownTenant(tenant).into())
    }
}

/// Replays the file or the tenant's events and prints its state.
pub async fn run_replay(database_url: Option<&str>, options: ReplayOptions) -> Result<(), Failure> {
    let report = match (&options.file, options.tenant) {
        (Some(path), _) => crate::export::replay_file(path, options.as_of)?,
        (None, Some(tenant)) => {
            let store = open_store_to_read(database_url, 2).await?;
            known_tenant(&store, tenant).await?;
            if let AsOf::Time(at) = options.as_of {
                // Closed by the database server's clock, as reports are.
                let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
                    .fetch_one(store.pool())
                    .await?;
                use commands::http::read::{closes_at, rfc3339, CLOSED_AFTER};
                if let Some(closes_at) = closes_at(at, now) {
                    return Err(format!(
                        "--as-of {} is not closed yet: a replay as of a time is taken once it is {} s past (from {}), so that it is the same on any later day; replay the head (no --as-of) or --as-of-seq",
                        rfc3339(&at),
                        CLOSED_AFTER.num_seconds(),
                        rfc3339(&closes_at)
                    )
                    .into());
                }
                store.settle(tenant).await?;
            }
            crate::as_of::replay_stored(&store, tenant, options.as_of).await?
        }
        (None, None) => return Err("give --tenant or --file".into()),
    };
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", crate::report::render(&report));
    }
    Ok(())
}

/// Writes the tenant's export file and says what it holds.
pub async fn run_export(database_url: Option<&str>, options: ExportOptions) -> Result<(), Failure> {
    let store = open_store_to_read(database_url, 2).await?;
    let report = crate::export::export(&store, options.tenant, &options.out, false).await?;
    println!(
        "exported {} events of tenant {} to {} (head seq {} hash {})",
        report.events,
        report.tenant_id,
        options.out.display(),
        report.head_seq,
        report.head_hash
    );
    Ok(())
}

/// Runs the benchmark on the resolved server and prints its figures: a
/// summary and then the JSON line, or with `json` the JSON line only.
pub async fn run_bench(
    database_url: Option<&str>,
    config: BenchConfig,
    json: bool,
) -> Result<(), Failure> {
    let server = eventstore::resolve(database_url).await?;
    let report = crate::bench::run(&server, config, json).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} commands in {} ({} tenants x {} accounts, {} clients): {:.0} commands/s, latency p50 {:.2} ms p99 {:.2} ms",
            report.commands, report.mode, report.tenants, report.accounts, report.clients,
            report.commands_per_s, report.latency_ms_p50, report.latency_ms_p99
        );
        println!(
            "projections caught up {:.0} ms after the last command; rebuild {:.0} events/s; verify {:.0} events/s; peak RSS {:.0} MB",
            report.catch_up_ms, report.rebuild_events_per_s, report.verify_events_per_s, report.peak_rss_mb
        );
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// How long `ledger report` waits for the read tables to reach the
/// report's seq.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Computes the report from the database or the file, writes it, and
/// exits 0 when it ties out, 1 when it does not.
pub async fn run_report(
    database_url: Option<&str>,
    options: ReportOptions,
) -> Result<ExitCode, Failure> {
    let point = options.point.check()?;
    let report = match (&options.file, options.tenant) {
        (Some(path), _) => {
            crate::reports::offline::report(path, options.name, (point, options.options))?
        }
        (None, Some(tenant)) => {
            let store = open_store_to_read(database_url, 2).await?;
            known_tenant(&store, tenant).await?;
            report_from_store(&store, tenant, options.name, (point, options.options)).await?
        }
        (None, None) => return Err("give --tenant or --file".into()),
    };
    let text = options.format.render(&report);
    match &options.out {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            eprintln!("wrote {} to {}", report.name.as_str(), path.display());
        }
        None => print!("{text}"),
    }
    if report.ties_out() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the report does not tie out: see its tie-out");
        Ok(ExitCode::FAILURE)
    }
}

/// The report from the read tables, once they have reached its seq
/// (waiting up to [`REPORT_WAIT`]).
async fn report_from_store(
    store: &EventStore,
    tenant: TenantId,
    name: crate::reports::ReportName,
    (point, options): (crate::reports::Point, crate::reports::Options),
) -> Result<crate::reports::Report, Failure> {
    let pool = store.pool();
    // Closed by the database server's clock, as the ledger's processes
    // stamp by it.
    let now: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let point = point.closed(now)?;
    if point.to().is_some() {
        store.settle(tenant).await?;
    }
    let mut reading = projections::read::begin_tenant_read(pool, tenant).await?;
    let seq = crate::reports::online::seq_of(&mut reading, tenant, point).await?;
    reading.commit().await?;
    let deadline = std::time::Instant::now() + REPORT_WAIT;
    for projection in name.projections() {
        loop {
            let reached = projections::read::checkpoint(pool, projection, tenant).await?;
            if reached >= seq {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the {projection} read table is at tenant_seq {reached}, not {seq}: \
                     run `ledger project` (or `serve`) and try again"
                )
                .into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let mut reading = projections::read::begin_tenant_read(pool, tenant).await?;
    let report =
        crate::reports::online::report(&mut reading, tenant, name, (point, options), seq).await?;
    reading.commit().await?;
    Ok(report)
}
