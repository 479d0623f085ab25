//! The live projector's batches (docs/adr/0016): a batch of log events is
//! folded in memory by the rebuild's own fold ([`ReadModelFold`]), seeded
//! with the stored rows the batch touches, then written with a handful of
//! set-based statements: COPY (PostgreSQL) or multi-row INSERTs (SQLite)
//! for the insert-only tables, one upsert per keyed table for the rows
//! that changed (one balance row per account per batch, one daily-usage
//! row per key), and the expiry schedule's changes. The caller holds the
//! checkpoint row and commits the batch with it.

use std::collections::HashMap;

use store::audit::RawEvent;
use store::sql::{Arg, ArrayArg, SqlRow, SqlTx};

use crate::bulk::{
    write_streamed, Decoded, ExpiryOp, ReadModelFold, Row, Table, Touched, INSERT_PARAMS_MAX,
};
use crate::ProjectionError;

/// The keyed tables a batch reads its starting rows from.
const SEEDED: [Table; 7] = [
    Table::Accounts,
    Table::Balances,
    Table::UsageDaily,
    Table::Invoices,
    Table::Payments,
    Table::Subscriptions,
    Table::TeamMembers,
];

/// The insert-only tables.
const STREAMED: [Table; 3] = [Table::Transactions, Table::Usage, Table::CostHistory];

/// A page of the log, read and decoded (possibly ahead of its batch).
pub(crate) struct Page {
    /// The position it was read after.
    pub(crate) from: i64,
    /// The most events it was asked for.
    pub(crate) limit: u32,
    pub(crate) events: Vec<RawEvent>,
    decoded: Vec<Result<Decoded, ProjectionError>>,
}

impl Page {
    /// Whether it holds as many events as it was asked for: more may wait
    /// after it (the projector is behind).
    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= self.limit as usize
    }

    /// Keeps the first `n` events.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.events.truncate(n);
        self.decoded.truncate(n);
    }
}

/// Reads up to `limit` events after `from` and decodes them (on a blocking
/// thread: it is this process's CPU, not a wait).
pub(crate) async fn read_page(
    store: store::Store,
    from: i64,
    limit: u32,
) -> Result<Page, ProjectionError> {
    let events = store.log_page(from, i64::MAX, limit.max(1), false).await?;
    let (events, decoded) = tokio::task::spawn_blocking(move || {
        let decoded = events.iter().map(Decoded::parse).collect();
        (events, decoded)
    })
    .await
    .map_err(|e| ProjectionError::FoldTask(e.to_string()))?;
    Ok(Page {
        from,
        limit,
        events,
        decoded,
    })
}

/// Applies a prefix of the page's events (log order, all after the
/// checkpoint) in `tx` and returns its length: all of them, or those
/// before the first event that cannot be decoded or folded, so that a
/// poison event is met alone in the next batch and its error names it. An
/// error is returned only when the first event is the one that fails.
pub(crate) async fn apply_batch(tx: &mut SqlTx, page: Page) -> Result<usize, ProjectionError> {
    let events = &page.events;
    let mut decoded = Vec::with_capacity(events.len());
    for d in page.decoded {
        match d {
            Ok(d) => decoded.push(d),
            Err(err) if decoded.is_empty() => return Err(err),
            Err(_) => break,
        }
    }
    let mut touched = Touched::default();
    for (raw, d) in events.iter().zip(&decoded) {
        touched.add(raw, d);
    }
    let mut seeds: Vec<(Table, Row)> = Vec::new();
    for table in SEEDED {
        let keys = touched.keys(table);
        if !keys.is_empty() {
            for row in select_rows(tx, table, &keys).await? {
                seeds.push((table, row));
            }
        }
    }
    let copy_text = matches!(tx, SqlTx::Pg(_));
    let (mut fold, n) = fold_prefix(&seeds, events, &decoded, copy_text)?;

    for table in STREAMED {
        let rows = fold.take_streamed_text(table);
        if !rows.is_empty() {
            write_streamed(tx, table, rows).await?;
        }
    }
    let before: HashMap<(Table, String), &Row> = seeds
        .iter()
        .map(|(t, row)| ((*t, key_text(*t, row)), row))
        .collect();
    for table in SEEDED {
        let changed: Vec<Row> = fold
            .keyed_rows(table)
            .into_iter()
            .filter(|row| {
                before
                    .get(&(table, key_text(table, row)))
                    .is_none_or(|old| !same_row(old, row))
            })
            .collect();
        upsert_rows(tx, table, &changed, Conflict::Update).await?;
    }
    let mut deleted = Vec::new();
    let mut absent = Vec::new();
    let mut set = Vec::new();
    for ((account, item), op) in fold.take_expiry_ops() {
        match op {
            ExpiryOp::Delete => deleted.push(vec![account, item]),
            ExpiryOp::InsertIfAbsent(due) => {
                absent.push(vec![account.into(), item.into(), due.into()])
            }
            ExpiryOp::Set(due) => set.push(vec![account.into(), item.into(), due.into()]),
        }
    }
    delete_rows(tx, Table::ExpirySchedule, &deleted).await?;
    upsert_rows(tx, Table::ExpirySchedule, &absent, Conflict::Nothing).await?;
    upsert_rows(tx, Table::ExpirySchedule, &set, Conflict::Update).await?;
    Ok(n)
}

