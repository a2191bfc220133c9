//! The journal's own commands over HTTP: accounts opened once with their
//! flags, entries posted and reversed once, holds resolved once, asset
//! scales, and a no-overdraft account held across entries and holds under
//! concurrent requests.

use super::*;

/// Opens `code` as `type` with `flags` for `client`, under `key`.
async fn open(
    client: &Client,
    key: &str,
    code: &str,
    account_type: &str,
    flags: Value,
) -> support::app::Answer {
    client
        .post(
            "/v1/journal/accounts",
            key,
            json!({"code": code, "type": account_type, "flags": flags}),
        )
        .await
}

/// `cash` (an asset) and `held` (a liability that may not go below zero).
async fn accounts(client: &Client) {
    let cash = open(client, "open-cash", "cash", "asset", json!({})).await;
    assert_eq!(cash.status, StatusCode::CREATED, "{}", cash.body);
    let held = open(
        client,
        "open-held",
        "held",
        "liability",
        json!({"debits_must_not_exceed_credits": true}),
    )
    .await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.body);
}

/// An entry moving `amount` USD/2 from `from` (debited) to `to` (credited).
fn transfer(from: &str, to: &str, amount: i64) -> Value {
    json!({"lines": [
        {"account": from, "asset": "USD/2", "side": "debit", "amount": amount},
        {"account": to, "asset": "USD/2", "side": "credit", "amount": amount},
    ]})
}

#[tokio::test]
async fn an_account_opens_once_with_its_type_and_flags() {
    // Proves: opening an account answers 201 with its type and flags;
    // again as the same, 200 and nothing new; as anything else, 422
    // account_opened_otherwise; posting to an account never opened, 404.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    let again = open(
        &acme,
        "open-held-again",
        "held",
        "liability",
        json!({"debits_must_not_exceed_credits": true}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["opened_now"], false);
    assert_eq!(again.body["events"], json!([]));
    let otherwise = open(&acme, "open-held-plain", "held", "liability", json!({})).await;
    otherwise.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_opened_otherwise");
    // The quota domain's own accounts are not the journal's to open.
    let reserved = open(
        &acme,
        "open-grant",
        "quota_consumed:credits",
        "revenue",
        json!({}),
    )
    .await;
    reserved.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_code_reserved");
    let unopened = acme
        .post(
            "/v1/journal/entries",
            "nowhere",
            transfer("cash", "nowhere", 5),
        )
        .await;
    unopened.assert_error(StatusCode::NOT_FOUND, "account_not_opened");
    server.stop().await;
}

#[tokio::test]
async fn entries_post_balanced_within_flags_and_reverse_once() {
    // Proves: an entry posts to opened accounts (its id derived from the
    // key), the journal projection reads it like any domain's; an
    // unbalanced entry is 422 unbalanced_entry; one that would take a
    // no-overdraft account below zero is 422 debits_exceed_credits with
    // what was available; a reversal is the exact mirror, once.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    let deposit = acme
        .post(
            "/v1/journal/entries",
            "deposit",
            transfer("cash", "held", 500),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{}", deposit.body);
    assert_eq!(deposit.body["lines"][1]["account"], "held");
    assert_eq!(deposit.body["reverses"], Value::Null);
    let entry_id = deposit.body["entry_id"].as_str().unwrap().to_string();
    let replayed = acme
        .post(
            "/v1/journal/entries",
            "deposit",
            transfer("cash", "held", 500),
        )
        .await;
    assert!(replayed.replayed);
    assert_eq!(replayed.body["entry_id"], entry_id.as_str());

    let unbalanced = acme
        .post(
            "/v1/journal/entries",
            "unbalanced",
            json!({"lines": [
                {"account": "cash", "asset": "USD/2", "side": "debit", "amount": 5},
                {"account": "held", "asset": "USD/2", "side": "credit", "amount": 4},
            ]}),
        )
        .await;
    let error = unbalanced.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unbalanced_entry");
    assert_eq!(
        error["details"],
        json!({"asset": "USD/2", "debits": 5, "credits": 4})
    );
    let overdraw = acme
        .post(
            "/v1/journal/entries",
            "overdraw",
            transfer("held", "cash", 501),
        )
        .await;
    let error = overdraw.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "debits_exceed_credits");
    assert_eq!(
        error["details"],
        json!({"asset": "USD/2", "available": "500"})
    );

    let reversal = acme
        .post(
            &format!("/v1/journal/entries/{entry_id}/reverse"),
            "reverse",
            json!({"reference": "refund-1"}),
        )
        .await;
    assert_eq!(reversal.status, StatusCode::CREATED, "{}", reversal.body);
    assert_eq!(reversal.body["reverses"], entry_id.as_str());
    // The exact mirror, line by line.
    assert_eq!(
        reversal.body["lines"],
        json!([
            {"account": "cash", "asset": "USD/2", "side": "credit", "amount": 500},
            {"account": "held", "asset": "USD/2", "side": "debit", "amount": 500},
        ])
    );
    let twice = acme
        .post(
            &format!("/v1/journal/entries/{entry_id}/reverse"),
            "reverse-again",
            json!({}),
        )
        .await;
    let error = twice.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "entry_already_reversed");
    assert_eq!(error["details"]["reversed_by"], reversal.body["entry_id"]);
    let unknown = acme
        .post(
            &format!("/v1/journal/entries/{}/reverse", uuid::Uuid::nil()),
            "reverse-nothing",
            json!({}),
        )
        .await;
    unknown.assert_error(StatusCode::NOT_FOUND, "not_found");

    server.catch_up().await;
    let balances = assert_trial_balance_is_zero(&acme, seq_of(&reversal.body)).await;
    let held = balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["account"] == "held")
        .unwrap_or_else(|| panic!("no held account in {balances}"));
    assert_eq!(
        (&held["debits"], &held["credits"], &held["type"]),
        (&json!("500"), &json!("500"), &json!("liability"))
    );
    server.stop().await;
}

