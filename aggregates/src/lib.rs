//! Pure domain of the ledger: ids, money, journal postings and every aggregate
//! with its commands, events and errors.
//!
//! Nothing here does I/O: no database, no clock, no network. Time arrives inside
//! commands (the pipeline stamps it), so replaying events gives the same state
//! on any day.
//!
//! Layout:
//! - `decide`: the [`Decide`] trait every aggregate implements (a pure decision
//!   from state and command to events) and how rejections are classified.
//! - `ids`: newtypes for identifiers.
//! - `money`: assets and amounts in minor units, checked arithmetic.
//! - `journal`: accounts, postings, entries that cannot be unbalanced, balances.
//! - `payments`: the payment aggregate (intents, tenders, captures,
//!   refunds, disputes).
//! - `plan`: the plan catalog.
//! - `quota`: the quota aggregate (grants, consumption, seats, expiry).
//! - `rules`: the version of the rules a request is decided under.
//! - `subscription`: the subscription aggregate.
//! - `text`, `time`: client text and times, bounded to what every store of
//!   the ledger holds (checked at the edge and again in each decision).

pub mod compensation;
pub mod decide;
pub mod escrow;
pub mod ids;
pub mod journal;
pub mod money;
pub mod payments;
pub mod plan;
pub mod quota;
pub mod rules;
pub mod schema;
pub mod subscription;
pub mod text;
pub mod time;

pub use decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
pub use ids::{EntryId, GrantId, HoldId, TenantId};
pub use money::{Amount, Asset};
