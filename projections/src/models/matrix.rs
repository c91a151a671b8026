//! The workflow matrix: which workflow runs where, in which state.
//!
//! Rows are canonical workflows, plus one row per untracked workflow of an
//! environment (a mapping with no canonical id); cells are mappings, one per
//! (environment, n8n workflow), attached to their canonical workflow's row. The
//! display state (IN_SYNC / DRIFT / OUT_OF_DATE) is computed when read, never stored
//! (DOMAIN.md §2.1). Pages are keyset-paginated on (lowercased name, id), so a page
//! costs the same however many rows there are.

use crate::sql::QueryRows as _;
use aggregates::canonical::{CanonicalEvent, CanonicalStatus};
use aggregates::mapping::{MappingEvent, MappingStatus, Observation};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

use crate::display::{sync_state, CellFacts, SyncState};
use crate::event::{Decoded, Envelope};
use crate::json_str::{JsonStr, OwnedJsonStr, Span};
use crate::query::{decode_cursor, like_pattern, page, page_size, Page, QueryError};
use crate::read_model_row;
use crate::runtime::{ApplyError, Projection};
use crate::sql::{select, Dialect, Json, KeyedRow, Rows, Sql, Tx};
use eventstore::Store;

pub const NAME: &str = "workflow_matrix";

/// The aggregates whose events this read model folds.
const AGGREGATE_TYPES: &[&str] = &["canonical_workflow", "workflow_mapping"];

/// What a matrix row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A canonical workflow (its cells are the mappings linked to it).
    Canonical,
    /// An n8n workflow with no canonical link (one mapping, one cell).
    Untracked,
}

aggregates::state_names!(RowKind { Canonical => "canonical", Untracked => "untracked" });

/// A matrix row's status: its canonical workflow's (`active`, `deleted`) or, for an
/// untracked row, its mapping's. One vocabulary, so rows of both kinds filter alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Active,
    Deleted,
    Linked,
    Untracked,
    Missing,
    Ignored,
}

aggregates::state_names!(RowStatus {
    Active => "active",
    Deleted => "deleted",
    Linked => "linked",
    Untracked => "untracked",
    Missing => "missing",
    Ignored => "ignored",
});

impl From<CanonicalStatus> for RowStatus {
    fn from(status: CanonicalStatus) -> Self {
        match status {
            CanonicalStatus::Active => RowStatus::Active,
            CanonicalStatus::Deleted => RowStatus::Deleted,
        }
    }
}

impl From<MappingStatus> for RowStatus {
    fn from(status: MappingStatus) -> Self {
        match status {
            MappingStatus::Linked => RowStatus::Linked,
            MappingStatus::Untracked => RowStatus::Untracked,
            MappingStatus::Missing => RowStatus::Missing,
            MappingStatus::Ignored => RowStatus::Ignored,
            MappingStatus::Deleted => RowStatus::Deleted,
        }
    }
}

crate::named_column!(RowKind, RowStatus);

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MatrixRow in "rm_matrix_rows" {
        /// The canonical workflow's aggregate id, or the untracked mapping's.
        pub id: String,
        pub tenant: String,
        pub kind: RowKind,
        pub canonical_id: Option<String>,
        /// Untracked rows: the environment and n8n workflow.
        pub environment_id: Option<String>,
        pub n8n_workflow_id: Option<String>,
        pub name: String,
        pub sort_key: String,
        pub slug: Option<String>,
        /// Canonical: `active` / `deleted`; untracked: the mapping's status.
        pub status: RowStatus,
        pub git_path: Option<String>,
        pub git_content_hash: Option<String>,
        pub git_commit_sha: Option<String>,
        pub git_changed_at: Option<DateTime<Utc>>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        /// The row's cells, ordered by environment then mapping id: what a page shows
        /// of the row, read with it (decision 63). `rm_matrix_cells` holds the same
        /// cells one by one.
        #[serde(skip)]
        pub cells: Json<RowCells>,
    }
}

impl KeyedRow for MatrixRow {
    fn id(&self) -> &str {
        &self.id
    }
}

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MatrixCell in "rm_matrix_cells" {
        /// The mapping's aggregate id.
        pub id: String,
        pub tenant: String,
        pub row_id: String,
        pub environment_id: String,
        pub n8n_workflow_id: String,
        pub canonical_id: Option<String>,
        pub name: String,
        pub status: MappingStatus,
        pub env_content_hash: Option<String>,
        pub git_content_hash: Option<String>,
        /// When n8n last changed the workflow.
        pub env_changed_at: Option<DateTime<Utc>>,
        /// When the mapping entered its status.
        pub status_since: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for MatrixCell {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A matrix row's cells as its `cells` column holds them: a JSON array with one
/// array per cell, in [`MatrixCell`]'s field order (positional, so a page's 500
/// cells do not repeat 13 keys each), ordered by environment then mapping id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowCells(pub Vec<MatrixCell>);

/// One cell in [`RowCells`]' stored form.
type PackedCell = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    MappingStatus,
    Option<String>,
    Option<String>,
    Option<StoredTime>,
    StoredTime,
    StoredTime,
);

/// A time in [`RowCells`]: as the time columns store it (`fmt_time`), parsed with
/// the same RFC 3339 parser.
#[derive(Clone, Copy)]
struct StoredTime(DateTime<Utc>);

impl Serialize for StoredTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&eventstore::sql::fmt_time(self.0))
    }
}

impl<'de> Deserialize<'de> for StoredTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StoredTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            // the text is borrowed from the column's where it can be: no copy
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StoredTime, E> {
                eventstore::sql::parse_time(text)
                    .map(StoredTime)
                    .ok_or_else(|| E::custom(format!("not an RFC 3339 time: {text}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl Serialize for RowCells {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|c| {
            (
                &c.id,
                &c.tenant,
                &c.row_id,
                &c.environment_id,
                &c.n8n_workflow_id,
                &c.canonical_id,
                &c.name,
                c.status,
                &c.env_content_hash,
                &c.git_content_hash,
                c.env_changed_at.map(StoredTime),
                StoredTime(c.status_since),
                StoredTime(c.updated_at),
            )
        }))
    }
}

