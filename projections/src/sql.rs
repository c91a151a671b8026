//! Read-model storage shared by every projection: table descriptions, a typed row
//! codec (rows are serde structs), a working set that loads rows on demand and writes
//! each batch's changes in bulk, and a small query builder that speaks both backends.
//!
//! Rows are plain structs declared with [`read_model_row!`], which derives their
//! [`TableDef`] (columns in field order, SQL types from the field types) and a direct
//! codec, so one writer and one reader serve every read model on PostgreSQL and
//! SQLite alike. Times are RFC 3339 text with microseconds ([`fmt_time`]): fixed
//! width, so they sort as times.

use std::collections::HashMap;

use eventstore::{PgStore, SqliteStore, Store};

pub use eventstore::sql::{fmt_time, parse_time, Bind, Dialect, Sql, Tx};

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

/// A row of a read-model table (implemented by [`read_model_row!`]).
pub trait Row: Clone + Send + Sync + 'static {
    const TABLE: TableDef;
    /// The row's values in column order.
    fn encode(&self) -> Vec<Bind>;
    /// A row from its values in column order.
    fn decode(values: Vec<Bind>) -> Result<Self, String>;
}

/// A Rust type stored in one read-model column.
pub trait Column: Sized {
    const COL: Col;
    fn bind(&self) -> Bind;
    fn take(value: Bind) -> Result<Self, String>;
}

macro_rules! column {
    ($ty:ty, $col:ident, $variant:ident, $value:ident => $bind:expr) => {
        impl Column for $ty {
            const COL: Col = Col::$col;
            fn bind(&self) -> Bind {
                let $value = self;
                Bind::$variant(Some($bind))
            }
            fn take(value: Bind) -> Result<Self, String> {
                match value {
                    Bind::$variant(Some(v)) => Ok(v),
                    other => Err(format!("expected {:?}, found {other:?}", Col::$col)),
                }
            }
        }
        impl Column for Option<$ty> {
            const COL: Col = Col::$col;
            fn bind(&self) -> Bind {
                Bind::$variant(self.as_ref().map(|$value| $bind))
            }
            fn take(value: Bind) -> Result<Self, String> {
                match value {
                    Bind::$variant(v) => Ok(v),
                    other => Err(format!("expected {:?}, found {other:?}", Col::$col)),
                }
            }
        }
    };
}
column!(String, Text, Text, v => v.clone());
column!(i64, Int, Int, v => *v);
column!(bool, Bool, Bool, v => *v);

/// Declares a read-model row: the struct, and its [`Row`] implementation with the
/// table's columns in field order (the first field is the primary key). Every field
/// type implements [`Column`].
///
/// ```
/// use projections::read_model_row;
/// use projections::sql::{Bind, Col, Row};
///
/// read_model_row! {
///     #[derive(Debug, Clone, PartialEq)]
///     pub struct Example in "rm_example" {
///         pub id: String,
///         pub count: i64,
///         pub note: Option<String>,
///     }
/// }
///
/// assert_eq!(Example::TABLE.name, "rm_example");
/// assert_eq!(Example::TABLE.columns[1], ("count", Col::Int));
/// let row = Example { id: "a".into(), count: 2, note: None };
/// assert_eq!(Example::decode(row.encode()), Ok(row));
/// assert!(Example::decode(vec![Bind::Int(Some(1))]).is_err());
/// ```
#[macro_export]
macro_rules! read_model_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:literal {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty ),+
        }

        impl $crate::sql::Row for $name {
            const TABLE: $crate::sql::TableDef = $crate::sql::TableDef {
                name: $table,
                columns: &[ $( (stringify!($field), <$ty as $crate::sql::Column>::COL) ),+ ],
            };

            fn encode(&self) -> Vec<$crate::sql::Bind> {
                vec![ $( $crate::sql::Column::bind(&self.$field) ),+ ]
            }

            fn decode(values: Vec<$crate::sql::Bind>) -> Result<Self, String> {
                let mut values = values.into_iter();
                Ok($name {
                    $( $field: <$ty as $crate::sql::Column>::take(
                        values.next().ok_or("missing column")?,
                    )
                    .map_err(|e| format!("{}.{}: {e}", $table, stringify!($field)))? ),+
                })
            }
        }
    };
}

