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
//! * The result is serialised in the canonical form of [`crate::canonical_json`]
//!   (serde_json's compact output, keys in byte order) and hashed with SHA-256; the
//!   hash is written as 64 lowercase hex characters.
//!
//! Malformed input is reported as a [`ContentError`], never a panic.
//!
//! Speed matters (hashing runs over every workflow of every environment), so hashing
//! never builds a normalised copy: it validates the workflow into a small view of
//! borrowed references (the kept keys, the nodes sorted by name) and streams the
//! canonical bytes of that view (serialised by serde_json) through a small buffer
//! into SHA-256.
//! [`content_hash_bytes`] also skips `serde_json::Value`: a strict parser records
//! the document as a flat token tape (strings without escapes stay slices of the
//! input, object members are put in canonical order while parsing, numbers still go
//! through serde_json), and any input it rejects is re-parsed by serde_json, which
//! supplies the error message. [`normalize`] builds a `Value` for callers that want
//! one; its canonical form hashes to the same content hash.

use std::fmt;
use std::io::{BufWriter, Write};
use std::sync::OnceLock;

use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

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
/// [`crate::canonical_json::to_canonical_vec`]) is what [`content_hash`] hashes.
pub fn normalize(workflow: &Value) -> Result<Value, ContentError> {
    Ok(fields_to_value(&normalized_view(workflow)?))
}

/// Content hash of a parsed workflow. Does not copy the workflow.
pub fn content_hash(workflow: &Value) -> Result<ContentHash, ContentError> {
    hash_workflow(workflow)
}

/// Parses workflow JSON and returns its content hash: the fast path for raw exports.
///
/// Same result as `content_hash(&serde_json::from_slice(json)?)` with the parse
/// error reported as [`ContentError::Malformed`], also for objects with duplicate
/// keys (the last one wins, as in serde_json); several times faster, because it
/// never builds a `serde_json::Value`.
pub fn content_hash_bytes(json: &[u8]) -> Result<ContentHash, ContentError> {
    if fast_parser_is_faithful() {
        if let Some(tape) = Tape::parse(json) {
            return hash_workflow(tape.root());
        }
    }
    // Not valid JSON (serde_json's error says what is wrong and where), or the
    // fast path is unavailable.
    let value: Value = serde_json::from_slice(json).map_err(malformed)?;
    hash_workflow(&value)
}

// ---------------------------------------------------------------------------
// Normalised view: validation plus borrowed references, shared by both trees.
// ---------------------------------------------------------------------------

/// A cheap handle to a node of a parsed JSON tree, so that one normalisation serves
/// both `&serde_json::Value` and the [`Tape`] that [`content_hash_bytes`] parses into.
/// Serializes in canonical form (see [`crate::canonical_json`]).
trait JsonTree<'a>: Copy + Serialize {
    /// The JSON type with an article, for error messages ("an array").
    fn kind(self) -> &'static str;
    fn as_str(self) -> Option<&'a str>;
    /// Array elements, or `None` if this is not an array.
    fn items(self) -> Option<Vec<Self>>;
    /// Object members in canonical key order (sorted by bytes, no duplicate keys),
    /// or `None` if this is not an object.
    fn entries(self) -> Option<Vec<(&'a str, Self)>>;
    /// Object member lookup; `None` if missing or if this is not an object.
    fn get(self, key: &str) -> Option<Self>;
    /// Writes the canonical form: serde_json's compact output of this value.
    fn write_canonical<W: Write>(self, out: &mut W) -> std::io::Result<()> {
        serde_json::to_writer(out, &self).map_err(std::io::Error::from)
    }
}

/// Object fields of the normalised view, in canonical key order.
type Fields<'a, J> = Vec<(&'a str, Part<'a, J>)>;

/// A value in the normalised view.
enum Part<'a, J> {
    /// Kept as it is.
    Verbatim(J),
    /// The workflow's nodes, normalised and ordered by name.
    Nodes(Vec<Fields<'a, J>>),
    /// A node's credentials as `(credential type, credential name)`, by type.
    Credentials(Vec<(&'a str, &'a str)>),
}

fn normalized_view<'a, J: JsonTree<'a>>(workflow: J) -> Result<Fields<'a, J>, ContentError> {
    let entries = workflow.entries().ok_or(ContentError::NotAnObject)?;
    let nodes = match workflow.get("nodes") {
        None => return Err(invalid("nodes", "is missing")),
        Some(nodes) => nodes
            .items()
            .ok_or_else(|| invalid("nodes", format!("must be an array, found {}", nodes.kind())))?,
    };
    let mut nodes = normalized_nodes(&nodes)?;
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

fn normalized_nodes<'a, J: JsonTree<'a>>(nodes: &[J]) -> Result<Vec<Fields<'a, J>>, ContentError> {
    let mut named = Vec::with_capacity(nodes.len());
    for (i, &node) in nodes.iter().enumerate() {
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
fn credential_refs<'a, J: JsonTree<'a>>(
    credentials: J,
    node: usize,
) -> Result<Vec<(&'a str, &'a str)>, ContentError> {
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

/// The normalised view as a JSON object: serializes in canonical form.
struct View<'v, 'a, J>(&'v Fields<'a, J>);

impl<'a, J: JsonTree<'a>> Serialize for View<'_, 'a, J> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, part)| (key, part)))
    }
}

impl<'a, J: JsonTree<'a>> Serialize for Part<'a, J> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Verbatim(value) => value.serialize(serializer),
            Part::Nodes(nodes) => serializer.collect_seq(nodes.iter().map(View)),
            Part::Credentials(refs) => serializer.collect_map(
                refs.iter()
                    .map(|(cred_type, name)| (cred_type, CredentialRef { name })),
            ),
        }
    }
}

/// A node's reference to a credential, by name only.
#[derive(Serialize)]
struct CredentialRef<'r, 'a> {
    name: &'r &'a str,
}

fn fields_to_value(fields: &Fields<'_, &Value>) -> Value {
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

fn hash_workflow<'a, J: JsonTree<'a>>(workflow: J) -> Result<ContentHash, ContentError> {
    let view = normalized_view(workflow)?;
    let mut hasher = Sha256::new();
    // The canonical form comes in many short pieces: gather them for SHA-256.
    let mut out = BufWriter::with_capacity(16 * 1024, &mut hasher);
    // SHA-256 takes every byte, and a parsed JSON tree always serializes.
    write_view(&view, &mut out)
        .and_then(|()| out.flush())
        .expect("canonical JSON streams into SHA-256");
    drop(out);
    Ok(ContentHash(hex::encode(hasher.finalize())))
}

/// Writes the canonical form of the normalised view: the bytes of
/// `serde_json::to_writer(&View(fields))`, with each verbatim value written by
/// [`JsonTree::write_canonical`] (a test compares both over the fixtures).
fn write_view<'a, J: JsonTree<'a>, W: Write>(
    fields: &Fields<'a, J>,
    out: &mut W,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, part)) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_plain_or_escaped(out, key)?;
        out.write_all(b":")?;
        match part {
            Part::Verbatim(value) => value.write_canonical(out)?,
            Part::Nodes(nodes) => {
                out.write_all(b"[")?;
                for (j, node) in nodes.iter().enumerate() {
                    if j > 0 {
                        out.write_all(b",")?;
                    }
                    write_view(node, out)?;
                }
                out.write_all(b"]")?;
            }
            Part::Credentials(_) => serde_json::to_writer(&mut *out, part)?,
        }
    }
    out.write_all(b"}")
}

