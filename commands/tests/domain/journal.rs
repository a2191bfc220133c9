//! Journal entries and grants, paged in order and filtered by quota.

use super::*;

#[tokio::test]
async fn journal_entries_and_grants_page_in_order_and_filter_by_quota() {
    // Proves: /v1/journal/entries pages by tenant_seq (`next_after_seq` is
    // the last seq of a full page, null on the last page) and /v1/grants
    // filters by quota and pages in issue order through `next` (not by
    // `effective_at`: the later grants are backdated further).
    let server = TestServer::start().await;
    let acme = server.tenant("acme").await;
    let mut grants = Vec::new();
    let mut seq = 0;
    for (index, (quota, amount, effective_at)) in [
        ("credits", 10, None),
        ("runs", 20, None),
        ("credits", 30, Some("2001-01-01T00:00:00Z")),
        ("credits", 40, Some("2000-01-01T00:00:00Z")),
    ]
    .into_iter()
    .enumerate()
    {
        let issued = acme
            .post(
                "/v1/grants",
                &format!("g{index}"),
                json!({"quota": quota, "amount": amount, "source": "purchase",
                       "effective_at": effective_at}),
            )
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
        seq = seq_of(&issued.body);
        grants.push((quota, issued.body["grant_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seq, 4);
    server.catch_up().await;

    let seqs = |page: &Value| -> Vec<i64> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["tenant_seq"].as_i64().unwrap())
            .collect()
    };
    let first = acme.read("/v1/journal/entries?limit=3", seq).await;
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(first["next_after_seq"], 3);
    let second = acme
        .read("/v1/journal/entries?limit=3&after_seq=3", seq)
        .await;
    assert_eq!(seqs(&second), [4]);
    assert_eq!(second["next_after_seq"], Value::Null);
    assert_eq!(second["entries"][0]["event_type"], "GrantIssued");
    let too_few = acme.get("/v1/journal/entries?limit=0").await;
    too_few.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let ids = |page: &Value| -> Vec<String> {
        page["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grant| grant["grant_id"].as_str().unwrap().to_string())
            .collect()
    };
    let credits: Vec<String> = grants
        .iter()
        .filter(|(quota, _)| *quota == "credits")
        .map(|(_, id)| id.clone())
        .collect();
    // The whole list: the credits grants only, in the order they were
    // issued; its pages, concatenated, are the same list.
    let all = ids(&acme.read("/v1/grants?quota=credits", seq).await);
    assert_eq!(all, credits);
    let page = acme.read("/v1/grants?quota=credits&limit=2", seq).await;
    assert_eq!(ids(&page), all[..2]);
    assert_eq!(page["next"], all[1].as_str());
    let rest = acme
        .read(
            &format!("/v1/grants?quota=credits&limit=2&after={}", all[1]),
            seq,
        )
        .await;
    assert_eq!(ids(&rest), all[2..]);
    assert_eq!(rest["next"], Value::Null);
    let runs = acme.read("/v1/grants?quota=runs", seq).await;
    assert_eq!(ids(&runs), [grants[1].1.clone()]);
    server.stop().await;
}
