//! Read tables whose rows each come from one event alone: filtered in
//! memory as the replay goes, without replaying them into a scratch table.
//!
//! A comparison replays every projection into scratch tables and joins each
//! with its live table. For a table of one row per event (the journal's
//! entries: a row per event that records an entry, keyed by the event's
//! tenant and seq, written once and never changed), that costs a scratch
//! row per event and a join over the whole table, the most of what a
//! comparison writes. Such a table is filtered instead as the replay goes:
//! the rows the replayed events give beside the live rows of the same
//! seqs, read back by key. A row equal here (the same text, number, time in
//! microseconds within what a `DateTime` holds, and the same JSON text) is
//! equal in the database; every other key is a candidate, its replayed row
//! written to the scratch table. At the end, the database compares the
//! candidates and every live row outside the replayed ranges as it compares
//! any table, so what is found, counted and listed is what a whole scratch
//! table of the rows as they were read would give.
//!
//! The live rows are read while the live workers run: rows at or below a
//! checkpoint are final, so that is safe. A row changed behind the
//! ledger's back after it was read is not seen by this comparison (the
//! next one sees it). A live table rebuilt and swapped in (or rewritten)
//! meanwhile is found at the end, and the comparison fails rather than
//! compare a table it has not read.

use crate::compare::{compare_table, Difference, ReplayFailure};
use crate::runtime::{ApplyError, ProjectionError};
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::database::quote_identifier;
use eventstore::{StoredEvent, TenantRange};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// One row of such a table: its key, and every other column in the
/// table's order.
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
    /// A value this side cannot tell exactly (a time at either end of what
    /// a `DateTime` holds, where `infinity` reads too): equal to nothing
    /// here, so the database decides.
    Undecided,
}

impl PartialEq for Column {
    /// Equal only when certainly equal in the database: two texts of JSON
    /// the same text (JSON that differs only in its text, `1.0` and `1`,
    /// is left to the database to decide).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Plain(one), Self::Plain(other)) => one == other,
            (Self::Json(one), Self::Json(other)) => one == other,
            _ => false,
        }
        // `Undecided` equals nothing, itself included.
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

/// The comparison of an event-rows table under way: the keys whose rows
/// may differ, and the live table it reads.
#[derive(Debug, Default)]
pub(crate) struct RowCheck {
    /// Keys where one side lacks the row or the two may differ (the
    /// replay's row, if it has one, written to the scratch table): the
    /// database decides at the end, as it does for any table.
    candidates: Vec<(Uuid, i64)>,
    /// The live table's identity (oid and file) when its rows were first
    /// read.
    table: Option<(u32, u32)>,
}

impl RowCheck {
    /// Sets the replay's rows of some ranges beside the live rows of the
    /// same ranges (both in any order, each key once): the replay's rows
    /// whose key has no equal live row, to be written to the scratch table,
    /// and every such key (and a live row's the replay lacks) kept as a
    /// candidate.
    pub fn compare(
        &mut self,
        mut replayed: Vec<EventRow>,
        mut live: Vec<EventRow>,
    ) -> Vec<EventRow> {
        // Both mostly come in key order already.
        replayed.sort_by_key(EventRow::key);
        live.sort_by_key(EventRow::key);
        let mut live = live.into_iter().peekable();
        let mut unequal = Vec::new();
        for row in replayed {
            while let Some(extra) = live.next_if(|found| found.key() < row.key()) {
                self.candidates.push(extra.key());
            }
            match live.next_if(|found| found.key() == row.key()) {
                Some(found) if found == row => {}
                _ => {
                    self.candidates.push(row.key());
                    unequal.push(row);
                }
            }
        }
        self.candidates.extend(live.map(|extra| extra.key()));
        unequal
    }

    /// Whether the live table's identity was noted.
    pub fn knows_table(&self) -> bool {
        self.table.is_some()
    }

    /// Notes the live table's identity, as its rows are first read.
    pub fn note_table(&mut self, identity: (u32, u32)) {
        self.table.get_or_insert(identity);
    }

    /// Notes the live table's identity as read now; `false` when it is not
    /// the one read before (rebuilt and swapped in, or rewritten, since).
    pub fn same_table(&mut self, identity: (u32, u32)) -> bool {
        *self.table.get_or_insert(identity) == identity
    }
}

/// The live table's identity: its oid and its file (a rebuild's swap
/// brings another table, a rewrite another file).
pub(crate) async fn identity(
    connection: &mut PgConnection,
    table: &str,
) -> Result<(u32, u32), sqlx::Error> {
    let (oid, file): (sqlx::postgres::types::Oid, sqlx::postgres::types::Oid) =
        sqlx::query_as("SELECT oid, relfilenode FROM pg_class WHERE oid = to_regclass($1)")
            .bind(format!("public.{}", quote_identifier(table)))
            .fetch_one(connection)
            .await?;
    Ok((oid.0, file.0))
}