/// Folds the longest prefix of the decoded events that folds without an
/// error, from the seeded rows; returns the fold and the prefix's length.
/// With `copy_text`, the insert-only rows are made as COPY text.
fn fold_prefix(
    seeds: &[(Table, Row)],
    events: &[RawEvent],
    decoded: &[Decoded],
    copy_text: bool,
) -> Result<(ReadModelFold, usize), ProjectionError> {
    let mut n = decoded.len();
    loop {
        let mut fold = ReadModelFold::for_batch();
        if copy_text {
            fold.stream_copy_text();
        }
        for (table, row) in seeds {
            fold.seed(*table, row.clone())?;
        }
        let failed = events
            .iter()
            .zip(&decoded[..n])
            .enumerate()
            .find_map(|(i, (raw, d))| fold.apply(raw, d).err().map(|e| (i, e)));
        match failed {
            None => return Ok((fold, n)),
            Some((0, e)) => return Err(e),
            // The fold has half-applied event i: fold the prefix again.
            Some((i, _)) => n = i,
        }
    }
}

/// Whether two renderings of a row hold the same values (`Text` and
/// `OptText(Some)` of one string are the same value).
fn same_row(a: &[Arg], b: &[Arg]) -> bool {
    fn norm(v: &Arg) -> (Option<i64>, Option<&str>) {
        match v {
            Arg::I64(n) | Arg::OptI64(Some(n)) => (Some(*n), None),
            Arg::Text(t) | Arg::OptText(Some(t)) => (None, Some(t)),
            Arg::OptI64(None) | Arg::OptText(None) => (None, None),
        }
    }
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| norm(x) == norm(y))
}

/// A row's key columns as one text.
fn key_text(table: Table, row: &[Arg]) -> String {
    let columns = table.columns();
    let mut out = String::new();
    for k in table.key() {
        if let Some(v) = columns.iter().position(|c| c == k).and_then(|i| row.get(i)) {
            match v {
                Arg::I64(n) | Arg::OptI64(Some(n)) => out.push_str(&n.to_string()),
                Arg::Text(t) | Arg::OptText(Some(t)) => out.push_str(t),
                Arg::OptI64(None) | Arg::OptText(None) => {}
            }
        }
        out.push('\u{1f}');
    }
    out
}

/// A stored row as [`Row`], in [`Table::columns`] order.
fn stored_row(table: Table, row: &SqlRow) -> Result<Row, ProjectionError> {
    let json = row.to_json()?;
    table
        .columns()
        .iter()
        .map(|c| match &json[*c] {
            serde_json::Value::Null => Ok(Arg::OptText(None)),
            serde_json::Value::String(s) => Ok(Arg::Text(s.clone())),
            serde_json::Value::Number(n) => {
                n.as_i64().map(Arg::I64).ok_or(ProjectionError::BadRow {
                    column: c,
                    reason: format!("{n} is not a 64-bit integer"),
                })
            }
            other => Err(ProjectionError::BadRow {
                column: c,
                reason: format!("unexpected value {other}"),
            }),
        })
        .collect()
}

