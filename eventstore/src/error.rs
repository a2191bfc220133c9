//! Errors of the store and how database failures are classified.

use crate::canonical::CanonicalError;

/// A failure of the store that is not a domain outcome.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the connection; retrying
    /// later may succeed (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Event data with no canonical form (a float, a NUL character).
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// Stored data that violates an invariant the store maintains.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Input the caller should never have produced (a bug in the caller).
    #[error("invalid input to the store: {0}")]
    Invalid(String),
    /// The tenant has no chain head: it was never created.
    #[error("unknown tenant {0}")]
    UnknownTenant(aggregates::TenantId),
    /// Concurrent writers kept winning for longer than the retry bound.
    #[error("too much contention: {0}")]
    Contention(String),
    /// Serialization of data handed to the store failed.
    #[error("serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

impl StoreError {
    /// Whether the database was unreachable (as opposed to refusing the work).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Whether an error means the database is out of reach: connection failures,
/// an exhausted or closed pool, the server shutting down or refusing
/// connections (SQLSTATE classes 08 and 57P, 53300).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// The SQLSTATE and constraint of a database error, when it is one.
pub(crate) fn constraint_violation(error: &sqlx::Error) -> Option<(String, String)> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    let code = database.code()?.into_owned();
    let constraint = database.constraint()?.to_string();
    Some((code, constraint))
}
