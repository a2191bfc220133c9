//! `GET /v1/reports/trial-balance` over HTTP and from an export file: the
//! figures to the unit in JSON, the same in CSV and the table (parsed
//! back), a well-formed HTML page with every total; as of a seq the same
//! before and after more commands; offline byte-identical to online; a
//! read table edited behind the ledger's back failing the tie-out; and no
//! figure of another tenant.

use super::serve;
use chrono::{Duration, TimeZone, Utc};
use commands::Clock;
use eventstore::testing::TestDatabase;
use replay::reports::{offline, Options, Point, ReportName};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A tenant's POSTs to the API, each answering its body.
struct Poster {
    client: reqwest::Client,
    base: String,
    api_key: String,
}

impl Poster {
    fn new(client: &reqwest::Client, base: &str, api_key: &str) -> Self {
        Self {
            client: client.clone(),
            base: base.to_string(),
            api_key: api_key.to_string(),
        }
    }

    /// POSTs `body` to `path` under `key`; the request is built at once,
    /// so the answer's future borrows nothing.
    fn post(
        &self,
        key: &str,
        path: String,
        body: Value,
    ) -> impl std::future::Future<Output = Value> + 'static {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .header("idempotency-key", key)
            .json(&body);
        async move { request.send().await.unwrap().json().await.unwrap() }
    }
}

/// Applies every event to every projection (the workers' single step).
async fn catch_up(db: &TestDatabase) {
    let catalog = commands::domains::projections();
    projections::status::register(db.store().pool(), &catalog)
        .await
        .unwrap();
    let all: Vec<&dyn projections::Projection> = catalog.iter().map(AsRef::as_ref).collect();
    projections::runtime::catch_up_all(db.store().pool(), &all, None, 1_000)
        .await
        .unwrap();
}

/// Whether `html` is well-formed: every tag closed in order (void and
/// self-closed tags aside), no stray `<`.
fn well_formed(html: &str) -> bool {
    let mut open: Vec<String> = Vec::new();
    let mut rest = html.trim_start_matches("<!DOCTYPE html>");
    while let Some(at) = rest.find('<') {
        let Some(end) = rest[at..].find('>') else {
            return false;
        };
        let tag = &rest[at + 1..at + end];
        rest = &rest[at + end + 1..];
        if tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() {
            return false;
        }
        if tag.starts_with('/') {
            if open.pop().as_deref() != Some(name.as_str()) {
                return false;
            }
        } else {
            open.push(name);
        }
    }
    open.is_empty()
}