/// `$from, $from+1, …` for `n` placeholders, parenthesized.
fn placeholders(from: usize, n: usize) -> String {
    let list: Vec<String> = (from..from + n).map(|i| format!("${i}")).collect();
    format!("({})", list.join(", "))
}

/// A condition on `table`'s (all text) key columns matching `keys`, with
/// its arguments: one condition over arrays on PostgreSQL, chunks of
/// `IN (VALUES …)` within [`INSERT_PARAMS_MAX`] on SQLite.
enum KeyFilter {
    Arrays(String, Vec<ArrayArg>),
    Values(String, Vec<Arg>),
}

fn key_filters(tx: &SqlTx, table: Table, keys: &[Vec<String>]) -> Vec<KeyFilter> {
    let key = table.key();
    let key_list = key.join(", ");
    if matches!(tx, SqlTx::Pg(_)) {
        let condition = if key.len() == 1 {
            format!("{key_list} = ANY($1::text[])")
        } else {
            let unnest: Vec<String> = (1..=key.len()).map(|i| format!("${i}::text[]")).collect();
            format!(
                "({key_list}) IN (SELECT * FROM UNNEST({}))",
                unnest.join(", ")
            )
        };
        let arrays = (0..key.len())
            .map(|j| ArrayArg::Text(keys.iter().map(|k| k.get(j).cloned()).collect()))
            .collect();
        return vec![KeyFilter::Arrays(condition, arrays)];
    }
    keys.chunks((INSERT_PARAMS_MAX / key.len()).max(1))
        .map(|chunk| {
            let tuples: Vec<String> = (0..chunk.len())
                .map(|i| placeholders(i * key.len() + 1, key.len()))
                .collect();
            let args = chunk
                .iter()
                .flatten()
                .map(|k| Arg::Text(k.clone()))
                .collect();
            KeyFilter::Values(
                format!("({key_list}) IN (VALUES {})", tuples.join(", ")),
                args,
            )
        })
        .collect()
}

/// The rows of `table` whose (all text) key columns are one of `keys`.
async fn select_rows(
    tx: &mut SqlTx,
    table: Table,
    keys: &[Vec<String>],
) -> Result<Vec<Row>, ProjectionError> {
    let select = format!(
        "SELECT {} FROM {} WHERE",
        table.columns().join(", "),
        table.sql_name()
    );
    let mut found = Vec::new();
    for filter in key_filters(tx, table, keys) {
        let rows = match filter {
            KeyFilter::Arrays(condition, args) => {
                tx.fetch_all_arrays(&format!("{select} {condition}"), args)
                    .await?
            }
            KeyFilter::Values(condition, args) => {
                tx.fetch_all(&format!("{select} {condition}"), &args)
                    .await?
            }
        };
        for row in rows {
            found.push(stored_row(table, &row)?);
        }
    }
    Ok(found)
}

/// Rows whose (all text) key columns are one of `keys` are deleted.
async fn delete_rows(
    tx: &mut SqlTx,
    table: Table,
    keys: &[Vec<String>],
) -> Result<(), ProjectionError> {
    if keys.is_empty() {
        return Ok(());
    }
    let delete = format!("DELETE FROM {} WHERE", table.sql_name());
    for filter in key_filters(tx, table, keys) {
        match filter {
            KeyFilter::Arrays(condition, args) => {
                tx.execute_arrays(&format!("{delete} {condition}"), args)
                    .await?
            }
            KeyFilter::Values(condition, args) => {
                tx.execute(&format!("{delete} {condition}"), &args).await?
            }
        };
    }
    Ok(())
}

/// What an upsert does to a row whose key is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conflict {
    /// Every other column takes the new value.
    Update,
    /// The stored row stays.
    Nothing,
}

