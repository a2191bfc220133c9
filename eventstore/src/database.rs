//! Finding the database.
//!
//! In order:
//! 1. `DATABASE_URL` (or `--database-url`) when given; its database is
//!    created if the server has no such database yet.
//! 2. The local server: `postgres://localhost/ledger` (then the default unix
//!    sockets), creating the `ledger` database if missing.
//! 3. A private cluster started from the PostgreSQL binaries installed on the
//!    machine (`initdb`/`pg_ctl` on `PATH` or under `/usr/lib/postgresql/*/bin`),
//!    with its data in `.ledger/` of the working directory, listening only on
//!    a unix socket there, reachable by its owner only and asking for a
//!    password (see [`start_private_cluster`]). It keeps running after the
//!    ledger exits; stop it with `pg_ctl -D .ledger/pgdata stop`.
//! 4. Otherwise, an error saying what to install.
//!
//! A URL may hold a password: whatever prints one goes through [`redact`].

mod private_cluster;

pub use private_cluster::{postgres_bin_dir, start_private_cluster, stop_private_cluster};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Name of the database the embedded default uses.
pub const DEFAULT_DATABASE_NAME: &str = "ledger";

/// How long a candidate server gets to answer before the next one is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a request waits for a pooled connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Directory of the private cluster, relative to the working directory.
pub const PRIVATE_CLUSTER_DIR: &str = ".ledger";

/// What [`redact`] puts in place of a password.
const REDACTED: &str = "***";

const NO_POSTGRES: &str = "\
No PostgreSQL server could be found. The ledger stores everything in PostgreSQL \
(version 13 or newer). Either set DATABASE_URL (or pass --database-url) to a server \
you can reach, start a server that accepts connections on localhost:5432, or install \
the PostgreSQL server binaries (initdb and pg_ctl; on Debian or Ubuntu: \
`apt-get install postgresql`) so the ledger can run a private cluster in .ledger/ \
of the working directory.";

/// Where the database came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// `DATABASE_URL` or `--database-url`.
    Configured,
    /// The server on this machine's default port or socket.
    LocalServer,
    /// A cluster the ledger started itself in this data directory.
    PrivateCluster { data_dir: PathBuf },
}

/// A resolved database: how to connect and where it came from.
#[derive(Clone)]
pub struct Database {
    url: String,
    options: PgConnectOptions,
    pub source: DatabaseSource,
}

/// The URL redacted and without the connect options, which would show the
/// password.
impl std::fmt::Debug for Database {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Database")
            .field("url", &redact(&self.url))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why no database could be resolved. Every URL in it is redacted.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid database URL {url:?}: {source}")]
    InvalidUrl { url: String, source: sqlx::Error },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("could not start a private PostgreSQL cluster in {dir}: {reason}")]
    PrivateCluster { dir: String, reason: String },
    #[error("refusing to use the private PostgreSQL cluster in {dir}: {problem}")]
    UnsafePrivateCluster { dir: String, problem: String },
    #[error("{}", NO_POSTGRES)]
    NoPostgres,
    #[error("the server at {url} has no database {name}; nothing to read there")]
    NoDatabase { url: String, name: String },
}

/// What resolving does when the server has no database by the name sought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDatabase {
    /// Create it (commands that set up or write a ledger).
    Create,
    /// Refuse (commands that only read one, such as the auditors').
    Refuse,
}

impl Database {
    /// The connection URL (as given, or as derived). It may hold a password:
    /// pass it to a child process, print it only through [`redact`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connection options for the resolved database.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// The URL of another database on the same server.
    pub fn url_for(&self, database: &str) -> String {
        with_database(&self.url, database)
    }

    /// Options for another database on the same server.
    pub fn options_for(&self, database: &str) -> PgConnectOptions {
        self.options.clone().database(database)
    }

    /// The name of the resolved database.
    pub fn name(&self) -> &str {
        self.options.get_database().unwrap_or(DEFAULT_DATABASE_NAME)
    }

    /// A pool of at most `connections_max` connections.
    pub async fn connect_pool(&self, connections_max: u32) -> Result<PgPool, sqlx::Error> {
        pool_options(connections_max)
            .connect_with(self.options.clone())
            .await
    }

