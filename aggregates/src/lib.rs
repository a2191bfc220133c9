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
//! - `ids`: newtypes for every identifier.

pub mod decide;
pub mod ids;

pub use decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
pub use ids::TenantId;
