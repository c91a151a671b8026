//! What the read queries share: pages, opaque cursors, limits and errors.

use crate::sql::QueryRows as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use eventstore::StoreError;

/// Largest page a query returns; asking for more is refused (`VALIDATION`).
pub const MAX_PAGE: i64 = 200;

/// One page of a list, Relay style.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// One opaque cursor per item (Relay edges), in the same order.
    pub cursors: Vec<String>,
    /// The cursor of the last item, to pass as `after`.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

impl<T> Page<T> {
    /// The same page (cursors included) with each item turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            cursors: self.cursors,
            end_cursor: self.end_cursor,
            has_next_page: self.has_next_page,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad input (`VALIDATION`): names the argument.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Store(StoreError::Database(e))
    }
}

impl QueryError {
    pub fn validation(field: &str, message: impl Into<String>) -> QueryError {
        QueryError::Validation {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Checks a page size: 1 ..= [`MAX_PAGE`].
pub fn page_size(first: i64) -> Result<i64, QueryError> {
    if (1..=MAX_PAGE).contains(&first) {
        Ok(first)
    } else {
        Err(QueryError::validation(
            "first",
            format!("page size must be between 1 and {MAX_PAGE}, got {first}"),
        ))
    }
}

/// An opaque cursor: hex of the JSON of the sort key of the last item.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Decodes a cursor made by [`encode_cursor`]; anything else is `VALIDATION`.
pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, QueryError> {
    let malformed = || QueryError::validation("after", "malformed cursor");
    let bytes = hex::decode(cursor).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// Builds a page from `limit + 1` fetched items.
pub fn page<T, K: Serialize>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Page<T> {
    let has_next_page = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let cursors: Vec<String> = items.iter().map(|item| encode_cursor(&key(item))).collect();
    Page {
        end_cursor: cursors.last().cloned(),
        cursors,
        items,
        has_next_page,
    }
}

/// `%term%` for `LIKE … ESCAPE '\'`, lowercased, with `%`, `_` and `\` escaped.
pub fn like_pattern(term: &str) -> String {
    let mut pattern = String::from("%");
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A page of a lifecycle list (incidents, promotions, deployments) of `tenant`,
/// newest first by `time_column` then id, with equality filters on text columns
/// (`None` = no filter).
pub async fn newest_first<R: crate::sql::KeyedRow>(
    store: &eventstore::Store,
    tenant: &str,
    time_column: &str,
    filters: &[(&str, Option<String>)],
    first: i64,
    after: Option<&str>,
) -> Result<Page<R>, QueryError> {
    let limit = page_size(first)?;
    let mut sql = crate::sql::select::<R>(crate::sql::Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE tenant = {t}"));
    for (column, value) in filters {
        if let Some(value) = value {
            let v = sql.arg(value.clone());
            sql.push(&format!(" AND {column} = {v}"));
        }
    }
    if let Some(after) = after {
        let (time, id): (String, String) = decode_cursor(after)?;
        let (a, b) = (sql.arg(time), sql.arg(id));
        sql.push(&format!(" AND ({time_column}, id) < ({a}, {b})"));
    }
    let l = sql.arg(limit + 1);
    sql.push(&format!(" ORDER BY {time_column} DESC, id DESC LIMIT {l}"));
    let rows: Vec<R> = sql.fetch(store).await?;
    let time_index = R::TABLE
        .columns
        .iter()
        .position(|(name, _)| *name == time_column);
    Ok(page(rows, limit, |row| {
        let time = match time_index.map(|i| row.encode().swap_remove(i)) {
            Some(crate::sql::Bind::Text(Some(time))) => time,
            _ => String::new(),
        };
        (time, row.id().to_string())
    }))
}

/// The rows of `tenant` with these local ids (at most [`MAX_PAGE`] per call; ids of
/// other tenants or unknown ids are simply absent). For DataLoaders.
pub async fn by_ids<R: crate::sql::KeyedRow>(
    store: &eventstore::Store,
    tenant: &str,
    local_ids: &[String],
) -> Result<Vec<R>, QueryError> {
    let mut rows = Vec::new();
    for chunk in local_ids.chunks(MAX_PAGE as usize) {
        let mut sql = crate::sql::select::<R>(crate::sql::Dialect::of(store));
        let ids: Vec<String> = chunk.iter().map(|id| row_id(tenant, id)).collect();
        let list = sql.args(&ids);
        let t = sql.arg(tenant);
        sql.push(&format!(" WHERE id IN ({list}) AND tenant = {t}"));
        rows.extend(sql.fetch::<R>(store).await?);
    }
    Ok(rows)
}

/// The key of `tenant`'s row with this local id (tenants hold no `:`).
pub fn row_id(tenant: &str, local_id: &str) -> String {
    format!("{tenant}:{local_id}")
}

/// One row of `tenant` by its local id (`None` if it is not the tenant's).
pub async fn by_id<R: crate::sql::KeyedRow>(
    store: &eventstore::Store,
    tenant: &str,
    local_id: &str,
) -> Result<Option<R>, QueryError> {
    let mut sql = crate::sql::select::<R>(crate::sql::Dialect::of(store));
    let id = sql.arg(row_id(tenant, local_id));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE id = {id} AND tenant = {t}"));
    Ok(sql.fetch(store).await?.into_iter().next())
}