    /// A pool that connects on first use (for processes that must start while
    /// the database is down).
    pub fn connect_pool_lazy(&self, connections_max: u32) -> PgPool {
        pool_options(connections_max).connect_lazy_with(self.options.clone())
    }
}

fn pool_options(connections_max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections_max.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A broken connection fails its first query (answered 503) and is
        // dropped; pinging before every use would double the round trips.
        .test_before_acquire(false)
}

/// `url` pointing at `database` instead (the `dbname` parameter wins over the path).
pub fn with_database(url: &str, database: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}dbname={database}")
}

/// Resolves the database as described in the module documentation.
pub async fn resolve(configured: Option<&str>) -> Result<Database, ResolveError> {
    resolve_with(configured, MissingDatabase::Create, None).await
}

/// Resolves the database like [`resolve`], but never creates one: for
/// commands that only read a ledger.
pub async fn resolve_existing(configured: Option<&str>) -> Result<Database, ResolveError> {
    resolve_with(configured, MissingDatabase::Refuse, None).await
}

/// Resolves the database like [`resolve`], with the private cluster (when no
/// server answers) in `cluster_dir` rather than `.ledger/` of the working
/// directory: the test harness keeps one cluster per user, whatever
/// directory each test binary runs in.
pub async fn resolve_with(
    configured: Option<&str>,
    missing: MissingDatabase,
    cluster_dir: Option<&Path>,
) -> Result<Database, ResolveError> {
    if let Some(url) = configured.filter(|url| !url.trim().is_empty()) {
        let options = parse(url)?;
        ensure_database(&options, url, missing).await?;
        return Ok(Database {
            url: url.to_string(),
            options,
            source: DatabaseSource::Configured,
        });
    }
    for url in local_server_urls() {
        let options = parse(&url)?;
        let maintenance = options.clone().database("postgres");
        if probe(&maintenance).await {
            ensure_database(&options, &url, missing).await?;
            return Ok(Database {
                url,
                options,
                source: DatabaseSource::LocalServer,
            });
        }
    }
    let dir = match cluster_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|error| ResolveError::PrivateCluster {
                dir: PRIVATE_CLUSTER_DIR.to_string(),
                reason: error.to_string(),
            })?
            .join(PRIVATE_CLUSTER_DIR),
    };
    resolve_private_cluster(&dir, missing).await
}

/// The private cluster in `dir` (started, and created, as needed), whether or
/// not a server answers elsewhere: the last step of [`resolve`], on a
/// directory of the caller's choice.
pub async fn resolve_private_cluster(
    dir: &Path,
    missing: MissingDatabase,
) -> Result<Database, ResolveError> {
    let Some(bin_dir) = postgres_bin_dir() else {
        return Err(ResolveError::NoPostgres);
    };
    // Starting may wait for initdb, the server, or another starter's lock.
    let cluster_dir = dir.to_path_buf();
    let url = tokio::task::spawn_blocking(move || start_private_cluster(&bin_dir, &cluster_dir))
        .await
        .map_err(|error| ResolveError::PrivateCluster {
            dir: dir.display().to_string(),
            reason: error.to_string(),
        })??;
    let options = parse(&url)?;
    ensure_database(&options, &url, missing).await?;
    Ok(Database {
        url,
        options,
        source: DatabaseSource::PrivateCluster {
            data_dir: dir.join("pgdata"),
        },
    })
}

fn parse(url: &str) -> Result<PgConnectOptions, ResolveError> {
    PgConnectOptions::from_str(url)
        .map(|options| {
            options
                .application_name("ledger")
                // Every statement is prepared and run many times with
                // different values: plan once instead of on every run.
                .options([("plan_cache_mode", "force_generic_plan")])
        })
        .map_err(|source| ResolveError::InvalidUrl {
            url: redact(url),
            source,
        })
}

/// The local server's candidate URLs: TCP on localhost, then default sockets.
fn local_server_urls() -> Vec<String> {
    let mut urls = vec![format!("postgres://localhost/{DEFAULT_DATABASE_NAME}")];
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(".s.PGSQL.5432").exists() {
            urls.push(format!("postgres:///{DEFAULT_DATABASE_NAME}?host={dir}"));
        }
    }
    urls
}

async fn probe(options: &PgConnectOptions) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            true
        }
        _ => false,
    }
}

