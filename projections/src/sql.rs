//! Read-model storage shared by every projection: table descriptions, a typed row
//! codec (rows are serde structs), a working set that loads rows on demand and writes
//! each batch's changes in bulk, and a small query builder that speaks both backends.
//!
//! Rows are plain structs declared with [`read_model_row!`], which derives their
//! [`TableDef`] (columns in field order, SQL types from the field types) and a direct
//! codec, so one writer and one reader serve every read model on PostgreSQL and
//! SQLite alike. Times are RFC 3339 text with microseconds ([`fmt_time`]): fixed
//! width, so they sort as times.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use eventstore::{PgStore, SqliteStore, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// Why one stored value does not decode as its column's Rust type. A corrupt value is
/// always this error, never a silent default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// The database handed back another SQL type, or NULL where none may be.
    #[error("expected {expected:?}, found {found}")]
    Type { expected: Col, found: String },
    /// The text does not parse as the column's type (an unknown state name, a
    /// malformed time, JSON of the wrong shape).
    #[error("{value:?} is not a valid {what}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl ColumnError {
    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl ToString) -> ColumnError {
        // a whole JSON document would drown the message: its start is enough
        let value = match value.char_indices().nth(120) {
            Some((end, _)) => format!("{}…", &value[..end]),
            None => value.to_string(),
        };
        ColumnError::Invalid {
            what,
            value,
            reason: reason.to_string(),
        }
    }
}

/// Why a row does not decode: which column of which table, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("{table}: the query returned no value for column {column}")]
    Missing {
        table: &'static str,
        column: &'static str,
    },
    #[error("{table}.{column}: {source}")]
    Column {
        table: &'static str,
        column: &'static str,
        #[source]
        source: ColumnError,
    },
}

/// One stored value as read, borrowed from the query's result (decoding a row
/// copies only what its fields keep: no intermediate owned values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl<'a> From<&'a Bind> for Cell<'a> {
    fn from(value: &'a Bind) -> Cell<'a> {
        match value {
            Bind::Text(text) => Cell::Text(text.as_deref()),
            Bind::Int(int) => Cell::Int(*int),
            Bind::Bool(flag) => Cell::Bool(*flag),
        }
    }
}

/// The cells of encoded values (what [`Row::decode`] reads back).
pub fn cells(values: &[Bind]) -> Vec<Cell<'_>> {
    values.iter().map(Cell::from).collect()
}

/// A row of a read-model table (implemented by [`read_model_row!`]).
pub trait Row: Clone + Send + Sync + 'static {
    const TABLE: TableDef;
    /// The row's values in column order.
    fn encode(&self) -> Vec<Bind>;
    /// The row's fields in PostgreSQL's binary `COPY` form, appended to `out`
    /// (see [`copy_rows`]); without the field count.
    fn copy_fields(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        self.encode()
            .iter()
            .try_for_each(|value| copy_field(out, value))
    }
    /// A row from its values in column order.
    fn decode(values: &[Cell<'_>]) -> Result<Self, RowError>;
}

/// A Rust type stored in one read-model column. Implemented for every [`NotNull`]
/// type `T` (a NOT NULL column) and for `Option<T>` (a nullable one).
pub trait Column: Sized {
    const COL: Col;
    fn bind(&self) -> Bind;
    fn take(value: Cell<'_>) -> Result<Self, ColumnError>;
    /// The value as one binary `COPY` field (its length, then its bytes).
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error>;
}

/// A value stored in one column as text, an integer or a boolean, never NULL
/// (`Option<T>` is the nullable column of it).
pub trait NotNull: Sized {
    const COL: Col;
    /// The value to store (always `Some` inside).
    fn to_bind(&self) -> Bind;
    /// The stored value back; `value` is never a NULL.
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError>;
    /// The value as one binary `COPY` field; by default through [`NotNull::to_bind`].
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        copy_field(out, &self.to_bind())
    }
}

fn is_null(value: &Cell<'_>) -> bool {
    matches!(value, Cell::Text(None) | Cell::Int(None) | Cell::Bool(None))
}

fn col_of(value: &Cell<'_>) -> Col {
    match value {
        Cell::Text(_) => Col::Text,
        Cell::Int(_) => Col::Int,
        Cell::Bool(_) => Col::Bool,
    }
}

fn null(col: Col) -> Bind {
    match col {
        Col::Text => Bind::Text(None),
        Col::Int => Bind::Int(None),
        Col::Bool => Bind::Bool(None),
    }
}

fn mismatch(expected: Col, found: &Cell<'_>) -> ColumnError {
    ColumnError::Type {
        expected,
        found: format!("{found:?}"),
    }
}

impl<T: NotNull> Column for T {
    const COL: Col = T::COL;
    fn bind(&self) -> Bind {
        self.to_bind()
    }
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        NotNull::copy(self, out)
    }
    fn take(value: Cell<'_>) -> Result<Self, ColumnError> {
        if is_null(&value) {
            return Err(mismatch(T::COL, &value));
        }
        T::from_cell(value)
    }
}

