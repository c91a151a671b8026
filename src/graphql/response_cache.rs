//! A cache of GraphQL query responses, valid while the read models do not change.
//!
//! Dashboards ask the same questions over and over (the matrix's first page, the
//! environments) and the answers change only when the projector commits a batch. A
//! response is cached under the request's exact body and the caller's tenant,
//! together with the read models' version ([`ProjectorHandle::read_version`]); it is
//! served only while that version is current, and at most [`MAX_AGE`] (a safety net
//! for changes this process cannot see, such as a rebuild run by another process).
//!
//! Only plain queries on read models are cached: no mutation or subscription, no
//! `minPosition` (a read-your-writes request always executes), nothing that reads
//! the event log itself, and never a response with errors.
//!
//! [`ProjectorHandle::read_version`]: projections::ProjectorHandle::read_version

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use axum::body::Bytes;

/// Longest a response is served from the cache.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Entries kept; when full, the cache starts over.
const CAPACITY: usize = 512;
/// Requests larger than this are not cached.
const MAX_REQUEST: usize = 16 * 1024;
/// Responses larger than this are not cached.
const MAX_RESPONSE: usize = 2 * 1024 * 1024;

/// Root fields that read the event log, or state that changes without an event
/// (webhook deliveries: their attempts are not events), not a read model.
const UNCACHEABLE_FIELDS: &[&str] = &[
    "eventHistory",
    "aggregateAt",
    "verifyEventLog",
    "webhookDeliveries",
    "webhooks",
];

struct Entry {
    version: u64,
    at: Instant,
    body: Bytes,
}

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<HashMap<(String, Bytes), Entry>>,
}

impl ResponseCache {
    pub fn get(&self, tenant: &str, request: &Bytes, version: u64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&(tenant.to_string(), request.clone()))?;
        (entry.version == version && entry.at.elapsed() < MAX_AGE).then(|| entry.body.clone())
    }

    pub fn put(&self, tenant: &str, request: Bytes, version: u64, body: Bytes) {
        if body.len() > MAX_RESPONSE {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            (tenant.to_string(), request),
            Entry {
                version,
                at: Instant::now(),
                body,
            },
        );
    }
}

/// Whether the answer to this request may be cached (see the module comment), given
/// its query as parsed (`document`).
pub fn cacheable_document(
    raw: &[u8],
    request: &async_graphql::Request,
    document: &ExecutableDocument,
) -> bool {
    if raw.len() > MAX_REQUEST || request.query.contains("minPosition") {
        return false;
    }
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), None) => operation,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            match operations.values().next() {
                Some(operation) => operation,
                None => return false,
            }
        }
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations.iter().find(|(n, _)| n.as_str() == name) {
                Some((_, operation)) => operation,
                None => return false,
            }
        }
        _ => return false,
    };
    operation.node.ty == OperationType::Query
        && operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|selection| match &selection.node {
                Selection::Field(field) => {
                    !UNCACHEABLE_FIELDS.contains(&field.node.name.node.as_str())
                }
                // a fragment at the root could hide any field: do not guess
                _ => false,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query that does not parse is refused before the cache is asked (the guard).
    fn cacheable(raw: &[u8], request: &async_graphql::Request) -> bool {
        match async_graphql::parser::parse_query(&request.query) {
            Ok(document) => cacheable_document(raw, request, &document),
            Err(_) => false,
        }
    }

    fn request(query: &str) -> (Vec<u8>, async_graphql::Request) {
        let raw = serde_json::to_vec(&serde_json::json!({ "query": query })).unwrap();
        (raw, async_graphql::Request::new(query))
    }

    #[test]
    fn only_plain_read_model_queries_are_cacheable() {
        for (query, expected) in [
            ("{ workflowMatrix(first: 50) { edges { cursor } } }", true),
            ("query Envs { environments { id } }", true),
            ("{ environments(minPosition: 3) { id } }", false),
            (
                "query($p: Int) { environments(minPosition: $p) { id } }",
                false,
            ),
            (
                "mutation { deactivateEnvironment(id: \"x\") { position } }",
                false,
            ),
            ("subscription { events { position } }", false),
            ("{ environments { id } verifyEventLog { ok } }", false),
            (
                "{ eventHistory(aggregateType: \"incident\", aggregateId: \"x\") { position } }",
                false,
            ),
            (
                "{ ...F } fragment F on QueryRoot { environments { id } }",
                false,
            ),
            ("{ not valid", false),
        ] {
            let (raw, request) = request(query);
            assert_eq!(cacheable(&raw, &request), expected, "{query}");
        }
    }

    #[test]
    fn entries_serve_only_their_version_and_tenant() {
        let cache = ResponseCache::default();
        let key = Bytes::from_static(b"{\"query\":\"{ environments { id } }\"}");
        cache.put("acme", key.clone(), 7, Bytes::from_static(b"A"));
        assert_eq!(cache.get("acme", &key, 7).as_deref(), Some(&b"A"[..]));
        assert_eq!(cache.get("acme", &key, 8), None, "the read models moved");
        assert_eq!(cache.get("globex", &key, 7), None, "another tenant");
    }
}