/// Connects to `options`' database, creating it when the server says it does
/// not exist (or refusing, as `missing` says).
async fn ensure_database(
    options: &PgConnectOptions,
    url: &str,
    missing: MissingDatabase,
) -> Result<(), ResolveError> {
    let connect_error = |source| ResolveError::Connect {
        url: redact(url),
        source,
    };
    match PgConnection::connect_with(options).await {
        Ok(connection) => {
            let _ = connection.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("3D000") => {
            let name = options
                .get_database()
                .unwrap_or(DEFAULT_DATABASE_NAME)
                .to_string();
            if missing == MissingDatabase::Refuse {
                return Err(ResolveError::NoDatabase {
                    url: redact(url),
                    name,
                });
            }
            let mut maintenance = PgConnection::connect_with(&options.clone().database("postgres"))
                .await
                .map_err(connect_error)?;
            let created = sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
                .execute(&mut maintenance)
                .await;
            let _ = maintenance.close().await;
            match created {
                Ok(_) => Ok(()),
                // Created meanwhile by another process: 42P04 when it had
                // committed, 23505 (pg_database's unique name index) when both
                // creations raced.
                Err(sqlx::Error::Database(error))
                    if matches!(error.code().as_deref(), Some("42P04" | "23505")) =>
                {
                    Ok(())
                }
                Err(error) => Err(connect_error(error)),
            }
        }
        Err(error) => Err(connect_error(error)),
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` with every password hidden: in `user:password@`, and in any query
/// parameter whose name holds `password` (`?password=`, `&password=`, also
/// with the name percent-encoded, which the driver decodes alike). A
/// `key=value` connection string has its `password=` hidden too.
///
/// It errs on the side of hiding: a malformed URL (a password with an
/// unencoded `/`, `?` or `#`) is still hidden up to its last `@`, and a URL
/// with an `@` in a later parameter may lose a little more than its password.
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        return redact_keywords(url);
    }
    let url = redact_userinfo(url);
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redact_parameters(query, |c| c == '&')),
        None => url.into_owned(),
    }
}

fn redact_userinfo(url: &str) -> Cow<'_, str> {
    let Some(authority) = url.find("://").map(|scheme_end| scheme_end + 3) else {
        return url.into();
    };
    // `scheme:///path`: no authority, so no password before a host either.
    if url[authority..].starts_with('/') {
        return url.into();
    }
    let Some(at) = url[authority..].rfind('@').map(|at| authority + at) else {
        return url.into();
    };
    match url[authority..at].find(':') {
        Some(colon) => format!("{}:{REDACTED}{}", &url[..authority + colon], &url[at..]).into(),
        None => url.into(),
    }
}

/// `parameters` (`key=value` separated where `separator` says) with the
/// value of every key naming a password hidden.
fn redact_parameters(parameters: &str, separator: impl Fn(char) -> bool) -> String {
    let mut redacted = String::with_capacity(parameters.len());
    let mut rest = parameters;
    loop {
        let end = rest.find(&separator).unwrap_or(rest.len());
        let (parameter, tail) = rest.split_at(end);
        match parameter.split_once('=') {
            Some((key, _)) if names_a_password(key) => {
                redacted.push_str(key);
                redacted.push('=');
                redacted.push_str(REDACTED);
            }
            _ => redacted.push_str(parameter),
        }
        let Some(delimiter) = tail.chars().next() else {
            return redacted;
        };
        redacted.push(delimiter);
        rest = &tail[delimiter.len_utf8()..];
    }
}

