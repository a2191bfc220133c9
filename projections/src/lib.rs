//! Projection workers, checkpoints, read tables and their read queries.
//!
//! What lives here: the runtime that applies events to read tables in bounded,
//! checkpointed batches (one active worker per (projection, tenant) partition),
//! reactors that turn events into commands, zero-downtime rebuilds into
//! shadow tables, comparison with a fresh replay, row-level-security scoped
//! reads with read-your-writes waits, and every projection with its read
//! queries. What does not: appending events (`eventstore`, `commands`), HTTP
//! (`commands`).
//!
//! Layout:
//! - `runtime`: the [`Projection`] trait, batch steps, catch-up.
//! - `worker`: long-running workers, wake-ups, shutdown.
//! - `reactor`: the [`Reactor`] trait and its steps.
//! - `rebuild`: shadow rebuilds and swaps.
//! - `compare`: live read tables against a fresh replay, tenant by tenant;
//!   `event_rows`: those of one row per event, in memory.
//! - `status`: registry, versions, states and lag.
//! - `read`: tenant-scoped read transactions and `min_seq` waits.
//! - `progress`: progress bars and lines for long jobs.
//! - `decode`: stored events to domain events, through upcasters.
//! - `stream_index`, `subscriptions`, `quota`, `journal`, `accounts`,
//!   `scheduled`, `payments`: the projections and
//!   their read queries. Which projections run is the domain registry's
//!   business (`commands::domains`), not this crate's.

pub mod accounts;
mod bulk;
pub mod compare;
pub mod compensation;
pub mod decode;
pub mod documents;
pub mod escrow;
pub mod event_rows;
pub mod journal;
pub mod payment_breaks;
pub mod payments;
pub mod progress;
pub mod quota;
pub mod reactor;
pub mod read;
pub mod rebuild;
pub mod runtime;
pub mod scheduled;
pub mod status;
pub mod stream_index;
pub mod subscriptions;
pub mod worker;

pub use reactor::Reactor;
pub use runtime::{ApplyError, Projection, ProjectionError, Step};
pub use worker::Workers;
