//! Workflow normalisation and content hashing.
//!
//! The control plane has to tell whether two copies of an n8n workflow (the one in
//! Git, the one in staging, the one in production) are the same workflow. n8n stamps
//! every copy with data that belongs to the instance rather than to the workflow:
//! database and version ids, timestamps, canvas positions, webhook ids, credential
//! ids, tags, pinned test data. The *content hash* is a SHA-256 over a normalised,
//! canonical form of the workflow that leaves exactly that data out and keeps
//! everything that changes what the workflow does.
//!
//! Normalisation rules (changing any of them changes every content hash):
//!
//! * Top-level keys dropped: `id`, `createdAt`, `updatedAt`, `versionId`,
//!   `activeVersionId`, `activeVersion`, `triggerCount`, `staticData`, `meta`, `hash`,
//!   `active`, `isArchived`, `tags`, `tagIds`, `shared`, `scopes`, `pinData`.
//!   Everything else (`name`, `nodes`, `connections`, `settings`, unknown keys) is kept.
//! * Node keys dropped: `id`, `position`, `positionAbsolute`, `webhookId`.
//! * Node credentials (`{"<credType>": {"id": "...", "name": "..."}}`) are kept by
//!   type and name only: `{"<credType>": {"name": "..."}}`. Credential ids differ
//!   per instance.
//! * Nodes are ordered by name (UTF-8 bytes). Names must therefore be unique; n8n
//!   never produces duplicates anyway.
//! * The result is serialised with [`crate::canonical_json`] and hashed with SHA-256;
//!   the hash is written as 64 lowercase hex characters.
//!
//! Malformed input is reported as a [`ContentError`], never a panic.
//!
//! Speed matters (hashing runs over every workflow of every environment), so hashing
//! never builds a normalised copy: it validates the workflow into a small view of
//! borrowed references (the kept keys, the nodes sorted by name) and streams the
//! canonical bytes of that view straight into the hasher. [`content_hash_bytes`]
//! additionally parses into a borrowed tree in which strings without escapes are not
//! copied and objects are vectors, which is several times faster than building a
//! `serde_json::Value`. [`normalize`] builds a `Value` for callers that want one;
//! its canonical form hashes to the same content hash.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::canonical_json;

/// Top-level workflow keys that describe an n8n instance's copy of a workflow rather
/// than the workflow itself, and so are left out of the content hash.
const DROPPED_WORKFLOW_KEYS: [&str; 17] = [
    "id",
    "createdAt",
    "updatedAt",
    "versionId",
    "activeVersionId",
    "activeVersion",
    "triggerCount",
    "staticData",
    "meta",
    "hash",
    "active",
    "isArchived",
    "tags",
    "tagIds",
    "shared",
    "scopes",
    "pinData",
];

/// Node keys left out of the content hash: instance-specific ids and canvas layout.
const DROPPED_NODE_KEYS: [&str; 4] = ["id", "position", "positionAbsolute", "webhookId"];

/// Why a workflow could not be normalised, or a content hash could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ContentError {
    /// The input is not valid JSON (the message is serde_json's, with position).
    #[error("workflow JSON is malformed: {0}")]
    Malformed(String),
    /// The input is valid JSON but its top level is not an object.
    #[error("workflow JSON must be an object at the top level")]
    NotAnObject,
    /// A field the normalisation relies on is missing or has the wrong shape.
    /// `field` is a path such as `nodes`, `nodes[3].name` or
    /// `nodes[1].credentials.httpHeaderAuth` (indices are positions in the input).
    #[error("workflow field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one node has this name, so ordering nodes by name is ambiguous.
    #[error("workflow has more than one node named {0:?}")]
    DuplicateNodeName(String),
    /// A string is not a valid content hash (64 lowercase hex characters).
    #[error("invalid content hash: {0}")]
    InvalidHash(String),
    /// Writing the canonical form failed. The hasher never fails, so this is not
    /// expected to happen; it exists so that a failure cannot go unnoticed.
    #[error("canonical serialisation failed: {0}")]
    Serialization(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ContentError {
    ContentError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

fn malformed(err: serde_json::Error) -> ContentError {
    ContentError::Malformed(err.to_string())
}

/// SHA-256 of a workflow's normalised canonical form, as 64 lowercase hex characters.
///
/// Serialises as a plain string; deserialising validates the format.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

impl ContentHash {
    /// Parses a content hash: exactly 64 lowercase hex characters, nothing else.
    pub fn parse(s: &str) -> Result<ContentHash, ContentError> {
        check_hash_format(s)?;
        Ok(ContentHash(s.to_owned()))
    }

    /// The hash as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_hash_format(s: &str) -> Result<(), ContentError> {
    if s.len() != 64 {
        return Err(ContentError::InvalidHash(format!(
            "expected 64 lowercase hex characters, got {} bytes",
            s.len()
        )));
    }
    if let Some((i, c)) = s
        .char_indices()
        .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
    {
        return Err(ContentError::InvalidHash(format!(
            "expected 64 lowercase hex characters, found {c:?} at byte {i}"
        )));
    }
    Ok(())
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.0)
    }
}

