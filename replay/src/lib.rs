//! Auditors' replay and verification, evidence export.
//!
//! What lives here: `verify` (hash chains, gapless seqs, chain heads, the
//! domain replaying its own history, projections compared with a fresh
//! replay), `replay` (a tenant's state as of any seq or time, folded from
//! events), `export` (a tenant's events with hashes as a file an auditor
//! verifies and replays offline), and `GET /v1/replay`. What does not:
//! writing events, read tables.
//!
//! Layout:
//! - `source`: events as an audit reads them (database pages, file lines).
//! - `state`: the tenant state folded with the domain's own `apply`.
//! - `verify`: checks and the report.
//! - `export`: the evidence file, offline verify and replay.
//! - `http`: the replay route.

pub mod export;
pub mod http;
pub mod source;
pub mod state;
pub mod verify;