/// A libpq connection string (`host=h password='a b' dbname=d`) with the
/// value of every key naming a password hidden, quoted values included.
fn redact_keywords(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let blank = rest.len() - rest.trim_start().len();
        redacted.push_str(&rest[..blank]);
        rest = &rest[blank..];
        let Some(equals) = rest
            .find('=')
            .filter(|at| !rest[..*at].contains(char::is_whitespace))
        else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            redacted.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        };
        let key = &rest[..equals];
        let value = &rest[equals + 1..];
        let end = if value.starts_with('\'') {
            quoted_end(value)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        redacted.push_str(key);
        redacted.push('=');
        if names_a_password(key) {
            redacted.push_str(REDACTED);
        } else {
            redacted.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    redacted
}

/// The length of a single-quoted value at the start of `value` (quotes
/// included; a backslash escapes the next character), or all of it when
/// the quote never closes.
fn quoted_end(value: &str) -> usize {
    let mut escaped = false;
    for (index, character) in value.char_indices().skip(1) {
        match character {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return index + 1,
            _ => {}
        }
    }
    value.len()
}

fn names_a_password(key: &str) -> bool {
    percent_decode(key)
        .to_ascii_lowercase()
        .contains("password")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Drops `name` on the server of `options` (closing its connections first).
pub async fn drop_database(options: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    let mut maintenance = options.clone().database("postgres").connect().await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(name)
    ))
    .execute(&mut maintenance)
    .await?;
    maintenance.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server() {
        assert_eq!(
            with_database("postgres://u@h/ledger", "x"),
            "postgres://u@h/ledger?dbname=x"
        );
        assert_eq!(
            with_database("postgres:///ledger?host=/tmp", "x"),
            "postgres:///ledger?host=/tmp&dbname=x"
        );
        let options =
            PgConnectOptions::from_str(&with_database("postgres://u@h/ledger", "x")).unwrap();
        assert_eq!(options.get_database(), Some("x"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db?sslmode=require"),
            "postgresql://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(redact("postgres://u:@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_password_parameter_is_redacted_wherever_it_stands() {
        assert_eq!(
            redact("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact("postgres:///ledger?host=/tmp/c&user=ledger&password=secret&dbname=x"),
            "postgres:///ledger?host=/tmp/c&user=ledger&password=***&dbname=x"
        );
        assert_eq!(
            redact("postgres://h/db?sslmode=disable&PASSWORD=secret"),
            "postgres://h/db?sslmode=disable&PASSWORD=***"
        );
        assert_eq!(
            redact("postgres://h/db?pass%77ord=secret&sslpassword=other"),
            "postgres://h/db?pass%77ord=***&sslpassword=***"
        );
        assert_eq!(
            redact("postgres://h/db?password=a?b#c&user=u"),
            "postgres://h/db?password=***&user=u"
        );
        assert_eq!(
            redact("postgres://u:one@h/db?password=two"),
            "postgres://u:***@h/db?password=***"
        );
    }

    #[test]
    fn percent_encoded_and_malformed_passwords_are_redacted_whole() {
        assert_eq!(
            redact("postgres://u:p%40ss%2Fw%3Frd@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact("postgres://u@h/db?password=p%26ss%3Dw"),
            "postgres://u@h/db?password=***"
        );
        // Unencoded, such passwords make the URL invalid (or point it
        // elsewhere), and that URL ends up in the error.
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p/s?s#x@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_connection_string_of_keywords_has_its_password_redacted() {
        assert_eq!(
            redact("host=/tmp user=u password=secret dbname=db"),
            "host=/tmp user=u password=*** dbname=db"
        );
        assert_eq!(
            redact("host=/tmp password='a b\\' c' dbname=db"),
            "host=/tmp password=*** dbname=db"
        );
        assert_eq!(redact("password='never closed dbname=db"), "password=***");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "postgres://u@h/db",
            "postgres:///db?host=/tmp",
            "postgres://localhost/ledger",
            "postgres://nobody@127.0.0.1:1/none",
            "postgres:///ledger?host=/tmp/c&user=ledger&dbname=ledger_test_1",
            "postgres://h/db?application_name=passwordless-ish",
            "postgres:///ledger?host=/tmp&application_name=a:b@c",
            "host=/tmp user=u dbname=db",
            "not a url",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn resolving_an_invalid_url_does_not_print_its_password() {
        let error = parse("postgres://u:secret@h:notaport/db").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid database URL \"postgres://u:***@h:notaport/db\": error with configuration: \
             invalid port number"
        );
        let error = parse("postgres://u@h:notaport/db?password=secret").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn a_database_debug_prints_no_password() {
        let url = "postgres:///ledger?host=/tmp/c&user=ledger&password=secret";
        let database = Database {
            url: url.to_string(),
            options: parse(url).unwrap(),
            source: DatabaseSource::PrivateCluster {
                data_dir: PathBuf::from("/tmp/c/pgdata"),
            },
        };
        assert_eq!(
            format!("{database:?}"),
            "Database { url: \"postgres:///ledger?host=/tmp/c&user=ledger&password=***\", \
             source: PrivateCluster { data_dir: \"/tmp/c/pgdata\" }, .. }"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