impl<'de> Deserialize<'de> for RowCells {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let packed = Vec::<PackedCell>::deserialize(deserializer)?;
        Ok(RowCells(
            packed
                .into_iter()
                .map(|c| MatrixCell {
                    id: c.0,
                    tenant: c.1,
                    row_id: c.2,
                    environment_id: c.3,
                    n8n_workflow_id: c.4,
                    canonical_id: c.5,
                    name: c.6,
                    status: c.7,
                    env_content_hash: c.8,
                    git_content_hash: c.9,
                    env_changed_at: c.10.map(|t| t.0),
                    status_since: c.11 .0,
                    updated_at: c.12 .0,
                })
                .collect(),
        ))
    }
}

read_model_row! {
    /// What a page of the matrix shows of a row: [`MatrixRow`] without the columns a
    /// page does not show (tenant, the untracked row's environment, creation and
    /// update times), its cells as [`ShownCells`] (decision 64). Read-only.
    #[derive(Debug, Clone, PartialEq)]
    pub struct ShownRow in "rm_matrix_rows" {
        pub id: String,
        pub kind: RowKind,
        pub canonical_id: Option<String>,
        /// Untracked rows: the n8n workflow.
        pub n8n_workflow_id: Option<String>,
        pub name: String,
        pub sort_key: String,
        pub slug: Option<String>,
        pub status: RowStatus,
        pub git_path: Option<String>,
        pub git_content_hash: Option<String>,
        pub git_commit_sha: Option<String>,
        pub git_changed_at: Option<DateTime<Utc>>,
        pub cells: ShownCells,
    }
}

/// What a page shows of a cell: [`MatrixCell`] without its ids, tenant and update
/// time. Its strings are not copied out of the row's `cells` text: each is where the
/// text has it ([`JsonStr`], decision 69), and a cell keeps the text alive.
#[derive(Clone)]
pub struct ShownCell {
    /// The row's `cells` column as read.
    source: Arc<str>,
    environment_id: Span,
    n8n_workflow_id: Span,
    name: Span,
    env_content_hash: Option<Span>,
    git_content_hash: Option<Span>,
    pub status: MappingStatus,
    pub env_changed_at: Option<DateTime<Utc>>,
    pub status_since: DateTime<Utc>,
}

impl ShownCell {
    pub fn environment_id(&self) -> JsonStr<'_> {
        self.environment_id.in_text(&self.source)
    }
    pub fn n8n_workflow_id(&self) -> JsonStr<'_> {
        self.n8n_workflow_id.in_text(&self.source)
    }
    pub fn name(&self) -> JsonStr<'_> {
        self.name.in_text(&self.source)
    }
    pub fn env_content_hash(&self) -> Option<JsonStr<'_>> {
        self.env_content_hash.map(|s| s.in_text(&self.source))
    }
    /// The mapping's own observation of the Git hash.
    pub fn git_content_hash(&self) -> Option<JsonStr<'_>> {
        self.git_content_hash.map(|s| s.in_text(&self.source))
    }
}

impl PartialEq for ShownCell {
    fn eq(&self, other: &Self) -> bool {
        self.environment_id() == other.environment_id()
            && self.n8n_workflow_id() == other.n8n_workflow_id()
            && self.name() == other.name()
            && self.env_content_hash() == other.env_content_hash()
            && self.git_content_hash() == other.git_content_hash()
            && self.status == other.status
            && self.env_changed_at == other.env_changed_at
            && self.status_since == other.status_since
    }
}

impl std::fmt::Debug for ShownCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShownCell")
            .field("environment_id", &self.environment_id())
            .field("n8n_workflow_id", &self.n8n_workflow_id())
            .field("name", &self.name())
            .field("status", &self.status)
            .field("env_content_hash", &self.env_content_hash())
            .field("git_content_hash", &self.git_content_hash())
            .field("env_changed_at", &self.env_changed_at)
            .field("status_since", &self.status_since)
            .finish()
    }
}

/// A row's `cells` column read for a page: the fields of each cell a page does not
/// show are skipped, and the ones it shows are found in the text, not copied (one
/// copy of the text per row instead of a string per shown field). Read-only: it is
/// never written back (its bind is a NULL, which the column refuses).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShownCells(pub Vec<ShownCell>);

/// One cell of [`RowCells`]' stored form, read as [`ShownCell`]: the strings as the
/// literals the text holds.
type ShownPackedCell<'a> = (
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    &'a RawValue,
    &'a RawValue,
    serde::de::IgnoredAny,
    &'a RawValue,
    MappingStatus,
    Option<&'a RawValue>,
    Option<&'a RawValue>,
    Option<StoredTime>,
    StoredTime,
    serde::de::IgnoredAny,
);

impl crate::sql::NotNull for ShownCells {
    const COL: crate::sql::Col = crate::sql::Col::Text;
    fn to_bind(&self) -> crate::sql::Bind {
        crate::sql::Bind::Text(None)
    }
    fn from_cell(value: crate::sql::Cell<'_>) -> Result<Self, crate::sql::ColumnError> {
        ShownCells::read(crate::sql::text(value)?)
    }
}

impl ShownCells {
    /// The cells of a row's `cells` text, as [`RowCells`] stores them.
    pub fn read(text: &str) -> Result<ShownCells, crate::sql::ColumnError> {
        let source: Arc<str> = Arc::from(text);
        match scan_cells(&source) {
            Some(cells) => Ok(ShownCells(cells)),
            None => Self::parse(source),
        }
    }

