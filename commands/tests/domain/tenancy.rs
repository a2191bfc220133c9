//! Tenant isolation: another tenant's grant, and row-level security on every read table.

use super::*;

#[tokio::test]
async fn another_tenants_grant_is_not_found() {
    // Proves: tenant B's key on tenant A's grant id answers 404 for reading
    // and for revoking, and A's grant is untouched.
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let beta = server.tenant("beta").await;
    let issued = acme
        .post(
            "/v1/grants",
            "g",
            json!({"quota": "credits", "amount": 10, "source": "promocode"}),
        )
        .await;
    let grant_id = issued.body["grant_id"].as_str().unwrap().to_string();
    let seq = issued.body["tenant_seq"].as_i64().unwrap();
    server.catch_up().await;
    let own = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(own["status"], "active");
    let read = beta.get(&format!("/v1/grants/{grant_id}")).await;
    read.assert_error(StatusCode::NOT_FOUND, "not_found");
    let revoke = beta
        .post(&format!("/v1/grants/{grant_id}/revoke"), "r", json!({}))
        .await;
    revoke.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(head_seq(&server, &beta).await, 0);
    let listed = beta.read("/v1/grants", 0).await;
    assert_eq!(listed["grants"], json!([]));
    let still = acme.read(&format!("/v1/grants/{grant_id}"), seq).await;
    assert_eq!(still["status"], "active");
    assert_eq!(still["balance"], 10);
    assert_trial_balance_is_zero(&acme, seq).await;
    // Beta has no entries: its trial balance is empty, and still checked.
    assert_trial_balance_is_zero(&beta, 0).await;
    server.stop().await;
}

/// The SQLSTATE of a database error (`None` for any other error).
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .map(|code| code.into_owned())
}

