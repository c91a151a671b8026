//! Read-model storage shared by every projection: table descriptions, a typed row
//! codec (rows are serde structs), a working set that loads rows on demand and writes
//! each batch's changes in bulk, and a small query builder that speaks both backends.
//!
//! Rows are plain serde structs; a [`TableDef`] lists their columns and SQL types, so
//! one codec serves every read model on PostgreSQL and SQLite alike. Times are RFC
//! 3339 text with microseconds ([`fmt_time`]): fixed width, so they sort as times.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::{SqliteStore, Store};

/// The SQL type of a read-model column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Text,
    Int,
    Bool,
}

/// A read-model table: its name and columns (the first is the primary key).
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
}

impl TableDef {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key(&self) -> &'static str {
        self.columns[0].0
    }
}

/// A row of a read-model table.
pub trait Row: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const TABLE: TableDef;
}

/// A row keyed by a text id (the first column), which a [`Rows`] working set can hold.
pub trait KeyedRow: Row {
    fn id(&self) -> &str;
}

/// Formats a time the way every read model stores it.
pub fn fmt_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An open read-model transaction on either backend.
pub enum Tx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Tx {
    pub async fn begin(store: &Store) -> Result<Tx, sqlx::Error> {
        Ok(match store {
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Store::Sqlite(SqliteStore { pool, .. }) => Tx::Sqlite(pool.begin().await?),
        })
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::Sqlite(tx) => tx.rollback().await,
        }
    }

    /// Runs a statement without results (plain SQL, no parameters).
    pub async fn execute(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
            Tx::Sqlite(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs a built statement without results.
    pub async fn run(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(tx) => sql.pg().execute(&mut **tx).await?.rows_affected(),
            Tx::Sqlite(tx) => sql.sqlite().execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs a built query and decodes its rows as `R`.
    pub async fn fetch<R: Row>(&mut self, sql: &Sql) -> Result<Vec<R>, sqlx::Error> {
        match self {
            Tx::Postgres(tx) => decode_rows(&sql.pg().fetch_all(&mut **tx).await?, R::TABLE),
            Tx::Sqlite(tx) => decode_rows(&sql.sqlite().fetch_all(&mut **tx).await?, R::TABLE),
        }
    }

    pub fn backend(&self) -> Dialect {
        match self {
            Tx::Postgres(_) => Dialect::Postgres,
            Tx::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of(store: &Store) -> Dialect {
        match store {
            Store::Postgres(_) => Dialect::Postgres,
            Store::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

/// A statement with its parameters, written once for both backends: [`Sql::arg`]
/// returns the placeholder (`$n` or `?n`) for the value it binds.
#[derive(Debug, Clone)]
pub struct Sql {
    dialect: Dialect,
    pub text: String,
    binds: Vec<Bind>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Binds a value and returns its placeholder.
    pub fn arg(&mut self, value: impl Into<Bind>) -> String {
        self.binds.push(value.into());
        match self.dialect {
            Dialect::Postgres => format!("${}", self.binds.len()),
            Dialect::Sqlite => format!("?{}", self.binds.len()),
        }
    }

    /// Placeholders for a list, for `IN (…)`.
    pub fn args(&mut self, values: &[String]) -> String {
        values
            .iter()
            .map(|v| self.arg(v.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn pg(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut query = sqlx::query(&self.text);
        for bind in &self.binds {
            query = match bind {
                Bind::Text(v) => query.bind(v.clone()),
                Bind::Int(v) => query.bind(*v),
                Bind::Bool(v) => query.bind(*v),
            };
        }
        query
    }

    fn sqlite(&self) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for bind in &self.binds {
            query = match bind {
                Bind::Text(v) => query.bind(v.clone()),
                Bind::Int(v) => query.bind(*v),
                Bind::Bool(v) => query.bind(*v),
            };
        }
        query
    }

    /// Runs the query on the store's pool and decodes its rows.
    pub async fn fetch<R: Row>(&self, store: &Store) -> Result<Vec<R>, sqlx::Error> {
        match store {
            Store::Postgres(pool) => decode_rows(&self.pg().fetch_all(pool).await?, R::TABLE),
            Store::Sqlite(SqliteStore { pool, .. }) => {
                decode_rows(&self.sqlite().fetch_all(pool).await?, R::TABLE)
            }
        }
    }
}

impl From<String> for Bind {
    fn from(v: String) -> Bind {
        Bind::Text(Some(v))
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Bind {
        Bind::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Bind {
        Bind::Text(v)
    }
}
impl From<i64> for Bind {
    fn from(v: i64) -> Bind {
        Bind::Int(Some(v))
    }
}
impl From<bool> for Bind {
    fn from(v: bool) -> Bind {
        Bind::Bool(Some(v))
    }
}

/// `SELECT <all columns of R> FROM <table>`: the start of a query for rows of `R`.
pub fn select<R: Row>(dialect: Dialect) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "SELECT {} FROM {}",
        R::TABLE.column_list(),
        R::TABLE.name
    ));
    sql
}

fn decode_rows<DbRow, R>(rows: &[DbRow], table: TableDef) -> Result<Vec<R>, sqlx::Error>
where
    DbRow: sqlx::Row,
    R: Row,
    usize: sqlx::ColumnIndex<DbRow>,
    for<'r> Option<String>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    let _ = table;
    rows.iter()
        .map(|row| {
            let mut map = Map::new();
            for (i, (name, col)) in R::TABLE.columns.iter().enumerate() {
                let value = match col {
                    Col::Text => row.try_get::<Option<String>, _>(i)?.map(Value::from),
                    Col::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::from),
                    Col::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::from),
                };
                map.insert((*name).to_string(), value.unwrap_or(Value::Null));
            }
            serde_json::from_value(Value::Object(map)).map_err(|e| sqlx::Error::ColumnDecode {
                index: R::TABLE.name.to_string(),
                source: Box::new(e),
            })
        })
        .collect()
}

/// A row's column values in table order.
fn encode_row<R: Row>(row: &R) -> Result<Vec<Bind>, sqlx::Error> {
    let value = serde_json::to_value(row).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let Value::Object(mut map) = value else {
        return Err(sqlx::Error::Encode(
            "a row must serialize to an object".into(),
        ));
    };
    R::TABLE
        .columns
        .iter()
        .map(|(name, col)| {
            let v = map.remove(*name).unwrap_or(Value::Null);
            let bad =
                || sqlx::Error::Encode(format!("{}.{name}: unexpected {v}", R::TABLE.name).into());
            Ok(match (col, &v) {
                (_, Value::Null) => match col {
                    Col::Text => Bind::Text(None),
                    Col::Int => Bind::Int(None),
                    Col::Bool => Bind::Bool(None),
                },
                (Col::Text, Value::String(s)) => Bind::Text(Some(s.clone())),
                (Col::Int, Value::Number(n)) => Bind::Int(Some(n.as_i64().ok_or_else(bad)?)),
                (Col::Bool, Value::Bool(b)) => Bind::Bool(Some(*b)),
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// Writes rows in bulk: one statement on PostgreSQL (`UNNEST` of column arrays), one
/// prepared statement per row on SQLite (in process, so that is cheap). With `upsert`
/// an existing row is replaced; without, a duplicate key is an error (append-only
/// tables such as the audit trail: applying an event twice must fail loudly).
pub async fn write_rows<R: Row>(tx: &mut Tx, rows: &[&R], upsert: bool) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let table = &R::TABLE;
    let columns = table.column_list();
    let conflict = if upsert {
        let set = table.columns[1..]
            .iter()
            .map(|(c, _)| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" ON CONFLICT ({}) DO UPDATE SET {set}", table.key())
    } else {
        String::new()
    };
    let encoded = rows
        .iter()
        .map(|r| encode_row(*r))
        .collect::<Result<Vec<_>, _>>()?;
    match tx {
        Tx::Postgres(tx) => {
            let arrays = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, (_, col))| {
                    let ty = match col {
                        Col::Text => "text",
                        Col::Int => "bigint",
                        Col::Bool => "boolean",
                    };
                    format!("${}::{ty}[]", i + 1)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {} ({columns}) SELECT * FROM UNNEST({arrays}){conflict}",
                table.name
            );
            let mut query = sqlx::query(&sql);
            for (i, (_, col)) in table.columns.iter().enumerate() {
                query = match col {
                    Col::Text => query.bind(
                        encoded
                            .iter()
                            .map(|r| match &r[i] {
                                Bind::Text(v) => v.clone(),
                                _ => None,
                            })
                            .collect::<Vec<Option<String>>>(),
                    ),
                    Col::Int => query.bind(
                        encoded
                            .iter()
                            .map(|r| match &r[i] {
                                Bind::Int(v) => *v,
                                _ => None,
                            })
                            .collect::<Vec<Option<i64>>>(),
                    ),
                    Col::Bool => query.bind(
                        encoded
                            .iter()
                            .map(|r| match &r[i] {
                                Bind::Bool(v) => *v,
                                _ => None,
                            })
                            .collect::<Vec<Option<bool>>>(),
                    ),
                };
            }
            query.execute(&mut **tx).await?;
        }
        Tx::Sqlite(tx) => {
            let placeholders = (1..=table.columns.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {} ({columns}) VALUES ({placeholders}){conflict}",
                table.name
            );
            for row in encoded {
                let mut query = sqlx::query(&sql);
                for bind in row {
                    query = match bind {
                        Bind::Text(v) => query.bind(v),
                        Bind::Int(v) => query.bind(v),
                        Bind::Bool(v) => query.bind(v),
                    };
                }
                query.execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

async fn delete_rows(tx: &mut Tx, table: &TableDef, ids: &[String]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(tx) => {
            let sql = format!("DELETE FROM {} WHERE {} = ANY($1)", table.name, table.key());
            sqlx::query(&sql).bind(ids).execute(&mut **tx).await?;
        }
        Tx::Sqlite(tx) => {
            let sql = format!("DELETE FROM {} WHERE {} = ?1", table.name, table.key());
            for id in ids {
                sqlx::query(&sql).bind(id).execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

/// Rows kept in memory after a commit, at most (beyond that the cache is dropped and
/// rows are loaded on demand again).
const CACHE_ROWS: usize = 200_000;

/// The working set of one table for one projection.
///
/// Rows are loaded on first use and kept across batches (this process holds the
/// projection's lock, so nobody else writes its tables); a batch's changes stay in
/// `pending` until the transaction commits and are dropped if it rolls back. After a
/// reset to position 0 the tables are empty, so the cache is *complete*: a row it
/// does not hold does not exist, and a rebuild never queries for rows.
pub struct Rows<R: KeyedRow> {
    committed: HashMap<String, Option<R>>,
    pending: HashMap<String, Option<R>>,
    complete: bool,
}

impl<R: KeyedRow> Default for Rows<R> {
    fn default() -> Self {
        Rows {
            committed: HashMap::new(),
            pending: HashMap::new(),
            complete: false,
        }
    }
}

impl<R: KeyedRow> Rows<R> {
    /// The row with this id as the batch sees it so far.
    pub async fn get(&mut self, tx: &mut Tx, id: &str) -> Result<Option<R>, sqlx::Error> {
        if let Some(row) = self.pending.get(id) {
            return Ok(row.clone());
        }
        if let Some(row) = self.committed.get(id) {
            return Ok(row.clone());
        }
        if self.complete {
            return Ok(None);
        }
        let mut sql = select::<R>(tx.backend());
        let key = sql.arg(id);
        sql.push(&format!(" WHERE {} = {key}", R::TABLE.key()));
        let row = tx.fetch::<R>(&sql).await?.into_iter().next();
        self.committed.insert(id.to_string(), row.clone());
        Ok(row)
    }

    pub fn put(&mut self, row: R) {
        self.pending.insert(row.id().to_string(), Some(row));
    }

    pub fn delete(&mut self, id: &str) {
        self.pending.insert(id.to_string(), None);
    }

    /// Writes this batch's changes inside `tx`.
    pub async fn flush(&mut self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        let mut upserts: Vec<&R> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for (id, row) in &self.pending {
            match row {
                Some(row) => upserts.push(row),
                None => deletes.push(id.clone()),
            }
        }
        // Deterministic statement order keeps lock order stable across processes.
        upserts.sort_by(|a, b| a.id().cmp(b.id()));
        deletes.sort();
        write_rows(tx, &upserts, true).await?;
        delete_rows(tx, &R::TABLE, &deletes).await
    }

    /// The transaction committed: the batch's rows become the cached state.
    pub fn committed(&mut self) {
        if self.committed.len() + self.pending.len() > CACHE_ROWS {
            self.committed.clear();
            self.pending.clear();
            self.complete = false;
            return;
        }
        self.committed.extend(self.pending.drain());
    }

    /// The transaction rolled back: forget the batch.
    pub fn rolled_back(&mut self) {
        self.pending.clear();
    }

    /// Forgets everything; `empty` says the table is known to be empty.
    pub fn reset(&mut self, empty: bool) {
        self.committed.clear();
        self.pending.clear();
        self.complete = empty;
    }
}