    /// What [`ShownCells::read`] gives, through serde: any text that is JSON of the
    /// stored shape reads, and any other gets serde's error.
    fn parse(source: Arc<str>) -> Result<ShownCells, crate::sql::ColumnError> {
        let text: &str = &source;
        let invalid = |e: &dyn std::fmt::Display| {
            crate::sql::ColumnError::invalid("JSON value", text, e.to_string())
        };
        let packed: Vec<ShownPackedCell<'_>> =
            serde_json::from_str(text).map_err(|e| invalid(&e))?;
        let span =
            |raw: &RawValue| Span::of(text, raw.get()).ok_or_else(|| invalid(&"not a string"));
        let mut cells = Vec::with_capacity(packed.len());
        for c in packed {
            cells.push(ShownCell {
                source: source.clone(),
                environment_id: span(c.3)?,
                n8n_workflow_id: span(c.4)?,
                name: span(c.6)?,
                env_content_hash: c.8.map(span).transpose()?,
                git_content_hash: c.9.map(span).transpose()?,
                status: c.7,
                env_changed_at: c.10.map(|t| t.0),
                status_since: c.11 .0,
            });
        }
        Ok(ShownCells(cells))
    }
}

/// The cells of `source` read in one pass over text as [`RowCells`] writes it
/// (serde's compact JSON: no whitespace, strings found with `memchr`); `None` for
/// anything else, which [`ShownCells::parse`] then reads or refuses (so does a string
/// with an escape: serde checks escapes). The whole text is first checked to hold no
/// control character: compact JSON has none outside strings and none inside (they
/// are escaped), so each literal copied as it is stays valid JSON.
fn scan_cells(source: &Arc<str>) -> Option<Vec<ShownCell>> {
    let bytes = source.as_bytes();
    // branch-free, so it vectorizes
    if bytes.iter().fold(false, |any, &b| any | (b < 0x20)) {
        return None;
    }
    let mut at = 0usize;
    let expect = |at: &mut usize, byte: u8| -> Option<()> {
        (bytes.get(*at) == Some(&byte)).then(|| *at += 1)
    };
    // a string literal (its span), or None at anything else
    let string = |at: &mut usize| -> Option<Span> {
        let start = *at;
        if bytes.get(start) != Some(&b'"') {
            return None;
        }
        // an escape is left to serde, which checks it (names with quotes are rare)
        let end = start + 1 + memchr::memchr2(b'"', b'\\', &bytes[start + 1..])?;
        if bytes[end] != b'"' {
            return None;
        }
        *at = end + 1;
        Span::unescaped(source, &source[start..*at])
    };
    let null = |at: &mut usize| -> bool {
        let found = bytes[*at..].starts_with(b"null");
        if found {
            *at += 4;
        }
        found
    };
    let optional = |at: &mut usize| -> Option<Option<Span>> {
        if null(at) {
            Some(None)
        } else {
            string(at).map(Some)
        }
    };
    let time = |at: &mut usize| -> Option<DateTime<Utc>> {
        let literal = string(at)?.in_text(source).json();
        eventstore::sql::parse_time(&literal[1..literal.len() - 1])
    };
    let mut cells = Vec::new();
    expect(&mut at, b'[')?;
    if expect(&mut at, b']').is_some() {
        return (at == bytes.len()).then_some(cells);
    }
    loop {
        expect(&mut at, b'[')?;
        string(&mut at)?; // id
        expect(&mut at, b',')?;
        string(&mut at)?; // tenant
        expect(&mut at, b',')?;
        string(&mut at)?; // row id
        expect(&mut at, b',')?;
        let environment_id = string(&mut at)?;
        expect(&mut at, b',')?;
        let n8n_workflow_id = string(&mut at)?;
        expect(&mut at, b',')?;
        optional(&mut at)?; // canonical id
        expect(&mut at, b',')?;
        let name = string(&mut at)?;
        expect(&mut at, b',')?;
        let status = string(&mut at)?.in_text(source);
        let status: MappingStatus = status.get().parse().ok()?;
        expect(&mut at, b',')?;
        let env_content_hash = optional(&mut at)?;
        expect(&mut at, b',')?;
        let git_content_hash = optional(&mut at)?;
        expect(&mut at, b',')?;
        let env_changed_at = if null(&mut at) {
            None
        } else {
            Some(time(&mut at)?)
        };
        expect(&mut at, b',')?;
        let status_since = time(&mut at)?;
        expect(&mut at, b',')?;
        time(&mut at)?; // updated at
        expect(&mut at, b']')?;
        cells.push(ShownCell {
            source: source.clone(),
            environment_id,
            n8n_workflow_id,
            name,
            env_content_hash,
            git_content_hash,
            status,
            env_changed_at,
            status_since,
        });
        if expect(&mut at, b',').is_none() {
            break;
        }
    }
    expect(&mut at, b']')?;
    (at == bytes.len()).then_some(cells)
}

impl RowCells {
    /// Puts `cell` in its place: replaces the cell with its id, else inserts it in
    /// (environment, id) order.
    fn place(&mut self, cell: &MatrixCell) {
        fn key(c: &MatrixCell) -> (&str, &str) {
            (c.environment_id.as_str(), c.id.as_str())
        }
        match self.0.iter_mut().find(|c| c.id == cell.id) {
            Some(existing) if key(existing) == key(cell) => existing.copy_from(cell),
            _ => {
                self.0.retain(|c| c.id != cell.id);
                let at = self.0.partition_point(|c| key(c) < key(cell));
                self.0.insert(at, cell.clone());
            }
        }
    }
}

/// The matrix projection.
#[derive(Default)]
pub struct WorkflowMatrix {
    rows: Rows<MatrixRow>,
    cells: Rows<MatrixCell>,
}

fn canonical_row_id(tenant: &str, canonical_id: &str) -> String {
    format!("{tenant}:{canonical_id}")
}

/// `row_id == canonical_row_id(tenant, canonical_id)`, without making the latter.
fn is_canonical_row_id(row_id: &str, tenant: &str, canonical_id: &str) -> bool {
    row_id
        .strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(canonical_id)
}

fn observe(cell: &mut MatrixCell, observation: &Observation) {
    cell.name.clone_from(&observation.name);
    set_text(
        &mut cell.env_content_hash,
        observation.content_hash.as_str(),
    );
    cell.env_changed_at = observation.n8n_updated_at;
}

