//! SQL written once for both backends: a statement builder whose placeholders follow
//! the dialect ([`Sql`]), a transaction on either backend ([`Tx`]), and the one text
//! format every stored time uses ([`fmt_time`]): RFC 3339 with microseconds, fixed
//! width, so times sort as text.
//!
//! Both sides use it: the write side for its own tables (payloads, scheduler
//! leases), the read side under its row codec (`projections::sql`).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{PgStore, SqliteStore, Store};

/// Formats a time the way every read model stores it.
pub fn fmt_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A stored time (RFC 3339, as [`fmt_time`] writes it) back as a `DateTime`. What
/// [`fmt_time`] writes (`2026-03-01T12:00:00.123456Z`) is read field by field;
/// any other RFC 3339 text through chrono.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    parse_stored_time(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` exactly, else `None`.
fn parse_stored_time(text: &str) -> Option<DateTime<Utc>> {
    let b: &[u8; 27] = text.as_bytes().try_into().ok()?;
    let punctuation = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ];
    if punctuation.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?;
    let time = chrono::NaiveTime::from_hms_micro_opt(
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 26)?,
    )?;
    Some(date.and_time(time).and_utc())
}

/// An open read-model transaction on either backend.
pub enum Tx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Tx {
    pub async fn begin(store: &Store) -> Result<Tx, sqlx::Error> {
        Ok(match store {
            Store::Postgres(PgStore { pool, .. }) => Tx::Postgres(pool.begin().await?),
            Store::Sqlite(SqliteStore { pool, .. }) => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// Like [`Tx::begin`], but on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that reads, then writes what it read, cannot
    /// meet another writer's commit in between.
    pub async fn begin_immediate(store: &Store) -> Result<Tx, sqlx::Error> {
        Ok(match store {
            Store::Postgres(PgStore { pool, .. }) => Tx::Postgres(pool.begin().await?),
            Store::Sqlite(SqliteStore { pool, .. }) => {
                Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)
            }
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

    /// Runs a built query and decodes its rows as tuples (or any `FromRow`).
    pub async fn fetch_as<T>(&mut self, sql: &Sql) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match self {
            Tx::Postgres(tx) => {
                let mut query = sqlx::query_as::<_, T>(&sql.text);
                for bind in &sql.binds {
                    query = match bind {
                        Bind::Text(v) => query.bind(v.clone()),
                        Bind::Int(v) => query.bind(*v),
                        Bind::Bool(v) => query.bind(*v),
                    };
                }
                query.fetch_all(&mut **tx).await
            }
            Tx::Sqlite(tx) => {
                let mut query = sqlx::query_as::<_, T>(&sql.text);
                for bind in &sql.binds {
                    query = match bind {
                        Bind::Text(v) => query.bind(v.clone()),
                        Bind::Int(v) => query.bind(*v),
                        Bind::Bool(v) => query.bind(*v),
                    };
                }
                query.fetch_all(&mut **tx).await
            }
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

    /// The statement as a PostgreSQL query with its parameters bound.
    pub fn pg(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

    /// The statement as a SQLite query with its parameters bound.
    pub fn sqlite(
        &self,
    ) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
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

    /// Runs the query on the store's pool and decodes its rows as tuples (or any
    /// `FromRow`).
    pub async fn fetch_as<T>(&self, store: &Store) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match store {
            Store::Postgres(PgStore { pool, .. }) => {
                let mut query = sqlx::query_as::<_, T>(&self.text);
                for bind in &self.binds {
                    query = match bind {
                        Bind::Text(v) => query.bind(v.clone()),
                        Bind::Int(v) => query.bind(*v),
                        Bind::Bool(v) => query.bind(*v),
                    };
                }
                query.fetch_all(pool).await
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let mut query = sqlx::query_as::<_, T>(&self.text);
                for bind in &self.binds {
                    query = match bind {
                        Bind::Text(v) => query.bind(v.clone()),
                        Bind::Int(v) => query.bind(*v),
                        Bind::Bool(v) => query.bind(*v),
                    };
                }
                query.fetch_all(pool).await
            }
        }
    }

    /// Runs the statement on the store's pool and returns the rows it changed (a
    /// write: on SQLite it waits for the store's write turn).
    pub async fn execute(&self, store: &Store) -> Result<u64, sqlx::Error> {
        Ok(match store {
            Store::Postgres(PgStore { pool, .. }) => self.pg().execute(pool).await?.rows_affected(),
            Store::Sqlite(sqlite @ SqliteStore { pool, .. }) => {
                let _turn = sqlite.write_turn().await;
                self.sqlite().execute(pool).await?.rows_affected()
            }
        })
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
impl From<Option<i64>> for Bind {
    fn from(value: Option<i64>) -> Self {
        Bind::Int(value)
    }
}

impl From<bool> for Bind {
    fn from(v: bool) -> Bind {
        Bind::Bool(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn stored_times_read_back_as_chrono_reads_them() {
        let base = Utc.with_ymd_and_hms(2026, 12, 6, 23, 59, 59).unwrap();
        let mut times = vec![
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 12, 0, 0).unwrap(),
        ];
        for micros in [0, 1, 999_999, 123_456, 500_000] {
            times.push(base + chrono::Duration::microseconds(micros));
        }
        for at in times {
            let text = fmt_time(at);
            let chrono = DateTime::parse_from_rfc3339(&text)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(parse_stored_time(&text), Some(chrono), "{text}");
            assert_eq!(parse_time(&text), Some(at), "{text}");
        }
        // not the stored shape: chrono's way, or nothing
        for (text, expected) in [
            ("2026-03-01T12:00:00Z", Some("2026-03-01T12:00:00Z")),
            (
                "2026-03-01T12:00:00.123456+02:00",
                Some("2026-03-01T10:00:00.123456Z"),
            ),
            (
                "2016-12-31T23:59:60.500000Z",
                Some("2016-12-31T23:59:60.500000Z"),
            ),
            ("2026-02-30T12:00:00.000000Z", None),
            ("2026-03-01T24:00:00.000000Z", None),
            ("2026-03-01T12:00:00.00000aZ", None),
            ("2026-03-01 12:00:00.000000Z", Some("2026-03-01T12:00:00Z")),
            ("not a time", None),
        ] {
            assert!(
                parse_stored_time(text).is_none() || expected.is_some(),
                "{text}"
            );
            let expected =
                expected.map(|e| DateTime::parse_from_rfc3339(e).unwrap().with_timezone(&Utc));
            assert_eq!(parse_time(text), expected, "{text}");
        }
    }
}
