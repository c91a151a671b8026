//! The log digest (tamper evidence for the whole log): seal it now and get its
//! external form, to keep outside the database for `workflowops verify --digest`.
//!
//! The digest covers every tenant's events, but what a caller gets is a hash and a
//! global position (positions are already global in every event a caller sees):
//! nothing of another tenant's data can be read from it.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{app, caller, ApiError};

/// The log digest at a position: proof, kept outside the database, of the whole log
/// up to there.
#[derive(SimpleObject)]
pub struct LogDigest {
    /// Global position of the last event covered (0: the empty log).
    pub position: i64,
    /// `HEX@POSITION`: the log id (32 hex digits) and the running hash (64), then the
    /// position; `workflowops verify --digest` checks the log against it.
    pub digest: String,
    pub sealed_at: Option<DateTime<Utc>>,
    /// How many events the digest covers.
    pub events: i64,
}

#[derive(Default)]
pub struct DigestQuery;

#[Object]
impl DigestQuery {
    /// Seals the log digest now (extending it to the end of the log) and returns it.
    /// Any role may call it; it reveals a hash and a position only. Walks the log
    /// from the last seal: one such field per request, one such request per tenant
    /// at a time.
    #[graphql(complexity = "super::guard::Expensive::LogWalk.complexity() + child_complexity")]
    async fn log_digest(&self, ctx: &Context<'_>) -> async_graphql::Result<LogDigest> {
        caller(ctx)?;
        let sealed = app(ctx)?.store.seal().await.map_err(ApiError::from)?;
        Ok(LogDigest {
            position: sealed.seal.cursor.position,
            digest: sealed.external(),
            sealed_at: sealed.sealed_at(),
            events: sealed.seal.events,
        })
    }
}