/// `*to = Some(text)`, in the string `to` already has when it has one.
fn set_text(to: &mut Option<String>, text: &str) {
    match to {
        Some(to) => {
            to.clear();
            to.push_str(text);
        }
        None => *to = Some(text.to_string()),
    }
}

impl MatrixCell {
    /// `*self = from.clone()`, in the strings `self` already has (a rebuild's
    /// replay copies a cell into its row on every mapping event).
    fn copy_from(&mut self, from: &MatrixCell) {
        let MatrixCell {
            id,
            tenant,
            row_id,
            environment_id,
            n8n_workflow_id,
            canonical_id,
            name,
            status,
            env_content_hash,
            git_content_hash,
            env_changed_at,
            status_since,
            updated_at,
        } = from;
        self.id.clone_from(id);
        self.tenant.clone_from(tenant);
        self.row_id.clone_from(row_id);
        self.environment_id.clone_from(environment_id);
        self.n8n_workflow_id.clone_from(n8n_workflow_id);
        self.canonical_id.clone_from(canonical_id);
        self.name.clone_from(name);
        self.status = *status;
        self.env_content_hash.clone_from(env_content_hash);
        self.git_content_hash.clone_from(git_content_hash);
        self.env_changed_at = *env_changed_at;
        self.status_since = *status_since;
        self.updated_at = *updated_at;
    }
}

impl WorkflowMatrix {
    async fn apply_canonical(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &CanonicalEvent,
    ) -> Result<(), ApplyError> {
        let id = &event.stored.aggregate_id;
        let at = event.at();
        let change = |row: &mut MatrixRow| {
            match e {
                CanonicalEvent::Created { .. } => {}
                CanonicalEvent::Renamed { name } => {
                    row.name = name.clone();
                    row.sort_key = name.to_lowercase();
                }
                CanonicalEvent::GitVersionRecorded {
                    git_content_hash,
                    commit_sha,
                    git_path,
                } => {
                    row.git_content_hash = Some(git_content_hash.as_str().to_string());
                    row.git_commit_sha = Some(commit_sha.clone());
                    row.git_path = Some(git_path.clone());
                    row.git_changed_at = Some(at);
                }
                CanonicalEvent::Deleted { .. } => row.status = CanonicalStatus::Deleted.into(),
            }
            row.updated_at = at;
        };
        if self.rows.modify(tx, id, change).await? {
            return Ok(());
        }
        let CanonicalEvent::Created {
            name,
            slug,
            git_path,
        } = e
        else {
            return Err(ApplyError::Event(format!(
                "canonical workflow {id} was never created"
            )));
        };
        self.rows.put(MatrixRow {
            id: id.clone(),
            tenant: event.tenant().to_string(),
            kind: RowKind::Canonical,
            canonical_id: Some(event.local_id().to_string()),
            environment_id: None,
            n8n_workflow_id: None,
            name: name.clone(),
            sort_key: name.to_lowercase(),
            slug: Some(slug.as_str().to_string()),
            status: RowStatus::Active,
            git_path: git_path.clone(),
            git_content_hash: None,
            git_commit_sha: None,
            git_changed_at: None,
            created_at: at,
            updated_at: at,
            cells: Json::default(),
        });
        Ok(())
    }

    async fn apply_mapping(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &MappingEvent,
    ) -> Result<(), ApplyError> {
        let id = &event.stored.aggregate_id;
        let tenant = event.tenant();
        let at = event.at();
        let Self { rows, cells } = self;
        // An untracked row exists exactly while the mapping has no canonical id and is
        // not deleted.
        let untracked =
            |c: &MatrixCell| c.canonical_id.is_none() && c.status != MappingStatus::Deleted;
        // The cell changes in place, copied once per batch (each mapping event used to
        // copy it twice: out of the working set and back into its row).
        let was_untracked = match cells.get_mut(tx, id).await? {
            Some(cell) => untracked(cell),
            None => {
                let MappingEvent::Discovered {
                    environment_id,
                    n8n_workflow_id,
                    observation,
                    canonical_id,
                    status,
                    ..
                } = e
                else {
                    return Err(ApplyError::Event(format!(
                        "mapping {id} was never discovered"
                    )));
                };
                let mut cell = MatrixCell {
                    id: id.clone(),
                    tenant: tenant.to_string(),
                    row_id: String::new(),
                    environment_id: environment_id.clone(),
                    n8n_workflow_id: n8n_workflow_id.clone(),
                    canonical_id: canonical_id.clone(),
                    name: String::new(),
                    status: *status,
                    env_content_hash: None,
                    git_content_hash: None,
                    env_changed_at: None,
                    status_since: at,
                    updated_at: at,
                };
                observe(&mut cell, observation);
                cells.put(cell);
                false
            }
        };
        let Some(cell) = cells.get_mut(tx, id).await? else {
            return Err(ApplyError::Event(format!(
                "mapping {id} left the working set"
            )));
        };
        match e {
            // auto-linked: the content is the canonical workflow's Git content
            MappingEvent::Discovered {
                auto_linked: true, ..
            } => cell.git_content_hash.clone_from(&cell.env_content_hash),
            MappingEvent::Discovered { .. } => {}
            MappingEvent::ContentObserved { observation } => observe(cell, observation),
            MappingEvent::GitHashObserved { git_content_hash } => {
                set_text(&mut cell.git_content_hash, git_content_hash.as_str())
            }
            MappingEvent::Reappeared {
                observation,
                canonical_id,
                ..
            } => {
                observe(cell, observation);
                cell.canonical_id = canonical_id.clone();
            }
            MappingEvent::Linked {
                canonical_id, auto, ..
            } => {
                cell.canonical_id = Some(canonical_id.clone());
                if *auto {
                    cell.git_content_hash.clone_from(&cell.env_content_hash);
                }
            }
            MappingEvent::Unlinked { .. } => cell.canonical_id = None,
            MappingEvent::Unignored { canonical_id, .. } => {
                cell.canonical_id = canonical_id.clone()
            }
            MappingEvent::Disappeared { .. }
            | MappingEvent::Ignored { .. }
            | MappingEvent::Deleted { .. } => {}
        }
        if let Some((_, to)) = e.status_change() {
            cell.status = to;
            cell.status_since = at;
        }
        let in_place = match &cell.canonical_id {
            Some(canonical) => is_canonical_row_id(&cell.row_id, tenant, canonical),
            None => cell.row_id == *id,
        };
        // The row it leaves, if it moves (empty for a new cell: it was in no row).
        let previous_row = (!in_place).then(|| {
            let row_id = match &cell.canonical_id {
                Some(canonical) => canonical_row_id(tenant, canonical),
                None => id.clone(),
            };
            std::mem::replace(&mut cell.row_id, row_id)
        });
        cell.updated_at = at;

        let cell = &*cell;
        if untracked(cell) {
            let created_at = match was_untracked {
                true => rows.get(tx, id).await?.map_or(at, |r| r.created_at),
                false => at,
            };
            rows.put(MatrixRow {
                id: id.clone(),
                tenant: tenant.to_string(),
                kind: RowKind::Untracked,
                canonical_id: None,
                environment_id: Some(cell.environment_id.clone()),
                n8n_workflow_id: Some(cell.n8n_workflow_id.clone()),
                name: cell.name.clone(),
                sort_key: cell.name.to_lowercase(),
                slug: None,
                status: cell.status.into(),
                git_path: None,
                git_content_hash: None,
                git_commit_sha: None,
                git_changed_at: None,
                created_at,
                updated_at: at,
                cells: Json::default(),
            });
        } else if was_untracked {
            rows.delete(id);
        }
        // The row's copy of the cell (decision 63): out of the row it left, into the
        // one it is in now.
        if let Some(previous_row) = previous_row.filter(|row| !row.is_empty()) {
            rows.modify(tx, &previous_row, |row| {
                row.cells.0 .0.retain(|c| c.id != cell.id)
            })
            .await?;
        }
        rows.modify(tx, &cell.row_id, |row| row.cells.0.place(cell))
            .await?;
        Ok(())
    }
}

