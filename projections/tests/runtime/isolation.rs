//! Row-level security: a tenant's reads see only its rows, on superuser and ordinary connections.

use super::*;

/// The SQLSTATE of a database error (`None` for any other error).
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .map(|code| code.into_owned())
}

/// Reads through `pool` as tenants `a` (3 streams) and `b` (5 streams) and
/// asserts each read sees only its own rows and cannot write.
async fn assert_tenant_reads_are_isolated(pool: &sqlx::PgPool, a: TenantId, b: TenantId) {
    for (tenant_id, streams) in [(a, 3i64), (b, 5)] {
        let mut transaction = projections::read::begin_tenant_read(pool, tenant_id)
            .await
            .unwrap();
        let rows: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT tenant_id FROM stream_index")
            .fetch_all(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(rows.len() as i64, streams);
        assert!(rows
            .iter()
            .all(|(row_tenant,)| *row_tenant == tenant_id.as_uuid()));
        let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(events, streams * 10);
        let denied =
            sqlx::query("INSERT INTO stream_index VALUES ($1, 'x', 'y', 1, 1, now(), now())")
                .bind(tenant_id.as_uuid())
                .execute(&mut *transaction)
                .await
                .expect_err("the reader role must not write");
        assert_eq!(
            sqlstate(&denied).as_deref(),
            Some("42501"),
            "not a privilege refusal: {denied}"
        );
    }
}

#[tokio::test]
async fn a_tenant_read_sees_only_that_tenants_rows_on_superuser_and_ordinary_connections() {
    // Proves: with app.tenant_id set to A, a query with no tenant filter
    // returns no row of B, both when the pool connects as a superuser and
    // when it connects as an ordinary login role (member of the reader role,
    // as the ledger's own role would be).
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (a, b) = (tenant(&store).await, tenant(&store).await);
    append(&store, a, 0, 30, 3, 30).await;
    append(&store, b, 0, 50, 5, 50).await;
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    let (superuser,): (bool,) =
        sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        superuser,
        "this test proves isolation on a superuser connection"
    );
    assert_eq!(count(&store, "stream_index").await, 8);
    assert_tenant_reads_are_isolated(store.pool(), a, b).await;

    // An ordinary login role, unique to this test (roles are cluster-wide).
    let role = format!("ledger_test_login_{}", uuid::Uuid::now_v7().simple());
    for statement in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT ledger_reader TO {role}"),
    ] {
        sqlx::query(&statement).execute(store.pool()).await.unwrap();
    }
    let ordinary = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options().username(&role))
        .await
        .unwrap();
    let (ordinary_superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&ordinary)
            .await
            .unwrap();
    assert_eq!((ordinary_superuser, bypass), (false, false));
    assert_tenant_reads_are_isolated(&ordinary, a, b).await;
    ordinary.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(store.pool())
        .await
        .unwrap();
}
