//! A thin layer to run the same SQL on PostgreSQL and SQLite, for the read
//! models and the replay tools. Queries are written with `$1, $2, …`
//! placeholders; on SQLite they become `?1, ?2, …` (numbered, so order and
//! reuse work the same). Values are the few types both databases share.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row, Sqlite, Transaction};

use crate::{Store, StoreError};

/// A bind value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    I64(i64),
    OptI64(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::OptI64(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

fn to_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I64(v) => q.bind(*v),
                Arg::OptI64(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
                Arg::OptText(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

/// One column of values bound as a single PostgreSQL array parameter, for
/// set-based statements (`INSERT … SELECT * FROM UNNEST($1::text[], …)`):
/// one statement text whatever the number of rows, so it is prepared once.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayArg {
    I64(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
}

impl ArrayArg {
    /// The PostgreSQL array type to cast the parameter to.
    pub fn pg_type(&self) -> &'static str {
        match self {
            Self::I64(_) => "bigint[]",
            Self::Text(_) => "text[]",
        }
    }
}

macro_rules! bind_arrays {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                ArrayArg::I64(v) => q.bind(v),
                ArrayArg::Text(v) => q.bind(v),
            };
        }
        q
    }};
}

/// A row of either database.
pub enum SqlRow {
    Pg(PgRow),
    Sqlite(SqliteRow),
}

impl SqlRow {
    /// The row as a JSON object of integers, texts and nulls (for dumps and
    /// comparisons; every read-model column is one of those).
    pub fn to_json(&self) -> Result<serde_json::Value, StoreError> {
        use sqlx::Column;
        let mut map = serde_json::Map::new();
        macro_rules! each {
            ($r:expr) => {
                for c in $r.columns() {
                    let name = c.name();
                    let value = if let Ok(v) = $r.try_get::<Option<i64>, _>(name) {
                        v.map(serde_json::Value::from)
                    } else {
                        $r.try_get::<Option<String>, _>(name)?
                            .map(serde_json::Value::from)
                    };
                    map.insert(name.to_owned(), value.unwrap_or(serde_json::Value::Null));
                }
            };
        }
        match self {
            Self::Pg(r) => each!(r),
            Self::Sqlite(r) => each!(r),
        }
        Ok(serde_json::Value::Object(map))
    }

    pub fn i64(&self, col: &str) -> Result<i64, StoreError> {
        Ok(match self {
            Self::Pg(r) => r.try_get(col)?,
            Self::Sqlite(r) => r.try_get(col)?,
        })
    }
    pub fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Self::Pg(r) => r.try_get(col)?,
            Self::Sqlite(r) => r.try_get(col)?,
        })
    }
    pub fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(match self {
            Self::Pg(r) => r.try_get(col)?,
            Self::Sqlite(r) => r.try_get(col)?,
        })
    }
    pub fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Self::Pg(r) => r.try_get(col)?,
            Self::Sqlite(r) => r.try_get(col)?,
        })
    }
}

fn no_arrays() -> StoreError {
    StoreError::Persistence("array parameters are PostgreSQL's; SQLite has none".into())
}

/// A transaction on either database; rolled back when dropped uncommitted.
pub enum SqlTx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl SqlTx {
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        let sqlite_sql = to_sqlite(sql);
        Ok(match self {
            Self::Pg(tx) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Self::Sqlite(tx) => bind_all!(sqlx::query(&sqlite_sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<SqlRow>, StoreError> {
        let sqlite_sql = to_sqlite(sql);
        Ok(match self {
            Self::Pg(tx) => bind_all!(sqlx::query(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(SqlRow::Pg)
                .collect(),
            Self::Sqlite(tx) => bind_all!(sqlx::query(&sqlite_sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(SqlRow::Sqlite)
                .collect(),
        })
    }

    /// Runs a PostgreSQL statement whose parameters are arrays
    /// ([`ArrayArg`]). SQLite has no array parameters: there it is an error.
    pub async fn execute_arrays(
        &mut self,
        sql: &str,
        args: Vec<ArrayArg>,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Pg(tx) => Ok(bind_arrays!(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected()),
            Self::Sqlite(_) => Err(no_arrays()),
        }
    }

    /// [`SqlTx::fetch_all`] with array parameters (PostgreSQL only).
    pub async fn fetch_all_arrays(
        &mut self,
        sql: &str,
        args: Vec<ArrayArg>,
    ) -> Result<Vec<SqlRow>, StoreError> {
        match self {
            Self::Pg(tx) => Ok(bind_arrays!(sqlx::query(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(SqlRow::Pg)
                .collect()),
            Self::Sqlite(_) => Err(no_arrays()),
        }
    }

    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<SqlRow>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Pg(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// The highest value reserved in `scope` that starts with `prefix`
    /// (e.g. the year's last invoice number, `INV-2026-`). Values of one
    /// prefix must have one fixed width, so that text order is number order.
    pub async fn highest_reservation(
        &self,
        scope: &str,
        prefix: &str,
    ) -> Result<Option<String>, StoreError> {
        // LIKE's wildcards in the prefix are escaped away.
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let row = self
            .fetch_optional(
                "SELECT value FROM reservations WHERE scope = $1 AND value LIKE $2 ESCAPE '\\' \
                 ORDER BY value DESC LIMIT 1",
                &[scope.into(), pattern.into()],
            )
            .await?;
        row.map(|r| r.text("value")).transpose()
    }

    /// Starts a read-write transaction (SQLite: `BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<SqlTx, StoreError> {
        Ok(match self {
            Self::Postgres(s) => SqlTx::Pg(s.pool().begin().await?),
            Self::Sqlite(s) => SqlTx::Sqlite(s.pool().begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Runs a query outside any transaction.
    pub async fn fetch_all(&self, sql: &str, args: &[Arg]) -> Result<Vec<SqlRow>, StoreError> {
        let sqlite_sql = to_sqlite(sql);
        Ok(match self {
            Self::Postgres(s) => bind_all!(sqlx::query(sql), args)
                .fetch_all(s.pool())
                .await?
                .into_iter()
                .map(SqlRow::Pg)
                .collect(),
            Self::Sqlite(s) => bind_all!(sqlx::query(&sqlite_sql), args)
                .fetch_all(s.pool())
                .await?
                .into_iter()
                .map(SqlRow::Sqlite)
                .collect(),
        })
    }

    pub async fn fetch_optional(
        &self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<SqlRow>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        let sqlite_sql = to_sqlite(sql);
        Ok(match self {
            Self::Postgres(s) => bind_all!(sqlx::query(sql), args)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Self::Sqlite(s) => bind_all!(sqlx::query(&sqlite_sql), args)
                .execute(s.pool())
                .await?
                .rows_affected(),
        })
    }
}
