//! Read tables whose rows each come from one event alone: compared with a
//! replay in memory, without a scratch table.
//!
//! A comparison replays every projection into scratch tables and joins each
//! with its live table. For a table of one row per event (the journal's
//! entries: a row per event that records an entry, keyed by the event's
//! tenant and seq, written once and never changed), that costs a scratch
//! row per event and a join over the whole table, the most of what a
//! comparison writes. Such a table is compared instead as the replay goes:
//! the rows the replayed events give beside the live rows of the same
//! seqs, read back by key; the live rows outside every replayed range are
//! looked for at the end. Only the rows found to differ are written to the
//! scratch table, and the usual comparison lists them, so a difference is
//! reported exactly as any other table's.

use crate::compare::{compare_table, Difference, ReplayFailure, DIFFERENCES_MAX};
use crate::runtime::ApplyError;
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::database::quote_identifier;
use eventstore::{StoredEvent, TenantRange};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// One row of such a table: its key, and every other column in the
/// table's order. A row found equal here is equal in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub tenant_id: Uuid,
    pub tenant_seq: i64,
    pub columns: Vec<Column>,
}

/// A column's value.
#[derive(Debug, Clone)]
pub enum Column {
    /// Text, a number, or null (a time as its microseconds).
    Plain(Value),
    /// A `jsonb` value as its text: the canonical text (`jsonb`'s own) on
    /// the replay's side, the database's on the live side.
    Json(String),
}

impl PartialEq for Column {
    /// Two texts of JSON are equal when they are the same text, or else
    /// when they hold the same JSON (which makes them equal as `jsonb`).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Plain(one), Self::Plain(other)) => one == other,
            (Self::Json(one), Self::Json(other)) => {
                one == other
                    || matches!(
                        (
                            serde_json::from_str::<Value>(one),
                            serde_json::from_str::<Value>(other),
                        ),
                        (Ok(one), Ok(other)) if one == other
                    )
            }
            _ => false,
        }
    }
}

impl EventRow {
    fn key(&self) -> (Uuid, i64) {
        (self.tenant_id, self.tenant_seq)
    }
}

/// The table of a projection's whose rows each come from one event alone,
/// keyed by `(tenant_id, tenant_seq)`, the event's.
#[async_trait]
pub trait EventRows: Send + Sync {
    /// The table (one of the projection's).
    fn table(&self) -> &'static str;

    /// The table's columns, key first, in the order of [`EventRow::columns`]
    /// after the key: every column it has (a test holds the two equal).
    fn columns(&self) -> &'static [&'static str];

    /// Applies `events` to every table of the projection but this one (the
    /// search path finds the scratch tables first) and returns the rows they
    /// give this one, in their order.
    async fn apply_rest(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<Vec<EventRow>, ApplyError>;

    /// The live table's rows in `ranges`, by key.
    async fn live(
        &self,
        connection: &mut PgConnection,
        ranges: &[TenantRange],
    ) -> Result<Vec<EventRow>, sqlx::Error>;

    /// Writes `rows` to the table the search path finds first (the scratch
    /// table).
    async fn write(
        &self,
        connection: &mut PgConnection,
        rows: &[EventRow],
    ) -> Result<(), sqlx::Error>;
}

/// What the comparison of one tenant found so far.
#[derive(Debug, Default)]
struct TenantRows {
    /// Rows that differ, listed or not.
    differing: u64,
    /// The first [`DIFFERENCES_MAX`] by key: the replay's row, `None` where
    /// only the live table has one.
    listed: BTreeMap<i64, Option<EventRow>>,
}

/// The comparison of an event-rows table under way, tenant by tenant.
#[derive(Debug, Default)]
pub(crate) struct RowCheck {
    tenants: BTreeMap<TenantId, TenantRows>,
    /// Rows only the live table has, outside every replayed range.
    only_live: u64,
}

/// What the comparison found, failed tenants left out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RowFindings {
    /// Rows that differ, listed or not.
    pub differing: u64,
    /// The keys of the first [`DIFFERENCES_MAX`], and the replay's row
    /// where it has one.
    pub listed: Vec<((Uuid, i64), Option<EventRow>)>,
}

impl RowCheck {
    /// Sets the replay's rows of some ranges beside the live rows of the
    /// same ranges (both in any order, each key once): records every key
    /// where one side lacks the row or the two differ.
    pub fn compare(&mut self, mut replayed: Vec<EventRow>, mut live: Vec<EventRow>) {
        // Both mostly come in key order already.
        replayed.sort_by_key(EventRow::key);
        live.sort_by_key(EventRow::key);
        let mut live = live.into_iter().peekable();
        for row in replayed {
            while let Some(extra) = live.next_if(|found| found.key() < row.key()) {
                self.differ(extra.key(), None);
            }
            match live.next_if(|found| found.key() == row.key()) {
                Some(found) if found == row => {}
                _ => self.differ(row.key(), Some(row)),
            }
        }
        for extra in live {
            self.differ(extra.key(), None);
        }
    }

