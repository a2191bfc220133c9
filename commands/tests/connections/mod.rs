//! The bounds on HTTP connections, against the real server on 127.0.0.1:
//! the header, request and idle timeouts, the connection limit and the
//! shutdown deadline, each driven by a slow client on a raw socket with
//! short timeouts; and the peer address every request carries.
//!
//! Every wait has a deadline that fails saying what it waited for; waiting
//! for the server to close a connection is reading until end of file.

use crate::support::app::{Options, TestServer, ADMIN_TOKEN};
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use commands::http::connections::{self, ConnectionLimits};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Longest any step of these tests waits.
const DEADLINE: Duration = Duration::from_secs(5);
/// A bound far past every deadline here, for the bounds a test does not try.
const LONG: Duration = Duration::from_secs(60);
/// Largest answer head read.
const HEAD_BYTES_MAX: usize = 16 * 1024;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n\r\n";
const HALF_A_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n";

/// Every bound out of the way.
fn long() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: LONG,
        request_timeout: LONG,
        idle_timeout: LONG,
        connections_max: 64,
        shutdown_timeout: LONG,
    }
}

async fn start(connections: ConnectionLimits) -> TestServer {
    TestServer::start_with(Options {
        connections: Some(connections),
        ..Options::default()
    })
    .await
}

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    tokio::time::timeout(DEADLINE, TcpStream::connect(address))
        .await
        .expect("connecting to the server timed out")
        .expect("cannot connect to the server")
}

/// An answer read off a raw socket.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{error} in the body {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one answer (head, then a body of its `content-length`).
async fn read_answer(stream: &mut (impl AsyncRead + Unpin), what: &str) -> Answer {
    let read = async {
        let mut buffer = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                let length = content_length(&head);
                if buffer.len() >= end + 4 + length {
                    let status = head[9..12].parse().expect("a status code");
                    let body = buffer[end + 4..end + 4 + length].to_vec();
                    return Answer { status, head, body };
                }
            }
            assert!(buffer.len() < HEAD_BYTES_MAX, "an answer too long");
            let read = stream.read(&mut chunk).await.expect("reading an answer");
            assert!(
                read > 0,
                "the connection was closed before {what} was answered"
            );
            buffer.extend_from_slice(&chunk[..read]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("no answer to {what} within {DEADLINE:?}"))
}

fn find(buffer: &[u8], needle: &[u8]) -> Option<usize> {
    buffer
        .windows(needle.len())
        .position(|window| window == needle)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().expect("a content-length"))
        })
        .unwrap_or(0)
}

/// Reads until the server closes the connection, and answers when it did;
/// fails if the server sends anything instead, or has not closed it within
/// the deadline.
async fn closed(stream: &mut TcpStream, what: &str) -> Instant {
    let mut chunk = [0_u8; 1024];
    match tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await {
        Err(_) => panic!("the server did not close {what} within {DEADLINE:?}"),
        Ok(Ok(0)) => Instant::now(),
        Ok(Ok(read)) => panic!(
            "the server sent {:?} on {what} instead of closing it",
            String::from_utf8_lossy(&chunk[..read])
        ),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => Instant::now(),
        Ok(Err(error)) => panic!("reading {what}: {error}"),
    }
}