impl<T: NotNull> Column for Option<T> {
    const COL: Col = T::COL;
    fn bind(&self) -> Bind {
        match self {
            Some(value) => value.to_bind(),
            None => null(T::COL),
        }
    }
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        match self {
            Some(value) => NotNull::copy(value, out),
            None => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                Ok(())
            }
        }
    }
    fn take(value: Cell<'_>) -> Result<Self, ColumnError> {
        if is_null(&value) {
            // NULL of another SQL type is still the wrong type
            return match col_of(&value) == T::COL {
                true => Ok(None),
                false => Err(mismatch(T::COL, &value)),
            };
        }
        T::from_cell(value).map(Some)
    }
}

impl NotNull for String {
    const COL: Col = Col::Text;
    fn to_bind(&self) -> Bind {
        Bind::Text(Some(self.clone()))
    }
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        copy_bytes(out, self.as_bytes())
    }
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError> {
        text(value).map(str::to_string)
    }
}

impl NotNull for i64 {
    const COL: Col = Col::Int;
    fn to_bind(&self) -> Bind {
        Bind::Int(Some(*self))
    }
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        copy_bytes(out, &self.to_be_bytes())
    }
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError> {
        match value {
            Cell::Int(Some(v)) => Ok(v),
            other => Err(mismatch(Col::Int, &other)),
        }
    }
}

impl NotNull for bool {
    const COL: Col = Col::Bool;
    fn to_bind(&self) -> Bind {
        Bind::Bool(Some(*self))
    }
    fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        copy_bytes(out, &[u8::from(*self)])
    }
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError> {
        match value {
            Cell::Bool(Some(v)) => Ok(v),
            other => Err(mismatch(Col::Bool, &other)),
        }
    }
}

/// The text of a text column (for the text-backed column types below).
pub fn text(value: Cell<'_>) -> Result<&str, ColumnError> {
    match value {
        Cell::Text(Some(text)) => Ok(text),
        other => Err(mismatch(Col::Text, &other)),
    }
}

/// Times are stored as [`fmt_time`] writes them: RFC 3339 with microseconds.
impl NotNull for DateTime<Utc> {
    const COL: Col = Col::Text;
    fn to_bind(&self) -> Bind {
        Bind::Text(Some(fmt_time(*self)))
    }
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError> {
        let text = text(value)?;
        parse_time(text).ok_or_else(|| ColumnError::invalid("time", text, "not RFC 3339"))
    }
}

/// A column holding `T` as JSON text (`serde_json`, compact). Decoding JSON that is
/// not a `T` is an error, never an empty or default value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize + DeserializeOwned> NotNull for Json<T> {
    const COL: Col = Col::Text;
    fn to_bind(&self) -> Bind {
        // Serializing plain data (no maps with non-string keys) cannot fail.
        Bind::Text(Some(
            serde_json::to_string(&self.0).unwrap_or_else(|_| "null".into()),
        ))
    }
    fn from_cell(value: Cell<'_>) -> Result<Self, ColumnError> {
        let text = text(value)?;
        serde_json::from_str(text)
            .map(Json)
            .map_err(|e| ColumnError::invalid("JSON value", text, e))
    }
}

