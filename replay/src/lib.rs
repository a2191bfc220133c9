//! Auditors' replay and verification, evidence export.
//!
//! What lives here: `verify` (hash chains, gapless seqs, chain heads, the
//! domain replaying its own history, projections compared with a fresh
//! replay), `replay` (a tenant's state as of any seq or time, folded from
//! events), `export` (a tenant's events with hashes as a file an auditor
//! verifies and replays offline), `GET /v1/replay`, and `ledger bench`. What
//! does not: writing events, read tables, migrations (the auditors'
//! commands only ever read the ledger).
//!
//! Layout:
//! - `source`: events as an audit reads them (database pages, file lines).
//! - `state`: the tenant state folded request by request, each recorded
//!   request decided again by its domain and its events compared.
//! - `differences`: how a stored event differs from the decided one.
//! - `owed`: the work a tenant's events scheduled and nothing did.
//! - `report`: a replay's report, section by section as domains declare.
//! - `verify`: checks and the report.
//! - `as_of`: replays as of a seq or a time, chain-checked.
//! - `export`: the evidence file, offline verify and replay.
//! - `http`: the replay route.
//! - `bench`: the benchmark workloads behind `ledger bench`.
//! - `cli`: `verify`, `replay`, `export` and `bench` as `ledger` runs them
//!   (file or database, what is printed, the exit status).

pub mod as_of;
pub mod bench;
pub mod cli;
pub mod differences;
pub mod export;
pub mod http;
pub mod owed;
pub mod report;
pub mod reports;
pub mod snapshots;
pub mod source;
pub mod state;
pub mod strict_json;
pub mod verify;