impl TryFrom<String> for ContentHash {
    type Error = ContentError;

    /// Validates like [`ContentHash::parse`], reusing the string's allocation.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        check_hash_format(&s)?;
        Ok(ContentHash(s))
    }
}

impl From<ContentHash> for String {
    fn from(hash: ContentHash) -> String {
        hash.0
    }
}

/// Returns the normalised workflow (volatile keys dropped, credential ids dropped,
/// nodes ordered by name). Its canonical form (see
/// [`canonical_json::to_canonical_vec`]) is what [`content_hash`] hashes.
pub fn normalize(workflow: &Value) -> Result<Value, ContentError> {
    Ok(fields_to_value(&normalized_view(workflow)?))
}

/// Content hash of a parsed workflow. Does not copy the workflow.
pub fn content_hash(workflow: &Value) -> Result<ContentHash, ContentError> {
    hash_workflow(workflow)
}

/// Parses workflow JSON and returns its content hash; the fast path for raw exports.
///
/// Gives the same result as `content_hash(&serde_json::from_slice(json)?)`,
/// including for objects with duplicate keys (the last one wins, as in serde_json).
pub fn content_hash_bytes(json: &[u8]) -> Result<ContentHash, ContentError> {
    if borrowed_tree_is_faithful() {
        hash_workflow(&parse_borrowed(json)?)
    } else {
        let value: Value = serde_json::from_slice(json).map_err(malformed)?;
        hash_workflow(&value)
    }
}

// ---------------------------------------------------------------------------
// Normalised view: validation plus borrowed references, shared by both trees.
// ---------------------------------------------------------------------------

/// Read access to a parsed JSON tree, so that one normalisation serves both
/// `serde_json::Value` and the borrowed tree [`content_hash_bytes`] parses into.
trait JsonTree: Sized {
    /// The JSON type with an article, for error messages ("an array").
    fn kind(&self) -> &'static str;
    fn as_str(&self) -> Option<&str>;
    fn as_array(&self) -> Option<&[Self]>;
    /// Object entries in canonical key order (sorted by bytes, no duplicate keys),
    /// or `None` if this is not an object.
    fn entries(&self) -> Option<Vec<(&str, &Self)>>;
    /// Object member lookup; `None` if missing or if this is not an object.
    fn get(&self, key: &str) -> Option<&Self>;
    fn write_canonical<W: Write>(&self, out: &mut W) -> io::Result<()>;
}

/// Object fields of the normalised view, in canonical key order.
type Fields<'a, J> = Vec<(&'a str, Part<'a, J>)>;

/// A value in the normalised view.
enum Part<'a, J> {
    /// Kept as it is.
    Verbatim(&'a J),
    /// The workflow's nodes, normalised and ordered by name.
    Nodes(Vec<Fields<'a, J>>),
    /// A node's credentials as `(credential type, credential name)`, by type.
    Credentials(Vec<(&'a str, &'a str)>),
}

fn normalized_view<J: JsonTree>(workflow: &J) -> Result<Fields<'_, J>, ContentError> {
    let entries = workflow.entries().ok_or(ContentError::NotAnObject)?;
    let nodes = match workflow.get("nodes") {
        None => return Err(invalid("nodes", "is missing")),
        Some(nodes) => nodes
            .as_array()
            .ok_or_else(|| invalid("nodes", format!("must be an array, found {}", nodes.kind())))?,
    };
    let mut nodes = normalized_nodes(nodes)?;
    if let Some(connections) = workflow.get("connections") {
        if connections.entries().is_none() {
            return Err(invalid(
                "connections",
                format!("must be an object, found {}", connections.kind()),
            ));
        }
    }
    let mut fields = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if DROPPED_WORKFLOW_KEYS.contains(&key) {
            continue;
        }
        let part = if key == "nodes" {
            // Keys are unique, so this runs once.
            Part::Nodes(std::mem::take(&mut nodes))
        } else {
            Part::Verbatim(value)
        };
        fields.push((key, part));
    }
    Ok(fields)
}