#[tokio::test]
async fn every_read_table_shows_a_tenant_only_its_own_rows_and_refuses_it_writes() {
    // Proves: every table of every projection in the catalog (a new one is
    // covered by itself) has row-level security enabled and forced; in a
    // tenant read (the API's reader role, here on a superuser connection) a
    // query with no tenant filter sees exactly that tenant's rows and none
    // of the other's; INSERT, UPDATE and DELETE are refused, SQLSTATE 42501.
    let server = TestServer::start().await;
    let tenants = [server.tenant("acme").await, server.tenant("beta").await];
    for (index, client) in tenants.iter().enumerate() {
        for (path, key, body) in [
            ("/v1/subscription", "sub", json!({"plan": "team_v4"})),
            (
                "/v1/grants",
                "grant",
                json!({"quota": "runs", "amount": 50 + index, "source": "purchase",
                       "account": "user-1"}),
            ),
            ("/v1/quota/credits/consume", "use", json!({"amount": 5})),
            (
                "/v1/quota/runs/consume",
                "use-user-1",
                json!({"amount": 3, "account": "user-1"}),
            ),
            ("/v1/quota/seats/allocate", "seat", json!({"amount": 2})),
            (
                "/v1/journal/accounts",
                "open-cash",
                json!({"code": "cash", "type": "asset"}),
            ),
            (
                "/v1/journal/accounts",
                "open-sales",
                json!({"code": "sales", "type": "revenue"}),
            ),
            (
                "/v1/journal/entries",
                "sale",
                json!({"lines": [
                    {"account": "cash", "asset": "USD/2", "side": "debit", "amount": 100 + index},
                    {"account": "sales", "asset": "USD/2", "side": "credit", "amount": 100 + index},
                ]}),
            ),
        ] {
            let answer = client.post(path, key, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
        // A payment captured by card, and a settlement batch with a break.
        let created = client
            .post(
                "/v1/payments",
                "payment",
                json!({"amount": 1_000 + index, "currency": "USD"}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let payment = created.body["payment_id"].as_str().unwrap();
        let tendered = client
            .post(
                &format!("/v1/payments/{payment}/tenders"),
                "tender",
                json!({"method": "card", "amount": 1_000 + index, "processor": "stripe",
                       "reference": "ch_1"}),
            )
            .await;
        assert_eq!(tendered.status, 201, "{}", tendered.body);
        let settled = client
            .post(
                "/v1/settlements",
                "batch",
                json!({"processor": "stripe", "batch_id": "b_1", "currency": "USD",
                       "settled_at": "2026-12-03T00:00:00Z", "lines": [
                           {"type": "capture", "reference": "ch_1", "gross": 1_000 + index,
                            "fee": 0, "net": 1_000 + index},
                           {"type": "capture", "reference": "ch_unknown", "gross": 5,
                            "fee": 0, "net": 5}]}),
            )
            .await;
        assert_eq!(settled.status, 201, "{}", settled.body);
        let payee = client
            .post(
                "/v1/payees",
                "payee",
                json!({"payee_id": "alice", "name": "Alice", "currency": "USD"}),
            )
            .await;
        assert_eq!(payee.status, 201, "{}", payee.body);
        // A commitment, through the pipeline.
        let commitment = commands::requests::escrow::CreateCommitment {
            commitment_id: aggregates::ids::CommitmentId::from_uuid(uuid::Uuid::from_u128(9)),
            terms: aggregates::escrow::CommitmentTerms {
                payer: "buyer-1".into(),
                payee: "seller-9".into(),
                asset: aggregates::Asset::new("USD", 2).unwrap(),
                allocation: aggregates::escrow::Allocation::Fifo,
                milestones: vec![aggregates::escrow::MilestoneTerms {
                    milestone_id: "m1".into(),
                    amount: aggregates::Amount::new(1_000 + index as i64).unwrap(),
                    due_at: None,
                    inspection_seconds: 3_600,
                    on_timeout: aggregates::escrow::Direction::Release,
                }],
                expires_at: None,
            },
        };
        let created = server
            .bus(commands::Clock::system())
            .execute(
                client.tenant_id.parse().unwrap(),
                eventstore::IdempotencyKey::parse("commitment").unwrap(),
                commitment,
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
    }
    server.catch_up().await;
    let pool = server.db.store().pool();
    let mut checked = Vec::new();
    for projection in commands::domains::projections() {
        for table in projection.tables() {
            let (enabled, forced): (bool, bool) = sqlx::query_as(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            )
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(
                (enabled, forced),
                (true, true),
                "row-level security of {table}"
            );
            for client in &tenants {
                let tenant = uuid::Uuid::parse_str(&client.tenant_id).unwrap();
                let tenant_id = aggregates::TenantId::from_uuid(tenant);
                let (own,): (i64,) = sqlx::query_as(&format!(
                    "SELECT count(*) FROM {table} WHERE tenant_id = $1"
                ))
                .bind(tenant)
                .fetch_one(pool)
                .await
                .unwrap();
                assert!(
                    own > 0,
                    "{table} has no row of tenant {tenant}: give every read table rows of \
                     both tenants, or this test proves nothing of it"
                );
                let mut read = projections::read::begin_tenant_read(pool, tenant_id)
                    .await
                    .unwrap();
                let (seen, others): (i64, i64) = sqlx::query_as(&format!(
                    "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM {table}"
                ))
                .bind(tenant)
                .fetch_one(&mut *read)
                .await
                .unwrap();
                read.rollback().await.unwrap();
                assert_eq!((seen, others), (own, 0), "{table} read as tenant {tenant}");
                for statement in [
                    format!("INSERT INTO {table} SELECT * FROM {table}"),
                    format!("UPDATE {table} SET tenant_id = tenant_id"),
                    format!("DELETE FROM {table}"),
                ] {
                    let mut write = projections::read::begin_tenant_read(pool, tenant_id)
                        .await
                        .unwrap();
                    let error = sqlx::query(&statement)
                        .execute(&mut *write)
                        .await
                        .expect_err(&statement);
                    assert_eq!(
                        sqlstate(&error).as_deref(),
                        Some("42501"),
                        "{statement} as tenant {tenant}: {error}"
                    );
                }
            }
            checked.push(*table);
        }
    }
    assert!(checked.contains(&"stream_index"), "{checked:?}");
    assert!(
        checked.len() >= commands::domains::projections().len(),
        "{checked:?}"
    );
    server.stop().await;
}