impl Projection for WorkflowMatrix {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_matrix_rows", "rm_matrix_cells"]
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(AGGREGATE_TYPES)
    }

    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            match &event.event {
                Decoded::Canonical(e) => self.apply_canonical(tx, event, e).await,
                Decoded::Mapping(e) => self.apply_mapping(tx, event, e).await,
                Decoded::Undecodable(error)
                    if AGGREGATE_TYPES.contains(&event.stored.aggregate_type.as_str()) =>
                {
                    Err(ApplyError::Event(format!("undecodable payload: {error}")))
                }
                _ => Ok(()),
            }
        })
    }

    crate::row_tables!(rows, cells);
}

// ----------------------------------------------------------------------------------
// Queries

/// Which rows a matrix page shows.
#[derive(Debug, Clone, Default)]
pub struct MatrixFilter {
    /// Only rows with a cell in one of these environments (and only those cells).
    /// An unknown environment simply matches nothing.
    pub environment_ids: Option<Vec<String>>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// Only rows with a linked cell whose environment differs from Git (DRIFT or
    /// OUT_OF_DATE).
    pub only_drift: bool,
    /// Leave out the rows of untracked workflows.
    pub canonical_only: bool,
    /// Only the rows of untracked workflows.
    pub untracked_only: bool,
    /// Only rows in this status (`active` canonical workflows; an untracked row has
    /// its mapping's status).
    pub row_status: Option<RowStatus>,
}

/// A cell as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellView {
    #[serde(flatten)]
    pub cell: MatrixCell,
    /// The Git hash the cell is compared with: the mapping's own observation, else
    /// the canonical workflow's latest Git version.
    pub effective_git_content_hash: Option<String>,
    pub sync_state: SyncState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixRowView {
    #[serde(flatten)]
    pub row: MatrixRow,
    pub cells: Vec<CellView>,
}

fn view(row: &MatrixRow, cell: MatrixCell) -> CellView {
    let (git, sync_state) = compared(
        &cell.git_content_hash,
        &row.git_content_hash,
        CellFacts {
            status: cell.status,
            env_content_hash: cell.env_content_hash.as_deref(),
            git_content_hash: None,
            env_changed_at: cell.env_changed_at,
            git_changed_at: row.git_changed_at,
        },
    );
    CellView {
        cell,
        effective_git_content_hash: git,
        sync_state,
    }
}

/// The Git hash a cell is compared with (its mapping's own observation `own`, else
/// its row's latest Git version `row`) and the cell's sync state from `facts` with
/// that hash.
fn compared(
    own: &Option<String>,
    row: &Option<String>,
    facts: CellFacts<'_>,
) -> (Option<String>, SyncState) {
    let git = own.clone().or_else(|| row.clone());
    let state = sync_state(&CellFacts {
        git_content_hash: git.as_deref(),
        ..facts
    });
    (git, state)
}

/// The cells of a page's row that `filter` shows (an environment filter keeps only
/// its environments' cells), each turned into its view by `view`.
fn shown_cells<C, V>(
    cells: Vec<C>,
    filter: &MatrixFilter,
    in_environment: impl Fn(&C, &str) -> bool,
    view: impl FnMut(C) -> V,
) -> Vec<V> {
    let environments = filter.environment_ids.as_ref().filter(|e| !e.is_empty());
    cells
        .into_iter()
        .filter(|c| environments.is_none_or(|e| e.iter().any(|id| in_environment(c, id))))
        .map(view)
        .collect()
}

/// A shown cell as a client sees it (as [`CellView`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShownCellView {
    pub cell: ShownCell,
    /// The row's latest Git hash, for a cell without an observation of its own.
    row_git_content_hash: Option<OwnedJsonStr>,
    pub sync_state: SyncState,
}

