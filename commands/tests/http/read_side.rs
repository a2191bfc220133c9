//! Reads with min_seq, projection lag, and a projection that fails and recovers.

use super::*;

/// Polls `condition` every 10 ms until it holds, failing after 30 s with
/// `what` it waited for.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_with_min_seq_answers_only_once_the_projection_passed_it() {
    // Proves: GET /v1/streams?min_seq=N that found the projection short of
    // N (its first look at the checkpoint is made to complete before the
    // projection applies N) waits, and answers with projection_seq N and the
    // stream written at N, applied after it looked; a read that did not wait
    // would answer projection_seq 0.
    let app = spawn_app_with(None, std::time::Duration::from_secs(60)).await;
    let written: Value = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seq = written["tenant_seq"].as_i64().unwrap();
    // Hold the checkpoints so the read's first look at them waits in line.
    let locker = app.db.database().connect_pool(1).await.unwrap();
    let lock = "LOCK TABLE projection_checkpoints IN ACCESS EXCLUSIVE MODE";
    let mut held = locker.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *held).await.unwrap();
    let request = app
        .client
        .get(format!("{}/v1/streams?min_seq={seq}", app.base))
        .bearer_auth(&app.api_key)
        .send();
    let pending = tokio::spawn(request);
    let pool = app.db.store().pool().clone();
    wait_until("the read to queue for the checkpoints", || {
        let pool = pool.clone();
        async move {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_locks \
                 WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND relation = 'projection_checkpoints'::regclass AND NOT granted",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting > 0
        }
    })
    .await;
    held.commit().await.unwrap();
    // Taking the lock again waits until the read's look (queued ahead) has
    // finished: it found checkpoint 0, as nothing has applied seq N yet.
    let mut again = locker.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *again).await.unwrap();
    again.commit().await.unwrap();
    locker.close().await;
    // Nothing applies the projection but this call, made after that look.
    projections::rebuild::catch_up_live(&pool, &projections::stream_index::StreamIndex)
        .await
        .unwrap();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["projection_seq"], seq);
    assert_eq!(page["streams"][0]["aggregate_id"], "c");
    assert_eq!(page["streams"][0]["last_tenant_seq"], seq);
    assert_eq!(page["next"], Value::Null);
}