    /// Records the rows only the live table has, outside every replayed
    /// range of the tenants compared: `total` of them, the first by key
    /// `keys`.
    pub fn only_live(&mut self, keys: impl IntoIterator<Item = (Uuid, i64)>, total: u64) {
        for (tenant_id, tenant_seq) in keys {
            self.list(TenantId::from_uuid(tenant_id), tenant_seq, None);
        }
        self.only_live += total;
    }

    fn differ(&mut self, (tenant_id, tenant_seq): (Uuid, i64), replayed: Option<EventRow>) {
        let tenant_id = TenantId::from_uuid(tenant_id);
        self.tenants.entry(tenant_id).or_default().differing += 1;
        self.list(tenant_id, tenant_seq, replayed);
    }

    fn list(&mut self, tenant_id: TenantId, tenant_seq: i64, replayed: Option<EventRow>) {
        let tenant = self.tenants.entry(tenant_id).or_default();
        tenant.listed.insert(tenant_seq, replayed);
        if tenant.listed.len() > DIFFERENCES_MAX as usize {
            tenant.listed.pop_last();
        }
    }

    /// What was found, leaving out the tenants whose replay failed (their
    /// rows are not compared; nor are they looked for outside the ranges).
    pub fn findings(self, failed: &BTreeMap<TenantId, ReplayFailure>) -> RowFindings {
        let mut findings = RowFindings {
            differing: self.only_live,
            listed: Vec::new(),
        };
        for (tenant_id, tenant) in self.tenants {
            if failed.contains_key(&tenant_id) {
                continue;
            }
            findings.differing += tenant.differing;
            findings.listed.extend(
                tenant
                    .listed
                    .into_iter()
                    .map(|(seq, row)| ((tenant_id.as_uuid(), seq), row)),
            );
        }
        // Tenants come in key order, each's rows by seq.
        findings.listed.truncate(DIFFERENCES_MAX as usize);
        findings
    }
}

/// The live rows outside every replayed range: of the tenants compared
/// (`only`, all when `None`; those whose replay failed left out), those
/// before seq 1 or past how far the replay `applied`, and every row of a
/// tenant it did not replay at all. The first [`DIFFERENCES_MAX`] keys,
/// and how many in all.
async fn only_live(
    connection: &mut PgConnection,
    table: &str,
    only: Option<&[Uuid]>,
    failed: &[Uuid],
    applied: &HashMap<TenantId, i64>,
) -> Result<(Vec<(Uuid, i64)>, u64), sqlx::Error> {
    let table = quote_identifier(table);
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(&format!(
        "SELECT j.tenant_id, j.tenant_seq, count(*) OVER () \
         FROM public.{table} j \
         LEFT JOIN unnest($3::uuid[], $4::bigint[]) AS c(tenant_id, until_seq) \
             ON c.tenant_id = j.tenant_id \
         WHERE ($1::uuid[] IS NULL OR j.tenant_id = ANY($1)) AND NOT (j.tenant_id = ANY($2)) \
           AND (c.until_seq IS NULL OR j.tenant_seq < 1 OR j.tenant_seq > c.until_seq) \
         ORDER BY j.tenant_id, j.tenant_seq \
         LIMIT $5"
    ))
    .bind(only)
    .bind(failed)
    .bind(applied.keys().map(TenantId::as_uuid).collect::<Vec<_>>())
    .bind(applied.values().copied().collect::<Vec<_>>())
    .bind(DIFFERENCES_MAX)
    .fetch_all(connection)
    .await?;
    let total = rows
        .first()
        .map_or(0, |(_, _, total)| u64::try_from(*total).unwrap_or(0));
    Ok((
        rows.into_iter()
            .map(|(tenant, seq, _)| (tenant, seq))
            .collect(),
        total,
    ))
}

