//! The one way to write events: [`Store::commit`].
//!
//! A writer first [`load`](Store::load)s the aggregate: the store replays its stream
//! and hands back a [`Loaded`] whose state, sequence and last chain hash only the
//! store can set. The aggregate decides on that state (its `handle`), and the writer
//! gives the resulting events back to `commit` together with the [`Envelope`] that
//! says who issued them. `commit` then, before anything is stored:
//!
//! - refuses an aggregate id outside the envelope's tenant;
//! - applies each event to the state before it and checks every status change the
//!   event makes against that machine's `VALID_TRANSITIONS` table (an admin override
//!   counts only when the envelope's actor is an admin) — the aggregates check their
//!   tables when they decide; this check holds whatever produced the events;
//! - refuses NUL characters (PostgreSQL's JSON cannot hold them);
//! - refuses to chain after a stored event with a missing or malformed hash, or
//!   one that is not the hash of that event's content (checked when loading);
//! - computes each event's chain hash from the loaded hash, so no caller can supply
//!   (or forge) a previous hash.
//!
//! Then it appends all events in one statement (all or none). A sequence already
//! taken by a concurrent writer is [`CommitError::Conflict`] and stores nothing.
//!
//! cqrs-es's `CqrsFramework` is not used because it gives every event of a command
//! the same metadata (each needs its own chain hash) and returns nothing to the
//! caller (mutations return the new state and the position of the last event).

use aggregates::kernel::command::Actor;
use aggregates::kernel::error::{non_blank, DomainError};
use aggregates::kernel::ids::{AggregateId, TenantId};
use aggregates::kernel::transitions::Lifecycle;
use aggregates::Role;
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::{Map, Value};

use crate::append::{AppendError, NewEvent, Predecessor, WrittenRow, MAX_KEPT_ROW};
use crate::cache::Cached;
use crate::chain::{self, EventIdentity, GENESIS, HASH_KEY};
use crate::{Store, StoreError};

/// An aggregate as the store replayed it. Its fields are private: only
/// [`Store::load`] makes one, so the state, sequence and previous hash a commit
/// starts from are the stored ones.
#[derive(Debug)]
pub struct Loaded<A> {
    aggregate_id: String,
    state: A,
    sequence: i64,
    /// As stored: empty if the last event has none (`commit` refuses to chain
    /// after an invalid one).
    last_hash: String,
    /// Whether the last event's stored hash is the hash of its content after the
    /// one before it (`commit` refuses to chain after a forged one).
    last_hash_matches: bool,
    /// Set when the stream was not read ([`Store::load_for_command`]): the
    /// transaction of this process that wrote the last event, which the append
    /// checks still holds that row as it wrote it.
    unread: Option<Predecessor>,
}

impl<A> Loaded<A> {
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    pub fn state(&self) -> &A {
        &self.state
    }

    pub fn into_state(self) -> A {
        self.state
    }

    /// The sequence of the last stored event (0 for an empty stream).
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// Whether this state was taken without reading the stream: from what this
    /// process last wrote ([`Store::load_for_command`]), or the empty state of an
    /// aggregate a command is to create ([`Store::load_for_creation`]). Only a
    /// commit that stores events proves it was current.
    pub fn is_unread(&self) -> bool {
        self.unread.is_some()
    }
}

/// Who issued the events of one commit, and why: it becomes every event's metadata
/// (DOMAIN.md §1).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub tenant: TenantId,
    pub actor: Actor,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    /// The command's stable name.
    pub command: &'static str,
    /// The user's free-text reason, where the command takes one.
    pub reason: Option<String>,
    /// Asked for by the caller; honoured only when the actor is an admin.
    pub admin_override: bool,
    pub at: DateTime<Utc>,
}

impl Envelope {
    fn override_allowed(&self) -> bool {
        self.admin_override && self.actor.role == Role::Admin
    }

    fn metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("tenant_id".into(), self.tenant.as_str().into());
        m.insert("actor".into(), self.actor.id.clone().into());
        m.insert("actor_role".into(), self.actor.role.as_str().into());
        m.insert(
            "recorded_at".into(),
            self.at.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
        );
        m.insert("correlation_id".into(), self.correlation_id.clone().into());
        if let Some(causation) = &self.causation_id {
            m.insert("causation_id".into(), causation.clone().into());
        }
        m.insert("command".into(), self.command.into());
        if let Some(reason) = non_blank(self.reason.as_deref()) {
            m.insert("reason".into(), reason.into());
        }
        m.insert("admin_override".into(), self.admin_override.into());
        m
    }
}