impl ShownCellView {
    /// The Git hash the cell is compared with: the mapping's own observation, else
    /// the canonical workflow's latest Git version.
    pub fn effective_git_content_hash(&self) -> Option<JsonStr<'_>> {
        self.cell.git_content_hash().or_else(|| {
            self.row_git_content_hash
                .as_ref()
                .map(OwnedJsonStr::as_json_str)
        })
    }
}

/// A shown row and its shown cells (as [`MatrixRowView`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShownRowView {
    pub row: ShownRow,
    pub cells: Vec<ShownCellView>,
}

impl ShownRowView {
    /// `row` as a page shows it: the cells `filter` shows, as a client sees them.
    pub fn new(mut row: ShownRow, filter: &MatrixFilter) -> ShownRowView {
        let cells = std::mem::take(&mut row.cells.0);
        let row_git = row.git_content_hash.as_deref().map(OwnedJsonStr::new);
        let cells = shown_cells(
            cells,
            filter,
            |c, id| c.environment_id() == id,
            |c| shown_view(&row, &row_git, c),
        );
        ShownRowView { row, cells }
    }
}

/// `cell` of `row` as a client sees it; `row_git` is the row's Git hash as a literal
/// (made once per row).
fn shown_view(row: &ShownRow, row_git: &Option<OwnedJsonStr>, cell: ShownCell) -> ShownCellView {
    let own = cell.git_content_hash().map(JsonStr::get);
    let env = cell.env_content_hash().map(JsonStr::get);
    let sync_state = sync_state(&CellFacts {
        status: cell.status,
        env_content_hash: env.as_deref(),
        git_content_hash: own.as_deref().or(row.git_content_hash.as_deref()),
        env_changed_at: cell.env_changed_at,
        git_changed_at: row.git_changed_at,
    });
    let row_git_content_hash = match own {
        Some(_) => None,
        None => row_git.clone(),
    };
    ShownCellView {
        cell,
        row_git_content_hash,
        sync_state,
    }
}

/// A page of the matrix for `tenant`, in name order.
/// The rows `filter` selects (the console's counts).
pub async fn matrix_count(
    store: &Store,
    tenant: &str,
    filter: &MatrixFilter,
) -> Result<i64, QueryError> {
    let mut sql = Sql::new(Dialect::of(store));
    sql.push("SELECT COUNT(*) FROM rm_matrix_rows r");
    filtered(&mut sql, tenant, filter);
    let rows: Vec<(i64,)> = sql.fetch_as(store).await?;
    Ok(rows.first().map_or(0, |r| r.0))
}

/// For each environment, the rows `filter` would select with that environment as
/// its environment filter (`filter.environment_ids` is ignored): one grouped query
/// for what [`matrix_count`] answers one environment at a time. Environments
/// without such a row are absent.
pub async fn matrix_counts_by_environment(
    store: &Store,
    tenant: &str,
    filter: &MatrixFilter,
) -> Result<Vec<(String, i64)>, QueryError> {
    let mut sql = Sql::new(Dialect::of(store));
    sql.push(
        "SELECT c.environment_id, COUNT(DISTINCT r.id) FROM rm_matrix_rows r \
         JOIN rm_matrix_cells c ON c.row_id = r.id",
    );
    let rows_only = MatrixFilter {
        environment_ids: None,
        only_drift: false,
        ..filter.clone()
    };
    filtered(&mut sql, tenant, &rows_only);
    if filter.only_drift {
        sql.push(
            " AND c.status = 'linked' AND c.env_content_hash IS NOT NULL \
             AND COALESCE(c.git_content_hash, r.git_content_hash) IS NOT NULL \
             AND c.env_content_hash <> COALESCE(c.git_content_hash, r.git_content_hash)",
        );
    }
    sql.push(" GROUP BY c.environment_id");
    Ok(sql.fetch_as(store).await?)
}

/// The `WHERE` clause of the rows `filter` selects (table alias `r`).
fn filtered(sql: &mut Sql, tenant: &str, filter: &MatrixFilter) {
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE r.tenant = {t} AND r.status <> 'deleted'"));
    if filter.canonical_only {
        sql.push(&format!(" AND r.kind = '{}'", RowKind::Canonical));
    }
    if filter.untracked_only {
        sql.push(&format!(" AND r.kind = '{}'", RowKind::Untracked));
    }
    if let Some(status) = filter.row_status {
        let v = sql.arg(status.as_str());
        sql.push(&format!(" AND r.status = {v}"));
    }
    if let Some(term) = filter.search.as_deref().filter(|t| !t.is_empty()) {
        let p = sql.arg(like_pattern(term));
        sql.push(&format!(" AND r.sort_key LIKE {p} ESCAPE '\\'"));
    }
    let env_clause = |sql: &mut Sql| match &filter.environment_ids {
        Some(ids) if !ids.is_empty() => format!(" AND c.environment_id IN ({})", sql.args(ids)),
        Some(_) => " AND 1 = 0".to_string(),
        None => String::new(),
    };
    if filter.environment_ids.is_some() {
        let envs = env_clause(sql);
        sql.push(&format!(
            " AND EXISTS (SELECT 1 FROM rm_matrix_cells c WHERE c.row_id = r.id{envs})"
        ));
    }
    if filter.only_drift {
        let envs = env_clause(sql);
        sql.push(&format!(
            " AND EXISTS (SELECT 1 FROM rm_matrix_cells c WHERE c.row_id = r.id \
             AND c.status = 'linked' AND c.env_content_hash IS NOT NULL \
             AND COALESCE(c.git_content_hash, r.git_content_hash) IS NOT NULL \
             AND c.env_content_hash <> COALESCE(c.git_content_hash, r.git_content_hash){envs})"
        ));
    }
}