/// The rows of section `name` of a CSV report, as field maps.
fn csv_rows(csv: &str, name: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    csv.split("\n\n")
        .filter_map(|block| {
            let mut lines = block.lines();
            let header: Vec<&str> = lines.next()?.split(',').collect();
            Some(
                lines
                    .filter(|line| line.starts_with(&format!("{name},")))
                    .map(|line| {
                        header
                            .iter()
                            .map(|column| column.to_string())
                            .zip(line.split(',').map(str::to_string))
                            .collect()
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// Minor units from the table's `1,234.56 USD`.
fn minor_units(text: &str) -> i64 {
    let number = text
        .split_whitespace()
        .next()
        .unwrap()
        .replace([',', '.'], "");
    number.parse().unwrap()
}

/// Report `name` of the tenant of `key` in CSV and as a table, checked
/// against its JSON (`json`).
async fn assert_formats_agree(base: &str, key: &str, name: &str, json: &Value) {
    let client = reqwest::Client::new();
    let mut texts = Vec::new();
    for format in ["csv", "table"] {
        let text = client
            .get(format!("{base}/v1/reports/{name}?format={format}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        texts.push(text);
    }
    assert_same_figures(json, &texts[0], &texts[1]);
}

/// Asserts that the CSV and the table of a report carry the JSON's rows:
/// section by section (the tie-out first), row by row, every CSV field the
/// JSON's value, every table line showing each value (amounts in major
/// units of the row's asset).
fn assert_same_figures(json: &Value, csv: &str, table: &str) {
    use replay::reports::render::major_units;
    let text = |value: &Value| match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let csv_blocks: Vec<&str> = csv.trim_end().split("\n\n").collect();
    let table_blocks: Vec<&str> = table.trim_end().split("\n\n").collect();
    assert_eq!(csv_blocks.len(), table_blocks.len(), "{csv}\n{table}");
    for (csv_block, table_block) in csv_blocks.iter().zip(&table_blocks).skip(1) {
        let mut csv_lines = csv_block.lines();
        let columns: Vec<&str> = csv_lines.next().unwrap().split(',').skip(1).collect();
        let csv_rows: Vec<Vec<&str>> = csv_lines.map(|line| line.split(',').collect()).collect();
        let table_rows: Vec<&str> = table_block.lines().skip(2).collect();
        assert_eq!(
            csv_rows.len(),
            table_rows.len(),
            "{csv_block}\n{table_block}"
        );
        for (index, (fields, line)) in csv_rows.iter().zip(&table_rows).enumerate() {
            let rows = match fields[0] {
                "tie_out" => &json["tie_out"]["checks"],
                section => &json[section],
            };
            let row = &rows[index];
            let asset = row["asset"].as_str().unwrap_or("");
            for (column, field) in columns.iter().zip(&fields[1..]) {
                let value = &row[*column];
                assert_eq!(*field, text(value), "{column} of {row}");
                let shown = match value {
                    Value::Number(number) if !asset.is_empty() && *column != "age_days" => {
                        major_units(i128::from(number.as_i64().unwrap()), asset)
                    }
                    other => text(other),
                };
                assert!(line.contains(&shown), "{column} {shown:?} not in {line:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_trial_balance_ties_out_in_every_format_online_and_offline() {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        Clock::from_fn(move || *now.lock().unwrap())
    };
    let base = serve(&store, clock).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: String, path: &'static str, body: Value| shop.post(&key, path.into(), body);
    for (code, kind) in [("cash", "asset"), ("sales", "revenue"), ("fees", "expense")] {
        post(
            format!("open-{code}"),
            "/v1/journal/accounts",
            json!({"code": code, "type": kind}),
        )
        .await;
    }
    let entry = |debit: &str, credit: &str, amount: i64| {
        json!({"lines": [
            {"account": debit, "asset": "USD/2", "side": "debit", "amount": amount},
            {"account": credit, "asset": "USD/2", "side": "credit", "amount": amount}]})
    };
    post(
        "sale-1".into(),
        "/v1/journal/entries",
        entry("cash", "sales", 123_456),
    )
    .await;
    *now.lock().unwrap() = start + Duration::days(2);
    post(
        "sale-2".into(),
        "/v1/journal/entries",
        entry("cash", "sales", 1_000),
    )
    .await;
    let fee = post(
        "fee".into(),
        "/v1/journal/entries",
        entry("fees", "cash", 250),
    )
    .await;
    let seq = fee["tenant_seq"].as_i64().unwrap();
    catch_up(&db).await;
    let get = |query: String| {
        let request = client
            .get(format!("{base}/v1/reports/trial-balance{query}"))
            .bearer_auth(&acme.api_key);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let tie_out = response.headers()["ledger-tie-out"]
                .to_str()
                .unwrap()
                .to_string();
            (tie_out, response.text().await.unwrap())
        }
    };

    // JSON, to the unit: a period from Dec 2 opens with the first sale.
    let period = format!(
        "?from={}&to={}",
        (start + Duration::days(1)).to_rfc3339().replace('+', "%2B"),
        (start + Duration::days(3)).to_rfc3339().replace('+', "%2B")
    );
    // Not before the period has closed: a request stamped before its end
    // could still commit.
    let refused = || async {
        let response = client
            .get(format!("{base}/v1/reports/trial-balance{period}"))
            .bearer_auth(&acme.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422);
        response.json::<Value>().await.unwrap()
    };
    let error = refused().await;
    assert_eq!(
        (&error["error"]["code"], &error["error"]["details"]),
        (
            &json!("report_point_open"),
            &json!({"to": "2026-12-04T09:00:00Z", "closes_at": "2026-12-04T09:00:05Z"})
        ),
        "{error}"
    );
    *now.lock().unwrap() = start + Duration::days(3) + Duration::seconds(4);
    assert_eq!(refused().await["error"]["code"], "report_point_open");
    *now.lock().unwrap() = start + Duration::days(3) + Duration::seconds(5);
    let (tie_out, text) = get(period).await;
    assert_eq!(tie_out, "agrees");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["as_of_seq"], seq);
    let head = store.chain_head(acme.tenant_id).await.unwrap().unwrap();
    assert_eq!(report["chain_hash"], head.hash.to_hex());
    assert_eq!(
        report["accounts"],
        json!([
            {"account": "cash", "asset": "USD/2", "type": "asset", "opening": 123_456, "debits": 1_000, "credits": 250, "closing": 124_206},
            {"account": "fees", "asset": "USD/2", "type": "expense", "opening": 0, "debits": 250, "credits": 0, "closing": 250},
            {"account": "sales", "asset": "USD/2", "type": "revenue", "opening": -123_456, "debits": 0, "credits": 1_000, "closing": -124_456}
        ])
    );
    assert_eq!(
        report["totals"],
        json!([{"asset": "USD/2", "opening": 0, "debits": 1_250, "credits": 1_250, "closing": 0}])
    );
    assert_eq!(report["tie_out"]["agrees"], true);
    assert_eq!(report["tie_out"]["checks"].as_array().unwrap().len(), 4);

    // A period ends before its `to`: back-to-back periods meeting at the
    // second sale's instant count it once, in the second, whose opening is
    // the first's closing.
    let at_text = |days: i64| {
        (start + Duration::days(days))
            .to_rfc3339()
            .replace('+', "%2B")
    };
    let cash = |text: &str| -> Value {
        let report: Value = serde_json::from_str(text).unwrap();
        report["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["account"] == "cash")
            .map(|row| {
                json!([
                    row["opening"],
                    row["debits"],
                    row["credits"],
                    row["closing"]
                ])
            })
            .unwrap()
    };
    let (_, first) = get(format!("?from={}&to={}", at_text(1), at_text(2))).await;
    let (_, second) = get(format!("?from={}&to={}", at_text(2), at_text(3))).await;
    assert_eq!(cash(&first), json!([123_456, 0, 0, 123_456]));
    assert_eq!(cash(&second), json!([123_456, 1_000, 250, 124_206]));

    // CSV and the table carry the same figures.
    let (_, csv) = get("?format=csv".into()).await;
    let (_, table) = get("?format=table".into()).await;
    let (_, json_text) = get("".into()).await;
    let json: Value = serde_json::from_str(&json_text).unwrap();
    for row in json["accounts"].as_array().unwrap() {
        let account = row["account"].as_str().unwrap();
        let csv_row = csv_rows(&csv, "accounts")
            .into_iter()
            .find(|fields| fields["account"] == account)
            .unwrap();
        let table_line = table
            .lines()
            .find(|line| line.starts_with(&format!("{account} ")))
            .unwrap();
        let columns: Vec<&str> = table_line
            .split("  ")
            .filter(|part| !part.trim().is_empty())
            .collect();
        for (at, field) in ["opening", "debits", "credits", "closing"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                csv_row[*field],
                row[*field].to_string(),
                "{account} {field}"
            );
            assert_eq!(
                minor_units(columns[3 + at].trim()),
                row[*field].as_i64().unwrap(),
                "{account} {field}: {table_line}"
            );
        }
    }
    assert!(table.contains("1,242.06 USD"), "{table}");
    assert_same_figures(&json, &csv, &table);
    // The HTML page: well-formed, self-contained, with every total.
    let (_, html) = get("?format=html".into()).await;
    assert!(well_formed(&html), "{html}");
    for external in ["<script", "<link", "src=", "href="] {
        assert!(!html.contains(external), "{external}: {html}");
    }
    assert!(
        html.contains("<svg") && html.contains("1,247.06 USD"),
        "{html}"
    );

    // Offline, from the export alone: byte-identical.
    let file = std::env::temp_dir().join(format!("report-{}.jsonl", acme.tenant_id));
    replay::export::export(&store, acme.tenant_id, &file, false)
        .await
        .unwrap();
    let offline = offline::report(
        &file,
        ReportName::TrialBalance,
        (Point::Head, Options::default()),
    )
    .unwrap();
    assert_eq!(offline.to_json_text(), json_text);
    for (days, online) in [(1, &first), (2, &second)] {
        let period = Point::Period {
            from: start + Duration::days(days),
            to: start + Duration::days(days + 1),
        };
        let offline = offline::report(
            &file,
            ReportName::TrialBalance,
            (period, Options::default()),
        )
        .unwrap();
        assert_eq!(&offline.to_json_text(), online);
    }
    let at_two = offline::report(
        &file,
        ReportName::TrialBalance,
        (Point::Seq(seq - 4), Options::default()),
    )
    .unwrap();

    // As of a seq, the same after more commands.
    let (_, before) = get(format!("?as_of_seq={}", seq - 4)).await;
    assert_eq!(at_two.to_json_text(), before);
    post(
        "sale-3".into(),
        "/v1/journal/entries",
        entry("cash", "sales", 7),
    )
    .await;
    catch_up(&db).await;
    let (_, after) = get(format!("?as_of_seq={}", seq - 4)).await;
    assert_eq!(before, after);
    std::fs::remove_file(&file).unwrap();

    // Another tenant's report holds nothing of acme's.
    let other: Value = client
        .get(format!("{base}/v1/reports/trial-balance"))
        .bearer_auth(&beta.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (other["accounts"].clone(), other["as_of_seq"].clone()),
        (json!([]), json!(0))
    );

    // A balance edited behind the ledger's back: the tie-out says so.
    sqlx::query(
        "UPDATE ledger_account_movements SET debits_posted = debits_posted + 1 \
         WHERE tenant_id = $1 AND code = 'cash' AND tenant_seq = \
           (SELECT min(tenant_seq) FROM ledger_account_movements WHERE tenant_id = $1 AND code = 'cash')",
    )
    .bind(acme.tenant_id.as_uuid())
    .execute(store.pool())
    .await
    .unwrap();
    let (tie_out, text) = get("".into()).await;
    assert_eq!(tie_out, "differs");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["tie_out"]["agrees"], false);
    let failing: Vec<&Value> = report["tie_out"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["agrees"] == false)
        .collect();
    assert_eq!(
        failing,
        [
            &json!({"check": "account_balance", "subject": "cash", "asset": "USD/2",
                 "report": 124_213, "ledger": 124_214, "agrees": false})
        ]
    );
}

#[tokio::test]
async fn the_escrow_report_shows_each_commitment_with_lineage_and_ties_out() {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let base = serve(&store, Clock::system()).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    let created = post(
        "deal",
        "/v1/commitments".into(),
        json!({"payer": "buyer-1", "payee": "seller-9", "currency": "USD", "allocation": "fifo",
               "milestones": [{"milestone_id": "m1", "amount": 30_000}, {"milestone_id": "m2", "amount": 20_000}]}),
    )
    .await;
    let id = created["commitment_id"].as_str().unwrap().to_string();
    for (n, amount) in [(1, 20_000), (2, 15_000)] {
        post(
            &format!("deal-wire-{n}"),
            format!("/v1/commitments/{id}/deposits"),
            json!({"amount": amount}),
        )
        .await;
    }
    let released = post(
        "deal-release",
        format!("/v1/commitments/{id}/milestones/m1/release"),
        json!({"amount": 25_000}),
    )
    .await;
    let seq = released["tenant_seq"].as_i64().unwrap();
    post(
        "deal-claim",
        format!("/v1/commitments/{id}/claims"),
        json!({"milestone_id": "m2", "amount": 4_000, "reason": "damaged"}),
    )
    .await;
    // The payee paid out by hand, and that entry reversed: the journal's
    // own entries on escrow's other accounts do not move the tie-out.
    let paid = post(
        "deal-paid-out",
        "/v1/journal/entries".into(),
        json!({"lines": [
            {"account": "payee_payable:seller-9", "asset": "USD/2", "side": "debit", "amount": 1_000},
            {"account": "escrow_cash", "asset": "USD/2", "side": "credit", "amount": 1_000}]}),
    )
    .await;
    let entry = paid["entry_id"].as_str().unwrap().to_string();
    let reversed = post(
        "deal-paid-out-reversed",
        format!("/v1/journal/entries/{entry}/reverse"),
        json!({}),
    )
    .await;
    assert!(reversed["entry_id"].is_string(), "{reversed}");
    catch_up(&db).await;
    let get = |query: &str| {
        let request = client
            .get(format!("{base}/v1/reports/escrow{query}"))
            .bearer_auth(&acme.api_key);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let text = get("").await;
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["commitments"],
        json!([{"commitment_id": id, "asset": "USD/2", "status": "awaiting_funding", "total": 50_000,
                "funded": 35_000, "released": 25_000, "refunded": 0, "frozen": 4_000, "held": 10_000}])
    );
    let deposits: Vec<Value> = report["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|draw| draw["amount"].clone())
        .collect();
    assert_eq!(deposits, [json!(20_000), json!(5_000)]);
    assert_eq!(report["transfers"][0]["amount"], 25_000);
    assert_formats_agree(&base, &acme.api_key, "escrow", &report).await;
    assert_eq!(report["tie_out"]["agrees"], true, "{report}");
    let checks: Vec<(Value, Value)> = report["tie_out"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| (check["check"].clone(), check["ledger"].clone()))
        .collect();
    assert_eq!(
        checks,
        [
            (json!("funded"), json!(35_000)),
            (json!("deposited"), json!(35_000)),
            (json!("released_and_refunded"), json!(25_000)),
            (json!("released"), json!(25_000)),
            (json!("refunded"), json!(0)),
            (json!("frozen"), json!(4_000)),
            (json!("held"), json!(10_000))
        ]
    );
    // As of the release (before the claim), from the read tables and from
    // the export alike.
    let before = get(&format!("?as_of_seq={seq}")).await;
    let at_release: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(at_release["commitments"][0]["frozen"], 0);
    let file = std::env::temp_dir().join(format!("escrow-report-{}.jsonl", acme.tenant_id));
    replay::export::export(&store, acme.tenant_id, &file, false)
        .await
        .unwrap();
    let offline_head =
        offline::report(&file, ReportName::Escrow, (Point::Head, Options::default())).unwrap();
    assert_eq!(offline_head.to_json_text(), text);
    let offline_then = offline::report(
        &file,
        ReportName::Escrow,
        (Point::Seq(seq), Options::default()),
    )
    .unwrap();
    assert_eq!(offline_then.to_json_text(), before);
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn the_payroll_report_shows_each_run_and_payee_and_ties_out() {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let base = serve(&store, Clock::system()).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    let since = "2026-01-01T00:00:00Z";
    post(
        "plan",
        "/v1/compensation/plans".into(),
        json!({"plan_id": "ops", "currency": "USD", "effective_from": since, "rules": [
            {"kind": "hourly", "rate_per_hour": 2_000},
            {"kind": "per_unit", "unit": "delivery", "amount_per_unit": 300}]}),
    )
    .await;
    post(
        "payee",
        "/v1/payees".into(),
        json!({"payee_id": "bob", "name": "Bob", "currency": "USD"}),
    )
    .await;
    post(
        "assign",
        "/v1/payees/bob/assignment".into(),
        json!({"plan_id": "ops", "from": since}),
    )
    .await;
    let worked = "2026-02-01T09:00:00Z";
    post(
        "shift",
        "/v1/payees/bob/work".into(),
        json!({"kind": "time", "minutes": 120, "worked_at": worked}),
    )
    .await;
    post(
        "drops",
        "/v1/payees/bob/work".into(),
        json!({"kind": "units", "unit": "delivery", "count": 5, "worked_at": worked}),
    )
    .await;
    post(
        "fix",
        "/v1/payees/bob/adjustments".into(),
        json!({"amount": -700, "reason": "late"}),
    )
    .await;
    // The cutoff now, after the adjustment accrued (the server's clock is
    // the system's): within the period, not after the run (rules 11).
    let now = chrono::Utc::now();
    let run = post(
        "run",
        "/v1/pay-runs".into(),
        json!({"period_start": since, "period_end": now + chrono::Duration::days(1), "cutoff": now}),
    )
    .await;
    let run_id = run["pay_run_id"].as_str().unwrap().to_string();
    post(
        "approve",
        format!("/v1/pay-runs/{run_id}/approve"),
        json!({}),
    )
    .await;
    let paid = post("pay", format!("/v1/pay-runs/{run_id}/pay"), json!({})).await;
    let seq = paid["tenant_seq"].as_i64().unwrap();
    post(
        "more",
        "/v1/payees/bob/work".into(),
        json!({"kind": "time", "minutes": 30, "worked_at": worked}),
    )
    .await;
    // A bonus accrued by hand and money moved out of the payroll bank: the
    // journal's own entries, no pay run's.
    journal_own_entries(
        &shop,
        [
            ("compensation_expense", "expense", -500),
            ("bank:payroll", "asset", 300),
        ],
    )
    .await;
    catch_up(&db).await;
    let text = client
        .get(format!("{base}/v1/reports/payroll"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["runs"],
        json!([{"pay_run_id": run_id, "status": "paid", "payee_id": "bob", "asset": "USD/2",
                "time": 4_000, "units": 1_500, "commission": 0, "clawbacks": 0, "adjustments": -700,
                "carried_in": 0, "net": 4_800, "paid": 4_800, "carried_out": 0}])
    );
    assert_eq!(
        report["payees"],
        json!([{"payee_id": "bob", "asset": "USD/2", "accrued": 5_800, "held": 0, "payable": 1_000,
                "in_run": 0, "paid": 4_800, "carried": 0, "capped": 0}])
    );
    assert_eq!(report["tie_out"]["agrees"], true, "{report}");
    assert_eq!(
        tie_out_figures(&report, "accrued"),
        (json!(5_800), json!(5_800))
    );
    assert_eq!(
        tie_out_figures(&report, "paid"),
        (json!(4_800), json!(4_800))
    );
    assert_formats_agree(&base, &acme.api_key, "payroll", &report).await;
    let file = std::env::temp_dir().join(format!("payroll-report-{}.jsonl", acme.tenant_id));
    replay::export::export(&store, acme.tenant_id, &file, false)
        .await
        .unwrap();
    let offline_head = offline::report(
        &file,
        ReportName::Payroll,
        (Point::Head, Options::default()),
    )
    .unwrap();
    assert_eq!(offline_head.to_json_text(), text);
    let then = client
        .get(format!("{base}/v1/reports/payroll?as_of_seq={seq}"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let offline_then = offline::report(
        &file,
        ReportName::Payroll,
        (Point::Seq(seq), Options::default()),
    )
    .unwrap();
    assert_eq!(offline_then.to_json_text(), then);
    let then: Value = serde_json::from_str(&then).unwrap();
    assert_eq!(then["payees"][0]["payable"], 0);
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn the_payments_report_shows_the_waterfall_unsettled_items_and_aged_breaks() {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        Clock::from_fn(move || *now.lock().unwrap())
    };
    let base = serve(&store, clock).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    // Two card sales captured on Dec 1; a refund of 1000 on the first.
    let mut payments = Vec::new();
    for (n, amount) in [(1, 10_000), (2, 4_000)] {
        let created = post(
            &format!("p{n}"),
            "/v1/payments".into(),
            json!({"amount": amount, "currency": "USD", "capture": "automatic"}),
        )
        .await;
        let id = created["payment_id"].as_str().unwrap().to_string();
        post(
            &format!("p{n}-card"),
            format!("/v1/payments/{id}/tenders"),
            json!({"method": "card", "amount": amount, "processor": "stripe", "reference": format!("ch_{n}")}),
        )
        .await;
        payments.push(id);
    }
    post(
        "p1-refund",
        format!("/v1/payments/{}/refunds", payments[0]),
        json!({"amount": 1_000, "reference": "re_1"}),
    )
    .await;
    // Dec 2: the processor settles the first sale (fee 290) and a line it
    // cannot match.
    *now.lock().unwrap() = start + Duration::days(1);
    post(
        "batch",
        "/v1/settlements".into(),
        json!({"processor": "stripe", "batch_id": "b_1", "currency": "USD",
               "settled_at": (start + Duration::days(1)).to_rfc3339(), "lines": [
                   {"type": "capture", "reference": "ch_1", "gross": 10_000, "fee": 290, "net": 9_710},
                   {"type": "capture", "reference": "ch_x", "gross": 500, "fee": 0, "net": 500}]}),
    )
    .await;
    // Dec 6: the second sale and the refund are still in no batch. The
    // books take an invoice paid outside payments (credited to revenue)
    // and a fee charged by hand: the journal's own entries, which the
    // payments' tie-out leaves out.
    *now.lock().unwrap() = start + Duration::days(5);
    journal_own_entries(
        &shop,
        [
            ("revenue", "revenue", 1_234),
            ("processing_fees", "expense", -50),
        ],
    )
    .await;
    // The journal's entry on revenue reversed by the journal, and its hold
    // on revenue posted: the journal's own too.
    let posted = post(
        "manual-revenue-2",
        "/v1/journal/entries".into(),
        json!({"lines": [
            {"account": "manual_books", "asset": "USD/2", "side": "debit", "amount": 500},
            {"account": "revenue", "asset": "USD/2", "side": "credit", "amount": 500}]}),
    )
    .await;
    let entry_id = posted["entry_id"].as_str().unwrap().to_string();
    let reversed = post(
        "manual-revenue-2-reversed",
        format!("/v1/journal/entries/{entry_id}/reverse"),
        json!({}),
    )
    .await;
    assert!(reversed["tenant_seq"].is_i64(), "{reversed}");
    let hold = post(
        "manual-hold",
        "/v1/journal/holds".into(),
        json!({"debit": "manual_books", "credit": "revenue", "asset": "USD/2", "amount": 77}),
    )
    .await;
    let hold_id = hold["hold_id"].as_str().unwrap().to_string();
    let held = post(
        "manual-hold-posted",
        format!("/v1/journal/holds/{hold_id}/post"),
        json!({}),
    )
    .await;
    assert!(held["tenant_seq"].is_i64(), "{held}");
    let last = post(
        "p3",
        "/v1/payments".into(),
        json!({"amount": 1, "currency": "USD"}),
    )
    .await;
    let seq = last["tenant_seq"].as_i64().unwrap();
    catch_up(&db).await;
    let text = client
        .get(format!("{base}/v1/reports/payments"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["as_of_seq"], seq);
    assert_eq!(
        report["waterfall"],
        json!([{"asset": "USD/2", "authorized": 14_000, "partial_capture_reversals": 0, "voided": 0,
                "expired": 0, "captured": 14_000, "refunded": 1_000, "failed_refunds": 0,
                "disputed_open": 0, "disputes_won": 0, "disputes_lost": 0, "dispute_fees": 0,
                "settled_gross": 10_500, "processing_fees": 290, "settled_net": 10_210,
                "paid_out": 0, "in_transit": 0}])
    );
    let unsettled: Vec<(Value, Value, Value)> = report["unsettled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["kind"].clone(),
                item["amount"].clone(),
                item["age_days"].clone(),
            )
        })
        .collect();
    assert_eq!(
        unsettled,
        [
            (json!("capture"), json!(4_000), json!(5)),
            (json!("refund"), json!(1_000), json!(5))
        ]
    );
    let breaks: Vec<(Value, Value, Value, Value)> = report["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["class"].clone(),
                item["reference"].clone(),
                item["age_bucket"].clone(),
                item["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        breaks,
        [
            (
                json!("unknown_reference"),
                json!("ch_x"),
                json!("4-7"),
                json!("open")
            ),
            (
                json!("missing_in_settlement"),
                json!("ch_2"),
                json!("4-7"),
                json!("open")
            ),
            (
                json!("missing_in_settlement"),
                json!("re_1"),
                json!("4-7"),
                json!("open")
            )
        ]
    );
    assert_eq!(report["tie_out"]["agrees"], true, "{report}");
    assert_eq!(
        tie_out_figures(&report, "captured"),
        (json!(14_000), json!(14_000))
    );
    assert_eq!(tie_out_figures(&report, "fees"), (json!(290), json!(290)));
    assert_formats_agree(&base, &acme.api_key, "payments", &report).await;
    let file = std::env::temp_dir().join(format!("payments-report-{}.jsonl", acme.tenant_id));
    replay::export::export(&store, acme.tenant_id, &file, false)
        .await
        .unwrap();
    let offline_head = offline::report(
        &file,
        ReportName::Payments,
        (Point::Head, Options::default()),
    )
    .unwrap();
    assert_eq!(offline_head.to_json_text(), text);
    std::fs::remove_file(&file).unwrap();
    let html = client
        .get(format!("{base}/v1/reports/payments?format=html"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(well_formed(&html), "{html}");
    assert!(
        html.contains("Waterfall, USD/2") && html.contains("Open breaks by age"),
        "{html}"
    );

    // The unknown line resolved by adjustment (booked to revenue): still
    // tied out, the break resolved.
    let open: Value = client
        .get(format!("{base}/v1/breaks?status=open"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let break_id = open["breaks"][0]["break_id"].as_str().unwrap().to_string();
    post(
        "adjust",
        format!("/v1/breaks/{break_id}/resolve"),
        json!({"resolution": "adjust", "reason": "a late capture"}),
    )
    .await;
    catch_up(&db).await;
    let report: Value = client
        .get(format!("{base}/v1/reports/payments"))
        .bearer_auth(&acme.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["tie_out"]["agrees"], true, "{report}");
    assert_eq!(
        (
            report["breaks"][0]["status"].clone(),
            report["breaks"][0]["resolution"].clone()
        ),
        (json!("resolved"), json!("adjust"))
    );
}

#[tokio::test]
async fn the_payments_report_ties_out_dispute_lines_matched_late_or_off_by_an_amount() {
    // Proves: the fees the report counts agree with the journal for a
    // dispute line whose amount disagrees with the dispute (it settles the
    // dispute all the same, its booked fee given back to the receivable),
    // and for one imported before its dispute opened and matched once it
    // had (the fee moved to dispute_fees as a matched line's is); the
    // report online and offline agree.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let base = serve(&store, Clock::system()).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    let mut captures = Vec::new();
    for n in 1..=2 {
        let created = post(
            &format!("p{n}"),
            "/v1/payments".into(),
            json!({"amount": 10_000, "currency": "USD", "capture": "automatic"}),
        )
        .await;
        let id = created["payment_id"].as_str().unwrap().to_string();
        let tender = post(
            &format!("p{n}-card"),
            format!("/v1/payments/{id}/tenders"),
            json!({"method": "card", "amount": 10_000, "processor": "stripe", "reference": format!("ch_{n}")}),
        )
        .await;
        captures.push((id, tender["capture_id"].clone()));
    }
    let dispute = |n: usize, amount: i64| {
        let (payment, capture) = &captures[n - 1];
        post(
            &format!("dispute-{n}"),
            format!("/v1/payments/{payment}/disputes"),
            json!({"capture_id": capture, "amount": amount, "fee": 1_500, "reference": format!("dp_{n}")}),
        )
    };
    let opened = dispute(2, 3_000).await;
    assert!(opened["dispute_id"].is_string(), "{opened}");
    let line = |kind: &str, reference: &str, gross: i64, fee: i64| json!({"type": kind, "reference": reference, "gross": gross, "fee": fee, "net": gross - fee});
    let batch = post(
        "batch",
        "/v1/settlements".into(),
        json!({"processor": "stripe", "batch_id": "b_1", "currency": "USD",
               "settled_at": "2026-12-03T00:00:00Z", "lines": [
                   line("capture", "ch_1", 10_000, 290),
                   line("capture", "ch_2", 10_000, 290),
                   line("dispute", "dp_1", -2_000, 1_000),
                   line("dispute", "dp_2", -2_500, 1_200)]}),
    )
    .await;
    let classes: Vec<&Value> = batch["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| &found["class"])
        .collect();
    assert_eq!(
        classes,
        [&json!("unknown_reference"), &json!("amount_mismatch")],
        "{batch}"
    );
    let opened = dispute(1, 2_000).await;
    assert!(opened["dispute_id"].is_string(), "{opened}");
    let late = batch["breaks"][0]["break_id"].as_str().unwrap();
    let matched = post(
        "match",
        format!("/v1/breaks/{late}/resolve"),
        json!({"resolution": "match"}),
    )
    .await;
    assert_eq!(matched["resolution"], "match", "{matched}");
    catch_up(&db).await;
    payments_report_tied_out(&client, &base, &store, &acme).await;
}

/// The journal's own entries on a domain's accounts: for each (code, type,
/// amount), the account opened as that domain opens it, and `amount`
/// credited to it (debited, when negative) against `manual_books`.
async fn journal_own_entries<const N: usize>(shop: &Poster, entries: [(&str, &str, i64); N]) {
    let path = |rest: &str| format!("/v1/journal/{rest}");
    shop.post(
        "open-manual-books",
        path("accounts"),
        json!({"code": "manual_books", "type": "equity"}),
    )
    .await;
    for (code, account_type, amount) in entries {
        shop.post(
            &format!("open-{code}"),
            path("accounts"),
            json!({"code": code, "type": account_type}),
        )
        .await;
        let (credit, debit) = if amount > 0 {
            (code, "manual_books")
        } else {
            ("manual_books", code)
        };
        let line = |account: &str, side: &str| json!({"account": account, "asset": "USD/2", "side": side, "amount": amount.abs()});
        let posted = shop
            .post(
                &format!("manual-{code}"),
                path("entries"),
                json!({"lines": [line(debit, "debit"), line(credit, "credit")]}),
            )
            .await;
        assert!(posted["tenant_seq"].is_i64(), "{posted}");
    }
}

/// A tie-out check's two figures: (the report's, the ledger's).
fn tie_out_figures(report: &Value, check: &str) -> (Value, Value) {
    let found = report["tie_out"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|found| found["check"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {report}"));
    (found["report"].clone(), found["ledger"].clone())
}

/// The payments report of `tenant` at its head, online, after asserting it
/// ties out and that the offline report of an export says the same.
async fn payments_report_tied_out(
    client: &reqwest::Client,
    base: &str,
    store: &eventstore::EventStore,
    tenant: &eventstore::NewTenant,
) -> Value {
    let text = client
        .get(format!("{base}/v1/reports/payments"))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["tie_out"]["agrees"], true, "{report}");
    let file = std::env::temp_dir().join(format!("payments-head-{}.jsonl", tenant.tenant_id));
    replay::export::export(store, tenant.tenant_id, &file, false)
        .await
        .unwrap();
    let offline_head = offline::report(
        &file,
        ReportName::Payments,
        (Point::Head, Options::default()),
    )
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(offline_head.to_json_text(), text);
    report
}

#[tokio::test]
async fn the_payments_report_ages_to_its_end_and_owes_the_processor_only_its_part() {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        Clock::from_fn(move || *now.lock().unwrap())
    };
    let base = serve(&store, clock).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    let at = |minutes: i64| start + Duration::minutes(minutes);
    // 5,000 taken as 2,000 cash and then 3,000 by card; 4,000 refunded,
    // drawn from the card first (3,000) and then the cash (1,000).
    let created = post(
        "a",
        "/v1/payments".into(),
        json!({"amount": 5_000, "currency": "USD", "capture": "automatic"}),
    )
    .await;
    let id = created["payment_id"].as_str().unwrap().to_string();
    post(
        "a-cash",
        format!("/v1/payments/{id}/tenders"),
        json!({"method": "cash", "amount": 2_000}),
    )
    .await;
    *now.lock().unwrap() = at(1);
    post(
        "a-card",
        format!("/v1/payments/{id}/tenders"),
        json!({"method": "card", "amount": 3_000, "processor": "stripe", "reference": "ch_a"}),
    )
    .await;
    *now.lock().unwrap() = at(2);
    let refund = post(
        "a-refund",
        format!("/v1/payments/{id}/refunds"),
        json!({"amount": 4_000, "reference": "re_a"}),
    )
    .await;
    assert_eq!(refund["refund_status"], "pending", "{refund}");
    // Three days and three minutes after the sale: both items are past a
    // window of three days, though three whole days old.
    *now.lock().unwrap() = at(3 * 24 * 60 + 3);
    post(
        "last",
        "/v1/payments".into(),
        json!({"amount": 1, "currency": "USD"}),
    )
    .await;
    catch_up(&db).await;
    let get = |query: &'static str| {
        let request = client
            .get(format!("{base}/v1/reports/payments{query}"))
            .bearer_auth(&acme.api_key);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let items = |report: &Value, name: &str| -> Vec<Value> {
        report[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                ["reference", "amount", "age_days", "age_bucket", "class"]
                    .map(|field| item[field].clone())
                    .into()
            })
            .collect()
    };
    let head: Value = serde_json::from_str(&get("").await).unwrap();
    assert_eq!(head["aged_as_of"], head["as_of_time"]);
    assert_eq!(head["aged_as_of"], "2026-12-04T09:03:00Z");
    assert_eq!(
        items(&head, "unsettled"),
        [
            json!(["ch_a", 3_000, 3, null, null]),
            json!(["re_a", 3_000, 3, null, null])
        ]
    );
    assert_eq!(
        items(&head, "breaks"),
        [
            json!(["ch_a", null, 3, "2-3", "missing_in_settlement"]),
            json!(["re_a", null, 3, "2-3", "missing_in_settlement"])
        ]
    );
    assert_eq!(head["tie_out"]["agrees"], true, "{head}");

    // Asked as of a later time, once it has passed: the same events, aged
    // to that time.
    *now.lock().unwrap() = Utc.with_ymd_and_hms(2026, 12, 21, 0, 0, 0).unwrap();
    let text = get("?as_of=2026-12-20T00:00:00Z").await;
    let later: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(later["as_of_seq"], head["as_of_seq"]);
    assert_eq!(later["aged_as_of"], "2026-12-20T00:00:00Z");
    assert_eq!(
        items(&later, "breaks"),
        [
            json!(["ch_a", null, 18, "8-30", "missing_in_settlement"]),
            json!(["re_a", null, 18, "8-30", "missing_in_settlement"])
        ]
    );
    assert_eq!(later["tie_out"]["agrees"], true, "{later}");
    let file = std::env::temp_dir().join(format!("payments-aged-{}.jsonl", acme.tenant_id));
    replay::export::export(&store, acme.tenant_id, &file, false)
        .await
        .unwrap();
    let to = Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).unwrap();
    let offline = offline::report(
        &file,
        ReportName::Payments,
        (Point::Time(to), Options::default()),
    )
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(offline.to_json_text(), text);

    // A period: the figures are cumulative to its end, and the report says
    // it covers everything from the first event.
    let period: Value =
        serde_json::from_str(&get("?from=2026-12-02T00:00:00Z&to=2026-12-20T00:00:00Z").await)
            .unwrap();
    assert_eq!(
        period["period"],
        json!({"from": null, "to": "2026-12-20T00:00:00Z", "to_included": false})
    );
    assert_eq!(
        later["period"],
        json!({"from": null, "to": "2026-12-20T00:00:00Z", "to_included": true})
    );
    assert_eq!(period["waterfall"], later["waterfall"]);
    assert_eq!(period["waterfall"][0]["refunded"], 4_000);
}

#[tokio::test]
async fn the_payments_report_ties_out_a_batch_shortfall_owed_to_the_processor() {
    // Proves: a refund settled after its capture's batch was paid out
    // leaves the processor owed (processor_payable:stripe); the report's
    // settled-not-paid-out figure (settled net less paid out and in
    // transit) agrees with the processor's balance less what it is owed,
    // online and offline; verify finds the history clean.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap();
    let base = serve(&store, Clock::system()).await;
    let client = reqwest::Client::new();
    let shop = Poster::new(&client, &base, &acme.api_key);
    let post = |key: &str, path: String, body: Value| shop.post(key, path, body);
    let created = post(
        "p1",
        "/v1/payments".into(),
        json!({"amount": 10_000, "currency": "USD", "capture": "automatic"}),
    )
    .await;
    let payment = created["payment_id"].as_str().unwrap().to_string();
    post(
        "p1-card",
        format!("/v1/payments/{payment}/tenders"),
        json!({"method": "card", "amount": 10_000, "processor": "stripe", "reference": "ch_1"}),
    )
    .await;
    let line = |kind: &str, reference: &str, gross: i64, fee: i64| json!({"type": kind, "reference": reference, "gross": gross, "fee": fee, "net": gross - fee});
    let batch = |batch: &str, lines: Value| {
        json!({"processor": "stripe", "batch_id": batch, "currency": "USD",
               "settled_at": "2026-12-03T00:00:00Z", "lines": lines})
    };
    post(
        "b-1",
        "/v1/settlements".into(),
        batch("b_1", json!([line("capture", "ch_1", 10_000, 290)])),
    )
    .await;
    let payout = post(
        "payout",
        "/v1/payouts".into(),
        json!({"processor": "stripe", "currency": "USD", "amount": 9_710,
               "bank_account": "main", "settlements": ["b_1"]}),
    )
    .await;
    assert!(payout["payout_id"].is_string(), "{payout}");
    post(
        "refund",
        format!("/v1/payments/{payment}/refunds"),
        json!({"amount": 4_000, "reference": "re_1"}),
    )
    .await;
    let short = post(
        "b-2",
        "/v1/settlements".into(),
        batch("b_2", json!([line("refund", "re_1", -4_000, 0)])),
    )
    .await;
    assert_eq!(short["matched"], 1, "{short}");
    catch_up(&db).await;
    let report = payments_report_tied_out(&client, &base, &store, &acme).await;
    let settled = report["tie_out"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["check"] == "settled_not_paid_out")
        .cloned()
        .unwrap();
    // Settled 9710 - 4000, in transit 9710; the balance 0, owed 4000.
    assert_eq!(
        (settled["report"].to_string(), settled["ledger"].to_string()),
        ("-4000".to_string(), "-4000".to_string()),
        "{settled}"
    );
    // The history, its shortfall included, decides again as recorded.
    let verified =
        replay::verify::verify_database(&store, None, &commands::domains::projections(), true)
            .await
            .unwrap();
    assert!(verified.ok, "{:?}", verified.lines());
}