#[tokio::test]
async fn an_asset_code_keeps_one_scale_in_a_tenant() {
    // Proves: PTS/2 then PTS/3 in one tenant: the second is refused with
    // asset_scale_mismatch naming both; another tenant may use PTS/3. A
    // currency is taken at its ISO 4217 minor unit only (since rules 7), in
    // entries and holds, even as its first use in a tenant: USD/3 would
    // fix a scale every payment, commitment and payee in USD is refused
    // at. Under rules 6 the journal took it.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    let at = |asset: &str| {
        let mut entry = transfer("cash", "held", 5);
        entry["lines"][0]["asset"] = json!(asset);
        entry["lines"][1]["asset"] = json!(asset);
        entry
    };
    let two = acme.post("/v1/journal/entries", "two", at("PTS/2")).await;
    assert_eq!(two.status, StatusCode::CREATED, "{}", two.body);
    let refused = acme.post("/v1/journal/entries", "three", at("PTS/3")).await;
    let error = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "asset_scale_mismatch");
    assert_eq!(
        error["details"],
        json!({"code": "PTS", "scale": 2, "asked": "PTS/3"})
    );
    // The quota units keep scale 0 in every tenant.
    let refused = acme
        .post("/v1/journal/entries", "credits", at("CREDITS/2"))
        .await;
    let error = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "asset_scale_mismatch");
    assert_eq!(
        error["details"],
        json!({"code": "CREDITS", "scale": 0, "asked": "CREDITS/2"})
    );
    let beta = server.tenant("beta").await;
    accounts(&beta).await;
    let elsewhere = beta.post("/v1/journal/entries", "three", at("PTS/3")).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.body);
    // Currencies, first use or not.
    for (key, asset, scale) in [("usd-3", "USD/3", 2), ("jpy-2", "JPY/2", 0)] {
        let refused = beta.post("/v1/journal/entries", key, at(asset)).await;
        let error = refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "asset_scale_mismatch");
        let code = &asset[..3];
        assert_eq!(
            error["details"],
            json!({"code": code, "scale": scale, "asked": asset})
        );
        assert_eq!(
            error["message"],
            format!("{code} is a currency of scale {scale} (ISO 4217 minor unit), as every domain posts it; {asset} is refused")
        );
    }
    let hold = json!({"debit": "held", "credit": "cash", "asset": "USD/3", "amount": 1});
    beta.post("/v1/journal/holds", "hold-usd-3", hold)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "asset_scale_mismatch");
    let usd = beta.post("/v1/journal/entries", "usd-2", at("USD/2")).await;
    assert_eq!(usd.status, StatusCode::CREATED, "{}", usd.body);
    // Rules 6 took a currency at any scale.
    let gamma = server.tenant("gamma").await;
    accounts(&gamma).await;
    let older = server.bus_under(aggregates::rules::Rules::SIXTH, commands::Clock::default());
    let lines = serde_json::from_value(at("USD/3")["lines"].clone()).unwrap();
    let taken = older
        .execute(
            gamma.tenant_id.parse().unwrap(),
            eventstore::IdempotencyKey::parse("usd-3-old").unwrap(),
            commands::requests::journal::PostEntry {
                entry_id: aggregates::EntryId::from_uuid(uuid::Uuid::from_u128(93)),
                lines,
                effective_at: None,
                reference: None,
            },
        )
        .await
        .unwrap();
    assert!(taken.accepted(), "{}", taken.body);
    server.stop().await;
}

