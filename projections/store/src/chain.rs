//! Tamper evidence: each event's hash is SHA-256 over the previous hash of the same
//! aggregate followed by the event's canonical bytes (canonical JSON of its identity,
//! type, payload and metadata without the hash). The hash is stored in the event's
//! metadata under [`HASH_KEY`].
//!
//! Canonical JSON (sorted keys, no whitespace) makes the chain independent of how a
//! backend stores JSON: PostgreSQL's `json`-from-`jsonb` text and SQLite's text verify
//! alike, and a log copied between backends still verifies.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Metadata key holding the event's chain hash (lowercase hex).
pub const HASH_KEY: &str = "hash";

/// The "previous hash" of an aggregate's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether `text` is a chain hash: 64 lowercase hex digits. An event whose previous
/// event has no such hash cannot be chained (verify reports it, the bus refuses to
/// append after it).
pub fn is_chain_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The fields of one event that the chain covers.
pub struct ChainedEvent<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    /// Metadata; a [`HASH_KEY`] entry, if present, is ignored.
    pub metadata: &'a Map<String, Value>,
}

impl ChainedEvent<'_> {
    /// SHA-256(previous hash bytes ‖ canonical bytes), as lowercase hex.
    pub fn hash(&self, previous: &str) -> String {
        let metadata = canonical_metadata(self.metadata);
        let payload = aggregates::canonical_json::to_canonical_vec(self.payload);
        hash_parts(
            previous,
            &EventIdentity {
                aggregate_type: self.aggregate_type,
                aggregate_id: self.aggregate_id,
                sequence: self.sequence,
                event_type: self.event_type,
                event_version: self.event_version,
            },
            &payload,
            &metadata,
        )
    }
}

/// Canonical bytes of metadata without its [`HASH_KEY`] entry.
pub fn canonical_metadata(metadata: &Map<String, Value>) -> Vec<u8> {
    let without_hash: Map<String, Value> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != HASH_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    aggregates::canonical_json::to_canonical_vec(&Value::Object(without_hash))
}

/// Where an event sits: its aggregate, sequence and type.
pub struct EventIdentity<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
}

/// The chain hash from already-canonical payload and metadata bytes, so the command
/// path canonicalizes each payload once (and the metadata once per command). The
/// envelope is written in canonical key order: the same bytes as canonicalizing
/// `{aggregate_id, aggregate_type, event_type, event_version, metadata, payload,
/// sequence}` as one object.
pub fn hash_parts(
    previous: &str,
    id: &EventIdentity<'_>,
    canonical_payload: &[u8],
    canonical_metadata: &[u8],
) -> String {
    let mut hasher = Sha256::new();
    // A malformed previous hash still hashes (to its text) here; callers check it
    // with `is_chain_hash` first (the bus refuses, verify reports).
    match hex::decode(previous) {
        Ok(bytes) => hasher.update(bytes),
        Err(_) => hasher.update(previous.as_bytes()),
    }
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    hasher.update(b"{\"aggregate_id\":");
    hasher.update(text(id.aggregate_id));
    hasher.update(b",\"aggregate_type\":");
    hasher.update(text(id.aggregate_type));
    hasher.update(b",\"event_type\":");
    hasher.update(text(id.event_type));
    hasher.update(b",\"event_version\":");
    hasher.update(text(id.event_version));
    hasher.update(b",\"metadata\":");
    hasher.update(canonical_metadata);
    hasher.update(b",\"payload\":");
    hasher.update(canonical_payload);
    hasher.update(b",\"sequence\":");
    hasher.update(id.sequence.to_string());
    hasher.update(b"}");
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn byte_level_envelope_equals_canonical_object() {
        let payload = json!({"z": "é\n\"", "a": [1, 2.5, null]});
        let mut meta = Map::new();
        meta.insert("actor".into(), json!("a\u{1}b"));
        meta.insert(HASH_KEY.into(), json!("ignored"));
        let envelope = json!({
            "aggregate_type": "incident", "aggregate_id": "acme:i\"1", "sequence": 42,
            "event_type": "incident.detected", "event_version": "1",
            "payload": payload, "metadata": {"actor": "a\u{1}b"},
        });
        let mut hasher = Sha256::new();
        hasher.update(hex::decode(GENESIS).unwrap());
        hasher.update(aggregates::canonical_json::to_canonical_vec(&envelope));
        let expected = hex::encode(hasher.finalize());
        let event = ChainedEvent {
            aggregate_type: "incident",
            aggregate_id: "acme:i\"1",
            sequence: 42,
            event_type: "incident.detected",
            event_version: "1",
            payload: &payload,
            metadata: &meta,
        };
        assert_eq!(event.hash(GENESIS), expected);
    }

    fn event<'a>(payload: &'a Value, metadata: &'a Map<String, Value>) -> ChainedEvent<'a> {
        ChainedEvent {
            aggregate_type: "incident",
            aggregate_id: "acme:i1",
            sequence: 1,
            event_type: "incident.detected",
            event_version: "1",
            payload,
            metadata,
        }
    }

    #[test]
    fn hash_ignores_key_order_and_its_own_field_but_not_content() {
        let payload: Value = serde_json::from_str(r#"{"b":1,"a":[1,2]}"#).unwrap();
        let reordered: Value = serde_json::from_str(r#"{ "a": [1, 2], "b": 1 }"#).unwrap();
        let mut meta = Map::new();
        meta.insert("actor".into(), json!("alice"));
        let h1 = event(&payload, &meta).hash(GENESIS);
        assert_eq!(h1, event(&reordered, &meta).hash(GENESIS));
        let mut with_hash = meta.clone();
        with_hash.insert(HASH_KEY.into(), json!(h1.clone()));
        assert_eq!(h1, event(&payload, &with_hash).hash(GENESIS));
        let changed: Value = serde_json::from_str(r#"{"b":2,"a":[1,2]}"#).unwrap();
        assert_ne!(h1, event(&changed, &meta).hash(GENESIS));
        assert_ne!(
            h1,
            event(&payload, &meta).hash(&h1),
            "chained to the previous hash"
        );
        assert_eq!(h1.len(), 64);
        assert!(is_chain_hash(&h1) && is_chain_hash(GENESIS));
        assert!(
            !is_chain_hash(&h1.to_uppercase()) && !is_chain_hash("") && !is_chain_hash(&h1[1..])
        );
    }
}