/// The keys an event-rows table is compared at in the end: the
/// candidates, and every live row outside the replayed ranges (before seq
/// 1, past how far the replay applied its tenant, or of a tenant it did not
/// replay).
pub(crate) struct Scope<'a> {
    pub candidates: &'a [(Uuid, i64)],
    pub applied: &'a HashMap<TenantId, i64>,
}

impl Scope<'_> {
    /// The condition on a row `x` of either table, from parameter `$4` on:
    /// a candidate's key, or a seq outside its tenant's replayed range (how
    /// far it applied looked up by tenant, not searched for: every live row
    /// is tested).
    pub const CONDITION: &'static str = "\
        ((x.tenant_id, x.tenant_seq) IN (SELECT * FROM unnest($4::uuid[], $5::bigint[])) \
         OR x.tenant_seq NOT BETWEEN 1 AND coalesce(($6::jsonb ->> x.tenant_id::text)::bigint, 0))";

    pub fn bind<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(
                self.candidates
                    .iter()
                    .map(|(tenant, _)| *tenant)
                    .collect::<Vec<_>>(),
            )
            .bind(
                self.candidates
                    .iter()
                    .map(|(_, seq)| *seq)
                    .collect::<Vec<_>>(),
            )
            .bind(Value::Object(
                self.applied
                    .iter()
                    .map(|(tenant_id, until_seq)| (tenant_id.to_string(), Value::from(*until_seq)))
                    .collect(),
            ))
    }
}

/// Ends the comparison of an event-rows table, in the transaction that
/// pauses the live batches: the database compares the candidates and the
/// live rows outside every replayed range as it compares any table (the
/// first [`DIFFERENCES_MAX`](crate::compare::DIFFERENCES_MAX) by key, and
/// how many in all). A live table rebuilt or rewritten while the replay
/// compared it is an error: the rows compared before are not the ones live
/// now.
pub(crate) async fn finish(
    connection: &mut PgConnection,
    event_rows: &dyn EventRows,
    mut rows: RowCheck,
    replayed: (&BTreeMap<TenantId, ReplayFailure>, &HashMap<TenantId, i64>),
    only: Option<&[Uuid]>,
) -> Result<(Vec<Difference>, u64), ProjectionError> {
    let (failures, applied) = replayed;
    let table = event_rows.table();
    if !rows.same_table(identity(&mut *connection, table).await?) {
        return Err(ProjectionError::Changed(table.to_string()));
    }
    let failed: Vec<Uuid> = failures.keys().map(TenantId::as_uuid).collect();
    let scope = Scope {
        candidates: &rows.candidates,
        applied,
    };
    Ok(compare_table(connection, table, only, &failed, Some(&scope)).await?)
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
    fn every_key_without_an_equal_live_row_is_a_candidate_with_its_replayed_row() {
        let mut check = RowCheck::default();
        let unequal = check.compare(
            vec![
                row(1, 1, json!("a")),
                row(1, 2, json!("b")),
                row(1, 3, json!("c")),
            ],
            // In another order; seq 2 differs, 3 is missing, 4 and 0 are extra.
            vec![
                row(1, 4, json!("d")),
                row(1, 2, json!("B")),
                row(1, 1, json!("a")),
                row(1, 0, json!("z")),
            ],
        );
        assert_eq!(unequal, vec![row(1, 2, json!("b")), row(1, 3, json!("c"))]);
        let key = |seq| (Uuid::from_u128(1), seq);
        assert_eq!(check.candidates, vec![key(0), key(2), key(3), key(4)]);
    }

    #[test]
    fn json_columns_are_equal_here_only_as_the_same_text() {
        assert_eq!(
            json(r#"{"a": 1, "bb": [2]}"#),
            json(r#"{"a": 1, "bb": [2]}"#)
        );
        // Equal JSON in other text is the database's to decide.
        assert_ne!(json(r#"{"a": 1}"#), json(r#"{"a":1}"#));
        assert_ne!(json("[1]"), json("[1.0]"));
        assert_ne!(json("[1]"), Column::Plain(json!("[1]")));
        assert_ne!(Column::Undecided, Column::Undecided);
    }

    #[test]
    fn a_table_is_the_same_only_while_its_oid_and_file_are() {
        let mut check = RowCheck::default();
        assert!(check.same_table((10, 20)));
        assert!(check.same_table((10, 20)));
        assert!(!check.same_table((10, 21)));
        assert!(!check.same_table((11, 20)));
        let mut noted = RowCheck::default();
        assert!(!noted.knows_table());
        noted.note_table((10, 20));
        noted.note_table((10, 21));
        assert!(noted.knows_table());
        assert!(noted.same_table((10, 20)));
        assert!(!noted.same_table((10, 21)));
    }
}
