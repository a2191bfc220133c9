//! The ledger's requests: what each command decides against and how it
//! answers. One file per domain area; each request is a pure decision over
//! the aggregates it declares (see `pipeline::request`).

pub mod books;
pub mod compensation;
pub mod escrow;
pub mod journal;
pub mod payments;
pub mod quota;
pub mod subscription;