/// What a commit stored, and the aggregate's state afterwards.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    pub aggregate_id: String,
    pub state: A,
    /// (sequence, event) for each appended event; empty when nothing changed.
    pub events: Vec<(i64, A::Event)>,
    /// The aggregate's sequence after the command (0 for an empty stream).
    pub sequence: i64,
    /// Global position of the last appended event.
    pub position: Option<i64>,
}

/// Why nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The events break a rule the store enforces: a transition outside its table,
    /// another tenant's aggregate, NUL characters.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// Another writer appended to the aggregate first; retry on fresh state.
    #[error("concurrent write to {aggregate_id}; retry the command")]
    Conflict { aggregate_id: String },
    /// The stored stream ends in an event with no valid chain hash: nothing can be
    /// chained after it.
    #[error(
        "{aggregate_id} #{sequence}: the stored event has no valid chain hash, so nothing \
         can be chained after it; the log was altered (run `workflowops verify`)"
    )]
    BrokenChain { aggregate_id: String, sequence: i64 },
    /// The stored stream ends in an event whose hash is well formed but is not the
    /// hash of its content: chaining after it would vouch for a forgery.
    #[error(
        "{aggregate_id} #{sequence}: the stored event's hash does not match its content, so \
         nothing can be chained after it; the log was altered (run `workflowops verify`)"
    )]
    ForgedChain { aggregate_id: String, sequence: i64 },
    /// A stored event could not be read back, or a new one could not be encoded.
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommitError {
    fn from_persistence(error: PersistenceError, aggregate_id: &str) -> Self {
        match error {
            PersistenceError::OptimisticLockError => CommitError::Conflict {
                aggregate_id: aggregate_id.to_string(),
            },
            other => CommitError::Corrupt(format!("{aggregate_id}: {other}")),
        }
    }
}