#[tokio::test]
async fn a_hold_reserves_at_once_and_resolves_once() {
    // Proves: a hold's amount counts against the no-overdraft flag at once;
    // it posts in part (the rest released) once; a void releases it all;
    // it expires at its time and not before; every late action answers its
    // own error.
    let clock = TestClock::at(Utc::now());
    let server = TestServer::start_with(Options {
        clock: Some(clock.clock()),
        ..Options::default()
    })
    .await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    acme.post(
        "/v1/journal/entries",
        "deposit",
        transfer("cash", "held", 500),
    )
    .await;
    let expires_at = (clock.now() + Duration::hours(1)).to_rfc3339();
    let hold = |key: &'static str, amount: i64| {
        let body = json!({"debit": "held", "credit": "cash", "asset": "USD/2",
                          "amount": amount, "expires_at": expires_at});
        let acme = &acme;
        async move { acme.post("/v1/journal/holds", key, body).await }
    };
    let big = hold("big", 450).await;
    assert_eq!(big.status, StatusCode::CREATED, "{}", big.body);
    assert_eq!(big.body["status"], "pending");
    let spend = acme
        .post("/v1/journal/entries", "spend", transfer("held", "cash", 51))
        .await;
    let error = spend.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "debits_exceed_credits");
    assert_eq!(error["details"]["available"], "50");

    let big_id = big.body["hold_id"].as_str().unwrap().to_string();
    let path = |id: &str, action: &str| format!("/v1/journal/holds/{id}/{action}");
    let posted = acme
        .post(&path(&big_id, "post"), "post-big", json!({"amount": 300}))
        .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
    // The balances show what the hold reserved while it was open, and what
    // it posted after: as of the hold, now, and before it.
    server.catch_up().await;
    let held_at = |seq: i64| {
        let acme = &acme;
        async move {
            let balances = acme
                .read(&format!("/v1/journal/balances?as_of={seq}"), seq)
                .await;
            let held = balance_of(&balances, "held");
            [
                "debits",
                "credits",
                "debits_pending",
                "credits_pending",
                "available",
            ]
            .map(|field| held[field].as_str().unwrap().to_string())
        }
    };
    let placed_seq = seq_of(&big.body);
    assert_eq!(held_at(placed_seq).await, ["0", "500", "450", "0", "50"]);
    let before_hold = placed_seq - big.body["events"].as_array().unwrap().len() as i64;
    assert_eq!(held_at(before_hold).await, ["0", "500", "0", "0", "500"]);
    // A seq inside the post's request (its accounts settled, its entry not
    // yet recorded) is taken back to the end of the request before it: the
    // hold shows whole, pending, never neither pending nor posted.
    let post_events = posted.body["events"].as_array().unwrap().len() as i64;
    assert_eq!(post_events, 4, "{}", posted.body);
    let inside = seq_of(&posted.body) - post_events + 3;
    let balances = acme
        .read(&format!("/v1/journal/balances?as_of={inside}"), inside)
        .await;
    assert_eq!(balances["as_of_seq"], placed_seq, "{balances}");
    assert_eq!(held_at(inside).await, ["0", "500", "450", "0", "50"]);
    let now = balance_of(
        &acme
            .read("/v1/journal/balances", seq_of(&posted.body))
            .await,
        "held",
    );
    assert_eq!(
        (&now["debits"], &now["debits_pending"], &now["available"]),
        (&json!("300"), &json!("0"), &json!("200"))
    );
    let cash = balance_of(
        &acme
            .read("/v1/journal/balances", seq_of(&posted.body))
            .await,
        "cash",
    );
    assert_eq!(
        (&cash["credits_pending"], &cash["available"]),
        (&json!("0"), &json!("200"))
    );
    assert_eq!(
        (
            &posted.body["status"],
            &posted.body["posted"],
            &posted.body["released"]
        ),
        (&json!("posted"), &json!(300), &json!(150))
    );
    for (action, key) in [
        ("post", "post-big-again"),
        ("void", "void-big"),
        ("expire", "expire-big"),
    ] {
        let late = acme.post(&path(&big_id, action), key, json!({})).await;
        late.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_already_posted");
    }
    // 500 credited, 300 posted: 200 left for the next holds.
    let voided = hold("voided", 150).await;
    let voided_id = voided.body["hold_id"].as_str().unwrap().to_string();
    let void = acme
        .post(&path(&voided_id, "void"), "void", json!({}))
        .await;
    assert_eq!(void.status, StatusCode::OK, "{}", void.body);
    assert_eq!(void.body["released"], 150);
    let late = acme
        .post(&path(&voided_id, "post"), "post-voided", json!({}))
        .await;
    late.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_already_voided");

    let lapsing = hold("lapsing", 200).await;
    let lapsing_id = lapsing.body["hold_id"].as_str().unwrap().to_string();
    let early = acme
        .post(&path(&lapsing_id, "expire"), "expire-early", json!({}))
        .await;
    early.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_not_expired");
    clock.set(clock.now() + Duration::hours(2));
    let too_late = acme
        .post(&path(&lapsing_id, "post"), "post-lapsed", json!({}))
        .await;
    too_late.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_expired");
    let expired = acme
        .post(&path(&lapsing_id, "expire"), "expire", json!({}))
        .await;
    assert_eq!(expired.status, StatusCode::OK, "{}", expired.body);
    assert_eq!(expired.body["status"], "expired");
    let again = acme
        .post(&path(&lapsing_id, "expire"), "expire-again", json!({}))
        .await;
    again.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_expired");
    // Released: the 200 left can be spent.
    let spend = acme
        .post(
            "/v1/journal/entries",
            "spend-rest",
            transfer("held", "cash", 200),
        )
        .await;
    assert_eq!(spend.status, StatusCode::CREATED, "{}", spend.body);
    let unknown = acme
        .post(
            &path(&uuid::Uuid::nil().to_string(), "void"),
            "void-nothing",
            json!({}),
        )
        .await;
    unknown.assert_error(StatusCode::NOT_FOUND, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn a_no_overdraft_account_holds_across_entries_and_holds_under_concurrency() {
    // Proves: 32 concurrent requests of two aggregate kinds (16 entries and
    // 16 holds, each taking 1 from a no-overdraft account credited with 10)
    // never take it below zero: exactly 10 are accepted, every other one is
    // 422 debits_exceed_credits, and what was posted and reserved is 10.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    let funded = acme
        .post("/v1/journal/entries", "fund", transfer("cash", "held", 10))
        .await;
    assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
    let acme = std::sync::Arc::new(acme);
    let mut requests = Vec::new();
    for n in 0..32 {
        let acme = acme.clone();
        requests.push(tokio::spawn(async move {
            let key = format!("take-{n}");
            let answer = if n % 2 == 0 {
                acme.post("/v1/journal/entries", &key, transfer("held", "cash", 1))
                    .await
            } else {
                let hold =
                    json!({"debit": "held", "credit": "cash", "asset": "USD/2", "amount": 1});
                acme.post("/v1/journal/holds", &key, hold).await
            };
            (n % 2 == 0, answer)
        }));
    }
    let (mut entries, mut holds, mut last_seq) = (0, 0, seq_of(&funded.body));
    for request in requests {
        let (entry, answer) = request.await.unwrap();
        if answer.status == StatusCode::CREATED {
            last_seq = last_seq.max(seq_of(&answer.body));
            if entry {
                entries += 1;
            } else {
                holds += 1;
            }
        } else {
            answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "debits_exceed_credits");
        }
    }
    assert_eq!(entries + holds, 10, "{entries} entries and {holds} holds");
    server.catch_up().await;
    let balances = acme.read("/v1/journal/balances", last_seq).await;
    let held = balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["account"] == "held")
        .unwrap()
        .clone();
    assert_eq!(
        (&held["debits"], &held["credits"]),
        (&json!(entries.to_string()), &json!("10"))
    );
    server.stop().await;
}

