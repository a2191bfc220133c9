//! Failed authentications from one address: counted, logged, answered 429.

use super::*;

/// Log lines of the tests running on this thread: a test's server runs on
/// its current-thread runtime, so its log lines are written on its thread.
/// One subscriber for the whole binary (a default set per thread would let
/// a log statement first reached by another test be cached as disabled).
struct CapturedLog;

thread_local! {
    static THREAD_LOG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes into the log of the thread it runs on.
struct ThreadLogWriter;

impl std::io::Write for ThreadLogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        THREAD_LOG.with(|log| log.borrow_mut().extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Starts capturing this thread's warnings (from an empty log).
    fn start() -> Self {
        static SUBSCRIBER: std::sync::Once = std::sync::Once::new();
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_writer(|| ThreadLogWriter)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        THREAD_LOG.with(|log| log.borrow_mut().clear());
        Self
    }

    fn text(&self) -> String {
        THREAD_LOG.with(|log| String::from_utf8(log.borrow().clone()).unwrap())
    }
}

#[tokio::test]
async fn repeated_failed_authentications_from_one_address_are_answered_429_until_the_window_ends() {
    // Proves: every failed authentication (API key or admin token) is logged
    // with the client address and the reason, never the key or token; after
    // FAILED_AUTH_LIMIT failures with API keys within FAILED_AUTH_WINDOW the
    // address is answered 429 too_many_requests with Retry-After for every
    // key it has not verified lately (even a valid one), without asking the
    // database (its keys table locked), until the window ends; a key the
    // server verified lately still passes; failures with keys never lock
    // the admin token out (tokens are throttled apart), while
    // FAILED_AUTH_LIMIT failures with tokens refuse every token, the right
    // one too (the answer must not tell a guesser it was right); another
    // address is not held back.
    use commands::http::auth::{FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW};
    let log = CapturedLog::start();
    let clock = TestInstant::new();
    let app = spawn_app_options(AppOptions {
        admin_token: Some(ADMIN_TOKEN),
        auth_clock: Some(clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let wrong_key = format!("{}{}", &app.api_key[..app.api_key.len() - 8], "0badf00d");
    let wrong_token = "not-the-admin-token-4711";
    let known = app.db.store().create_tenant("known").await.unwrap().api_key;
    let used = app
        .add("c")
        .bearer_auth(&known)
        .header("idempotency-key", "known-1")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), StatusCode::OK);
    for attempt in 0..FAILED_AUTH_LIMIT {
        let request = match attempt % 2 {
            0 => app.add("c").bearer_auth(&wrong_key),
            _ => app.add("c"),
        };
        let response = request
            .header("idempotency-key", format!("k{attempt}"))
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    // A wrong admin token counts apart: 401, not 429.
    let wrong_admin = app
        .client
        .get(format!("{}/v1/projections", app.base))
        .bearer_auth(wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_admin.status(), StatusCode::UNAUTHORIZED);
    let text = log.text();
    assert_eq!(text.matches("authentication failed").count(), 21, "{text}");
    assert!(text.contains("client=127.0.0.1"), "{text}");
    assert!(
        text.contains(&format!(
            "reason=unknown API key tenant={}",
            tenant_of(&app.api_key)
        )),
        "{text}"
    );
    assert!(
        text.contains("reason=missing Authorization: Bearer <api key>"),
        "{text}"
    );
    assert!(
        text.contains("reason=this route needs the admin token"),
        "{text}"
    );
    assert!(text.contains("too many failed authentications"), "{text}");
    assert!(
        !text.contains("0badf00d") && !text.contains(&wrong_key[36..]),
        "a key was logged"
    );
    assert!(!text.contains(wrong_token), "a token was logged");

    // A lookup would now wait for the lock; a throttled request asks nothing.
    let mut lock = app.db.store().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let throttled = tokio::time::timeout(
        Duration::from_secs(10),
        app.add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", "valid-1")
            .json(&json!({"amount": 1}))
            .send(),
    )
    .await
    .expect("a throttled request waited for the database")
    .unwrap();
    assert_eq!(throttled.headers()["retry-after"], "60");
    let body = error_of(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
    )
    .await;
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert_eq!(body["error"]["details"], json!({"retry_after_s": 60}));
    // The keys' failures do not lock the operator out.
    let projections = |token: &str| {
        app.client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(token)
            .send()
    };
    let admin = tokio::time::timeout(Duration::from_secs(10), projections(ADMIN_TOKEN))
        .await
        .expect("an admin request waited")
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    // A token guesser is throttled on its own count; then the right token
    // is refused too, so the answer never tells it was right.
    for _ in 1..FAILED_AUTH_LIMIT {
        let wrong = projections(wrong_token).await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    for token in [wrong_token, ADMIN_TOKEN] {
        let refused = projections(token).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let known_again = tokio::time::timeout(
        Duration::from_secs(10),
        app.add("c")
            .bearer_auth(&known)
            .header("idempotency-key", "known-2")
            .json(&json!({"amount": 1}))
            .send(),
    )
    .await
    .expect("a key verified lately waited for the database")
    .unwrap();
    assert_eq!(known_again.status(), StatusCode::OK);
    lock.rollback().await.unwrap();

    clock.advance(FAILED_AUTH_WINDOW - Duration::from_secs(1));
    let late = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "valid-2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(late.headers()["retry-after"], "1");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap()
        .post(format!("{}/v1/test/counters/c/add", app.base))
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "elsewhere-1")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        StatusCode::OK,
        "another address is not throttled"
    );

    clock.advance(Duration::from_secs(1));
    assert_eq!(app.add_with(&app.api_key, "valid-3").await, StatusCode::OK);
    assert_eq!(
        app.add_with(&wrong_key, "wrong-again").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.add_with(&app.api_key, "valid-4").await,
        StatusCode::OK,
        "a new window"
    );
}

#[tokio::test]
async fn without_the_client_address_failures_are_logged_but_not_throttled() {
    // Proves: a router served without connection info (as one driven in
    // process) throttles no one: twice FAILED_AUTH_LIMIT failures all answer
    // 401, each logged with client=unknown, and the valid key still works.
    use commands::http::auth::FAILED_AUTH_LIMIT;
    let log = CapturedLog::start();
    let app = spawn_app_options(AppOptions {
        no_client_address: true,
        ..AppOptions::default()
    })
    .await;
    let wrong_key = format!("{}{}", &app.api_key[..app.api_key.len() - 8], "0badf00d");
    for attempt in 0..2 * FAILED_AUTH_LIMIT {
        let status = app.add_with(&wrong_key, &format!("k{attempt}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    assert_eq!(app.add_with(&app.api_key, "valid").await, StatusCode::OK);
    let text = log.text();
    assert_eq!(text.matches("authentication failed").count(), 40, "{text}");
    assert_eq!(text.matches("client=unknown").count(), 40, "{text}");
}
