//! The command pipeline and the HTTP API.
//!
//! What lives here: turning a request into events exactly once (`pipeline`:
//! load, decide, append, retries, idempotency), every HTTP route (`http`:
//! auth, error mapping, OpenAPI), metrics, `server`, which runs the API
//! with the projection workers, and `tenants`, tenant administration from
//! the command line. What does not: storage (`eventstore`), domain
//! rules (`aggregates`), read tables (`projections`).
//!
//! Layout:
//! - `pipeline`: [`CommandBus`], requests, the sharded group-commit executor.
//! - `http`: one file per resource, each with its own `router()`, and
//!   `http::connections`, serving them with bounds on every connection.
//! - `metrics`: Prometheus counters and histograms.
//! - `server`: serving the API beside the workers and the scheduler; the
//!   plan catalog.
//! - `scheduler`: the ticker submitting due work.
//! - `tenants`: `ledger tenant` (create, list and revoke API keys).

pub mod domains;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod requests;
pub mod scheduler;
pub mod server;
pub mod tenants;

pub use metrics::Metrics;
pub use pipeline::{
    BusConfig, Clock, CommandBus, DatabaseTime, Decider, Outcome, PipelineError, Refusal, Reply,
    Request, Target,
};