/// A JSON string as serde_json writes it: copied between quotes when it holds no
/// byte serde_json escapes (`"`, `\\`, control characters; [`find_special`]), which
/// is then exactly serde_json's output without its byte-by-byte escape scan;
/// otherwise written by serde_json.
fn write_plain_or_escaped<W: Write>(out: &mut W, text: &str) -> std::io::Result<()> {
    if find_special(text.as_bytes(), 0) == text.len() {
        out.write_all(b"\"")?;
        out.write_all(text.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(out, text).map_err(std::io::Error::from)
    }
}

impl<'a> JsonTree<'a> for &'a Value {
    fn kind(self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn as_str(self) -> Option<&'a str> {
        Value::as_str(self)
    }

    fn items(self) -> Option<Vec<Self>> {
        Some(self.as_array()?.iter().collect())
    }

    fn entries(self) -> Option<Vec<(&'a str, Self)>> {
        let map = self.as_object()?;
        let mut entries: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        // Already sorted unless serde_json's `preserve_order` is enabled.
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        Some(entries)
    }

    fn get(self, key: &str) -> Option<Self> {
        self.as_object()?.get(key)
    }

    /// serde_json's bytes, with strings that need no escaping copied as they are
    /// (see [`write_plain_or_escaped`]).
    fn write_canonical<W: Write>(self, out: &mut W) -> std::io::Result<()> {
        match self {
            Value::Null | Value::Bool(_) | Value::Number(_) => {
                serde_json::to_writer(out, self).map_err(std::io::Error::from)
            }
            Value::String(text) => write_plain_or_escaped(out, text),
            Value::Array(items) => {
                out.write_all(b"[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    item.write_canonical(out)?;
                }
                out.write_all(b"]")
            }
            // In the map's order, as serde_json writes it: sorted by key without
            // `preserve_order` (a test fails if that feature is ever enabled).
            Value::Object(members) => {
                out.write_all(b"{")?;
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    write_plain_or_escaped(out, key)?;
                    out.write_all(b":")?;
                    value.write_canonical(out)?;
                }
                out.write_all(b"}")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Fast path for `content_hash_bytes`: a small JSON parser into a flat tape.
// ---------------------------------------------------------------------------

/// Whether the fast parser hashes exactly like `serde_json::Value` on a probe
/// covering numbers, escapes and duplicate keys. It is designed to, also with
/// serde_json's `arbitrary_precision` feature (which another crate could switch on
/// for the whole build); should a serde_json version or feature ever break that,
/// `content_hash_bytes` falls back to parsing a `Value`. Checked once per process.
fn fast_parser_is_faithful() -> bool {
    static FAITHFUL: OnceLock<bool> = OnceLock::new();
    *FAITHFUL.get_or_init(|| {
        const PROBE: &[u8] = br#" {"nodes":[{"name":"n\u00e9\ud83d\ude00","x":[1.50,-0,0.1,1E2,-7,
            18446744073709551616,-9223372036854775809,2.5e-3,"a\tb\/c\u0000",true,null,{},[]]}],
            "k":{"b":1,"a":2,"b":3},"connections":{}} "#;
        let fast = Tape::parse(PROBE).map(|tape| hash_workflow(tape.root()));
        let value = serde_json::from_slice::<Value>(PROBE)
            .map_err(malformed)
            .and_then(|value| hash_workflow(&value));
        matches!((fast, value), (Some(Ok(a)), Ok(b)) if a == b)
    })
}

/// A parsed JSON document as a flat array of tokens in document order.
///
/// Building a tree of `Vec`s costs an allocation, a move and a free per array and
/// object; a tape costs one growing `Vec`. Strings without escapes stay slices of
/// the input. Numbers are `serde_json::Number`s from serde_json's own number
/// parser, and each object's members are put in canonical order (duplicate keys:
/// the last one wins, as in serde_json) while parsing, so a tape encodes exactly
/// like the `Value` parsed from the same input.
struct Tape<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    /// For each object, the token indices of its keys in canonical order (each
    /// value is the token right after its key). See [`Kind::Object`].
    members: Vec<u32>,
    /// Decoded string literals that contained escapes.
    decoded: Vec<String>,
    numbers: Vec<Number>,
}

#[derive(Clone, Copy)]
struct Token {
    kind: Kind,
    a: u32,
    b: u32,
    c: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    /// `a`: index into `numbers`.
    Number,
    /// A string literal without escapes: `src[a..b]`. Such a slice never contains a
    /// byte that needs escaping on output.
    Str,
    /// A string literal with escapes: `decoded[a]`.
    Escaped,
    /// `a`: index of the first token after the array. Elements follow this token.
    Array,
    /// `a`: index of the first token after the object; `members[b..b + c]`: its
    /// key tokens in canonical order.
    Object,
}

/// A node of a [`Tape`].
#[derive(Clone, Copy)]
struct TapeRef<'t> {
    tape: &'t Tape<'t>,
    at: usize,
}

impl<'a> Tape<'a> {
    /// Parses a complete document; `None` if it is not valid JSON (or is 4 GiB or
    /// more, which token offsets cannot address).
    fn parse(json: &'a [u8]) -> Option<Tape<'a>> {
        // Valid JSON is valid UTF-8, and checking it once up front lets strings be
        // sliced out of the input without further checks.
        let src = std::str::from_utf8(json).ok()?;
        u32::try_from(src.len()).ok()?;
        let mut parser = Parser {
            bytes: src.as_bytes(),
            pos: 0,
            keys: Vec::with_capacity(64),
            tape: Tape {
                src,
                tokens: Vec::with_capacity(src.len() / 8),
                members: Vec::with_capacity(src.len() / 16),
                decoded: Vec::new(),
                numbers: Vec::new(),
            },
        };
        parser.value(0)?;
        parser.skip_whitespace();
        (parser.pos == parser.bytes.len()).then_some(parser.tape)
    }

    fn root(&self) -> TapeRef<'_> {
        TapeRef { tape: self, at: 0 }
    }

    /// The text of a string token.
    fn text(&self, at: usize) -> &str {
        let token = self.tokens[at];
        match token.kind {
            Kind::Str => &self.src[token.a as usize..token.b as usize],
            Kind::Escaped => &self.decoded[token.a as usize],
            _ => "",
        }
    }

    /// Index of the first token after the value starting at `at`.
    fn skip(&self, at: usize) -> usize {
        let token = self.tokens[at];
        match token.kind {
            Kind::Array | Kind::Object => token.a as usize,
            _ => at + 1,
        }
    }

    /// Key token indices of the object at `at`, in canonical order.
    fn members_of(&self, at: usize) -> &[u32] {
        let token = self.tokens[at];
        &self.members[token.b as usize..(token.b + token.c) as usize]
    }
}

/// Nesting serde_json accepts: it rejects the 128th nested array or object.
const MAX_DEPTH: usize = 127;

