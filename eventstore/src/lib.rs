//! The PostgreSQL event store.
//!
//! What lives here: the `events` table and everything that guards it — the
//! per-tenant hash chain, gapless `tenant_seq`, optimistic concurrency per
//! aggregate, idempotency records written in the same transaction as the
//! events, snapshots, ordered reads for projections, tenants and API keys, and
//! finding the database to use. What does not: deciding commands (`commands`),
//! read tables (`projections`), verification reports (`replay`).
//!
//! Layout:
//! - `append`: [`TenantBatch`], the one-statement multi-tenant append and its errors.
//! - `chain`: [`ChainHash`] and the canonical event encoding that is hashed.
//! - `canonical`: canonical JSON (PostgreSQL's `jsonb` text form).
//! - `idempotency`: keys, fingerprints, stored outcomes.
//! - `load`: aggregate histories and snapshots.
//! - `read`: ordered reads per tenant and across tenants.
//! - `repository`: cqrs-es `PersistedEventRepository` on these tables.
//! - `schema`: whether a database holds this binary's schema, read only.
//! - `tenants`: tenants and API keys.
//! - `database`: resolving and connecting to PostgreSQL, the private cluster,
//!   redacting URLs.
//! - `testing`: fresh databases for tests (feature `testing`, tests only).

pub mod append;
pub mod canonical;
pub mod chain;
pub mod closing;
pub mod database;
pub mod error;
pub mod idempotency;
pub mod load;
pub mod read;
pub mod repository;
pub mod schema;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;

pub use append::{
    AppendError, AppendReport, AppendedEvent, ChainHead, CommandWrite, IndexEntry, NewEvent,
    Pushed, TenantBatch, EVENTS_BEFORE_ANALYZE,
};
pub use chain::{ChainChecker, ChainFinding};
pub use chain::{ChainHash, GENESIS};
pub use closing::{append_lock_key, APPEND_WITHIN};
pub use database::{resolve, resolve_existing, Database, DatabaseSource, ResolveError};
pub use error::StoreError;
pub use idempotency::{
    EventSummary, Fingerprint, IdempotencyKey, IdempotencyRecord, InvalidIdempotencyKey,
    ANSWER_EVENTS,
};
pub use load::{AggregateHistory, AggregateKey, Snapshot};
pub use read::{
    check_text_event, optional_timestamp_at, timestamp_at, ChainReport, Decoded, GlobalCursor,
    JsonText, StoredEvent, TenantRange,
};
pub use repository::TenantRepository;
pub use schema::SchemaError;
pub use tenants::{
    ApiKeyInfo, KeyId, KeyIssue, NewTenant, Revocation, RevokedKey, Tenant, TenantCreation,
    TenantError, UsedKey,
};

use sqlx::migrate::Migrator;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::watch;

/// Every migration of the ledger, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Handle to the event store; cheap to clone (clones share one pool and one
/// append signal).
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
    appended: Arc<watch::Sender<u64>>,
    statistics: Arc<append::EventStatistics>,
}

impl EventStore {
    /// A store on an existing pool.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            appended: Arc::new(watch::channel(0).0),
            statistics: Arc::default(),
        }
    }

    /// The same store (sharing its append signal) on another pool. The
    /// command pipeline appends on a pool of its own: no code that could be
    /// cancelled mid-`BEGIN` (which leaves a pooled connection inside an
    /// abandoned transaction) ever touches the connections that append.
    pub fn with_pool(&self, pool: PgPool) -> Self {
        Self {
            pool,
            appended: self.appended.clone(),
            statistics: self.statistics.clone(),
        }
    }

    /// A signal bumped after every append through this store (or a clone of
    /// it) that wrote something: wakes projection workers of this process
    /// without polling.
    pub fn subscribe_appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Bumps the append signal.
    pub fn signal_appended(&self) {
        self.appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The pool, for crates that keep their own tables in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies every pending migration (idempotent; concurrent callers wait
    /// for each other on an advisory lock).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