impl Store {
    /// Replays an aggregate from its events (postgres-es or sqlite-es reads them).
    /// An aggregate this process loaded or committed lately is replayed only from
    /// its last event as seen then ([`crate::cache`]): one indexed read of the
    /// events since, whatever the length of its history.
    pub async fn load<A: Aggregate + Clone + 'static>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, CommitError> {
        let cache = self.aggregate_cache();
        if let Some(cached) = cache.get::<A>(aggregate_id) {
            let stored = self
                .repository()
                .get_last_events::<A>(aggregate_id, (cached.sequence - 1).max(0) as usize)
                .await
                .map_err(|e| CommitError::from_persistence(e, aggregate_id))?;
            // Usable only if its last event is still stored as it was seen.
            let same = stored.first().is_some_and(|first| {
                first.sequence as i64 == cached.sequence
                    && first.metadata.get(HASH_KEY).and_then(Value::as_str)
                        == Some(cached.last_hash.as_str())
            });
            if same {
                let mut loaded = Loaded {
                    aggregate_id: aggregate_id.to_string(),
                    state: cached.state,
                    sequence: cached.sequence,
                    last_hash: cached.last_hash,
                    last_hash_matches: true,
                    unread: None,
                };
                let previous = replay(&mut loaded, cached.previous_hash, stored, 1)?;
                self.keep_replayed(&loaded, previous);
                return Ok(loaded);
            }
            cache.forget::<A>(aggregate_id);
        }
        let stored = self
            .repository()
            .get_events::<A>(aggregate_id)
            .await
            .map_err(|e| CommitError::from_persistence(e, aggregate_id))?;
        let mut loaded = Loaded {
            aggregate_id: aggregate_id.to_string(),
            state: A::default(),
            sequence: 0,
            last_hash: GENESIS.to_string(),
            last_hash_matches: true,
            unread: None,
        };
        let previous = replay(&mut loaded, GENESIS.to_string(), stored, 0)?;
        self.keep_replayed(&loaded, previous);
        Ok(loaded)
    }

    /// [`load`](Self::load) for a command about to be decided and committed, which
    /// may skip the read: when this process itself wrote the aggregate's last event
    /// (and still has it cached), the state after it is returned as it is, and the
    /// commit's append checks in its own statement that this event is still stored
    /// as this process wrote it ([`Predecessor`]: on PostgreSQL the row version its
    /// transaction stored, on SQLite the row's bytes), so still the last one if the
    /// next sequence is free, and still carrying the hash it was chained with. If it
    /// is not, the append stores nothing and the commit is a
    /// [`CommitError::Conflict`]; a refusal or an empty decision on such a state
    /// proves nothing either. The caller then decides again after [`load`]
    /// (the command bus does).
    pub async fn load_for_command<A: Aggregate + Clone + 'static>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, CommitError> {
        if let Some(cached) = self.aggregate_cache().get::<A>(aggregate_id) {
            if let Some(written) = cached.written {
                return Ok(Loaded {
                    aggregate_id: aggregate_id.to_string(),
                    state: cached.state,
                    sequence: cached.sequence,
                    last_hash: cached.last_hash,
                    last_hash_matches: true,
                    unread: Some(written),
                });
            }
        }
        self.load(aggregate_id).await
    }

    /// [`load_for_command`](Self::load_for_command) for a command that usually
    /// creates its aggregate (decision 77): when this process keeps nothing for
    /// the aggregate, the empty state is returned without reading the stream, and
    /// the commit's append checks in its own statement that no event of the
    /// aggregate is stored ([`Predecessor::Empty`]). If one is, nothing is stored
    /// and the commit is a [`CommitError::Conflict`]; the caller then decides
    /// again after [`load`](Self::load), as after any unread state.
    pub async fn load_for_creation<A: Aggregate + Clone + 'static>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, CommitError> {
        if self.aggregate_cache().contains::<A>(aggregate_id) {
            return self.load_for_command(aggregate_id).await;
        }
        Ok(Loaded {
            aggregate_id: aggregate_id.to_string(),
            state: A::default(),
            sequence: 0,
            last_hash: GENESIS.to_string(),
            last_hash_matches: true,
            unread: Some(Predecessor::Empty),
        })
    }

    /// Keeps `loaded` in the aggregate cache when a commit may chain after it.
    fn keep_replayed<A: Aggregate + Clone + 'static>(
        &self,
        loaded: &Loaded<A>,
        previous_hash: String,
    ) {
        if loaded.sequence > 0
            && loaded.last_hash_matches
            && chain::is_chain_hash(&loaded.last_hash)
        {
            self.aggregate_cache().put(
                &loaded.aggregate_id,
                Cached {
                    state: loaded.state.clone(),
                    sequence: loaded.sequence,
                    last_hash: loaded.last_hash.clone(),
                    previous_hash,
                    written: None,
                },
            );
        }
    }

    /// Stores `events` after `loaded`, checked as the module explains, in one
    /// statement. No events: nothing is stored and the state is returned as loaded.
    pub async fn commit<A>(
        &self,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        envelope: &Envelope,
    ) -> Result<Committed<A>, CommitError>
    where
        A: Aggregate + Lifecycle + Clone + 'static,
        A::Event: Clone,
    {
        let Loaded {
            aggregate_id,
            mut state,
            sequence,
            last_hash,
            last_hash_matches,
            unread,
        } = loaded;
        if events.is_empty() {
            return Ok(Committed {
                aggregate_id,
                state,
                events: vec![],
                sequence,
                position: None,
            });
        }
        let owner = AggregateId::parse(aggregate_id.as_str())
            .ok()
            .filter(|id| id.tenant() == envelope.tenant.as_str());
        if owner.is_none() {
            return Err(DomainError::Forbidden(format!(
                "{aggregate_id} is not an aggregate of tenant {}",
                envelope.tenant.as_str()
            ))
            .into());
        }
        let admin_override = envelope.override_allowed();
        let metadata = envelope.metadata();
        reject_nul_in(&metadata)?;
        let canonical_metadata = chain::canonical_metadata(&metadata);
        let metadata_text = String::from_utf8_lossy(&canonical_metadata);
        if !chain::is_chain_hash(&last_hash) {
            // Chaining to a missing or malformed hash would make the new events
            // unverifiable too.
            return Err(CommitError::BrokenChain {
                aggregate_id,
                sequence,
            });
        }
        if !last_hash_matches {
            return Err(CommitError::ForgedChain {
                aggregate_id,
                sequence,
            });
        }

        let mut previous = last_hash;
        let mut before_last = previous.clone();
        let mut rows = Vec::with_capacity(events.len());
        let mut numbered = Vec::with_capacity(events.len());
        for (offset, event) in events.into_iter().enumerate() {
            let before = state.clone();
            let value = serde_json::to_value(&event).map_err(|e| {
                CommitError::Corrupt(format!("cannot serialize {}: {e}", event.event_type()))
            })?;
            reject_nul(&value)?;
            let sequence = sequence + 1 + offset as i64;
            // The table check: the state this event leaves against the one before.
            state.apply(event.clone());
            A::check_step(&before, &state, admin_override)?;
            let payload = aggregates::canonical_json::to_canonical_vec(&value);
            let (event_type, event_version) = (event.event_type(), event.event_version());
            let identity = EventIdentity {
                aggregate_type: A::TYPE,
                aggregate_id: &aggregate_id,
                sequence,
                event_type: &event_type,
                event_version: &event_version,
            };
            let hash = chain::hash_parts(&previous, &identity, &payload, &canonical_metadata);
            // `{"hash":"…",` + the rest of the canonical metadata object
            let metadata = match metadata_text.strip_prefix('{') {
                Some("}") | None => format!("{{\"{HASH_KEY}\":\"{hash}\"}}"),
                Some(rest) => format!("{{\"{HASH_KEY}\":\"{hash}\",{rest}"),
            };
            rows.push(NewEvent {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: aggregate_id.clone(),
                sequence,
                event_type,
                event_version,
                payload: String::from_utf8(payload)
                    .map_err(|e| CommitError::Corrupt(e.to_string()))?,
                metadata,
                recorded_at: envelope.at,
            });
            numbered.push((sequence, event));
            before_last = std::mem::replace(&mut previous, hash);
        }

        // SQLite checks a predecessor by its bytes (decision 76): keep the last row
        // as written, unless it is too large to keep (the next command then reads).
        let last_row = match self {
            Store::Sqlite(_) => rows
                .last()
                .filter(|e| e.payload.len() + e.metadata.len() <= MAX_KEPT_ROW)
                .cloned(),
            Store::Postgres(_) => None,
        };
        let unread_conflict = unread.is_some();
        let cursor = self.append(rows, unread).await.map_err(|e| match e {
            AppendError::Conflict => {
                if unread_conflict {
                    // What this process wrote is not (or no longer) the stream's
                    // end: the next load reads it whole.
                    self.aggregate_cache().forget::<A>(&aggregate_id);
                }
                CommitError::Conflict {
                    aggregate_id: aggregate_id.clone(),
                }
            }
            AppendError::Store(e) => CommitError::Store(e),
        })?;
        let last = sequence + numbered.len() as i64;
        // Kept only where a later command can skip its read.
        let written = match self {
            Store::Postgres(_) => Some(Predecessor::Transaction(cursor.tx_id)),
            Store::Sqlite(_) => last_row.map(|event| {
                Predecessor::Row(std::sync::Arc::new(WrittenRow::written(
                    event,
                    cursor.position,
                )))
            }),
        };
        self.aggregate_cache().put(
            &aggregate_id,
            Cached {
                state: state.clone(),
                sequence: last,
                last_hash: previous,
                previous_hash: before_last,
                written,
            },
        );
        Ok(Committed {
            aggregate_id,
            state,
            events: numbered,
            sequence: last,
            position: Some(cursor.position),
        })
    }
}

