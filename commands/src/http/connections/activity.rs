//! Where one connection is in its life, and the deadline that follows.
//!
//! A connection is waiting for a request head, handling a request, or
//! waiting after an answer (writing it, then idle until the next request).
//! The socket wrapper [`Watched`] reports reads and writes, the service
//! reports requests starting and being answered, and the connection's task
//! waits on [`Activity::expired`] beside hyper, dropping the connection
//! when it resolves. A request being handled has no deadline here: the
//! request timeout bounds it in the service, which can still answer 408.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which bound a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// A request head did not arrive whole in time.
    Header,
    /// Nothing was read or written for the idle timeout, no request in
    /// flight.
    Idle,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head whose first byte came at `started` (for
    /// the first request, since the connection was accepted).
    Head { started: Instant },
    /// From a request's head until its answer is ready.
    Handling,
    /// After an answer: writing it, then kept alive; `last` is when a byte
    /// was last written, or the answer was ready.
    Waiting { last: Instant },
}

/// The phase of one connection, shared by its socket, its service and its
/// task.
pub(super) struct Activity {
    phase: Mutex<Phase>,
    /// Woken when the phase changes, since the deadline may then come
    /// sooner than the one the task sleeps until.
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new(header_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            phase: Mutex::new(Phase::Head {
                started: Instant::now(),
            }),
            changed: Notify::new(),
            header_timeout,
            idle_timeout,
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The phase is a plain value, whole after any panic.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_one();
    }

    /// Bytes arrived: after an answer, they start the next request's head.
    fn read(&self) {
        let mut phase = self.phase();
        if let Phase::Waiting { .. } = *phase {
            *phase = Phase::Head {
                started: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes were written: an answer being written is progress, so only a
    /// client that stops reading it is cut off.
    fn wrote(&self) {
        if let Phase::Waiting { last } = &mut *self.phase() {
            *last = Instant::now();
        }
    }

    /// hyper parsed a request head and called the service.
    pub(super) fn request_started(&self) {
        self.set(Phase::Handling);
    }

    /// The service's answer is ready (or the request timed out).
    pub(super) fn request_answered(&self) {
        self.set(Phase::Waiting {
            last: Instant::now(),
        });
    }

    /// When the connection is to be closed, and why; `None` while a request
    /// is handled (or a deadline lies past what `Instant` holds).
    fn deadline(&self) -> Option<(Instant, Expired)> {
        match *self.phase() {
            Phase::Head { started } => started
                .checked_add(self.header_timeout)
                .map(|at| (at, Expired::Header)),
            Phase::Handling => None,
            Phase::Waiting { last } => last
                .checked_add(self.idle_timeout)
                .map(|at| (at, Expired::Idle)),
        }
    }

    /// Resolves once the connection has passed its deadline.
    pub(super) async fn expired(&self) -> Expired {
        loop {
            // `notify_one` keeps a wake-up for a change made before this
            // waits, so none is lost between reading the deadline and
            // sleeping.
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((at, expired)) => {
                    if Instant::now() >= at {
                        return expired;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// The socket, telling its connection's [`Activity`] of every byte read or
/// written.
pub(super) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(written)) if *written > 0) {
            self.activity.wrote();
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(context, buffer);
        if matches!(polled, Poll::Ready(Ok(()))) && buffer.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(context, buffer);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(context, buffers);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