pub async fn matrix_page(
    store: &Store,
    tenant: &str,
    filter: &MatrixFilter,
    first: i64,
    after: Option<&str>,
) -> Result<Page<MatrixRowView>, QueryError> {
    let rows = page_rows(store, tenant, filter, first, after, |r: &MatrixRow| {
        (r.sort_key.clone(), r.id.clone())
    })
    .await?;
    // The cells come with their rows (decision 63).
    Ok(rows.map(|mut row| {
        let cells = std::mem::take(&mut row.cells.0 .0);
        let cells = shown_cells(
            cells,
            filter,
            |c, id| c.environment_id == id,
            |c| view(&row, c),
        );
        MatrixRowView { row, cells }
    }))
}

/// A page of the matrix as [`matrix_page`] gives it, with only what a page shows of
/// each row and cell ([`ShownRow`], [`ShownCell`]): the API's page (decision 64).
pub async fn shown_page(
    store: &Store,
    tenant: &str,
    filter: &MatrixFilter,
    first: i64,
    after: Option<&str>,
) -> Result<Page<ShownRowView>, QueryError> {
    let rows = page_rows(store, tenant, filter, first, after, |r: &ShownRow| {
        (r.sort_key.clone(), r.id.clone())
    })
    .await?;
    Ok(rows.map(|row| ShownRowView::new(row, filter)))
}

/// The rows of a page of `filter`'s matrix rows, read as `R` (a [`MatrixRow`] or a
/// [`ShownRow`]); `key` gives a row's `(sort_key, id)`.
async fn page_rows<R: crate::sql::Row>(
    store: &Store,
    tenant: &str,
    filter: &MatrixFilter,
    first: i64,
    after: Option<&str>,
    key: impl Fn(&R) -> (String, String),
) -> Result<Page<R>, QueryError> {
    let limit = page_size(first)?;
    let dialect = Dialect::of(store);
    let mut sql = select::<R>(dialect);
    // Qualify the table so the EXISTS sub-queries can refer to it.
    sql.text = sql
        .text
        .replace("FROM rm_matrix_rows", "FROM rm_matrix_rows r");
    filtered(&mut sql, tenant, filter);
    if let Some(after) = after {
        let (sort_key, id): (String, String) = decode_cursor(after)?;
        let (s, i) = (sql.arg(sort_key), sql.arg(id));
        sql.push(&format!(" AND (r.sort_key, r.id) > ({s}, {i})"));
    }
    let l = sql.arg(limit + 1);
    sql.push(&format!(" ORDER BY r.sort_key, r.id LIMIT {l}"));
    let rows: Vec<R> = sql.fetch(store).await?;
    Ok(page(rows, limit, key))
}

/// One mapping's cell: the n8n workflow `n8n_workflow_id` of `environment_id`.
pub async fn mapping(
    store: &Store,
    tenant: &str,
    environment_id: &str,
    n8n_workflow_id: &str,
) -> Result<Option<MatrixCell>, QueryError> {
    crate::query::by_id(
        store,
        tenant,
        &format!("{environment_id}:{n8n_workflow_id}"),
    )
    .await
}

/// Every mapping (cell) of one environment of `tenant`, by n8n workflow id.
pub async fn environment_cells(
    store: &Store,
    tenant: &str,
    environment_id: &str,
) -> Result<Vec<MatrixCell>, QueryError> {
    let mut sql = select::<MatrixCell>(Dialect::of(store));
    let t = sql.arg(tenant);
    let e = sql.arg(environment_id);
    sql.push(&format!(
        " WHERE tenant = {t} AND environment_id = {e} ORDER BY n8n_workflow_id"
    ));
    Ok(sql.fetch(store).await?)
}