#[tokio::test]
async fn one_account_reads_posted_pending_and_available_with_its_entries() {
    // Proves: GET /v1/journal/accounts/{code} answers the account's type
    // and flags, per asset what is posted and pending (a hold's reservation
    // until it resolves) and what is available, and the entries posting to
    // it, paged; an account never opened is 404.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    for (key, amount) in [("one", 500), ("two", 20)] {
        acme.post("/v1/journal/entries", key, transfer("cash", "held", amount))
            .await;
    }
    let hold = acme
        .post(
            "/v1/journal/holds",
            "hold",
            json!({"debit": "held", "credit": "cash", "asset": "USD/2", "amount": 120}),
        )
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
    server.catch_up().await;
    let held = acme
        .read("/v1/journal/accounts/held?limit=1", seq_of(&hold.body))
        .await;
    assert_eq!(
        (&held["type"], &held["debits_must_not_exceed_credits"]),
        (&json!("liability"), &json!(true))
    );
    assert_eq!(
        held["balances"],
        json!([{"asset": "USD/2", "debits_posted": "0", "credits_posted": "520",
                "debits_pending": "120", "credits_pending": "0", "available": "400"}])
    );
    assert_eq!(held["entries"].as_array().unwrap().len(), 1);
    let next = held["next_after_seq"].as_i64().unwrap();
    let rest = acme
        .read(
            &format!("/v1/journal/accounts/held?after_seq={next}"),
            seq_of(&hold.body),
        )
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_after_seq"], Value::Null);

    let hold_id = hold.body["hold_id"].as_str().unwrap();
    let posted = acme
        .post(
            &format!("/v1/journal/holds/{hold_id}/post"),
            "post",
            json!({"amount": 100}),
        )
        .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
    server.catch_up().await;
    let held = acme
        .read("/v1/journal/accounts/held", seq_of(&posted.body))
        .await;
    assert_eq!(
        held["balances"],
        json!([{"asset": "USD/2", "debits_posted": "100", "credits_posted": "520",
                "debits_pending": "0", "credits_pending": "0", "available": "420"}])
    );
    assert_eq!(held["entries"].as_array().unwrap().len(), 3);
    let cash = acme
        .read("/v1/journal/accounts/cash", seq_of(&posted.body))
        .await;
    assert_eq!(cash["balances"][0]["available"], "420");
    let never = acme.get("/v1/journal/accounts/nowhere").await;
    never.assert_error(StatusCode::NOT_FOUND, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn an_account_takes_more_than_i64_max_in_all() {
    // Proves: an ETH/18 account passes i64::MAX wei in all (about 9.22
    // ETH): three entries of 4 ETH each are accepted, a fourth moves 4 ETH
    // back out of the no-overdraft account, and the account reads every
    // wei.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    accounts(&acme).await;
    let eth = |from: &str, to: &str| {
        json!({"lines": [
            {"account": from, "asset": "ETH/18", "side": "debit", "amount": 4_000_000_000_000_000_000_i64},
            {"account": to, "asset": "ETH/18", "side": "credit", "amount": 4_000_000_000_000_000_000_i64},
        ]})
    };
    for key in ["eth-1", "eth-2", "eth-3"] {
        let posted = acme
            .post("/v1/journal/entries", key, eth("cash", "held"))
            .await;
        assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
    }
    let back = acme
        .post("/v1/journal/entries", "eth-back", eth("held", "cash"))
        .await;
    assert_eq!(back.status, StatusCode::CREATED, "{}", back.body);
    server.catch_up().await;
    let held = acme
        .read("/v1/journal/accounts/held", seq_of(&back.body))
        .await;
    assert_eq!(
        held["balances"],
        json!([{"asset": "ETH/18", "debits_posted": "4000000000000000000",
                "credits_posted": "12000000000000000000",
                "debits_pending": "0", "credits_pending": "0",
                "available": "8000000000000000000"}])
    );
    assert_trial_balance_is_zero(&acme, seq_of(&back.body)).await;
}