fn normalized_nodes<J: JsonTree>(nodes: &[J]) -> Result<Vec<Fields<'_, J>>, ContentError> {
    let mut named = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let entries = node.entries().ok_or_else(|| {
            invalid(
                format!("nodes[{i}]"),
                format!("must be an object, found {}", node.kind()),
            )
        })?;
        let name = match node.get("name") {
            None => return Err(invalid(format!("nodes[{i}].name"), "is missing")),
            Some(name) => name.as_str().ok_or_else(|| {
                invalid(
                    format!("nodes[{i}].name"),
                    format!("must be a string, found {}", name.kind()),
                )
            })?,
        };
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if DROPPED_NODE_KEYS.contains(&key) {
                continue;
            }
            let part = if key == "credentials" {
                Part::Credentials(credential_refs(value, i)?)
            } else {
                Part::Verbatim(value)
            };
            fields.push((key, part));
        }
        named.push((name, fields));
    }
    named.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(pair) = named.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(ContentError::DuplicateNodeName(pair[0].0.to_owned()));
    }
    Ok(named.into_iter().map(|(_, fields)| fields).collect())
}

/// `{"<type>": {"id": ..., "name": "<name>"}}` → `[(type, name)]`, ordered by type.
fn credential_refs<J: JsonTree>(
    credentials: &J,
    node: usize,
) -> Result<Vec<(&str, &str)>, ContentError> {
    let entries = credentials.entries().ok_or_else(|| {
        invalid(
            format!("nodes[{node}].credentials"),
            format!("must be an object, found {}", credentials.kind()),
        )
    })?;
    entries
        .into_iter()
        .map(|(cred_type, reference)| {
            if reference.entries().is_none() {
                return Err(invalid(
                    format!("nodes[{node}].credentials.{cred_type}"),
                    format!(
                        "must be an object with a string `name`, found {}",
                        reference.kind()
                    ),
                ));
            }
            let field = || format!("nodes[{node}].credentials.{cred_type}.name");
            match reference.get("name") {
                None => Err(invalid(field(), "is missing")),
                Some(name) => match name.as_str() {
                    Some(name) => Ok((cred_type, name)),
                    None => Err(invalid(
                        field(),
                        format!("must be a string, found {}", name.kind()),
                    )),
                },
            }
        })
        .collect()
}

fn write_fields<J: JsonTree, W: Write>(fields: &Fields<'_, J>, out: &mut W) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, part)) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        canonical_json::write_str(key, out)?;
        out.write_all(b":")?;
        match part {
            Part::Verbatim(value) => value.write_canonical(out)?,
            Part::Nodes(nodes) => {
                out.write_all(b"[")?;
                for (j, node) in nodes.iter().enumerate() {
                    if j > 0 {
                        out.write_all(b",")?;
                    }
                    write_fields(node, out)?;
                }
                out.write_all(b"]")?;
            }
            Part::Credentials(refs) => {
                out.write_all(b"{")?;
                for (j, (cred_type, name)) in refs.iter().enumerate() {
                    if j > 0 {
                        out.write_all(b",")?;
                    }
                    canonical_json::write_str(cred_type, out)?;
                    out.write_all(b":{\"name\":")?;
                    canonical_json::write_str(name, out)?;
                    out.write_all(b"}")?;
                }
                out.write_all(b"}")?;
            }
        }
    }
    out.write_all(b"}")
}

fn fields_to_value(fields: &Fields<'_, Value>) -> Value {
    let mut map = Map::new();
    for (key, part) in fields {
        let value = match part {
            Part::Verbatim(value) => (*value).clone(),
            Part::Nodes(nodes) => Value::Array(nodes.iter().map(fields_to_value).collect()),
            Part::Credentials(refs) => Value::Object(
                refs.iter()
                    .map(|(cred_type, name)| {
                        let mut reference = Map::new();
                        reference.insert("name".to_owned(), Value::from(*name));
                        ((*cred_type).to_owned(), Value::Object(reference))
                    })
                    .collect(),
            ),
        };
        map.insert((*key).to_owned(), value);
    }
    Value::Object(map)
}

fn hash_workflow<J: JsonTree>(workflow: &J) -> Result<ContentHash, ContentError> {
    let view = normalized_view(workflow)?;
    let mut sink = HashSink::new();
    write_fields(&view, &mut sink).map_err(|e| ContentError::Serialization(e.to_string()))?;
    Ok(sink.finish())
}

/// `io::Write` into SHA-256. Canonical output arrives in many tiny writes, so they
/// are batched: one `Sha256::update` per few kilobytes instead of one per token.
struct HashSink {
    hasher: Sha256,
    buf: Vec<u8>,
}

const HASH_CHUNK: usize = 8 * 1024;

impl HashSink {
    fn new() -> Self {
        HashSink {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(HASH_CHUNK),
        }
    }

    fn finish(mut self) -> ContentHash {
        self.hasher.update(&self.buf);
        ContentHash(hex::encode(self.hasher.finalize()))
    }
}

impl Write for HashSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > HASH_CHUNK {
            self.hasher.update(&self.buf);
            self.buf.clear();
            if data.len() >= HASH_CHUNK {
                self.hasher.update(data);
                return Ok(data.len());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(data).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl JsonTree for Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }

    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn entries(&self) -> Option<Vec<(&str, &Self)>> {
        let map = self.as_object()?;
        let mut entries: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        // Already sorted unless serde_json's `preserve_order` is enabled.
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        Some(entries)
    }