/// Applies `stored` (in sequence order) to `loaded`, all but the first `skip` (the
/// cached last event, already in the state), starting from the chain hash
/// `previous`. The last event's stored hash is checked against its content: a
/// stored hash replaced by another well-formed one is refused by the commit, not
/// chained after. Returns the hash the last event chains onto.
fn replay<A: Aggregate>(
    loaded: &mut Loaded<A>,
    mut previous: String,
    stored: Vec<cqrs_es::persist::SerializedEvent>,
    skip: usize,
) -> Result<String, CommitError> {
    let mut before_last = previous.clone();
    let last = stored.last().map(|e| e.sequence);
    for (index, event) in stored.into_iter().enumerate() {
        let stored_hash = event
            .metadata
            .get(HASH_KEY)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if Some(event.sequence) == last {
            let metadata = event.metadata.as_object().cloned().unwrap_or_default();
            let computed = chain::ChainedEvent {
                aggregate_type: &event.aggregate_type,
                aggregate_id: &loaded.aggregate_id,
                sequence: event.sequence as i64,
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload,
                metadata: &metadata,
            }
            .hash(&previous);
            loaded.last_hash_matches = stored_hash == computed;
        }
        if index >= skip {
            let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
                CommitError::Corrupt(format!(
                    "{} #{}: undecodable {}: {e}",
                    loaded.aggregate_id, event.sequence, event.event_type
                ))
            })?;
            loaded.state.apply(payload);
        }
        loaded.sequence = event.sequence as i64;
        before_last = std::mem::replace(&mut previous, stored_hash.clone());
        loaded.last_hash = stored_hash;
    }
    Ok(before_last)
}

fn nul_refusal(field: impl Into<String>) -> DomainError {
    DomainError::validation(field, "must not contain NUL characters")
}

fn reject_nul_in(map: &Map<String, Value>) -> Result<(), DomainError> {
    map.iter().try_for_each(|(k, v)| {
        if k.contains('\0') {
            return Err(nul_refusal("metadata"));
        }
        reject_nul(v).map_err(|_| nul_refusal(k.clone()))
    })
}

/// PostgreSQL's JSON cannot hold NUL characters; refuse them as bad input instead of
/// failing at the database.
fn reject_nul(value: &Value) -> Result<(), DomainError> {
    match value {
        Value::String(s) if s.contains('\0') => Err(nul_refusal("text")),
        Value::Array(items) => items.iter().try_for_each(reject_nul),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                Err(nul_refusal(k.replace('\0', "")))
            } else {
                reject_nul(v).map_err(|_| nul_refusal(k.clone()))
            }
        }),
        _ => Ok(()),
    }
}