/// Ends the comparison of an event-rows table: looks for the live rows
/// outside every replayed range, then writes the replay's rows of the
/// first differing keys to the scratch table and lists those keys as any
/// table's differences are (both rows as JSON); counts every differing row.
/// `replayed` is the replay's failures and how far it applied each tenant.
pub(crate) async fn finish(
    connection: &mut PgConnection,
    event_rows: &dyn EventRows,
    mut rows: RowCheck,
    replayed: (&BTreeMap<TenantId, ReplayFailure>, &HashMap<TenantId, i64>),
    only: Option<&[Uuid]>,
) -> Result<(Vec<Difference>, u64), sqlx::Error> {
    let (failures, applied) = replayed;
    let failed: Vec<Uuid> = failures.keys().map(TenantId::as_uuid).collect();
    let table = event_rows.table();
    let (keys, total) = only_live(&mut *connection, table, only, &failed, applied).await?;
    rows.only_live(keys, total);
    let findings = rows.findings(failures);
    if findings.listed.is_empty() {
        return Ok((Vec::new(), findings.differing));
    }
    let replayed: Vec<EventRow> = findings
        .listed
        .iter()
        .filter_map(|(_, row)| row.clone())
        .collect();
    event_rows.write(&mut *connection, &replayed).await?;
    let keys: Vec<(Uuid, i64)> = findings.listed.iter().map(|(key, _)| *key).collect();
    let (listed, _) = compare_table(connection, table, only, &failed, Some(&keys)).await?;
    Ok((listed, findings.differing))
}

/// The replayed ranges of `runs`: each from before its first event to its
/// last.
pub(crate) fn ranges_of<'e>(
    runs: impl IntoIterator<Item = (TenantId, &'e [&'e StoredEvent])>,
) -> Vec<TenantRange> {
    runs.into_iter()
        .filter_map(|(tenant_id, events)| {
            let (first, last) = (events.first()?, events.last()?);
            Some(TenantRange {
                tenant_id,
                after_seq: first.tenant_seq - 1,
                until_seq: last.tenant_seq,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(tenant: u128, seq: i64, value: Value) -> EventRow {
        EventRow {
            tenant_id: Uuid::from_u128(tenant),
            tenant_seq: seq,
            columns: vec![Column::Plain(value)],
        }
    }

    fn json(text: &str) -> Column {
        Column::Json(text.to_string())
    }

    #[test]
    fn rows_equal_on_both_sides_are_no_finding_and_every_other_is() {
        let mut check = RowCheck::default();
        check.compare(
            vec![
                row(1, 1, json!("a")),
                row(1, 2, json!("b")),
                row(1, 3, json!("c")),
            ],
            // In another order; seq 2 differs, 3 is missing, 4 is extra.
            vec![
                row(1, 4, json!("d")),
                row(1, 2, json!("B")),
                row(1, 1, json!("a")),
            ],
        );
        let findings = check.findings(&BTreeMap::new());
        assert_eq!(findings.differing, 3);
        assert_eq!(
            findings.listed,
            vec![
                ((Uuid::from_u128(1), 2), Some(row(1, 2, json!("b")))),
                ((Uuid::from_u128(1), 3), Some(row(1, 3, json!("c")))),
                ((Uuid::from_u128(1), 4), None),
            ]
        );
    }

    #[test]
    fn json_columns_are_equal_as_json_whatever_their_text() {
        assert_eq!(json(r#"{"a": 1, "bb": [2]}"#), json(r#"{"bb":[2],"a":1}"#));
        assert_ne!(json(r#"{"a": 1}"#), json(r#"{"a": 2}"#));
        assert_ne!(json(r#"{"a": 1}"#), json(r#"{"a": 1, "b": null}"#));
        // What the projection writes is an integer; a live 1.0 is not it.
        assert_ne!(json("[1]"), json("[1.0]"));
        assert_ne!(json("[1]"), Column::Plain(json!("[1]")));
        assert_ne!(json("not json"), json("not  json"));
    }

    #[test]
    fn the_first_rows_by_key_are_listed_all_are_counted_and_failed_tenants_left_out() {
        let mut check = RowCheck::default();
        let many = DIFFERENCES_MAX + 5;
        // Tenant 2 differs everywhere, found last to first; tenant 1 has
        // one live row only; tenant 3 fails.
        check.compare(
            (1..=many)
                .rev()
                .map(|seq| row(2, seq, json!(seq)))
                .collect(),
            Vec::new(),
        );
        check.only_live([(Uuid::from_u128(1), 7)], 1);
        check.compare(vec![row(3, 1, json!(1))], Vec::new());
        let failed = BTreeMap::from([(
            TenantId::from_uuid(Uuid::from_u128(3)),
            ReplayFailure {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(3)),
                tenant_seq: 2,
                message: "refused".into(),
            },
        )]);
        let findings = check.findings(&failed);
        assert_eq!(findings.differing, many as u64 + 1);
        let keys: Vec<(Uuid, i64)> = findings.listed.iter().map(|(key, _)| *key).collect();
        let mut expected = vec![(Uuid::from_u128(1), 7)];
        expected.extend((1..DIFFERENCES_MAX).map(|seq| (Uuid::from_u128(2), seq)));
        assert_eq!(keys, expected);
    }
}