    fn get(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }

    fn write_canonical<W: Write>(&self, out: &mut W) -> io::Result<()> {
        canonical_json::write_canonical(self, out)
    }
}

// ---------------------------------------------------------------------------
// Borrowed tree for `content_hash_bytes`.
// ---------------------------------------------------------------------------

/// A parsed JSON value that borrows strings from the input where it can. Numbers
/// go through `serde_json::Number` and objects keep serde_json's "last duplicate
/// key wins" rule, so it prints exactly like the `Value` of the same input.
enum Borrowed<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Borrowed<'a>>),
    /// Sorted by key bytes, keys unique.
    Object(Vec<(Cow<'a, str>, Borrowed<'a>)>),
}

fn parse_borrowed(json: &[u8]) -> Result<Borrowed<'_>, ContentError> {
    serde_json::from_slice(json).map_err(malformed)
}

/// Whether the borrowed tree hashes exactly like `serde_json::Value`. It does with
/// serde_json's default features; with `arbitrary_precision` (which another crate
/// could switch on for the whole build) numbers reach the visitor differently, and
/// `content_hash_bytes` then falls back to parsing a `Value`. Checked once.
fn borrowed_tree_is_faithful() -> bool {
    static FAITHFUL: OnceLock<bool> = OnceLock::new();
    *FAITHFUL.get_or_init(|| {
        const PROBE: &[u8] = br#"{"nodes":[{"name":"n\u00e9","x":[1.50,-0,0.1,1E2,-7,
            18446744073709551616,-9223372036854775809,"a\tb\/c",true,null,{}]}],
            "k":{"b":1,"a":2,"b":3},"connections":{}}"#;
        let borrowed = parse_borrowed(PROBE).and_then(|tree| hash_workflow(&tree));
        let value = serde_json::from_slice::<Value>(PROBE)
            .map_err(malformed)
            .and_then(|value| hash_workflow(&value));
        matches!((borrowed, value), (Ok(a), Ok(b)) if a == b)
    })
}

impl JsonTree for Borrowed<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Borrowed::Null => "null",
            Borrowed::Bool(_) => "a boolean",
            Borrowed::Number(_) => "a number",
            Borrowed::Str(_) => "a string",
            Borrowed::Array(_) => "an array",
            Borrowed::Object(_) => "an object",
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Borrowed::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Borrowed::Array(items) => Some(items),
            _ => None,
        }
    }

    fn entries(&self) -> Option<Vec<(&str, &Self)>> {
        match self {
            Borrowed::Object(entries) => {
                Some(entries.iter().map(|(k, v)| (k.as_ref(), v)).collect())
            }
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Borrowed::Object(entries) => entries
                .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                .ok()
                .map(|i| &entries[i].1),
            _ => None,
        }
    }

    fn write_canonical<W: Write>(&self, out: &mut W) -> io::Result<()> {
        match self {
            Borrowed::Null => out.write_all(b"null"),
            Borrowed::Bool(true) => out.write_all(b"true"),
            Borrowed::Bool(false) => out.write_all(b"false"),
            Borrowed::Number(n) => canonical_json::write_number(n, out),
            Borrowed::Str(s) => canonical_json::write_str(s, out),
            Borrowed::Array(items) => {
                out.write_all(b"[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    item.write_canonical(out)?;
                }
                out.write_all(b"]")
            }
            Borrowed::Object(entries) => {
                out.write_all(b"{")?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    canonical_json::write_str(key, out)?;
                    out.write_all(b":")?;
                    value.write_canonical(out)?;
                }
                out.write_all(b"}")
            }
        }
    }
}

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BorrowedVisitor)
    }
}

/// Mirrors serde_json's own `Value` visitor, except that it borrows strings.
struct BorrowedVisitor;

impl<'de> Visitor<'de> for BorrowedVisitor {
    type Value = Borrowed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Borrowed::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Borrowed::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Borrowed::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Number::deserialize(de::value::I128Deserializer::<E>::new(v)).map(Borrowed::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Number::deserialize(de::value::U128Deserializer::<E>::new(v)).map(Borrowed::Number)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Borrowed::Null, Borrowed::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Borrowed::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Borrowed::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Borrowed::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Borrowed::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Borrowed::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Borrowed::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Borrowed::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Borrowed<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(BorrowedKey(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so duplicates stay in input order; then keep the last
            // occurrence's value, as serde_json's map does.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let duplicate = later.0 == kept.0;
                if duplicate {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                duplicate
            });
        }
        Ok(Borrowed::Object(entries))
    }
}

/// An object key, borrowed from the input when it contains no escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = BorrowedKey<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}