/// A row keyed by a text id (the first column), which a [`Rows`] working set can hold.
pub trait KeyedRow: Row {
    fn id(&self) -> &str;
}

/// Decoding query results as read-model rows, for the shared statement builder and
/// transaction (which know nothing of rows).
#[allow(async_fn_in_trait)]
pub trait FetchRows {
    /// Runs the query and decodes its rows as `R`.
    async fn fetch<R: Row>(&mut self, sql: &Sql) -> Result<Vec<R>, sqlx::Error>;
}

impl FetchRows for Tx {
    async fn fetch<R: Row>(&mut self, sql: &Sql) -> Result<Vec<R>, sqlx::Error> {
        match self {
            Tx::Postgres(tx) => decode_rows(&sql.pg().fetch_all(&mut **tx).await?, R::TABLE),
            Tx::Sqlite(tx) => decode_rows(&sql.sqlite().fetch_all(&mut **tx).await?, R::TABLE),
        }
    }
}

/// Running a shared statement on the store's pool and decoding its rows as
/// read-model rows.
#[allow(async_fn_in_trait)]
pub trait QueryRows {
    async fn fetch<R: Row>(&self, store: &Store) -> Result<Vec<R>, sqlx::Error>;
}

impl QueryRows for Sql {
    async fn fetch<R: Row>(&self, store: &Store) -> Result<Vec<R>, sqlx::Error> {
        match store {
            Store::Postgres(PgStore { pool, .. }) => {
                decode_rows(&self.pg().fetch_all(pool).await?, R::TABLE)
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                decode_rows(&self.sqlite().fetch_all(pool).await?, R::TABLE)
            }
        }
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
    rows.iter()
        .map(|row| {
            let values = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, (_, col))| {
                    Ok(match col {
                        Col::Text => Bind::Text(row.try_get(i)?),
                        Col::Int => Bind::Int(row.try_get(i)?),
                        Col::Bool => Bind::Bool(row.try_get(i)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            R::decode(values).map_err(|e| sqlx::Error::ColumnDecode {
                index: table.name.to_string(),
                source: e.into(),
            })
        })
        .collect()
}

/// Most parameters in one SQLite statement (SQLite allows 32,766).
const SQLITE_MAX_PARAMS: usize = 4_000;

/// Writes rows in bulk: one statement on PostgreSQL (`UNNEST` of column arrays),
/// multi-row `VALUES` statements on SQLite (each statement is a round trip to the
/// connection's worker thread, so one per row would dominate). With `upsert`
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
    let encoded: Vec<Vec<Bind>> = rows.iter().map(|r| r.encode()).collect();
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
            let width = table.columns.len();
            let per_statement = (SQLITE_MAX_PARAMS / width).max(1);
            // Full chunks share one cached statement; the remainder gets its own.
            let statement = |rows: usize| {
                // Anonymous `?`: SQLite looks numbered parameters up by a linear
                // scan, which made binding thousands of them quadratic.
                let row = format!("({})", vec!["?"; width].join(", "));
                let values = vec![row.as_str(); rows].join(", ");
                format!(
                    "INSERT INTO {} ({columns}) VALUES {values}{conflict}",
                    table.name
                )
            };
            let full = statement(per_statement);
            let mut rows = encoded.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<Vec<Bind>> = rows.by_ref().take(per_statement).collect();
                let partial;
                let sql = if chunk.len() == per_statement {
                    &full
                } else {
                    partial = statement(chunk.len());
                    &partial
                };
                let mut query = sqlx::query(sql);
                for bind in chunk.into_iter().flatten() {
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
            for chunk in ids.chunks(SQLITE_MAX_PARAMS) {
                let placeholders = vec!["?"; chunk.len()].join(", ");
                let sql = format!(
                    "DELETE FROM {} WHERE {} IN ({placeholders})",
                    table.name,
                    table.key()
                );
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(&mut **tx).await?;
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
