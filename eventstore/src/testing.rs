//! Fresh databases for tests.
//!
//! [`TestDatabase::new`] resolves PostgreSQL as the CLI does (`DATABASE_URL`,
//! then the local server, then a private cluster), keeps one migrated
//! template database per migration set, and clones it for each test
//! (`CREATE DATABASE ... TEMPLATE`, far faster than migrating). The clone is
//! dropped when the value is dropped. When no PostgreSQL can be resolved the
//! test fails with the resolution error; it never skips.
//!
//! The private cluster is one per user ([`private_cluster_dir`]), not the
//! CLI's `.ledger/` of the working directory: each test binary runs in its
//! own package's directory, and one cluster per package would start several
//! servers for one `cargo test`. Test binaries starting it at once wait for
//! each other on its lock.

use crate::database::{
    drop_database, quote_identifier, resolve, resolve_with, Database, MissingDatabase,
};
use crate::{EventStore, MIGRATOR};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Advisory lock key serialising template creation across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x6c65_6467_6572_0001;

/// Test databases older than this are leftovers of killed runs and dropped.
const LEFTOVER_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// How often cloning is retried while another session touches the template.
const CLONE_ATTEMPTS_MAX: u32 = 50;

/// Unix socket paths are limited to 107 bytes; a temporary directory longer
/// than this leaves no room for the cluster's socket in it.
const TEMP_DIR_LEN_MAX: usize = 64;

/// The tests' private cluster, one per user: `ledger-test-<uid>` in the
/// temporary directory (`/tmp` when that one's path is too long for a
/// socket).
pub fn private_cluster_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let temp = std::env::temp_dir();
    let base = if temp.is_absolute() && temp.as_os_str().len() <= TEMP_DIR_LEN_MAX {
        temp
    } else {
        PathBuf::from("/tmp")
    };
    base.join(format!("ledger-test-{uid}"))
}

/// A database of its own for one test, cloned from the migrated template.
pub struct TestDatabase {
    database: Database,
    name: String,
    store: EventStore,
}

impl TestDatabase {
    /// A fresh, migrated database. Panics with the reason when PostgreSQL
    /// cannot be resolved or the database cannot be created.
    pub async fn new() -> Self {
        let configured = std::env::var("DATABASE_URL").ok();
        let cluster_dir = private_cluster_dir();
        let server = resolve_with(
            configured.as_deref(),
            MissingDatabase::Create,
            Some(&cluster_dir),
        )
        .await
        .unwrap_or_else(|error| panic!("tests need PostgreSQL: {error}"));
        Self::on(&server).await
    }

    /// A fresh, migrated database on `server` (a database there, any one:
    /// the template and the clone sit beside it).
    pub async fn on(server: &Database) -> Self {
        let template = ensure_template(server)
            .await
            .unwrap_or_else(|error| panic!("cannot prepare the template database: {error}"));
        let name = format!(
            "ledger_test_{}_{}",
            unix_seconds(),
            uuid::Uuid::now_v7().simple()
        );
        clone_template(server, &template, &name)
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let database = resolve(Some(&server.url_for(&name)))
            .await
            .unwrap_or_else(|error| panic!("cannot open test database {name}: {error}"));
        let pool = database
            .connect_pool(32)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to test database {name}: {error}"));
        Self {
            database,
            name,
            store: EventStore::new(pool),
        }
    }

    /// The store on this database.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The resolved database (for extra pools or child processes).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// URL of this database, for a child process's `DATABASE_URL`.
    pub fn url(&self) -> &str {
        self.database.url()
    }

    /// Connection options of this database.
    pub fn options(&self) -> PgConnectOptions {
        self.database.options()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let options = self.database.options();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on, and
        // the pool's connections belong to that runtime: drop the database
        // from a thread with a runtime of its own. `WITH (FORCE)` ends the
        // pool's sessions server-side.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                drop_database(&options, &name)
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Name of the template for the embedded migration set.
fn template_name() -> String {
    let mut hasher = blake3::Hasher::new();
    for migration in MIGRATOR.iter() {
        hasher.update(&migration.version.to_be_bytes());
        hasher.update(&migration.checksum);
    }
    format!("ledger_template_{}", &hasher.finalize().to_hex()[..16])
}

/// Creates the migrated template once per migration set (serialised across
/// processes by an advisory lock) and sweeps leftovers of killed runs.
async fn ensure_template(server: &Database) -> Result<String, Box<dyn std::error::Error>> {
    let template = template_name();
    let admin = server.options_for("postgres");
    let mut connection = admin.connect().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut connection)
        .await?;
    let result = create_template_if_missing(&mut connection, server, &template).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    result.map(|()| template)
}

async fn create_template_if_missing(
    connection: &mut PgConnection,
    server: &Database,
    template: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT datname FROM pg_database \
         WHERE datname LIKE 'ledger\\_template\\_%' OR datname LIKE 'ledger\\_test\\_%'",
    )
    .fetch_all(&mut *connection)
    .await?;
    let oldest_kept = unix_seconds().saturating_sub(LEFTOVER_AGE.as_secs());
    for (name,) in &names {
        let leftover_test = name
            .strip_prefix("ledger_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .is_some_and(|created| created < oldest_kept);
        // Another migration set's template may belong to a concurrent run
        // from another checkout: only an old one (or one without the
        // creation comment) is a leftover. Templates are built and swept
        // under the advisory lock, so none is half-built here.
        let stale_template = name.starts_with("ledger_template_")
            && name != template
            && template_created(connection, name)
                .await
                .is_none_or(|created| created < oldest_kept);
        if leftover_test || stale_template {
            let _ = drop_database(&server.options(), name).await;
        }
    }
    if names.iter().any(|(name,)| name == template) {
        return Ok(());
    }
    let building = format!("{template}_building");
    drop_database(&server.options(), &building).await?;
    sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&building)))
        .execute(&mut *connection)
        .await?;
    let pool = server.options_for(&building).connect().await?;
    let mut pool = pool;
    MIGRATOR.run(&mut pool).await?;
    pool.close().await?;
    sqlx::query(&format!(
        "COMMENT ON DATABASE {} IS 'ledger test template, created {}'",
        quote_identifier(&building),
        unix_seconds()
    ))
    .execute(&mut *connection)
    .await?;
    sqlx::query(&format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_identifier(&building),
        quote_identifier(template)
    ))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// When a template was created (from its comment); `None` when unknown.
async fn template_created(connection: &mut PgConnection, name: &str) -> Option<u64> {
    let comment: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(connection)
    .await
    .ok()?;
    comment?
        .0?
        .strip_prefix("ledger test template, created ")?
        .parse()
        .ok()
}

async fn clone_template(server: &Database, template: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut connection = server.options_for("postgres").connect().await?;
    let statement = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote_identifier(name),
        quote_identifier(template)
    );
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match sqlx::query(&statement).execute(&mut connection).await {
            // 55006: the template is being accessed by another session.
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some("55006") && attempt < CLONE_ATTEMPTS_MAX =>
            {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => break other.map(|_| ()),
        }
    };
    connection.close().await?;
    result
}