/// A strict JSON parser (RFC 8259, as serde_json reads it) that fills a [`Tape`].
///
/// It only has to be right when it succeeds: any input it rejects is handed to
/// serde_json, which produces the error message (or, should this parser ever be
/// stricter than serde_json, the result).
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Key token indices of the objects being parsed (innermost last).
    keys: Vec<u32>,
    tape: Tape<'a>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn push(&mut self, kind: Kind, a: u32, b: u32, c: u32) {
        self.tape.tokens.push(Token { kind, a, b, c });
    }

    /// Index the next token will get. Fits in `u32`: there are fewer tokens than
    /// input bytes, and the input is shorter than 4 GiB.
    fn next_index(&self) -> u32 {
        self.tape.tokens.len() as u32
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string(),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true", Kind::True),
            b'f' => self.literal(b"false", Kind::False),
            b'n' => self.literal(b"null", Kind::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<()> {
        if !self.bytes.get(self.pos..)?.starts_with(word) {
            return None;
        }
        self.pos += word.len();
        self.push(kind, 0, 0, 0);
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // '['
        let at = self.tape.tokens.len();
        self.push(Kind::Array, 0, 0, 0);
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.pos += 1;
        } else {
            loop {
                self.value(depth)?;
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => break,
                    _ => return None,
                }
            }
            self.pos += 1;
        }
        self.tape.tokens[at].a = self.next_index();
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1; // '{'
        let at = self.tape.tokens.len();
        self.push(Kind::Object, 0, 0, 0);
        let base = self.keys.len();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                self.skip_whitespace();
                if self.peek()? != b'"' {
                    return None;
                }
                self.keys.push(self.next_index());
                self.string()?;
                self.skip_whitespace();
                if self.peek()? != b':' {
                    return None;
                }
                self.pos += 1;
                self.value(depth)?;
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => break,
                    _ => return None,
                }
            }
            self.pos += 1;
        }
        let tape = &self.tape;
        let keys = &mut self.keys[base..];
        if !keys.is_sorted_by(|&x, &y| tape.text(x as usize) < tape.text(y as usize)) {
            // Stable, so duplicates stay in input order; then keep the last
            // occurrence, as serde_json's map does.
            keys.sort_by(|&x, &y| tape.text(x as usize).cmp(tape.text(y as usize)));
            let mut kept = base;
            for i in base..self.keys.len() {
                let key = self.keys[i];
                if kept > base && tape.text(self.keys[kept - 1] as usize) == tape.text(key as usize)
                {
                    self.keys[kept - 1] = key;
                } else {
                    self.keys[kept] = key;
                    kept += 1;
                }
            }
            self.keys.truncate(kept);
        }
        let start = self.tape.members.len() as u32;
        let count = (self.keys.len() - base) as u32;
        self.tape.members.extend(self.keys.drain(base..));
        let end = self.next_index();
        let token = &mut self.tape.tokens[at];
        (token.a, token.b, token.c) = (end, start, count);
        Some(())
    }

    /// Parses a string literal starting at the opening quote and pushes its token.
    fn string(&mut self) -> Option<()> {
        let start = self.pos + 1;
        let mut i = find_special(self.bytes, start);
        if *self.bytes.get(i)? == b'"' {
            self.pos = i + 1;
            self.push(Kind::Str, start as u32, i as u32, 0);
            return Some(());
        }
        let src = self.tape.src;
        let mut decoded = String::with_capacity(i - start + 16);
        decoded.push_str(src.get(start..i)?);
        loop {
            match *self.bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    let escape = *self.bytes.get(i + 1)?;
                    i += 2;
                    decoded.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape(&mut i)?,
                        _ => return None,
                    });
                }
                0..=0x1f => return None,
                _ => {
                    let run = i;
                    i = find_special(self.bytes, i);
                    decoded.push_str(src.get(run..i)?);
                }
            }
        }
        self.pos = i + 1;
        let index = self.tape.decoded.len() as u32;
        self.tape.decoded.push(decoded);
        self.push(Kind::Escaped, index, 0, 0);
        Some(())
    }

    /// Decodes the hex digits of a `\u` escape at `*i` (and the low half of a
    /// surrogate pair). Lone surrogates are rejected.
    fn unicode_escape(&self, i: &mut usize) -> Option<char> {
        let high = self.hex4(*i)?;
        *i += 4;
        if !(0xD800..0xDC00).contains(&high) {
            return char::from_u32(high); // `None` for a lone low surrogate
        }
        if self.bytes.get(*i..*i + 2)? != b"\\u" {
            return None;
        }
        let low = self.hex4(*i + 2)?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        *i += 6;
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        self.bytes
            .get(at..at + 4)?
            .iter()
            .try_fold(0u32, |n, &b| Some(n * 16 + char::from(b).to_digit(16)?))
    }

    fn number(&mut self) -> Option<()> {
        let bytes = self.bytes;
        let is_digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let start = self.pos;
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                while is_digit(i) {
                    i += 1;
                }
            }
            _ => return None,
        }
        let plain_integer = i;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            if !is_digit(i) {
                return None;
            }
            while is_digit(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            if !is_digit(i) {
                return None;
            }
            while is_digit(i) {
                i += 1;
            }
        }
        self.pos = i;
        let token = self.tape.src.get(start..i)?;
        let number = if i == plain_integer && bytes[start] != b'-' && token.len() <= 19 {
            // Fits in a u64, which is what serde_json makes of it.
            Number::from(
                token
                    .bytes()
                    .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')),
            )
        } else {
            // Everything else goes through serde_json's own number parsing, so that
            // floats, negative zero and out-of-range integers come out identically.
            serde_json::from_str::<Number>(token).ok()?
        };
        let index = self.tape.numbers.len() as u32;
        self.tape.numbers.push(number);
        self.push(Kind::Number, index, 0, 0);
        Some(())
    }
}

impl<'t> JsonTree<'t> for TapeRef<'t> {
    fn kind(self) -> &'static str {
        match self.tape.tokens[self.at].kind {
            Kind::Null => "null",
            Kind::True | Kind::False => "a boolean",
            Kind::Number => "a number",
            Kind::Str | Kind::Escaped => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }

    fn as_str(self) -> Option<&'t str> {
        match self.tape.tokens[self.at].kind {
            Kind::Str | Kind::Escaped => Some(self.tape.text(self.at)),
            _ => None,
        }
    }

    fn items(self) -> Option<Vec<Self>> {
        let tape = self.tape;
        let token = tape.tokens[self.at];
        if token.kind != Kind::Array {
            return None;
        }
        let mut items = Vec::new();
        let mut at = self.at + 1;
        while at < token.a as usize {
            items.push(TapeRef { tape, at });
            at = tape.skip(at);
        }
        Some(items)
    }

    fn entries(self) -> Option<Vec<(&'t str, Self)>> {
        let tape = self.tape;
        if tape.tokens[self.at].kind != Kind::Object {
            return None;
        }
        let members = tape.members_of(self.at).iter().map(|&key| {
            let key = key as usize;
            (tape.text(key), TapeRef { tape, at: key + 1 })
        });
        Some(members.collect())
    }

    fn get(self, key: &str) -> Option<Self> {
        let tape = self.tape;
        if tape.tokens[self.at].kind != Kind::Object {
            return None;
        }
        let members = tape.members_of(self.at);
        let i = members
            .binary_search_by(|&k| tape.text(k as usize).cmp(key))
            .ok()?;
        Some(TapeRef {
            tape,
            at: members[i] as usize + 1,
        })
    }

    /// serde_json's bytes, except that a string without escapes is copied as the
    /// tokenizer found it: such a slice holds no byte serde_json escapes (`"`, `\`,
    /// control characters), so serde_json would write the same bytes after scanning
    /// them one by one, which cost about a tenth of the hashing throughput.
    fn write_canonical<W: Write>(self, out: &mut W) -> std::io::Result<()> {
        let tape = self.tape;
        let token = tape.tokens[self.at];
        match token.kind {
            Kind::Null => out.write_all(b"null"),
            Kind::True => out.write_all(b"true"),
            Kind::False => out.write_all(b"false"),
            Kind::Str => {
                out.write_all(b"\"")?;
                out.write_all(tape.text(self.at).as_bytes())?;
                out.write_all(b"\"")
            }
            Kind::Number | Kind::Escaped => {
                serde_json::to_writer(out, &self).map_err(std::io::Error::from)
            }
            Kind::Array => {
                out.write_all(b"[")?;
                let mut at = self.at + 1;
                while at < token.a as usize {
                    if at > self.at + 1 {
                        out.write_all(b",")?;
                    }
                    TapeRef { tape, at }.write_canonical(out)?;
                    at = tape.skip(at);
                }
                out.write_all(b"]")
            }
            Kind::Object => {
                out.write_all(b"{")?;
                for (i, &key) in tape.members_of(self.at).iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    let key = key as usize;
                    TapeRef { tape, at: key }.write_canonical(out)?;
                    out.write_all(b":")?;
                    TapeRef { tape, at: key + 1 }.write_canonical(out)?;
                }
                out.write_all(b"}")
            }
        }
    }
}

