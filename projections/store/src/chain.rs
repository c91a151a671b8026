//! Tamper evidence: each event's hash is SHA-256 over the previous hash of the same
//! aggregate followed by the event's canonical bytes (canonical JSON of its identity,
//! type, payload and metadata without the hash). The hash is stored in the event's
//! metadata under [`HASH_KEY`].
//!
//! Canonical JSON (sorted keys, no whitespace) makes the chain independent of how a
//! backend stores JSON: PostgreSQL's `json`-from-`jsonb` text and SQLite's text verify
//! alike, and a log copied between backends still verifies.

use std::io::{self, Write};

use serde::{Serialize, Serializer};
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
    /// SHA-256(previous hash bytes ‖ canonical bytes), as lowercase hex. The
    /// canonical bytes are streamed into the hasher, never collected.
    pub fn hash(&self, previous: &str) -> String {
        hash_envelope(
            previous,
            &EventIdentity {
                aggregate_type: self.aggregate_type,
                aggregate_id: self.aggregate_id,
                sequence: self.sequence,
                event_type: self.event_type,
                event_version: self.event_version,
            },
            Canonical::Value(self.payload),
            Canonical::Metadata(self.metadata),
        )
    }
}

/// Canonical bytes of metadata without its [`HASH_KEY`] entry.
pub fn canonical_metadata(metadata: &Map<String, Value>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    let Ok(()) = serde_json::to_writer(&mut bytes, &WithoutHash(metadata)) else {
        unreachable!("a JSON map serializes into memory");
    };
    bytes
}

/// Metadata without its [`HASH_KEY`] entry, serialized in the map's (canonical)
/// key order without copying it.
struct WithoutHash<'a>(&'a Map<String, Value>);

impl Serialize for WithoutHash<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(key, _)| key.as_str() != HASH_KEY))
    }
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
    hash_envelope(
        previous,
        id,
        Canonical::Bytes(canonical_payload),
        Canonical::Bytes(canonical_metadata),
    )
}

/// A part of the envelope: bytes already canonical, or a value to serialize.
enum Canonical<'a> {
    Bytes(&'a [u8]),
    Value(&'a Value),
    Metadata(&'a Map<String, Value>),
}

impl Canonical<'_> {
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Canonical::Bytes(bytes) => out.write_all(bytes),
            Canonical::Value(value) => Ok(serde_json::to_writer(out, value)?),
            Canonical::Metadata(metadata) => {
                Ok(serde_json::to_writer(out, &WithoutHash(metadata))?)
            }
        }
    }
}

fn hash_envelope(
    previous: &str,
    id: &EventIdentity<'_>,
    payload: Canonical<'_>,
    metadata: Canonical<'_>,
) -> String {
    let mut hasher = Sha256::new();
    // A malformed previous hash still hashes (to its text) here; callers check it
    // with `is_chain_hash` first (the bus refuses, verify reports).
    match hex::decode(previous) {
        Ok(bytes) => hasher.update(bytes),
        Err(_) => hasher.update(previous.as_bytes()),
    }
    let mut out = io::BufWriter::with_capacity(4 * 1024, &mut hasher);
    let written = (|| {
        out.write_all(b"{\"aggregate_id\":")?;
        serde_json::to_writer(&mut out, id.aggregate_id)?;
        out.write_all(b",\"aggregate_type\":")?;
        serde_json::to_writer(&mut out, id.aggregate_type)?;
        out.write_all(b",\"event_type\":")?;
        serde_json::to_writer(&mut out, id.event_type)?;
        out.write_all(b",\"event_version\":")?;
        serde_json::to_writer(&mut out, id.event_version)?;
        out.write_all(b",\"metadata\":")?;
        metadata.write_to(&mut out)?;
        out.write_all(b",\"payload\":")?;
        payload.write_to(&mut out)?;
        out.write_all(b",\"sequence\":")?;
        serde_json::to_writer(&mut out, &id.sequence)?;
        out.write_all(b"}")?;
        out.flush()
    })();
    // SHA-256 takes every byte, and strings, numbers and JSON values always
    // serialize.
    written.expect("canonical JSON streams into SHA-256");
    drop(out);
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

    /// A fixed event's chain hash, hard-coded: stored history verifies only while
    /// these bytes stay the same, so a dependency update that changes canonical
    /// bytes (number format, escaping, key order) must fail here first.
    #[test]
    fn pins_a_chain_hash() {
        let payload: Value = serde_json::from_str(
            r#"{"z":"é\n\"\u0001\u2028","m":{"b":{},"a":[]},"a":[1,-2,2.5,1e21,null,true]}"#,
        )
        .unwrap();
        let mut metadata = Map::new();
        metadata.insert("at".into(), json!("2026-01-01T00:00:00Z"));
        metadata.insert(HASH_KEY.into(), json!("not part of the hash"));
        metadata.insert("actor".into(), json!("alice"));
        let event = ChainedEvent {
            aggregate_type: "incident",
            aggregate_id: "acme:i-1",
            sequence: 7,
            event_type: "incident.detected",
            event_version: "1",
            payload: &payload,
            metadata: &metadata,
        };
        // SHA-256(previous ‖ envelope) with this envelope:
        // {"aggregate_id":"acme:i-1","aggregate_type":"incident",
        //  "event_type":"incident.detected","event_version":"1",
        //  "metadata":{"actor":"alice","at":"2026-01-01T00:00:00Z"},
        //  "payload":{"a":[1,-2,2.5,1e+21,null,true],"m":{"a":[],"b":{}},
        //  "z":"é\n\"\u0001<U+2028>"},"sequence":7}
        let previous = "ab".repeat(32);
        let pinned = "d2f8dd91674ce2676ab7102debe724641e21ad5fbd41a93a84930e6281f5c68e";
        assert_eq!(event.hash(&previous), pinned);
        assert_eq!(
            event.hash(GENESIS),
            "970131c9ea5ab9a242c96d1105b790970211cd715152478fac481a50d270495c"
        );
        // The command path: canonical bytes made once, then hashed.
        let canonical_payload = aggregates::canonical_json::to_canonical_vec(&payload);
        assert_eq!(
            canonical_payload,
            "{\"a\":[1,-2,2.5,1e+21,null,true],\"m\":{\"a\":[],\"b\":{}},\"z\":\"é\\n\\\"\\u0001\u{2028}\"}"
                .as_bytes()
        );
        let canonical = canonical_metadata(&metadata);
        assert_eq!(
            canonical,
            br#"{"actor":"alice","at":"2026-01-01T00:00:00Z"}"#
        );
        let identity = EventIdentity {
            aggregate_type: "incident",
            aggregate_id: "acme:i-1",
            sequence: 7,
            event_type: "incident.detected",
            event_version: "1",
        };
        assert_eq!(
            hash_parts(&previous, &identity, &canonical_payload, &canonical),
            pinned
        );
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