/// Every canonical workflow of `tenant` that is not deleted, by id.
pub async fn canonical_rows(store: &Store, tenant: &str) -> Result<Vec<MatrixRow>, QueryError> {
    let mut sql = select::<MatrixRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(
        " WHERE tenant = {t} AND kind = '{}' AND status <> 'deleted' ORDER BY id",
        RowKind::Canonical
    ));
    Ok(sql.fetch(store).await?)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::sql::{Cell, Column};

    fn cell(id: &str, environment: &str) -> MatrixCell {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        MatrixCell {
            id: id.into(),
            tenant: "t".into(),
            row_id: "t:wf".into(),
            environment_id: environment.into(),
            n8n_workflow_id: format!("n8n-{id}"),
            canonical_id: Some("wf".into()),
            name: "Orders \"daily\"".into(),
            status: MappingStatus::Linked,
            env_content_hash: Some("a".repeat(64)),
            git_content_hash: None,
            env_changed_at: Some(at + chrono::Duration::microseconds(123_456)),
            status_since: at,
            updated_at: at,
        }
    }

    #[test]
    fn row_cells_stay_in_environment_then_id_order() {
        let mut cells = RowCells::default();
        for (id, env) in [("m3", "prod"), ("m1", "dev"), ("m2", "prod"), ("m0", "dev")] {
            cells.place(&cell(id, env));
        }
        let order = |cells: &RowCells| cells.0.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(order(&cells), ["m0", "m1", "m2", "m3"]);
        // a changed cell replaces its copy in place
        let mut renamed = cell("m2", "prod");
        renamed.name = "Renamed".into();
        cells.place(&renamed);
        assert_eq!(order(&cells), ["m0", "m1", "m2", "m3"]);
        assert_eq!(cells.0[2].name, "Renamed");
    }

    #[test]
    fn a_cell_copied_in_place_equals_its_clone() {
        let from = cell("m1", "dev");
        let mut other = cell("m9", "prod");
        other.canonical_id = None;
        other.git_content_hash = Some("b".repeat(64));
        other.env_changed_at = None;
        other.status = MappingStatus::Untracked;
        // every field, whatever it held before (`Some` over `None` and back)
        for mut to in [other.clone(), from.clone()] {
            to.copy_from(&from);
            assert_eq!(to, from);
        }
        let mut to = from.clone();
        to.copy_from(&other);
        assert_eq!(to, other);
        // `set_text` is `Some(text)` over `None` and over a longer string
        let mut text = None;
        set_text(&mut text, "abc");
        assert_eq!(text.as_deref(), Some("abc"));
        set_text(&mut text, "d");
        assert_eq!(text.as_deref(), Some("d"));
    }

    #[test]
    fn canonical_row_ids_are_recognized_without_making_them() {
        for (tenant, canonical) in [("t", "wf"), ("acme", "a:b"), ("", "x")] {
            let id = canonical_row_id(tenant, canonical);
            assert!(is_canonical_row_id(&id, tenant, canonical), "{id}");
        }
        for other in ["t:wf2", "t:w", "tt:wf", "t-wf", "t", "wf", ""] {
            assert!(!is_canonical_row_id(other, "t", "wf"), "{other}");
        }
    }

    #[test]
    fn row_cells_read_back_as_stored_and_corrupt_ones_are_errors() {
        let cells = Json(RowCells(vec![cell("m1", "dev"), cell("m2", "prod")]));
        let stored = match cells.bind() {
            crate::sql::Bind::Text(Some(text)) => text,
            other => panic!("not text: {other:?}"),
        };
        // positional: no key is repeated per cell
        assert!(!stored.contains("environment_id"), "{stored}");
        let back = <Json<RowCells>>::take(Cell::Text(Some(&stored))).unwrap();
        assert_eq!(back, cells);
        // a cell with a field missing, or of another shape, does not read
        let short = stored.replacen(",\"linked\"", "", 1);
        assert!(<Json<RowCells>>::take(Cell::Text(Some(&short))).is_err());
        assert!(<Json<RowCells>>::take(Cell::Text(Some("{}"))).is_err());
    }

    #[test]
    fn the_one_pass_scan_reads_what_serde_reads() {
        let mut plain = cell("m2", "prod");
        plain.canonical_id = None;
        plain.env_content_hash = None;
        plain.env_changed_at = None;
        plain.name = "Orders daily é ∑".into();
        let mut first = cell("m1", "dev");
        first.name = "Orders".into();
        let text = |cells: Vec<MatrixCell>| serde_json::to_string(&RowCells(cells)).unwrap();
        let scanned = |text: &str| scan_cells(&Arc::from(text));
        let parsed = |text: &str| ShownCells::parse(Arc::from(text));
        // what the projection stores, without escapes: the scan reads it, the same
        // cells as serde
        for stored in [
            text(vec![]),
            text(vec![first.clone()]),
            text(vec![first, plain]),
        ] {
            let cells = scanned(&stored).expect("scanned");
            assert_eq!(cells, parsed(&stored).unwrap().0, "{stored}");
            assert_eq!(ShownCells::read(&stored).unwrap().0, cells);
        }
        // an escape is left to serde, which reads it
        let escaped = text(vec![cell("m1", "dev")]);
        assert!(escaped.contains('\\'));
        assert!(scanned(&escaped).is_none());
        assert_eq!(
            ShownCells::read(&escaped).unwrap().0[0].name(),
            "Orders \"daily\""
        );
        // anything but the stored shape is not scanned, and serde decides: whitespace
        // or a reordered field reads as serde reads it (or not at all); truncated,
        // trailing, control characters, other types are refused
        let good = text(vec![cell("m1", "dev"), cell("m2", "prod")]).replace("\\\"", "");
        assert!(scanned(&good).is_some());
        let spaced = good.replace(",", ", ");
        assert!(scanned(&spaced).is_none());
        assert_eq!(parsed(&spaced).unwrap(), parsed(&good).unwrap());
        for bad in [
            good[..good.len() - 1].to_string(),
            format!("{good}x"),
            good.replacen("Orders", "Or\u{1}ders", 1),
            good.replacen("\"linked\"", "\"unknown\"", 1),
            good.replacen("\"linked\"", "7", 1),
            good.replacen("\"dev\"", "null", 1),
            good.replacen("Z\"", "\"", 1),
            "[[]]".to_string(),
            "[".to_string(),
            String::new(),
        ] {
            assert!(scanned(&bad).is_none(), "{bad}");
            assert!(ShownCells::read(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown_cells_read_what_row_cells_store() {
        let mut second = cell("m2", "prod");
        second.git_content_hash = Some("b".repeat(64));
        second.env_changed_at = None;
        second.status = MappingStatus::Untracked;
        let cells = Json(RowCells(vec![cell("m1", "dev"), second]));
        let stored = match cells.bind() {
            crate::sql::Bind::Text(Some(text)) => text,
            other => panic!("not text: {other:?}"),
        };
        let shown = ShownCells::take(Cell::Text(Some(&stored))).unwrap();
        assert_eq!(shown.0.len(), 2);
        for (shown, c) in shown.0.iter().zip(&cells.0 .0) {
            assert_eq!(shown.environment_id(), c.environment_id);
            assert_eq!(shown.n8n_workflow_id(), c.n8n_workflow_id);
            assert_eq!(shown.name(), c.name);
            assert_eq!(shown.status, c.status);
            let text = |s: Option<JsonStr>| s.map(|s| s.get().into_owned());
            assert_eq!(text(shown.env_content_hash()), c.env_content_hash);
            assert_eq!(text(shown.git_content_hash()), c.git_content_hash);
            assert_eq!(shown.env_changed_at, c.env_changed_at);
            assert_eq!(shown.status_since, c.status_since);
            // each string is the literal the text holds, as serde writes it
            assert_eq!(shown.name().json(), serde_json::to_string(&c.name).unwrap());
        }
        // the skipped fields are still checked for their place: a cell with one
        // missing, or another shape, does not read
        let short = stored.replacen(",\"linked\"", "", 1);
        assert!(ShownCells::take(Cell::Text(Some(&short))).is_err());
        assert!(ShownCells::take(Cell::Text(Some("{}"))).is_err());
        assert!(ShownCells::take(Cell::Text(None)).is_err());
        // never written back: its bind is a NULL, which the NOT NULL column refuses
        assert!(matches!(shown.bind(), crate::sql::Bind::Text(None)));
    }
}