/// Canonical form: the tape's objects already hold their members in canonical
/// order, and its numbers are serde_json's.
impl Serialize for TapeRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tape = self.tape;
        let token = tape.tokens[self.at];
        match token.kind {
            Kind::Null => serializer.serialize_unit(),
            Kind::True => serializer.serialize_bool(true),
            Kind::False => serializer.serialize_bool(false),
            Kind::Number => tape.numbers[token.a as usize].serialize(serializer),
            Kind::Str | Kind::Escaped => serializer.serialize_str(tape.text(self.at)),
            Kind::Array => {
                let end = token.a as usize;
                let mut at = self.at + 1;
                serializer.collect_seq(std::iter::from_fn(|| {
                    let item = (at < end).then_some(TapeRef { tape, at })?;
                    at = tape.skip(at);
                    Some(item)
                }))
            }
            Kind::Object => serializer.collect_map(tape.members_of(self.at).iter().map(|&key| {
                let key = key as usize;
                (tape.text(key), TapeRef { tape, at: key + 1 })
            })),
        }
    }
}

/// Index of the first byte at or after `i` that serde_json escapes in a string
/// (`"`, `\` or a control character U+0000 to U+001F), or `bytes.len()` if there is
/// none. Also the end of a run of plain content when parsing a string literal.
///
/// Checks eight bytes at a time: for a word `x`, `(x - ONES * n) & !x & HIGHS` is
/// non-zero iff some byte of `x` is below `n` (for `n <= 0x80`), and its lowest set
/// bit marks the first such byte (borrows only propagate upwards).
fn find_special(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ORDER_SYNC: &str = include_str!("../testdata/order_sync.json");
    const DAILY_REPORT: &str = include_str!("../testdata/daily_report.json");

    fn order_sync() -> Value {
        serde_json::from_str(ORDER_SYNC).unwrap()
    }

    fn daily_report() -> Value {
        serde_json::from_str(DAILY_REPORT).unwrap()
    }

    fn fixtures() -> [Value; 2] {
        [order_sync(), daily_report()]
    }

    /// The reference semantics of `content_hash_bytes`.
    fn hash_via_value(json: &[u8]) -> Result<ContentHash, ContentError> {
        let value: Value = serde_json::from_slice(json).map_err(malformed)?;
        content_hash(&value)
    }

    /// `content_hash_bytes` without its serde_json fallback: `None` if the fast
    /// parser rejects the input. (Tests must check the fast path on its own: through
    /// `content_hash_bytes`, the fallback would hide its mistakes.)
    fn hash_via_tape(json: &[u8]) -> Option<Result<ContentHash, ContentError>> {
        Tape::parse(json).map(|tape| hash_workflow(tape.root()))
    }

    /// How the hashing paths disagreed on one input.
    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug in failure messages
    enum Disagreement {
        FastPath {
            fast: Option<Result<ContentHash, ContentError>>,
            serde_json: Result<ContentHash, ContentError>,
            input: String,
        },
        Bytes {
            serde_json: Result<ContentHash, ContentError>,
        },
    }

    /// Checks `content_hash_bytes` and its fast path against serde_json: the fast
    /// parser accepts exactly what serde_json accepts, and hashes it the same.
    fn check_bytes(json: &[u8]) -> Result<(), Disagreement> {
        let reference = hash_via_value(json);
        let fast = hash_via_tape(json);
        let agree = match (&fast, &reference) {
            (Some(fast), reference) => fast == reference,
            (None, Err(ContentError::Malformed(_))) => true,
            (None, _) => false,
        };
        if !agree {
            return Err(Disagreement::FastPath {
                fast,
                serde_json: reference,
                input: String::from_utf8_lossy(json).into_owned(),
            });
        }
        if content_hash_bytes(json) != reference {
            return Err(Disagreement::Bytes {
                serde_json: reference,
            });
        }
        Ok(())
    }

    /// Hashes through every entry point and checks that they agree.
    fn hash(workflow: &Value) -> ContentHash {
        let from_value = content_hash(workflow).unwrap();
        for bytes in [
            serde_json::to_vec(workflow).unwrap(),
            serde_json::to_vec_pretty(workflow).unwrap(),
        ] {
            assert_eq!(hash_via_tape(&bytes), Some(Ok(from_value.clone())));
            assert_eq!(content_hash_bytes(&bytes).unwrap(), from_value);
        }
        let canonical = crate::canonical_json::to_canonical_vec(&normalize(workflow).unwrap());
        assert_eq!(hex::encode(Sha256::digest(&canonical)), from_value.as_str());
        from_value
    }

    /// The error from every entry point, checking that they agree.
    fn error(workflow: &Value) -> ContentError {
        let err = content_hash(workflow).unwrap_err();
        assert_eq!(normalize(workflow).unwrap_err(), err);
        let bytes = serde_json::to_vec_pretty(workflow).unwrap();
        assert_eq!(hash_via_tape(&bytes), Some(Err(err.clone())));
        assert_eq!(content_hash_bytes(&bytes).unwrap_err(), err);
        err
    }

    fn nodes_mut(workflow: &mut Value) -> &mut Vec<Value> {
        workflow["nodes"].as_array_mut().unwrap()
    }

    fn node_mut<'a>(workflow: &'a mut Value, name: &str) -> &'a mut Value {
        nodes_mut(workflow)
            .iter_mut()
            .find(|node| node["name"] == name)
            .unwrap()
    }

    fn invalid_field(field: &str, reason: &str) -> ContentError {
        invalid(field, reason)
    }

    /// Writes `value` as JSON text with object keys in a pseudo-random order,
    /// random whitespace, some characters needlessly escaped and, if `duplicates`,
    /// decoy members that a later member with the same key overrides.
    fn render(value: &Value, seed: u64, pretty: bool, duplicates: bool) -> String {
        struct Renderer {
            state: u64,
            pretty: bool,
            duplicates: bool,
            out: String,
        }
        impl Renderer {
            fn next(&mut self) -> u64 {
                // xorshift64*
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
            fn space(&mut self) {
                if self.pretty {
                    let ws = [" ", "\n  ", "\t", "\r\n    ", ""];
                    let pick = ws[(self.next() % 5) as usize];
                    self.out.push_str(pick);
                }
            }
            fn string(&mut self, s: &str) {
                self.out.push('"');
                for c in s.chars() {
                    let roll = self.next() % 8;
                    match c {
                        '"' => self.out.push_str("\\\""),
                        '\\' => self.out.push_str("\\\\"),
                        '/' if roll == 0 => self.out.push_str("\\/"),
                        '\u{8}' if roll < 4 => self.out.push_str("\\b"),
                        '\u{c}' if roll < 4 => self.out.push_str("\\f"),
                        '\n' if roll < 4 => self.out.push_str("\\n"),
                        '\r' if roll < 4 => self.out.push_str("\\r"),
                        '\t' if roll < 4 => self.out.push_str("\\t"),
                        c if (c as u32) < 0x20 || roll == 1 => {
                            let mut units = [0u16; 2];
                            for unit in c.encode_utf16(&mut units) {
                                self.out.push_str(&format!("\\u{unit:04X}"));
                            }
                        }
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            fn value(&mut self, value: &Value) {
                self.space();
                match value {
                    Value::String(s) => self.string(s),
                    Value::Array(items) => {
                        self.out.push('[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                self.out.push(',');
                            }
                            self.value(item);
                        }
                        self.space();
                        self.out.push(']');
                    }
                    Value::Object(map) => {
                        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                        for i in (1..entries.len()).rev() {
                            let j = (self.next() % (i as u64 + 1)) as usize;
                            entries.swap(i, j);
                        }
                        self.out.push('{');
                        let mut first = true;
                        for (key, value) in entries {
                            let decoy = self.duplicates && self.next() % 3 == 0;
                            let members = if decoy {
                                vec![(key, &Value::Null), (key, value)]
                            } else {
                                vec![(key, value)]
                            };
                            for (key, value) in members {
                                if !first {
                                    self.out.push(',');
                                }
                                first = false;
                                self.space();
                                self.string(key);
                                self.space();
                                self.out.push(':');
                                self.value(value);
                            }
                        }
                        self.space();
                        self.out.push('}');
                    }
                    scalar => self.out.push_str(&scalar.to_string()),
                }
                self.space();
            }
        }
        let mut renderer = Renderer {
            state: seed | 1,
            pretty,
            duplicates,
            out: String::new(),
        };
        renderer.value(value);
        renderer.out
    }

    // --- the hash itself -----------------------------------------------------

    #[test]
    fn fixture_hashes_are_pinned() {
        // Pinned so that an accidental change of the normalisation or of the
        // canonical form is caught. Changing these values changes every stored hash.
        // (Cross-checked against an independent Python implementation: the same
        // normalisation, then json.dumps(sort_keys=True, separators=(",", ":"),
        // ensure_ascii=False) and hashlib.sha256.)
        assert_eq!(
            hash(&order_sync()).as_str(),
            "ed7a8d9141ea6b07d05f3f6a3011e286b29ba318867178e453df7b3395ac40e9"
        );
        assert_eq!(
            hash(&daily_report()).as_str(),
            "64dead340c10a05398be8d8d20b21dd190a4f4ed9a9083bf23005dd01b136ea0"
        );
    }

    #[test]
    fn hash_is_64_lowercase_hex_and_stable() {
        for workflow in fixtures() {
            let first = hash(&workflow);
            assert_eq!(first.as_str().len(), 64);
            assert!(first
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(hash(&workflow), first);
            assert_eq!(ContentHash::parse(first.as_str()).unwrap(), first);
        }
    }

    #[test]
    fn raw_export_hashes_like_parsed_value() {
        for text in [ORDER_SYNC, DAILY_REPORT] {
            let value: Value = serde_json::from_str(text).unwrap();
            let expected = content_hash(&value).unwrap();
            assert_eq!(hash_via_tape(text.as_bytes()), Some(Ok(expected.clone())));
            assert_eq!(content_hash_bytes(text.as_bytes()).unwrap(), expected);
        }
    }

    #[test]
    fn fast_parser_matches_serde_json_in_this_build() {
        assert!(fast_parser_is_faithful());
    }

    #[test]
    fn fixtures_are_workflows_that_normalisation_changes() {
        for workflow in fixtures() {
            let normalized = normalize(&workflow).unwrap();
            assert_ne!(normalized, workflow);
            assert!(workflow["nodes"].as_array().unwrap().len() >= 5);
        }
    }

    // --- what does not change the hash ---------------------------------------

    #[test]
    fn credential_ids_do_not_matter() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            let mut changed = workflow.clone();
            let mut removed = workflow.clone();
            let mut seen = 0;
            for (changed_node, removed_node) in nodes_mut(&mut changed)
                .iter_mut()
                .zip(nodes_mut(&mut removed).iter_mut())
            {
                if let Some(creds) = changed_node.get_mut("credentials") {
                    for reference in creds.as_object_mut().unwrap().values_mut() {
                        reference["id"] = json!("4711");
                        seen += 1;
                    }
                }
                if let Some(creds) = removed_node.get_mut("credentials") {
                    let creds = creds.as_object_mut().unwrap();
                    for reference in creds.values_mut() {
                        reference.as_object_mut().unwrap().remove("id");
                    }
                }
            }
            assert!(seen >= 2);
            assert_eq!(hash(&changed), before);
            assert_eq!(hash(&removed), before);
        }
    }

    #[test]
    fn node_ids_positions_and_webhook_ids_do_not_matter() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            let mut changed = workflow.clone();
            let mut removed = workflow.clone();
            for (i, node) in nodes_mut(&mut changed).iter_mut().enumerate() {
                node["id"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
                node["position"] = json!([i * 1000, -40]);
                node["positionAbsolute"] = json!({"x": 1, "y": 2});
                if node.get("webhookId").is_some() {
                    node["webhookId"] = json!("ffffffff-0000-4000-8000-000000000000");
                }
            }
            for node in nodes_mut(&mut removed) {
                let node = node.as_object_mut().unwrap();
                for key in ["id", "position", "webhookId"] {
                    node.remove(key);
                }
            }
            assert_eq!(hash(&changed), before);
            assert_eq!(hash(&removed), before);
        }
    }

    #[test]
    fn node_order_does_not_matter() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            let mut reversed = workflow.clone();
            nodes_mut(&mut reversed).reverse();
            assert_eq!(hash(&reversed), before);
            let mut rotated = workflow.clone();
            nodes_mut(&mut rotated).rotate_left(2);
            assert_eq!(hash(&rotated), before);
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            for seed in 1..20 {
                let text = render(&workflow, seed, seed % 2 == 0, false);
                check_bytes(text.as_bytes()).unwrap();
                assert_eq!(
                    content_hash_bytes(text.as_bytes()).unwrap(),
                    before,
                    "{text}"
                );
                let reparsed: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(content_hash(&reparsed).unwrap(), before);
            }
        }
    }

    #[test]
    fn duplicate_keys_resolve_like_serde_json() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            for seed in 1..10 {
                let text = render(&workflow, seed, true, true);
                check_bytes(text.as_bytes()).unwrap();
                assert_eq!(content_hash_bytes(text.as_bytes()).unwrap(), before);
                assert_eq!(hash_via_value(text.as_bytes()).unwrap(), before);
            }
        }
    }

    #[test]
    fn volatile_top_level_fields_do_not_matter() {
        for workflow in fixtures() {
            let before = hash(&workflow);
            let replacements = [
                ("id", json!("ZZZZZZZZZZZZZZZZ")),
                ("versionId", json!("11111111-2222-4333-8444-555555555555")),
                (
                    "activeVersionId",
                    json!("11111111-2222-4333-8444-555555555555"),
                ),
                ("activeVersion", json!({"versionId": "x", "nodes": []})),
                ("createdAt", json!("2020-01-01T00:00:00.000Z")),
                ("updatedAt", json!("2030-01-01T00:00:00.000Z")),
                ("active", json!(!workflow["active"].as_bool().unwrap())),
                ("isArchived", json!(true)),
                ("tags", json!([{"id": "x", "name": "other"}])),
                ("tagIds", json!(["x"])),
                ("pinData", json!({"Webhook": [{"json": {"a": 1}}]})),
                ("meta", json!({"instanceId": "another"})),
                ("staticData", json!({"global": {"lastRun": 5}})),
                ("triggerCount", json!(7)),
                ("hash", json!("abc")),
                ("shared", json!([{"role": "workflow:owner"}])),
                ("scopes", json!(["workflow:read"])),
            ];
            for (key, value) in replacements {
                let mut changed = workflow.clone();
                changed[key] = value;
                assert_eq!(hash(&changed), before, "changing `{key}`");
            }
            let mut stripped = workflow.clone();
            for key in DROPPED_WORKFLOW_KEYS {
                stripped.as_object_mut().unwrap().remove(key);
            }
            assert_eq!(hash(&stripped), before);
        }
    }

    /// Both trees' writers copy strings that need no escaping; their bytes must be
    /// serde_json's.
    #[test]
    fn the_fast_writers_write_exactly_serde_jsons_canonical_bytes() {
        let mut documents: Vec<String> = fixtures().iter().map(|f| f.to_string()).collect();
        documents.push(
            r#"{"name":"a\"b\\c\u0001\n é 😀","nodes":[{"name":"n","type":"t","parameters":{"x":[1,-0,1.5e300,-2.25,12345678901234567890,{},[],null,true,false,"\u00e9","\/"]},"credentials":{"api":{"id":"1","name":"N\"ame"}}}],"connections":{},"settings":{}}"#
                .to_string(),
        );
        for document in &documents {
            let tape = Tape::parse(document.as_bytes()).expect("valid JSON");
            let view = normalized_view(tape.root()).unwrap();
            let mut fast = Vec::new();
            write_view(&view, &mut fast).unwrap();
            let via_serde = serde_json::to_vec(&View(&view)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&via_serde)
            );
            let value: Value = serde_json::from_str(document).unwrap();
            let view = normalized_view(&value).unwrap();
            let mut fast = Vec::new();
            write_view(&view, &mut fast).unwrap();
            assert_eq!(fast, serde_json::to_vec(&View(&view)).unwrap());
            assert_eq!(
                content_hash_bytes(document.as_bytes()).unwrap(),
                content_hash(&value).unwrap()
            );
        }
    }

    // --- what changes the hash -----------------------------------------------

    #[test]
    fn meaningful_changes_change_the_hash() {
        type Mutation = fn(&mut Value);
        let mutations: [(&str, Mutation); 12] = [
            ("parameter", |w| {
                node_mut(w, "HTTP Request")["parameters"]["url"] =
                    json!("https://orders.example.com/api/v3/orders/sync");
            }),
            ("nested parameter", |w| {
                node_mut(w, "Is Paid?")["parameters"]["conditions"]["conditions"][0]
                    ["rightValue"] = json!("refunded");
            }),
            ("connection target", |w| {
                w["connections"]["Is Paid?"]["main"][1][0]["node"] = json!("Notify Slack");
            }),
            ("connection output", |w| {
                w["connections"]["Is Paid?"]["main"]
                    .as_array_mut()
                    .unwrap()
                    .swap(0, 1);
            }),
            ("connection removed", |w| {
                w["connections"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Upsert Order");
            }),
            ("renamed node", |w| {
                node_mut(w, "Notify Slack")["name"] = json!("Notify Channel");
                w["connections"]["Upsert Order"]["main"][0][0]["node"] = json!("Notify Channel");
            }),
            ("credential name", |w| {
                node_mut(w, "Upsert Order")["credentials"]["postgres"]["name"] =
                    json!("Orders DB (replica)");
            }),
            ("credential type", |w| {
                let node = node_mut(w, "HTTP Request");
                let creds = node["credentials"].as_object_mut().unwrap();
                let reference = creds.remove("httpHeaderAuth").unwrap();
                creds.insert("httpBasicAuth".into(), reference);
            }),
            ("setting", |w| w["settings"]["timezone"] = json!("UTC")),
            ("workflow name", |w| w["name"] = json!("Order Sync v2")),
            ("node disabled", |w| {
                node_mut(w, "Notify Slack")["disabled"] = json!(true);
            }),
            ("type version", |w| {
                node_mut(w, "HTTP Request")["typeVersion"] = json!(4.1);
            }),
        ];
        let workflow = order_sync();
        let before = hash(&workflow);
        let mut seen = vec![before.clone()];
        for (what, mutate) in mutations {
            let mut changed = workflow.clone();
            mutate(&mut changed);
            let after = hash(&changed);
            assert!(!seen.contains(&after), "{what} did not change the hash");
            seen.push(after);
        }
    }

    #[test]
    fn executed_workflow_reference_is_part_of_the_hash() {
        let mut workflow = order_sync();
        let before = hash(&workflow);
        node_mut(&mut workflow, "Handle Unpaid")["parameters"]["workflowId"]["value"] =
            json!("Other000Workflow");
        assert_ne!(hash(&workflow), before);
    }

    // --- normalize -----------------------------------------------------------

    #[test]
    fn normalize_drops_volatile_data_and_orders_nodes() {
        let normalized = normalize(&order_sync()).unwrap();
        let keys: Vec<&String> = normalized.as_object().unwrap().keys().collect();
        let mut expected = vec!["connections", "name", "nodes", "settings"];
        expected.sort();
        let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, expected);
        let nodes = normalized["nodes"].as_array().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for node in nodes {
            for key in DROPPED_NODE_KEYS {
                assert!(node.get(key).is_none(), "{key} kept in {node}");
            }
            assert!(node.get("parameters").is_some());
            assert!(node.get("type").is_some());
            assert!(node.get("typeVersion").is_some());
        }
        assert_eq!(
            nodes.iter().find(|n| n["name"] == "HTTP Request").unwrap()["credentials"],
            json!({"httpHeaderAuth": {"name": "Orders API"}})
        );
        assert_eq!(
            nodes.iter().find(|n| n["name"] == "HTTP Request").unwrap()["retryOnFail"],
            json!(true)
        );
    }

    #[test]
    fn normalize_keeps_unknown_and_empty_fields() {
        let workflow = json!({
            "name": "w",
            "nodes": [],
            "futureField": {"x": [1, 2]},
            "description": null
        });
        assert_eq!(normalize(&workflow).unwrap(), workflow);
        let minimal = json!({"nodes": []});
        assert_eq!(normalize(&minimal).unwrap(), minimal);
        // No connections at all is fine; the hash still covers everything else.
        assert_ne!(hash(&workflow), hash(&minimal));
    }

    #[test]
    fn normalize_is_idempotent() {
        for workflow in fixtures() {
            let once = normalize(&workflow).unwrap();
            assert_eq!(normalize(&once).unwrap(), once);
            assert_eq!(hash(&once), hash(&workflow));
        }
    }

    // --- malformed input -----------------------------------------------------

    #[test]
    fn invalid_json_is_malformed() {
        let cases: [&[u8]; 9] = [
            b"",
            b"{",
            b"{\"nodes\": []",
            b"{\"nodes\": []} trailing",
            b"{\"nodes\": [],}",
            b"{'nodes': []}",
            b"\xff\xfe",
            b"{\"nodes\": [], \"name\": \"\xc3\"}",
            b"{\"nodes\": [], \"x\": 01}",
        ];
        for bytes in cases {
            let err = content_hash_bytes(bytes).unwrap_err();
            assert!(matches!(err, ContentError::Malformed(_)), "{err:?}");
            check_bytes(bytes).unwrap();
        }
        let err = content_hash_bytes(b"{\"nodes\": [}").unwrap_err();
        assert!(
            err.to_string().starts_with("workflow JSON is malformed: "),
            "{err}"
        );
        assert!(err.to_string().contains("line 1 column 12"), "{err}");
    }

    #[test]
    fn non_object_is_rejected() {
        for workflow in [
            json!([]),
            json!("workflow"),
            json!(null),
            json!(42),
            json!(true),
        ] {
            assert_eq!(error(&workflow), ContentError::NotAnObject);
        }
        assert_eq!(
            ContentError::NotAnObject.to_string(),
            "workflow JSON must be an object at the top level"
        );
    }

    #[test]
    fn nodes_must_be_an_array() {
        assert_eq!(
            error(&json!({"name": "w"})),
            invalid_field("nodes", "is missing")
        );
        assert_eq!(
            error(&json!({"nodes": {"a": {}}})),
            invalid_field("nodes", "must be an array, found an object")
        );
        assert_eq!(
            error(&json!({"nodes": null})),
            invalid_field("nodes", "must be an array, found null")
        );
        assert_eq!(
            invalid_field("nodes", "is missing").to_string(),
            "workflow field `nodes` is invalid: is missing"
        );
    }

    #[test]
    fn nodes_must_be_objects_with_string_names() {
        assert_eq!(
            error(&json!({"nodes": [{"name": "a"}, "b"]})),
            invalid_field("nodes[1]", "must be an object, found a string")
        );
        assert_eq!(
            error(&json!({"nodes": [{"type": "n8n-nodes-base.set"}]})),
            invalid_field("nodes[0].name", "is missing")
        );
        assert_eq!(
            error(&json!({"nodes": [{"name": "a"}, {"name": null}]})),
            invalid_field("nodes[1].name", "must be a string, found null")
        );
        assert_eq!(
            error(&json!({"nodes": [{"name": 7}]})),
            invalid_field("nodes[0].name", "must be a string, found a number")
        );
    }

    #[test]
    fn duplicate_node_names_are_rejected() {
        let mut workflow = order_sync();
        let copy = node_mut(&mut workflow, "Webhook").clone();
        nodes_mut(&mut workflow).push(copy);
        assert_eq!(
            error(&workflow),
            ContentError::DuplicateNodeName("Webhook".into())
        );
        assert_eq!(
            ContentError::DuplicateNodeName("Webhook".into()).to_string(),
            "workflow has more than one node named \"Webhook\""
        );
    }

    #[test]
    fn connections_must_be_an_object() {
        for (connections, found) in [
            (json!([]), "an array"),
            (json!("x"), "a string"),
            (json!(null), "null"),
        ] {
            let mut workflow = order_sync();
            workflow["connections"] = connections;
            assert_eq!(
                error(&workflow),
                invalid_field("connections", &format!("must be an object, found {found}"))
            );
        }
    }

    #[test]
    fn credentials_must_be_references_with_names() {
        let with_credentials = |credentials: Value| json!({"nodes": [{"name": "a"}, {"name": "b", "credentials": credentials}]});
        assert_eq!(
            error(&with_credentials(json!([]))),
            invalid_field("nodes[1].credentials", "must be an object, found an array")
        );
        assert_eq!(
            error(&with_credentials(json!({"slackApi": "Slack Bot"}))),
            invalid_field(
                "nodes[1].credentials.slackApi",
                "must be an object with a string `name`, found a string"
            )
        );
        assert_eq!(
            error(&with_credentials(json!({"slackApi": {"id": "3"}}))),
            invalid_field("nodes[1].credentials.slackApi.name", "is missing")
        );
        assert_eq!(
            error(&with_credentials(
                json!({"slackApi": {"id": "3", "name": null}})
            )),
            invalid_field(
                "nodes[1].credentials.slackApi.name",
                "must be a string, found null"
            )
        );
        assert_eq!(
            hash(&with_credentials(json!({}))),
            hash(&with_credentials(json!({})))
        );
    }

    // --- ContentHash ---------------------------------------------------------

    const SAMPLE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn content_hash_parses_only_64_lowercase_hex() {
        let hash = ContentHash::parse(SAMPLE).unwrap();
        assert_eq!(hash.as_str(), SAMPLE);
        assert_eq!(hash.to_string(), SAMPLE);
        assert_eq!(format!("{hash:?}"), format!("ContentHash({SAMPLE})"));
        assert_eq!(String::from(hash.clone()), SAMPLE);
        assert_eq!(ContentHash::try_from(SAMPLE.to_owned()).unwrap(), hash);

        let upper = SAMPLE.to_uppercase();
        let non_ascii = format!("é{}", &SAMPLE[2..]);
        for bad in [
            "",
            &SAMPLE[1..],
            &format!("{SAMPLE}0"),
            &upper,
            &format!("g{}", &SAMPLE[1..]),
            &format!(" {}", &SAMPLE[1..]),
            &non_ascii,
        ] {
            let err = ContentHash::parse(bad).unwrap_err();
            assert!(matches!(err, ContentError::InvalidHash(_)), "{bad:?}");
            assert_eq!(ContentHash::try_from(bad.to_owned()).unwrap_err(), err);
        }
        assert_eq!(
            ContentHash::parse(&upper).unwrap_err().to_string(),
            "invalid content hash: expected 64 lowercase hex characters, found 'A' at byte 10"
        );
        assert_eq!(
            ContentHash::parse("abc").unwrap_err().to_string(),
            "invalid content hash: expected 64 lowercase hex characters, got 3 bytes"
        );
    }

    #[test]
    fn content_hash_serde_round_trip() {
        let hash = ContentHash::parse(SAMPLE).unwrap();
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{SAMPLE}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        let err = serde_json::from_str::<ContentHash>("\"ABC\"").unwrap_err();
        assert!(err.to_string().contains("invalid content hash"), "{err}");
        assert!(serde_json::from_str::<ContentHash>("42").is_err());
    }

    #[test]
    fn content_hash_orders_like_its_text() {
        let low = ContentHash::parse(&"0".repeat(64)).unwrap();
        let high = ContentHash::parse(&"f".repeat(64)).unwrap();
        assert!(low < high);
    }

    // --- the fast parser against serde_json ----------------------------------

    #[test]
    fn fast_parser_accepts_what_serde_json_accepts() {
        let deep_ok = format!("{}{}", "[".repeat(126), "]".repeat(126));
        let deep_bad = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let cases: Vec<String> = vec![
            r#"{"a": "plain", "b": "esc\"aped\\ \/ \b\f\n\r\t \u0041 \u00e9 \ud83d\ude00"}"#.into(),
            r#"{"n": [0, -0, 1, -1, 0.5, -0.0, 1e5, 1E+5, 1e-5, 123456789012345678, 1234567890123456789, 12345678901234567890, 123456789012345678901, -9223372036854775808, -9223372036854775809, 1.7976931348623157e308, 5e-324]}"#.into(),
            r#"{"dup": 1, "dup": 2, "a": {"x": 1, "x": {"y": 2}}}"#.into(),
            " \t\r\n{ \"k\" : [ true , false , null ] } \n".into(),
            r#"{"emoji": "😀", "cjk": "漢字", "nul": "\u0000"}"#.into(),
            format!("{{\"deep\": {deep_ok}}}"),
            // Rejected by both:
            format!("{{\"deep\": {deep_bad}}}"),
            r#"{"a": 01}"#.into(),
            r#"{"a": 1.}"#.into(),
            r#"{"a": .5}"#.into(),
            r#"{"a": +1}"#.into(),
            r#"{"a": -}"#.into(),
            r#"{"a": 1e}"#.into(),
            r#"{"a": 1e400}"#.into(),
            r#"{"a": tru}"#.into(),
            r#"{"a": nul}"#.into(),
            r#"{"a": NaN}"#.into(),
            r#"{"a": [1,]}"#.into(),
            r#"{"a": [,1]}"#.into(),
            r#"{"a" 1}"#.into(),
            r#"{"a": 1 "b": 2}"#.into(),
            r#"{a: 1}"#.into(),
            "{\"a\": \"tab\there\"}".into(),
            r#"{"a": "\x"}"#.into(),
            r#"{"a": "\u12"}"#.into(),
            r#"{"a": "\ud800"}"#.into(),
            r#"{"a": "\udc00"}"#.into(),
            r#"{"a": "\ud800\u0041"}"#.into(),
            r#"{"a": "unterminated}"#.into(),
            "\u{feff}{}".into(),
            "{} {}".into(),
            "{\"a\": 1} // comment".into(),
        ];
        for case in cases {
            let fast = Tape::parse(case.as_bytes()).is_some();
            let reference = serde_json::from_str::<Value>(&case).is_ok();
            assert_eq!(fast, reference, "{case}");
            let workflow = format!("{{\"nodes\": [], \"x\": {case}}}");
            check_bytes(workflow.as_bytes()).unwrap();
        }
    }

    // --- properties ----------------------------------------------------------

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            "[\\x00\\x08\\x0c\\n\\r\\t\\x1f\"\\\\/a\u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\é]{0,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_node() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["Webhook", "HTTP Request", "IF", "Set", "é", ""]),
            arb_json(),
            prop::option::of(prop::collection::btree_map(
                "[a-zA-Z]{1,8}",
                ("[0-9]{1,3}", "[a-zA-Z ]{0,8}"),
                0..3,
            )),
            any::<(i32, i32)>(),
            prop::option::of("[a-f0-9-]{8,36}"),
        )
            .prop_map(|(name, parameters, credentials, (x, y), webhook_id)| {
                let mut node = json!({
                    "parameters": parameters,
                    "id": format!("{x:x}-{y:x}"),
                    "name": name,
                    "type": "n8n-nodes-base.set",
                    "typeVersion": 3.4,
                    "position": [x, y],
                });
                if let Some(credentials) = credentials {
                    node["credentials"] = credentials
                        .into_iter()
                        .map(|(cred_type, (id, name))| (cred_type, json!({"id": id, "name": name})))
                        .collect::<Map<String, Value>>()
                        .into();
                }
                if let Some(webhook_id) = webhook_id {
                    node["webhookId"] = json!(webhook_id);
                }
                node
            })
    }

    fn arb_workflow() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(arb_node(), 0..5),
            arb_json(),
            arb_json(),
            any::<bool>(),
        )
            .prop_map(|(nodes, connections, extra, active)| {
                json!({
                    "id": "abc",
                    "name": "w",
                    "active": active,
                    "nodes": nodes,
                    "connections": connections,
                    "settings": {"executionOrder": "v1"},
                    "extra": extra,
                })
            })
    }

    #[test]
    fn find_special_finds_each_special_byte() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 0..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes, 0), at, "{special:#x} at {at} of {len}");
                }
                assert_eq!(find_special(&vec![0xC3; len], 0), len);
            }
        }
    }

    proptest! {
        #[test]
        fn find_special_matches_a_byte_loop(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), 0x20u8..0x7f, 0x80u8..=0xff],
                0..64,
            ),
            start in 0usize..70,
        ) {
            let expected = (start..bytes.len())
                .find(|&i| bytes[i] < 0x20 || bytes[i] == b'"' || bytes[i] == b'\\')
                .unwrap_or(bytes.len().max(start));
            prop_assert_eq!(find_special(&bytes, start), expected);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let checked = check_bytes(&bytes);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }

        #[test]
        fn json_like_bytes_never_panic(
            bytes in prop::collection::vec(
                prop::sample::select(b"{}[]\",:\\/ \n0123456789.-+eEtrufalsnbu\xc3\xa9".to_vec()),
                0..64,
            ),
        ) {
            let checked = check_bytes(&bytes);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }

        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let from_value = content_hash(&value);
            let _ = normalize(&value);
            let bytes = serde_json::to_vec(&value).unwrap();
            let checked = check_bytes(&bytes);
            prop_assert!(checked.is_ok(), "{:?}", checked);
            if let Ok(hash) = from_value {
                prop_assert_eq!(hash.as_str().len(), 64);
            }
        }

        #[test]
        fn mutated_fixture_bytes_agree_with_serde_json(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let mut bytes = ORDER_SYNC.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at.index(bytes.len());
                match op {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => { bytes.remove(at); }
                }
            }
            let checked = check_bytes(&bytes);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }

        #[test]
        fn arbitrary_workflows_hash_the_same_on_every_path(
            workflow in arb_workflow(),
            seed in any::<u64>(),
            pretty in any::<bool>(),
            duplicates in any::<bool>(),
        ) {
            let result = content_hash(&workflow);
            let text = render(&workflow, seed, pretty, duplicates);
            let checked = check_bytes(text.as_bytes());
            prop_assert!(checked.is_ok(), "{:?}", checked);
            prop_assert!(hash_via_tape(text.as_bytes()).is_some());
            if let Ok(hash) = &result {
                let canonical = crate::canonical_json::to_canonical_vec(&normalize(&workflow).unwrap());
                prop_assert_eq!(hex::encode(Sha256::digest(&canonical)), hash.as_str());
            } else {
                prop_assert_eq!(normalize(&workflow).err(), result.err());
            }
        }

        #[test]
        fn volatile_changes_never_change_the_hash(workflow in arb_workflow(), salt in any::<u32>()) {
            let before = content_hash(&workflow);
            let mut changed = workflow.clone();
            changed["id"] = json!(salt.to_string());
            changed["active"] = json!(salt % 2 == 0);
            changed["versionId"] = json!(salt);
            for node in nodes_mut(&mut changed) {
                node["id"] = json!(format!("{salt}"));
                node["position"] = json!([salt, salt]);
                if let Some(credentials) = node.get_mut("credentials").and_then(Value::as_object_mut) {
                    for reference in credentials.values_mut() {
                        reference["id"] = json!(salt.to_string());
                    }
                }
            }
            nodes_mut(&mut changed).reverse();
            prop_assert_eq!(content_hash(&changed), before);
        }
    }
}