#[tokio::test]
async fn a_lagging_min_seq_read_answers_503_after_the_bound_and_one_past_the_history_400() {
    // Proves: a min_seq the projection does not reach in time answers 503
    // projection_lagging with the projection's current seq, after the
    // bound; a min_seq past the tenant's last seq answers 400
    // min_seq_ahead at once, with the tenant's seq.
    let app = spawn_app_with(None, Duration::from_millis(300)).await;
    let added = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "first")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let response = app
        .client
        .get(format!("{}/v1/streams?min_seq=1", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let body = error_of(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "projection_lagging",
    )
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        body["error"]["details"],
        json!({"projection": "stream_index", "projection_seq": 0, "min_seq": 1})
    );
    let ahead = app
        .client
        .get(format!("{}/v1/streams?min_seq=1000", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(ahead, StatusCode::BAD_REQUEST, "min_seq_ahead").await["error"]["details"],
        json!({"min_seq": 1000, "tenant_seq": 1})
    );
    let bad = app
        .client
        .get(format!("{}/v1/streams?min_seq=abc", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert!(
        error_of(bad, StatusCode::BAD_REQUEST, "invalid_request").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min_seq")
    );
    let unknown = app
        .client
        .get(format!("{}/v1/streams?bogus=1", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert!(
        error_of(unknown, StatusCode::BAD_REQUEST, "invalid_request").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
}

#[tokio::test]
async fn projections_report_their_lag_to_the_admin_and_to_metrics() {
    // Proves: GET /v1/projections (admin only) and /metrics show checkpoint,
    // events behind and state, before and after the projection catches up;
    // /metrics as of the timer's latest refresh.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let (_stop_timer, timer_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(commands::http::metrics::run_projection_metrics(
        app.state.clone(),
        Duration::from_millis(20),
        timer_stopped,
    ));
    for index in 0..3 {
        app.add(&format!("c{index}"))
            .bearer_auth(&app.api_key)
            .header("idempotency-key", format!("k{index}"))
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
    }
    let status = |token: &'static str| {
        app.client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(token)
            .send()
    };
    error_of(
        status("wrong").await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let named = |list: &Value, name: &str| -> Value {
        list["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|projection| projection["name"] == name)
            .unwrap()
            .clone()
    };
    let before: Value = status(ADMIN_TOKEN).await.unwrap().json().await.unwrap();
    let names: Vec<&str> = before["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|projection| projection["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "accounts",
            "compensation",
            "escrow",
            "journal",
            "payments",
            "quota",
            "scheduled_work",
            "stream_index",
            "subscriptions"
        ]
    );
    let stream_index = &named(&before, "stream_index");
    assert_eq!(stream_index["name"], "stream_index");
    assert_eq!(stream_index["state"], "live");
    assert_eq!(stream_index["checkpoint"], 0);
    assert_eq!(stream_index["events_behind"], 3);
    assert!(stream_index["seconds_behind"].as_f64().unwrap() >= 0.0);
    let metrics = app.metrics_after_refresh().await;
    assert!(
        metrics.contains("ledger_projection_events_behind{projection=\"stream_index\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{metrics}"
    );

    projections::rebuild::catch_up_live(
        app.db.store().pool(),
        &projections::stream_index::StreamIndex,
    )
    .await
    .unwrap();
    let after: Value = status(ADMIN_TOKEN).await.unwrap().json().await.unwrap();
    let stream_index = named(&after, "stream_index");
    assert_eq!(stream_index["checkpoint"], 3);
    assert_eq!(stream_index["events_behind"], 0);
    assert_eq!(stream_index["seconds_behind"], 0.0);
    let metrics = app.metrics_after_refresh().await;
    assert!(
        metrics.contains("ledger_projection_checkpoint{projection=\"stream_index\"} 3"),
        "{metrics}"
    );
}

/// The stream index, refusing one tenant's event at one seq while armed.
struct FailingStreamIndex {
    failing: std::sync::Mutex<Option<(aggregates::TenantId, i64)>>,
}

#[async_trait::async_trait]
impl projections::Projection for FailingStreamIndex {
    fn name(&self) -> &'static str {
        projections::stream_index::StreamIndex.name()
    }
    fn version(&self) -> i32 {
        projections::stream_index::StreamIndex.version()
    }
    fn tables(&self) -> &'static [&'static str] {
        projections::stream_index::StreamIndex.tables()
    }
    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[&eventstore::StoredEvent],
    ) -> Result<(), projections::ApplyError> {
        let failing = *self.failing.lock().unwrap();
        if let Some((tenant_id, tenant_seq)) = failing {
            if events
                .iter()
                .any(|event| event.tenant_id == tenant_id && event.tenant_seq == tenant_seq)
            {
                return Err(projections::ApplyError::Event {
                    tenant_seq,
                    message: "injected failure".into(),
                });
            }
        }
        projections::stream_index::StreamIndex
            .apply(connection, events)
            .await
    }
}

#[tokio::test]
async fn a_projection_that_cannot_apply_an_event_shows_failed_until_it_recovers() {
    // Proves: when the workers' projection cannot apply one tenant's event,
    // GET /v1/projections (and /metrics) show it `failed` with an error
    // naming that tenant and seq, the other tenant's reads are served, the
    // failing tenant's answer 503; once the event applies, the workers
    // (retrying by themselves) bring it back to `live` with no error and
    // nothing behind. (The state is recorded by the worker loop, which has
    // no single step: the test waits for each state, with a deadline.)
    let failing = Arc::new(FailingStreamIndex {
        failing: std::sync::Mutex::new(None),
    });
    let app = spawn_app_serving(
        Some(ADMIN_TOKEN),
        std::time::Duration::from_millis(200),
        vec![failing.clone() as Arc<dyn projections::Projection>],
    )
    .await;
    let store = app.db.store().clone();
    let acme = store.authenticate(&app.api_key).await.unwrap().unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    *failing.failing.lock().unwrap() = Some((acme, 1));
    for api_key in [&app.api_key, &beta.api_key] {
        let added = app
            .add("c")
            .bearer_auth(api_key)
            .header("idempotency-key", "k")
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), StatusCode::OK);
    }
    let stream_index = || async {
        let list: Value = app
            .client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["projections"].as_array().unwrap().len(), 1, "{list}");
        list["projections"][0].clone()
    };
    // The timer's single step, then a scrape.
    let metrics = || async {
        commands::http::metrics::refresh_projection_metrics(&app.state).await;
        app.metrics().await
    };
    let streams = |api_key: String| {
        app.client
            .get(format!("{}/v1/streams?min_seq=1", app.base))
            .bearer_auth(api_key)
            .send()
    };

    let workers = projections::Workers::start_registered(
        &store,
        vec![failing.clone() as Arc<dyn projections::Projection>],
        Vec::new(),
    )
    .await
    .unwrap();
    wait_until("stream_index to show failed", || async {
        stream_index().await["state"] == "failed"
    })
    .await;
    // Both tenants were in the first batch: beta was applied, acme held back.
    let failed = stream_index().await;
    assert_eq!(
        failed["error"],
        format!("projection stream_index, tenant {acme}: event at tenant_seq 1: injected failure")
    );
    assert_eq!(
        (
            failed["checkpoint"].clone(),
            failed["events_behind"].clone()
        ),
        (json!(1), json!(1))
    );
    let text = metrics().await;
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"failed\"} 1"),
        "{text}"
    );
    assert_eq!(
        streams(beta.api_key.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let held_back = error_of(
        streams(app.api_key.clone()).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "projection_lagging",
    )
    .await;
    assert_eq!(held_back["error"]["details"]["projection_seq"], 0);

    *failing.failing.lock().unwrap() = None;
    wait_until("stream_index to recover to live", || async {
        stream_index().await["state"] == "live"
    })
    .await;
    let live = stream_index().await;
    assert_eq!(live["error"], Value::Null);
    assert_eq!(
        (live["checkpoint"].clone(), live["events_behind"].clone()),
        (json!(2), json!(0))
    );
    let text = metrics().await;
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{text}"
    );
    let page: Value = streams(app.api_key.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["streams"][0]["aggregate_id"], "c");
    workers.stop().await;
}
