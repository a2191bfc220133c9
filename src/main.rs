//! `ledger`: the command line. Parses arguments and wires the crates together;
//! everything it runs lives in them.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ledger",
    version,
    about = "Event-sourced, hash-chained ledger on PostgreSQL",
    long_about = "Event-sourced, hash-chained ledger on PostgreSQL.\n\n\
        Without --database-url / DATABASE_URL it uses the local server \
        (postgres://localhost/ledger, created if missing), else a private cluster \
        started from the installed PostgreSQL binaries in .ledger/."
)]
struct Cli {
    /// PostgreSQL URL, e.g. postgres://user@host/ledger.
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
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Run the projection workers only (no HTTP), next to `serve --no-workers`
    /// or as extra workers; stops cleanly on SIGINT/SIGTERM.
    Project(ProjectArgs),
    /// Rebuild projections into shadow tables and swap them in, while the
    /// live tables keep serving.
    Rebuild(RebuildArgs),
}

#[derive(Args)]
struct ProjectArgs {
    /// Catch every projection up, then exit.
    #[arg(long)]
    once: bool,
    /// With --once: print a JSON summary.
    #[arg(long, requires = "once")]
    json: bool,
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
    /// Print a JSON summary (events, seconds, events/s).
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
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LEDGER_BODY_LIMIT_BYTES", default_value_t = commands::http::BODY_LIMIT_BYTES_DEFAULT)]
    body_limit_bytes: usize,
    /// Command pipeline shards (each appends one batch at a time).
    #[arg(long, default_value_t = commands::BusConfig::default().shards)]
    shards: usize,
    /// Database connections in the pool (reads and workers; the pipeline has
    /// one more per shard).
    #[arg(long, default_value_t = 16)]
    db_connections: u32,
    /// Plan catalog, JSON: {"plans": [{"id": "team_v4", "seats": 10, "runs":
    /// 100000, "credits": 20000}]} (null is unlimited). Default: the built-in
    /// hobby_v3, team_v4, scale_v1 and enterprise_v1.
    #[arg(long, env = "LEDGER_PLANS")]
    plans: Option<std::path::PathBuf>,
    /// Do not run projection workers here (run `ledger project` instead).
    #[arg(long)]
    no_workers: bool,
    /// Longest a read with ?min_seq= waits for its projection, in
    /// milliseconds, before answering 503.
    #[arg(long, default_value_t = 5_000)]
    read_wait_ms: u64,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id and API key (the key is shown once).
    Create {
        /// Name of the business.
        name: String,
        /// Print exactly {"tenant_id": "...", "api_key": "..."}.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
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
        });
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

async fn open_store(
    database_url: Option<&str>,
    connections: u32,
) -> Result<eventstore::EventStore, Failure> {
    let database = eventstore::resolve(database_url).await?;
    tracing::debug!(url = %eventstore::database::redact(database.url()), source = ?database.source, "database");
    let pool = database.connect_pool(connections).await?;
    let store = eventstore::EventStore::new(pool);
    store.migrate().await?;
    Ok(store)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let database_url = cli.database_url.as_deref();
    match cli.command {
        Command::Migrate => {
            open_store(database_url, 2).await?;
            println!("migrations applied");
        }
        Command::Serve(args) => {
            let store = open_store(database_url, args.db_connections).await?;
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            let mut http =
                commands::http::HttpConfig::new(args.admin_token.as_deref(), args.body_limit_bytes);
            http.read_wait = std::time::Duration::from_millis(args.read_wait_ms);
            let config = commands::server::ServeConfig {
                http,
                bus: commands::BusConfig {
                    shards: args.shards,
                    ..commands::BusConfig::default()
                },
                workers: !args.no_workers,
                plans: match &args.plans {
                    Some(path) => {
                        let text = std::fs::read_to_string(path).map_err(|error| {
                            format!("cannot read plan catalog {}: {error}", path.display())
                        })?;
                        aggregates::plan::PlanCatalog::from_json(&text)
                            .map_err(|error| format!("{}: {error}", path.display()))?
                    }
                    None => aggregates::plan::PlanCatalog::builtin(),
                },
            };
            commands::server::serve(
                store,
                listener,
                config,
                commands::http::routes(),
                projections::catalog(),
                Vec::new(),
                commands::server::shutdown_signal(),
            )
            .await?;
        }
        Command::Tenant(TenantCommand::Create { name, json }) => {
            let store = open_store(database_url, 2).await?;
            let tenant = store.create_tenant(&name).await?;
            if json {
                println!(
                    "{{\"tenant_id\": \"{}\", \"api_key\": \"{}\"}}",
                    tenant.tenant_id, tenant.api_key
                );
            } else {
                println!("created tenant {}", tenant.name);
                println!("  tenant_id: {}", tenant.tenant_id);
                println!("  api_key:   {}", tenant.api_key);
                println!("The API key is shown only now; store it safely.");
            }
        }
        Command::Project(args) => {
            let store = open_store(database_url, 8).await?;
            let catalog = projections::catalog();
            if args.once {
                for projection in projections::status::register(store.pool(), &catalog).await? {
                    projections::rebuild::rebuild(store.pool(), projection.as_ref(), args.json)
                        .await?;
                }
                let mut applied = serde_json::Map::new();
                for projection in &catalog {
                    let events =
                        projections::rebuild::catch_up_live(store.pool(), projection.as_ref())
                            .await?;
                    if !args.json {
                        println!("{}: applied {events} events", projection.name());
                    }
                    applied.insert(projection.name().to_string(), events.into());
                }
                if args.json {
                    println!("{}", serde_json::json!({ "applied": applied }));
                }
            } else {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let notifier =
                    tokio::spawn(projections::worker::notify_appends(store.clone(), stopped));
                let workers = commands::server::start_workers(&store, &catalog, Vec::new()).await?;
                commands::server::shutdown_signal().await;
                workers.stop().await;
                let _ = stop.send(true);
                let _ = notifier.await;
            }
        }
        Command::Rebuild(args) => {
            let store = open_store(database_url, 4).await?;
            let catalog = projections::catalog();
            let selected = if args.all {
                catalog
            } else if args.stale {
                projections::status::register(store.pool(), &catalog).await?
            } else {
                projections::status::register(store.pool(), &catalog).await?;
                let mut selected = Vec::new();
                for name in &args.names {
                    selected.push(projections::find(name).ok_or_else(|| {
                        let known: Vec<_> =
                            projections::catalog().iter().map(|p| p.name()).collect();
                        format!("unknown projection {name} (known: {})", known.join(", "))
                    })?);
                }
                selected
            };
            let mut reports = Vec::new();
            for projection in selected {
                let report =
                    projections::rebuild::rebuild(store.pool(), projection.as_ref(), false).await?;
                if !args.json {
                    println!(
                        "{}: {} events in {:.2} s ({:.0} events/s)",
                        report.projection, report.events, report.seconds, report.events_per_s
                    );
                }
                reports.push(report);
            }
            if args.json {
                let events: u64 = reports.iter().map(|report| report.events).sum();
                let seconds: f64 = reports.iter().map(|report| report.seconds).sum();
                let rate = if seconds > 0.0 {
                    events as f64 / seconds
                } else {
                    0.0
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "projections": reports,
                        "events": events,
                        "seconds": seconds,
                        "events_per_s": rate,
                    })
                );
            }
        }
    }
    Ok(())
}