#[tokio::test]
async fn a_connection_sending_half_its_headers_is_closed_after_the_header_timeout() {
    // Proves: a new connection whose first head stops halfway, and a
    // kept-alive one whose second head does, are both closed, unanswered,
    // once the header timeout has passed (the idle timeout is far longer).
    let header_timeout = Duration::from_millis(300);
    let server = start(ConnectionLimits {
        header_timeout,
        ..long()
    })
    .await;
    let connected = Instant::now();
    let mut fresh = connect(&server).await;
    fresh.write_all(HALF_A_HEAD).await.unwrap();
    let mut kept = connect(&server).await;
    kept.write_all(HEALTHZ).await.unwrap();
    let answer = read_answer(&mut kept, "a first /healthz").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let second_head = Instant::now();
    kept.write_all(HALF_A_HEAD).await.unwrap();

    let fresh_closed = closed(&mut fresh, "a new connection with half a head").await;
    let kept_closed = closed(&mut kept, "a kept-alive connection with half a head").await;
    assert!(
        fresh_closed >= connected + header_timeout,
        "a new connection was closed {:?} after connecting, before the header timeout",
        fresh_closed - connected
    );
    assert!(
        kept_closed >= second_head + header_timeout,
        "a kept-alive connection was closed {:?} after its second head began, before the header timeout",
        kept_closed - second_head
    );
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_answered_408_after_the_request_timeout() {
    // Proves: a body that keeps arriving a byte at a time does not hold the
    // request open: past the request timeout it is answered 408
    // request_timeout in the error envelope, and the connection is closed.
    let request_timeout = Duration::from_millis(400);
    let server = start(ConnectionLimits {
        request_timeout,
        ..long()
    })
    .await;
    let mut stream = connect(&server).await;
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Idempotency-Key: trickle-1\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"name\": \""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let head_sent = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if writer.write_all(b"a").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let answer = tokio::select! {
        answer = read_answer(&mut reader, "a trickled body") => answer,
        () = trickle => unreachable!("the trickle never ends"),
    };
    let answered = Instant::now();

    assert_eq!(answer.status, 408, "{}", answer.head);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert_eq!(body["error"]["details"]["timeout_ms"], 400, "{body}");
    assert!(
        answered >= head_sent + request_timeout,
        "408 after {:?}, before the request timeout",
        answered - head_sent
    );
    closed(&mut stream, "the connection answered 408").await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_while_a_busy_one_is_not() {
    // Proves: a kept-alive connection with nothing in flight is closed once
    // the idle timeout has passed (not already at the shorter header
    // timeout), while one whose request is handled for longer than the
    // idle timeout gets its answer and stays usable for the next request.
    let idle_timeout = Duration::from_millis(600);
    let read_wait = Duration::from_millis(1_500);
    let server = TestServer::start_with(Options {
        connections: Some(ConnectionLimits {
            header_timeout: Duration::from_millis(200),
            idle_timeout,
            ..long()
        }),
        read_wait: Some(read_wait),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    // An event no projection applies (no workers): a read with min_seq=1
    // waits its bound.
    let granted = acme
        .post(
            "/v1/grants",
            "grant",
            serde_json::json!({"quota": "runs", "amount": 1, "source": "purchase"}),
        )
        .await;
    assert_eq!(granted.body["tenant_seq"], 1, "{}", granted.body);
    let mut idle = connect(&server).await;
    let idle_sent = Instant::now();
    idle.write_all(HEALTHZ).await.unwrap();
    let answer = read_answer(&mut idle, "/healthz").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let mut busy = connect(&server).await;
    let lagging = format!(
        "GET /v1/streams?min_seq=1 HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {}\r\n\r\n",
        acme.api_key
    );
    let busy_sent = Instant::now();
    busy.write_all(lagging.as_bytes()).await.unwrap();

    let idle_closed = closed(&mut idle, "an idle kept-alive connection").await;
    assert!(
        idle_closed >= idle_sent + idle_timeout,
        "an idle connection was closed {:?} after its request, before the idle timeout",
        idle_closed - idle_sent
    );
    let answer = read_answer(&mut busy, "a read waiting for min_seq").await;
    assert!(
        Instant::now() >= busy_sent + read_wait,
        "the lagging read answered before its wait"
    );
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert_eq!(answer.json()["error"]["code"], "projection_lagging");
    busy.write_all(HEALTHZ).await.unwrap();
    let answer = read_answer(&mut busy, "/healthz on the kept-alive connection").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_at_the_limit_hold_healthz_back_only_until_they_time_out() {
    // Proves: with connections_max = 2 and two idle connections open, a
    // third connection's /healthz is not served while both are open, and is
    // answered once one of them has been closed for idling.
    let idle_timeout = Duration::from_millis(500);
    let server = start(ConnectionLimits {
        idle_timeout,
        connections_max: 2,
        ..long()
    })
    .await;
    let first_sent = Instant::now();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let answer = read_answer(&mut stream, "/healthz on a held connection").await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        held.push(stream);
    }
    let mut third = connect(&server).await;
    third.write_all(HEALTHZ).await.unwrap();
    let answer = read_answer(&mut third, "/healthz past the connection limit").await;
    let answered = Instant::now();

    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        answered >= first_sent + idle_timeout,
        "/healthz was answered after {:?}, while both connections allowed were open",
        answered - first_sent
    );
    for stream in &mut held {
        closed(stream, "a held idle connection").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_shutdown_with_a_half_sent_request_in_flight_completes_within_the_shutdown_deadline() {
    // Proves: a request whose body stops halfway is waited for on shutdown
    // only until the shutdown deadline; then its connection is closed and
    // the server stops.
    let shutdown_timeout = Duration::from_millis(300);
    let server = start(ConnectionLimits {
        shutdown_timeout,
        ..long()
    })
    .await;
    let mut stream = connect(&server).await;
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Idempotency-Key: half-1\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 100 Continue comes once the handler reads the body: the request is
    // in flight.
    let answer = read_answer(&mut stream, "Expect: 100-continue").await;
    assert_eq!(answer.status, 100, "{}", answer.head);
    stream.write_all(b"{\"name\": ").await.unwrap();

    let stopping = Instant::now();
    tokio::time::timeout(DEADLINE, server.stop())
        .await
        .unwrap_or_else(|_| {
            panic!("the server did not stop within {DEADLINE:?} with a half-sent request")
        });
    assert!(
        Instant::now() >= stopping + shutdown_timeout,
        "the server stopped without waiting for the request in flight"
    );
    closed(&mut stream, "the half-sent request's connection").await;
}

#[tokio::test]
async fn every_request_carries_the_peer_address_as_connect_info() {
    // Proves: handlers read the client's address as ConnectInfo<SocketAddr>,
    // on each request of a kept-alive connection.
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(connections::serve(listener, app, long(), async move {
        let _ = stopped.await;
    }));
    let mut stream = TcpStream::connect(address).await.unwrap();
    let peer = stream.local_addr().unwrap().to_string();
    for _ in 0..2 {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: ledger\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut stream, "/peer").await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert_eq!(String::from_utf8_lossy(&answer.body), peer);
    }
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the server did not stop")
        .unwrap();
}