/// Inserts `rows` (unique keys), or updates the stored rows of their keys.
async fn upsert_rows(
    tx: &mut SqlTx,
    table: Table,
    rows: &[Row],
    conflict: Conflict,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns = table.columns();
    let key = table.key();
    let on_conflict = match conflict {
        Conflict::Nothing => format!("ON CONFLICT ({}) DO NOTHING", key.join(", ")),
        Conflict::Update => {
            let sets: Vec<String> = columns
                .iter()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                sets.join(", ")
            )
        }
    };
    if matches!(tx, SqlTx::Pg(_)) {
        let arrays = column_arrays(table, rows)?;
        let unnest: Vec<String> = arrays
            .iter()
            .enumerate()
            .map(|(i, a)| format!("${}::{}", i + 1, a.pg_type()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) {on_conflict}",
            table.sql_name(),
            columns.join(", "),
            unnest.join(", ")
        );
        tx.execute_arrays(&sql, arrays).await?;
        return Ok(());
    }
    for chunk in rows.chunks((INSERT_PARAMS_MAX / columns.len()).max(1)) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| placeholders(i * columns.len() + 1, columns.len()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} {on_conflict}",
            table.sql_name(),
            columns.join(", "),
            tuples.join(", ")
        );
        let args: Vec<Arg> = chunk.iter().flatten().cloned().collect();
        tx.execute(&sql, &args).await?;
    }
    Ok(())
}

/// `rows` turned column-wise into arrays: a column is an integer array
/// when its values are integers, else a text array (every nullable
/// read-model column is text).
fn column_arrays(table: Table, rows: &[Row]) -> Result<Vec<ArrayArg>, ProjectionError> {
    let columns = table.columns();
    columns
        .iter()
        .enumerate()
        .map(|(j, column)| {
            let integer = rows
                .iter()
                .filter_map(|r| r.get(j))
                .find_map(|v| match v {
                    Arg::I64(_) | Arg::OptI64(Some(_)) => Some(true),
                    Arg::Text(_) | Arg::OptText(Some(_)) => Some(false),
                    Arg::OptI64(None) | Arg::OptText(None) => None,
                })
                .unwrap_or(matches!(rows[0].get(j), Some(Arg::OptI64(_))));
            let mismatch = |v: Option<&Arg>| ProjectionError::BadRow {
                column,
                reason: format!("mixed value types in one column: {v:?}"),
            };
            if integer {
                rows.iter()
                    .map(|r| match r.get(j) {
                        Some(Arg::I64(n)) => Ok(Some(*n)),
                        Some(Arg::OptI64(n)) => Ok(*n),
                        Some(Arg::OptText(None)) => Ok(None),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<_, _>>()
                    .map(ArrayArg::I64)
            } else {
                rows.iter()
                    .map(|r| match r.get(j) {
                        Some(Arg::Text(t)) => Ok(Some(t.clone())),
                        Some(Arg::OptText(t)) => Ok(t.clone()),
                        Some(Arg::OptI64(None)) => Ok(None),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<_, _>>()
                    .map(ArrayArg::Text)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_by_value_not_by_rendering() {
        let stored: Row = vec!["a".into(), Arg::OptText(None), 5.into()];
        let folded: Row = vec![
            Arg::OptText(Some("a".into())),
            Arg::OptText(None),
            Arg::OptI64(Some(5)),
        ];
        assert!(same_row(&stored, &folded));
        let changed: Row = vec!["a".into(), Arg::OptText(Some("x".into())), 5.into()];
        assert!(!same_row(&stored, &changed));
    }

    #[test]
    fn a_column_of_integers_binds_as_a_bigint_array() {
        let rows: Vec<Row> = vec![
            vec![
                "acc".into(),
                1.into(),
                2.into(),
                3.into(),
                "2026-01".into(),
                0.into(),
                0.into(),
                9.into(),
                "t".into(),
            ],
            vec![
                "acc2".into(),
                Arg::OptI64(Some(4)),
                2.into(),
                3.into(),
                "2026-01".into(),
                0.into(),
                0.into(),
                9.into(),
                "t".into(),
            ],
        ];
        let arrays = column_arrays(Table::Balances, &rows).unwrap();
        assert_eq!(
            arrays[0],
            ArrayArg::Text(vec![Some("acc".into()), Some("acc2".into())])
        );
        assert_eq!(arrays[1], ArrayArg::I64(vec![Some(1), Some(4)]));
        let mixed: Vec<Row> = vec![rows[0].clone(), {
            let mut r = rows[1].clone();
            r[1] = "not a number".into();
            r
        }];
        assert!(column_arrays(Table::Balances, &mixed).is_err());
    }
}
