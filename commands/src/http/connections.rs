//! Serving HTTP connections with bounds on every one of them: how long a
//! client may take to send a request head, to send its body and have it
//! answered, how long a kept-alive connection may sit idle, how many
//! connections are open at once, and how long a shutdown waits for them.
//!
//! `axum::serve` has none of these, so a client could hold a connection, and
//! with it a file descriptor and a task, for as long as it liked. Here each
//! connection runs HTTP/1.1 (keep-alive included) on hyper, next to a watch
//! on its deadlines (`activity`); the accept loop holds one permit per open
//! connection.
//!
//! Layout:
//! - this file: [`ConnectionLimits`], the accept loop, one connection's task
//!   and the service that times each request out;
//! - `activity`: the phase of a connection and the deadline that follows
//!   from it, and the socket wrapper that reports reads and writes;
//! - `descriptors`: the process's file-descriptor limit against the
//!   connection limit.

mod activity;
mod descriptors;

use super::error::ApiError;
use activity::{Activity, Expired, Watched};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Default of `--header-timeout-ms`: a client sends a request head in one or
/// two packets, so even a slow link needs far less.
pub const HEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default of `--request-timeout-ms`: above the longest a `min_seq` read
/// waits (5 s by default) and the pipeline's retries, and enough to send a
/// body at the default limit (1 MiB) over a slow link.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default of `--idle-timeout-ms`: longer than the 60 s idle timeout common
/// in load balancers, so that it is the balancer that closes a kept-alive
/// connection, never the server under a request the balancer just sent.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 75_000;
/// Default of `--connections-max`.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1_024;
/// Default of `--shutdown-timeout-ms`: within the 30 s most supervisors
/// allow between SIGTERM and SIGKILL, leaving time to drain the pipeline.
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest value any of the timeouts takes: one hour.
pub const TIMEOUT_MS_LIMIT: u64 = 3_600_000;
/// Largest connection limit taken.
pub const CONNECTIONS_MAX_LIMIT: usize = 65_536;
/// How long accepting pauses after an error that is not the client's (out
/// of file descriptors or memory), so a starved process does not spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The bounds on HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must arrive whole within this of its first byte (of
    /// the connection being accepted, for a connection's first request).
    pub header_timeout: Duration,
    /// A request's body must arrive and its answer be ready within this of
    /// its head; past it, the answer is 408 `request_timeout`.
    pub request_timeout: Duration,
    /// A connection with no request in flight is closed once nothing has
    /// been read or written for this long.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it, accepting waits for one to
    /// close (clients wait in the listen backlog).
    pub connections_max: usize,
    /// After a shutdown signal, in-flight requests get this long to finish;
    /// whatever is still open then is closed.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(HEADER_TIMEOUT_MS_DEFAULT),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS_DEFAULT),
            connections_max: CONNECTIONS_MAX_DEFAULT,
            shutdown_timeout: Duration::from_millis(SHUTDOWN_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish for at most the shutdown
/// timeout, and closes every connection left. Every request carries the
/// peer's address as [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections_max = limits.connections_max.clamp(1, CONNECTIONS_MAX_LIMIT);
    descriptors::ensure_for(connections_max);
    let permits = Arc::new(Semaphore::new(connections_max));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    // hyper starts its header timer as soon as a connection goes idle, so
    // it would close every kept-alive connection after the header timeout;
    // `Activity` times heads from their first byte instead.
    builder.header_read_timeout(None);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (permit, stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &permits) => match accepted {
                Some(accepted) => accepted,
                None => break,
            },
        };
        reap(&mut connections);
        let connection = Connection {
            app: app.clone(),
            peer,
            limits,
            builder: builder.clone(),
        };
        connections.spawn(connection.serve(stream, graceful.watcher(), permit));
    }
    drop(listener);
    reap(&mut connections);
    tracing::info!(connections = graceful.count(), "draining connections");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        reap(&mut connections);
        tracing::warn!(
            connections = connections.len(),
            shutdown_timeout_ms = limits.shutdown_timeout.as_millis(),
            "closing the connections still open at the shutdown deadline"
        );
    }
    connections.shutdown().await;
}

/// The next connection, once fewer than the limit are open; `None` only if
/// the permits are gone, which `serve` never lets happen.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Answers are written whole: send them at once rather than
                // wait for the client's acknowledgement of the last packet.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                return Some((permit, stream, peer));
            }
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "a connection failed while being accepted");
            }
            Err(error) => {
                tracing::error!(%error, "cannot accept connections; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Errors of one connection (the client gave up before it was accepted),
/// after which accepting goes on at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Forgets the connections that have ended, so the set holds at most the
/// open ones plus those that ended since the last accept.
fn reap(connections: &mut JoinSet<()>) {
    while let Some(ended) = connections.try_join_next() {
        if let Err(error) = ended {
            if error.is_panic() {
                tracing::error!(%error, "a connection's task panicked");
            }
        }
    }
}

/// One accepted connection.
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: ConnectionLimits,
    builder: http1::Builder,
}

impl Connection {
    /// Serves requests until the client closes, a bound closes the
    /// connection, or a shutdown finds it idle. The permit is released
    /// after the socket is closed, so no more than the limit are ever open.
    async fn serve(self, stream: TcpStream, watcher: Watcher, permit: OwnedSemaphorePermit) {
        let activity = Arc::new(Activity::new(
            self.limits.header_timeout,
            self.limits.idle_timeout,
        ));
        let service = TimedService {
            app: self.app,
            peer: self.peer,
            request_timeout: self.limits.request_timeout,
            activity: activity.clone(),
        };
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let served = watcher.watch(self.builder.serve_connection(io, service));
        let peer = self.peer;
        tokio::select! {
            result = served => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            expired = activity.expired() => match expired {
                Expired::Header => tracing::debug!(%peer, "closing a connection: request head not received in time"),
                Expired::Idle => tracing::debug!(%peer, "closing an idle connection"),
            },
        }
        drop(permit);
    }
}

/// The application as hyper calls it, one request at a time per connection:
/// adds the peer's address, tells the connection's [`Activity`] when a
/// request is in flight, and bounds each request by the request timeout.
#[derive(Clone)]
struct TimedService {
    app: Router,
    peer: SocketAddr,
    request_timeout: Duration,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for TimedService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.activity.request_started();
        let app = self.app.clone();
        let activity = self.activity.clone();
        let request_timeout = self.request_timeout;
        Box::pin(async move {
            // Cutting a request off here drops its handler, which is safe
            // even for a command already handed to the pipeline: the
            // pipeline decides and appends it in its own task, atomically
            // with its idempotency record, whether or not anyone still
            // waits for the answer. The client retries with the same
            // Idempotency-Key and gets the recorded answer, or the command
            // runs then if it had not yet.
            let answered = tokio::time::timeout(
                request_timeout,
                tower::ServiceExt::oneshot(app, request.map(Body::new)),
            )
            .await;
            activity.request_answered();
            Ok(match answered {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_elapsed) => timed_out(request_timeout),
            })
        })
    }
}

/// 408 in the error envelope, closing the connection: the rest of the
/// request may still be on its way, and RFC 9110 asks a server that gives
/// up waiting to say it closes.
fn timed_out(request_timeout: Duration) -> Response {
    let timeout_ms = u64::try_from(request_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut response = ApiError::RequestTimeout { timeout_ms }.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