/// Stores unit enums by their stable names (`as_str`, and back with `FromStr`):
/// the names the events and the stored rows already use, so no byte changes.
#[macro_export]
macro_rules! named_column {
    ($($ty:ty),+ $(,)?) => {$(
        impl $crate::sql::NotNull for $ty {
            const COL: $crate::sql::Col = $crate::sql::Col::Text;
            fn to_bind(&self) -> $crate::sql::Bind {
                $crate::sql::Bind::Text(Some(self.as_str().to_string()))
            }
            fn copy(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
                $crate::sql::copy_bytes(out, self.as_str().as_bytes())
            }
            fn from_cell(
                value: $crate::sql::Cell<'_>,
            ) -> Result<Self, $crate::sql::ColumnError> {
                let text = $crate::sql::text(value)?;
                text.parse::<$ty>().map_err(|e| $crate::sql::ColumnError::Invalid {
                    what: stringify!($ty),
                    value: text.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    )+};
}

named_column!(
    aggregates::environment::EnvironmentClass,
    aggregates::environment::EnvironmentStatus,
    aggregates::incident::IncidentStatus,
    aggregates::incident::SlaState,
    aggregates::incident::Severity,
    aggregates::incident::ResolutionType,
    aggregates::mapping::MappingStatus,
    aggregates::promotion::PromotionStatus,
    aggregates::deployment::DeploymentStatus,
    aggregates::deployment::DeploymentPhase,
    aggregates::deployment::SnapshotKind,
);

/// Declares a read-model row: the struct, and its [`Row`] implementation with the
/// table's columns in field order (the first field is the primary key). Every field
/// type implements [`Column`].
///
/// ```
/// use projections::read_model_row;
/// use projections::sql::{cells, Cell, Col, Row, RowError};
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
/// assert_eq!(Example::decode(&cells(&row.encode())), Ok(row));
/// assert!(matches!(
///     Example::decode(&[Cell::Int(Some(1))]),
///     Err(RowError::Column { column: "id", .. })
/// ));
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

            fn copy_fields(&self, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
                $( $crate::sql::Column::copy(&self.$field, out)?; )+
                Ok(())
            }

            fn decode(
                values: &[$crate::sql::Cell<'_>],
            ) -> Result<Self, $crate::sql::RowError> {
                let mut values = values.iter().copied();
                Ok($name {
                    $( $field: {
                        let value = values.next().ok_or($crate::sql::RowError::Missing {
                            table: $table,
                            column: stringify!($field),
                        })?;
                        <$ty as $crate::sql::Column>::take(value).map_err(|source| {
                            $crate::sql::RowError::Column {
                                table: $table,
                                column: stringify!($field),
                                source,
                            }
                        })?
                    } ),+
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
            Tx::Postgres(tx) => decode_rows(&sql.pg().fetch_all(&mut **tx).await?, R::TABLE, false),
            Tx::Sqlite(tx) => {
                decode_rows(&sql.sqlite().fetch_all(&mut **tx).await?, R::TABLE, true)
            }
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
                decode_rows(&self.pg().fetch_all(pool).await?, R::TABLE, false)
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                decode_rows(&self.sqlite().fetch_all(pool).await?, R::TABLE, true)
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

fn decode_rows<'r, DbRow, R>(
    rows: &'r [DbRow],
    table: TableDef,
    types_vary: bool,
) -> Result<Vec<R>, sqlx::Error>
where
    DbRow: sqlx::Row,
    R: Row,
    usize: sqlx::ColumnIndex<DbRow>,
    Option<&'r str>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    Option<i64>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
    Option<bool>: sqlx::Decode<'r, DbRow::Database> + sqlx::Type<DbRow::Database>,
{
    // Every value's SQL type is checked against its column's: on PostgreSQL once, on
    // the first row (a result's column types are fixed), on SQLite for every value
    // (its types are per value).
    let get = |row: &'r DbRow, i: usize, col: Col, check: bool| -> Result<Cell<'r>, sqlx::Error> {
        Ok(match (col, check) {
            (Col::Text, true) => Cell::Text(row.try_get(i)?),
            (Col::Int, true) => Cell::Int(row.try_get(i)?),
            (Col::Bool, true) => Cell::Bool(row.try_get(i)?),
            (Col::Text, false) => Cell::Text(row.try_get_unchecked(i)?),
            (Col::Int, false) => Cell::Int(row.try_get_unchecked(i)?),
            (Col::Bool, false) => Cell::Bool(row.try_get_unchecked(i)?),
        })
    };
    let mut values: Vec<Cell<'r>> = Vec::with_capacity(table.columns.len());
    let mut decoded = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        values.clear();
        for (i, (_, col)) in table.columns.iter().enumerate() {
            values.push(get(row, i, *col, types_vary || n == 0)?);
        }
        decoded.push(R::decode(&values).map_err(|e| sqlx::Error::ColumnDecode {
            index: table.name.to_string(),
            source: Box::new(e),
        })?);
    }
    Ok(decoded)
}

/// Most parameters in one SQLite statement (SQLite allows 32,766).
const SQLITE_MAX_PARAMS: usize = 4_000;

/// The header of PostgreSQL's binary `COPY` format: signature, flags, no extension.
const PG_COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// How much encoded `COPY` data is sent at a time (the rest is encoded meanwhile).
const PG_COPY_CHUNK: usize = 1 << 20;

/// Inserts `rows` with one binary `COPY … FROM STDIN` (PostgreSQL): PostgreSQL
/// builds each row straight from its fields, without parsing parameter arrays or
/// materializing an `UNNEST` (half the server's time of the `INSERT` for the audit
/// trail's batches, decision 66). Like a plain `INSERT`, a duplicate key fails the
/// whole statement.
async fn copy_rows<R: Row>(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &[&R],
) -> Result<(), sqlx::Error> {
    let table = &R::TABLE;
    let statement = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.name,
        table.column_list()
    );
    let fields = i16::try_from(table.columns.len())
        .map_err(|_| sqlx::Error::Protocol(format!("{}: too many columns", table.name)))?;
    let mut copy = tx.copy_in_raw(&statement).await?;
    let mut buffer = Vec::with_capacity(PG_COPY_CHUNK + (PG_COPY_CHUNK >> 2));
    buffer.extend_from_slice(PG_COPY_HEADER);
    for row in rows {
        buffer.extend_from_slice(&fields.to_be_bytes());
        row.copy_fields(&mut buffer)?;
        if buffer.len() >= PG_COPY_CHUNK {
            copy.send(buffer.as_slice()).await?;
            buffer.clear();
        }
    }
    buffer.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buffer.as_slice()).await?;
    copy.finish().await?;
    Ok(())
}

/// One non-NULL field of a binary `COPY` row: its length, then its value in the
/// type's binary form (`text`: the UTF-8 bytes; `bigint`: 8 bytes, `boolean`: 1
/// byte, both big-endian).
pub fn copy_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), sqlx::Error> {
    let len = i32::try_from(bytes.len())
        .map_err(|_| sqlx::Error::Protocol("a value of 2 GB or more".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// One field of a binary `COPY` row from its bound value (-1 for NULL).
fn copy_field(out: &mut Vec<u8>, value: &Bind) -> Result<(), sqlx::Error> {
    match value {
        Bind::Text(Some(text)) => copy_bytes(out, text.as_bytes()),
        Bind::Int(Some(int)) => copy_bytes(out, &int.to_be_bytes()),
        Bind::Bool(Some(flag)) => copy_bytes(out, &[u8::from(*flag)]),
        Bind::Text(None) | Bind::Int(None) | Bind::Bool(None) => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            Ok(())
        }
    }
}

/// Writes rows in bulk: one statement on PostgreSQL (`UNNEST` of column arrays,
/// or a binary `COPY` without `upsert`: [`copy_rows`]), multi-row `VALUES` statements on SQLite (each statement is a round trip to the
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
    if let (false, Tx::Postgres(tx)) = (upsert, &mut *tx) {
        return copy_rows(tx, rows).await;
    }
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

/// Rows a [`RecentRows`] keeps, at most (the least recently committed go first).
pub const RECENT_ROWS: usize = 4_096;

/// The rows of one table as the live projector last committed them, shared with
/// readers in the same process (decision 80): a mutation's read-back, once the
/// projection's checkpoint covers the mutation's position, takes its row from here
/// instead of querying the table. Filled by [`Rows::committed`] after each commit,
/// emptied by [`Rows::reset`]; bounded, so a row it no longer keeps is read from the
/// table as before. A row it keeps is the table's row as of the projector's
/// checkpoint: every later change of it by this projector replaces it.
pub struct RecentRows<R> {
    rows: std::sync::Mutex<lru::LruCache<String, Option<R>, foldhash::fast::RandomState>>,
}

impl<R: Row> RecentRows<R> {
    pub fn new(capacity: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN);
        RecentRows {
            rows: std::sync::Mutex::new(lru::LruCache::with_hasher(
                capacity,
                foldhash::fast::RandomState::default(),
            )),
        }
    }

    /// The row with this id as last committed, exactly as the table gives it back
    /// (through the columns' codec: times at the microseconds stored, JSON as
    /// stored): `Some(None)` when the projector deleted it; `None` when it is not
    /// kept (ask the table).
    pub fn get(&self, id: &str) -> Option<Option<R>> {
        let row = {
            let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            rows.peek(id)?.clone()
        };
        match row {
            None => Some(None),
            Some(row) => {
                let stored = row.encode();
                let cells: Vec<Cell<'_>> = stored.iter().map(Cell::from).collect();
                R::decode(&cells).ok().map(Some)
            }
        }
    }

    fn put_all<'a>(&self, changed: impl Iterator<Item = (&'a String, &'a Option<R>)>)
    where
        R: 'a,
    {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for (id, row) in changed {
            rows.put(id.clone(), row.clone());
        }
    }

    fn clear(&self) {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many rows are kept.
    pub fn len(&self) -> usize {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The working set of one table for one projection.
///
/// Rows are loaded on first use and kept across batches (this process holds the
/// projection's lock, so nobody else writes its tables); a batch's changes stay in
/// `pending` until the transaction commits and are dropped if it rolls back. After a
/// reset to position 0 the tables are empty, so the cache is *complete*: a row it
/// does not hold does not exist, and a rebuild never queries for rows.
///
/// With deferred writes ([`Rows::defer_writes`], a rebuild's replay) a flush writes
/// nothing while the cache holds every changed row: the rows its batches changed
/// stay in memory, owed (`unwritten`), until a flush writes them all, the first one
/// after deferring is turned off or once the cache is full (decision 66).
pub struct Rows<R: KeyedRow> {
    committed: RowMap<Option<R>>,
    pending: RowMap<Option<R>>,
    complete: bool,
    defer: bool,
    /// This batch's flush wrote every row owed (else, at the commit, the batch's
    /// changes join `unwritten`).
    written: bool,
    /// Rows whose committed state (or deletion) is not in the table yet.
    unwritten: HashSet<String, foldhash::fast::RandomState>,
    /// Where each commit's rows are shared with readers, once asked for.
    recent: Option<std::sync::Arc<RecentRows<R>>>,
}

/// Rows by id. foldhash rather than the standard SipHash: hashing the ids was 2 %
/// of a rebuild's time; it still seeds each map at random.
type RowMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

impl<R: KeyedRow> Default for Rows<R> {
    fn default() -> Self {
        Rows {
            committed: RowMap::default(),
            pending: RowMap::default(),
            complete: false,
            defer: false,
            written: false,
            unwritten: HashSet::default(),
            recent: None,
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

    /// Changes the row with this id in place, as the batch sees it so far; `false`
    /// (and `change` not called) when there is no such row. The row is copied once
    /// per batch at most (the committed copy stays as it is until the commit), where
    /// [`Rows::get`] and [`Rows::put`] copy it on every change.
    pub async fn modify(
        &mut self,
        tx: &mut Tx,
        id: &str,
        change: impl FnOnce(&mut R),
    ) -> Result<bool, sqlx::Error> {
        let Some(row) = self.get_mut(tx, id).await? else {
            return Ok(false);
        };
        change(row);
        Ok(true)
    }

    /// The row with this id as the batch sees it so far, to change in place (`None`
    /// when there is none), copied once per batch at most as [`Rows::modify`] says.
    pub async fn get_mut(&mut self, tx: &mut Tx, id: &str) -> Result<Option<&mut R>, sqlx::Error> {
        if !self.pending.contains_key(id) {
            let Some(row) = self.get(tx, id).await? else {
                return Ok(None);
            };
            self.pending.insert(id.to_string(), Some(row));
        }
        Ok(self.pending.get_mut(id).and_then(Option::as_mut))
    }

    pub fn put(&mut self, row: R) {
        self.pending.insert(row.id().to_string(), Some(row));
    }

    pub fn delete(&mut self, id: &str) {
        self.pending.insert(id.to_string(), None);
    }

    /// Whether flushes may keep changes in memory instead of writing them (see the
    /// type's documentation). Turned off, the next flush writes every row owed.
    pub fn defer_writes(&mut self, defer: bool) {
        self.defer = defer;
    }

    /// Writes this batch's changes inside `tx`, with the rows earlier batches left
    /// unwritten; with deferred writes, nothing while the cache can hold them.
    pub async fn flush(&mut self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        if self.defer && self.committed.len() + self.pending.len() <= CACHE_ROWS {
            return Ok(());
        }
        let mut upserts: Vec<&R> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for (id, row) in &self.pending {
            match row {
                Some(row) => upserts.push(row),
                None => deletes.push(id.clone()),
            }
        }
        for id in self
            .unwritten
            .iter()
            .filter(|id| !self.pending.contains_key(*id))
        {
            match self.committed.get(id) {
                Some(Some(row)) => upserts.push(row),
                Some(None) => deletes.push(id.clone()),
                // Owed rows are never dropped from the cache (`committed`).
                None => {
                    return Err(sqlx::Error::Protocol(format!(
                        "{}: the unwritten row {id} left the cache",
                        R::TABLE.name
                    )))
                }
            }
        }
        // Deterministic statement order keeps lock order stable across processes.
        upserts.sort_by(|a, b| a.id().cmp(b.id()));
        deletes.sort();
        write_rows(tx, &upserts, true).await?;
        delete_rows(tx, &R::TABLE, &deletes).await?;
        self.written = true;
        Ok(())
    }

    /// From now on, shares each commit's rows with readers through the returned
    /// [`RecentRows`] (the same one on every call).
    pub fn recent(&mut self) -> std::sync::Arc<RecentRows<R>> {
        self.recent
            .get_or_insert_with(|| std::sync::Arc::new(RecentRows::new(RECENT_ROWS)))
            .clone()
    }

    /// The transaction committed: the batch's rows become the cached state.
    pub fn committed(&mut self) {
        if let Some(recent) = &self.recent {
            recent.put_all(self.pending.iter());
        }
        if std::mem::take(&mut self.written) {
            self.unwritten.clear();
        } else {
            // (most ids are owed already: no copy of those)
            for id in self.pending.keys() {
                if !self.unwritten.contains(id) {
                    self.unwritten.insert(id.clone());
                }
            }
        }
        // (A deferring flush left the cache within bounds: nothing owed is dropped.)
        if self.unwritten.is_empty() && self.committed.len() + self.pending.len() > CACHE_ROWS {
            self.committed.clear();
            self.pending.clear();
            self.complete = false;
            return;
        }
        self.committed.extend(self.pending.drain());
    }

    /// The transaction rolled back: forget the batch.
    /// (Rows owed by earlier batches stay owed: nothing of this one was written.)
    pub fn rolled_back(&mut self) {
        self.pending.clear();
        self.written = false;
    }

    /// Forgets everything, rows owed included; `empty` says the table is known to be
    /// empty. (Deferring stays as it was set.)
    pub fn reset(&mut self, empty: bool) {
        if let Some(recent) = &self.recent {
            recent.clear();
        }
        self.committed.clear();
        self.pending.clear();
        self.unwritten.clear();
        self.written = false;
        self.complete = empty;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aggregates::incident::{AffectedWorkflow, IncidentStatus};
    use chrono::TimeZone;

    use super::*;

    fn stored<T: Column>(value: &T) -> Option<String> {
        match value.bind() {
            Bind::Text(text) => text,
            other => panic!("not text: {other:?}"),
        }
    }

    fn policy_row(id: &str, updated_by: &str) -> crate::models::policies::DriftPolicyRow {
        crate::models::policies::DriftPolicyRow {
            id: id.to_string(),
            tenant: "acme".into(),
            scope: "acme".into(),
            policy: Json(Default::default()),
            updated_by: updated_by.to_string(),
            updated_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn committed_rows_are_shared_and_nothing_else() {
        let mut rows = Rows::default();
        // Nothing is shared before a reader asks.
        rows.put(policy_row("acme:a", "before"));
        rows.committed();
        let recent = rows.recent();
        assert!(Arc::ptr_eq(&recent, &rows.recent()), "one per table");
        assert!(recent.get("acme:a").is_none());

        rows.put(policy_row("acme:a", "first"));
        rows.put(policy_row("acme:b", "first"));
        assert!(recent.get("acme:a").is_none(), "not before the commit");
        rows.committed();
        assert_eq!(
            recent.get("acme:a"),
            Some(Some(policy_row("acme:a", "first")))
        );
        assert_eq!(recent.len(), 2);

        // As the table gives it back: a time at the microseconds stored.
        let mut precise = policy_row("acme:c", "precise");
        precise.updated_at += chrono::Duration::nanoseconds(123_456_789);
        rows.put(precise);
        rows.committed();
        let shared = recent.get("acme:c").unwrap().unwrap();
        assert_eq!(shared.updated_at.timestamp_subsec_nanos(), 123_456_000);
        recent.rows.lock().unwrap().pop("acme:c");

        // A rolled-back batch is not shared; a deletion is (as no row).
        rows.put(policy_row("acme:a", "rolled back"));
        rows.rolled_back();
        rows.committed();
        assert_eq!(
            recent.get("acme:a"),
            Some(Some(policy_row("acme:a", "first")))
        );
        rows.delete("acme:b");
        rows.committed();
        assert_eq!(recent.get("acme:b"), Some(None));

        // A reset (a reload of the checkpoint, a rebuild swapped in) forgets them.
        rows.reset(false);
        assert!(recent.is_empty());

        // Bounded: the least recently committed go first.
        for i in 0..RECENT_ROWS + 10 {
            rows.put(policy_row(&format!("acme:{i}"), "many"));
            rows.committed();
        }
        assert_eq!(recent.len(), RECENT_ROWS);
        assert!(recent.get("acme:0").is_none());
        assert!(recent.get(&format!("acme:{}", RECENT_ROWS + 9)).is_some());
    }

    #[tokio::test]
    async fn rows_changed_in_place_commit_roll_back_and_stay_owed_like_put_rows() {
        let store = Store::connect("sqlite::memory:", 1).await.unwrap();
        let mut tx = Tx::begin(&store).await.unwrap();
        let mut rows = Rows::default();
        // known empty: a missing row is `None` without a query (there is no table)
        rows.reset(true);
        assert!(rows.get_mut(&mut tx, "acme:a").await.unwrap().is_none());
        assert!(rows.pending.is_empty(), "a missing row is not made");
        rows.put(policy_row("acme:a", "first"));
        rows.committed();

        // changed in place: the batch sees it, the committed copy stays until the commit
        rows.get_mut(&mut tx, "acme:a")
            .await
            .unwrap()
            .unwrap()
            .updated_by = "second".into();
        let row = rows.get_mut(&mut tx, "acme:a").await.unwrap().unwrap();
        assert_eq!(row.updated_by, "second", "the same copy within the batch");
        assert_eq!(
            rows.committed.get("acme:a"),
            Some(&Some(policy_row("acme:a", "first")))
        );
        rows.rolled_back();
        assert_eq!(
            rows.get(&mut tx, "acme:a").await.unwrap(),
            Some(policy_row("acme:a", "first")),
            "a rolled-back change is forgotten"
        );
        rows.get_mut(&mut tx, "acme:a")
            .await
            .unwrap()
            .unwrap()
            .updated_by = "third".into();
        rows.committed();
        assert_eq!(
            rows.get(&mut tx, "acme:a").await.unwrap(),
            Some(policy_row("acme:a", "third"))
        );
        // a deleted row is not there to change
        rows.delete("acme:a");
        assert!(rows.get_mut(&mut tx, "acme:a").await.unwrap().is_none());
        rows.rolled_back();

        // deferred: every row changed and not yet written is owed, once each
        rows.defer_writes(true);
        for batch in 0..3 {
            rows.get_mut(&mut tx, "acme:a")
                .await
                .unwrap()
                .unwrap()
                .updated_by = format!("{batch}");
            rows.put(policy_row(&format!("acme:{batch}"), "new"));
            rows.flush(&mut tx).await.unwrap();
            rows.committed();
        }
        let mut owed: Vec<&str> = rows.unwritten.iter().map(String::as_str).collect();
        owed.sort();
        assert_eq!(owed, ["acme:0", "acme:1", "acme:2", "acme:a"]);
        assert_eq!(
            rows.committed
                .get("acme:a")
                .unwrap()
                .as_ref()
                .unwrap()
                .updated_by,
            "2"
        );
        tx.rollback().await.unwrap();
    }

    #[test]
    fn typed_columns_store_the_bytes_strings_stored() {
        assert_eq!(
            stored(&IncidentStatus::Acknowledged).as_deref(),
            Some("acknowledged")
        );
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(stored(&at), Some(fmt_time(at)));
        assert_eq!(stored(&None::<DateTime<Utc>>), None);
        let workflows = vec![AffectedWorkflow {
            workflow_id: "wf-1".into(),
            name: "Orders".into(),
        }];
        assert_eq!(
            stored(&Json(workflows.clone())),
            Some(serde_json::to_string(&workflows).unwrap())
        );
        // and back
        for text in ["acknowledged", "closed"] {
            let status = IncidentStatus::take(Cell::Text(Some(text))).unwrap();
            assert_eq!(stored(&status).as_deref(), Some(text));
        }
        let text = "2026-03-01T12:00:00.123456Z";
        let time = <DateTime<Utc>>::take(Cell::Text(Some(text))).unwrap();
        assert_eq!(stored(&time).as_deref(), Some(text));
    }

    #[test]
    fn corrupt_values_are_errors_not_defaults() {
        let corrupt = |text: &'static str| Cell::Text(Some(text));
        assert!(matches!(
            <Json<Vec<AffectedWorkflow>>>::take(corrupt("[{\"workflow_id\": 1")),
            Err(ColumnError::Invalid {
                what: "JSON value",
                ..
            })
        ));
        // valid JSON of the wrong shape
        assert!(<Json<Vec<AffectedWorkflow>>>::take(corrupt("{}")).is_err());
        assert!(matches!(
            IncidentStatus::take(corrupt("reopened")),
            Err(ColumnError::Invalid { .. })
        ));
        assert!(<DateTime<Utc>>::take(corrupt("yesterday")).is_err());
        // NULL where the column cannot be NULL, and the wrong SQL type
        assert!(matches!(
            IncidentStatus::take(Cell::Text(None)),
            Err(ColumnError::Type { .. })
        ));
        assert!(<Option<String> as Column>::take(Cell::Int(None)).is_err());
        assert_eq!(
            <Option<IncidentStatus> as Column>::take(Cell::Text(None)),
            Ok(None)
        );
    }

    crate::read_model_row! {
        #[derive(Debug, Clone, PartialEq)]
        pub struct Typed in "rm_typed" {
            pub id: String,
            pub status: IncidentStatus,
            pub at: Option<DateTime<Utc>>,
        }
    }

    #[test]
    fn a_row_names_the_column_that_does_not_decode() {
        let error = Typed::decode(&[
            Cell::Text(Some("a")),
            Cell::Text(Some("reopened")),
            Cell::Text(None),
        ])
        .unwrap_err();
        assert!(matches!(
            error,
            RowError::Column {
                table: "rm_typed",
                column: "status",
                ..
            }
        ));
        assert!(
            error.to_string().starts_with("rm_typed.status: "),
            "{error}"
        );
        assert_eq!(
            Typed::decode(&[Cell::Text(Some("a"))]),
            Err(RowError::Missing {
                table: "rm_typed",
                column: "status"
            })
        );
    }
}
