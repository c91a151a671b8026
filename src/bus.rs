//! Command execution: the one path every command takes.
//!
//! `execute` authorizes the actor's role, loads the aggregate through the cqrs-es
//! repository (postgres-es or sqlite-es), lets the aggregate decide, and appends the
//! resulting events with their metadata (DOMAIN.md §1) and chain hashes in one
//! statement ([`Store::append`]). A refusal
//! appends nothing. Two commands racing on one aggregate both compute the same next
//! sequence; the primary key lets one win and the other surfaces as a retryable
//! `CONFLICT`, so no event is ever lost or duplicated.
//!
//! cqrs-es's `CqrsFramework` is not used because it gives every event of a command the
//! same metadata (each needs its own chain hash) and returns nothing to the caller
//! (mutations return the new state and the position of the last event).

use std::sync::Arc;

use aggregates::command::{Actor, DomainCommand, Issued};
use aggregates::error::{DomainError, ErrorCode};
use aggregates::ids::{aggregate_id, LocalId, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::{Map, Value};

use crate::store::chain::{self, EventIdentity, GENESIS, HASH_KEY};
use crate::store::{AnyRepository, AppendError, NewEvent, Store, StoreError};

/// Who is acting, for which tenant, and as part of what. The tenant comes only from
/// a verified token (or a scheduler's own configuration), never from request input.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant: TenantId,
    pub actor: Actor,
    /// One id per API request or scheduler run; every event it causes shares it.
    pub correlation_id: String,
    /// The event (position) or command that caused this one, where there is one.
    pub causation_id: Option<String>,
}

impl CommandContext {
    pub fn new(tenant: TenantId, actor: Actor) -> Self {
        CommandContext {
            tenant,
            actor,
            correlation_id: uuid::Uuid::new_v4().to_string(),
            causation_id: None,
        }
    }

    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }
}

/// Why a command did not go through: refused by the domain, beaten by a concurrent
/// write, or not recorded because the store failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error("concurrent write to {aggregate_id}; retry the command")]
    Conflict { aggregate_id: String },
    #[error("the event store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the event store failed: {0}")]
    Persistence(String),
}

impl CommandError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Refused(e) => e.code(),
            CommandError::Conflict { .. } => ErrorCode::Conflict,
            CommandError::Store(_) | CommandError::Persistence(_) => ErrorCode::Internal,
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            CommandError::Refused(e) => e.retryable(),
            CommandError::Conflict { .. } => true,
            CommandError::Store(_) | CommandError::Persistence(_) => false,
        }
    }

    /// The domain refusal, if this is one.
    pub fn refusal(&self) -> Option<&DomainError> {
        match self {
            CommandError::Refused(e) => Some(e),
            _ => None,
        }
    }

    fn from_persistence(error: PersistenceError, aggregate_id: &str) -> Self {
        match error {
            PersistenceError::OptimisticLockError => CommandError::Conflict {
                aggregate_id: aggregate_id.to_string(),
            },
            other => CommandError::Persistence(other.to_string()),
        }
    }
}

/// What a command appended, and the aggregate's state afterwards.
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

/// A loaded aggregate: its state, last sequence and last chain hash (as stored: empty
/// if the last event has none; `execute` refuses to chain after an invalid one).
pub struct Loaded<A> {
    pub state: A,
    pub sequence: i64,
    pub last_hash: String,
}

#[derive(Clone)]
pub struct CommandBus {
    store: Store,
    repository: Arc<AnyRepository>,
    clock: Clock,
}

/// The time commands are issued at: the server's clock, plus an offset that only
/// tests move (to reach SLA steps and retention ages without waiting for them).
#[derive(Clone, Default)]
pub struct Clock {
    offset_micros: Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// Now, at the microsecond precision both backends keep.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .offset_micros
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = Utc::now().timestamp_micros().saturating_add(offset);
        DateTime::from_timestamp_micros(now).unwrap_or_else(Utc::now)
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let micros = by.num_microseconds().unwrap_or(i64::MAX);
        self.offset_micros
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CommandBus {
    pub fn new(store: Store) -> Self {
        let repository = Arc::new(store.repository());
        CommandBus {
            store,
            repository,
            clock: Clock::default(),
        }
    }

    /// The clock commands are issued by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replays an aggregate from its events.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<Loaded<A>, CommandError> {
        let stored = self
            .repository
            .get_events::<A>(aggregate_id)
            .await
            .map_err(|e| CommandError::from_persistence(e, aggregate_id))?;
        let mut loaded = Loaded {
            state: A::default(),
            sequence: 0,
            last_hash: GENESIS.to_string(),
        };
        for event in stored {
            let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
                CommandError::Persistence(format!(
                    "{aggregate_id} #{}: undecodable {}: {e}",
                    event.sequence, event.event_type
                ))
            })?;
            loaded.state.apply(payload);
            loaded.sequence = event.sequence as i64;
            loaded.last_hash = event
                .metadata
                .get(HASH_KEY)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
        }
        Ok(loaded)
    }

    /// Executes one command against the aggregate `parts` of the context's tenant.
    pub async fn execute<A, C>(
        &self,
        ctx: &CommandContext,
        parts: &[&LocalId],
        command: C,
        admin_override: bool,
        services: &A::Services,
    ) -> Result<Committed<A>, CommandError>
    where
        A: Aggregate<Command = Issued<C>, Error = DomainError>,
        C: DomainCommand,
    {
        let required = command.required_role();
        if !ctx.actor.role.satisfies(required) {
            return Err(DomainError::Forbidden(format!(
                "{} requires the {required} role",
                command.name()
            ))
            .into());
        }
        let id = aggregate_id(&ctx.tenant, parts);
        let Loaded {
            mut state,
            sequence,
            last_hash,
        } = self.load::<A>(&id).await?;

        let at = self.clock.now();
        let metadata = metadata(ctx, &command, admin_override, at);
        let issued = Issued {
            actor: ctx.actor.clone(),
            at,
            admin_override,
            command,
        };
        let sink = EventSink::<A>::default();
        state
            .handle(issued, services, &sink)
            .await
            .map_err(|e| match e {
                // an error carrying no id is about this aggregate
                DomainError::NotFound { kind, id: missing } if missing.is_empty() => {
                    DomainError::NotFound {
                        kind,
                        id: local_part(&id).to_string(),
                    }
                }
                other => other,
            })?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Committed {
                aggregate_id: id,
                state,
                events: vec![],
                sequence,
                position: None,
            });
        }

        if !chain::is_chain_hash(&last_hash) {
            // Chaining to a missing or malformed hash would make the new events
            // unverifiable too: refuse, append nothing.
            return Err(CommandError::Persistence(format!(
                "{id} #{sequence}: the stored event has no valid chain hash, so nothing can be \
                 chained after it; the log was altered (run `workflowops verify`)"
            )));
        }
        let rows = serialize::<A>(&id, sequence, &last_hash, &events, &metadata, at)?;
        let position = self.store.append(&rows).await.map_err(|e| match e {
            AppendError::Conflict => CommandError::Conflict {
                aggregate_id: id.clone(),
            },
            AppendError::Store(e) => CommandError::Store(e),
        })?;
        let last = sequence + events.len() as i64;
        let events = (sequence + 1..).zip(events).collect();
        Ok(Committed {
            aggregate_id: id,
            state,
            events,
            sequence: last,
            position: Some(position),
        })
    }

    /// [`execute`](Self::execute), retried up to `attempts` times on a concurrent
    /// write. For commands whose decision is safe to remake on fresh state
    /// (reservations, scheduler steps); client mutations surface the conflict.
    pub async fn execute_retrying<A, C>(
        &self,
        ctx: &CommandContext,
        parts: &[&LocalId],
        command: C,
        services: &A::Services,
        attempts: usize,
    ) -> Result<Committed<A>, CommandError>
    where
        A: Aggregate<Command = Issued<C>, Error = DomainError>,
        C: DomainCommand + Clone,
    {
        let mut attempt = 1;
        loop {
            match self
                .execute::<A, C>(ctx, parts, command.clone(), false, services)
                .await
            {
                Err(CommandError::Conflict { .. }) if attempt < attempts => attempt += 1,
                other => return other,
            }
        }
    }
}

fn local_part(aggregate_id: &str) -> &str {
    aggregate_id
        .split_once(':')
        .map_or(aggregate_id, |(_, rest)| rest)
}

fn metadata<C: DomainCommand>(
    ctx: &CommandContext,
    command: &C,
    admin_override: bool,
    at: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("tenant_id".into(), ctx.tenant.as_str().into());
    m.insert("actor".into(), ctx.actor.id.clone().into());
    m.insert("actor_role".into(), ctx.actor.role.as_str().into());
    m.insert(
        "recorded_at".into(),
        at.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
    );
    m.insert("correlation_id".into(), ctx.correlation_id.clone().into());
    if let Some(causation) = &ctx.causation_id {
        m.insert("causation_id".into(), causation.clone().into());
    }
    m.insert("command".into(), command.name().into());
    if let Some(reason) = aggregates::error::non_blank(command.reason()) {
        m.insert("reason".into(), reason.into());
    }
    m.insert("admin_override".into(), admin_override.into());
    m
}

/// Events as rows to append, each with its own chain hash. The payload is stored in
/// canonical form, so the bytes hashed are the bytes stored; the metadata is
/// canonicalized once for all events of the command.
fn serialize<A: Aggregate>(
    aggregate_id: &str,
    sequence: i64,
    last_hash: &str,
    events: &[A::Event],
    metadata: &Map<String, Value>,
    at: DateTime<Utc>,
) -> Result<Vec<NewEvent>, CommandError> {
    reject_nul_in(metadata)?;
    let canonical_metadata = chain::canonical_metadata(metadata);
    let metadata_text = String::from_utf8_lossy(&canonical_metadata);
    let mut previous = last_hash.to_string();
    let mut rows = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        let value = serde_json::to_value(event).map_err(|e| {
            CommandError::Persistence(format!("cannot serialize {}: {e}", event.event_type()))
        })?;
        reject_nul(&value)?;
        let payload = aggregates::canonical_json::to_canonical_vec(&value);
        let sequence = sequence + 1 + offset as i64;
        let (event_type, event_version) = (event.event_type(), event.event_version());
        let identity = EventIdentity {
            aggregate_type: A::TYPE,
            aggregate_id,
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
            aggregate_id: aggregate_id.to_string(),
            sequence,
            event_type,
            event_version,
            payload: String::from_utf8(payload)
                .map_err(|e| CommandError::Persistence(e.to_string()))?,
            metadata,
            recorded_at: at,
        });
        previous = hash;
    }
    Ok(rows)
}

fn reject_nul_in(map: &Map<String, Value>) -> Result<(), DomainError> {
    map.iter().try_for_each(|(k, v)| {
        if k.contains('\0') {
            return Err(DomainError::validation(
                "metadata",
                "must not contain NUL characters",
            ));
        }
        reject_nul(v)
            .map_err(|_| DomainError::validation(k.clone(), "must not contain NUL characters"))
    })
}

/// PostgreSQL's JSON cannot hold NUL characters; refuse them as bad input instead of
/// failing at the database.
fn reject_nul(value: &Value) -> Result<(), DomainError> {
    let has_nul = match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => return items.iter().try_for_each(reject_nul),
        Value::Object(map) => {
            return map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    Err(DomainError::validation(
                        k.replace('\0', ""),
                        "must not contain NUL characters",
                    ))
                } else {
                    reject_nul(v).map_err(|_| {
                        DomainError::validation(k.clone(), "must not contain NUL characters")
                    })
                }
            })
        }
        _ => false,
    };
    if has_nul {
        Err(DomainError::validation(
            "text",
            "must not contain NUL characters",
        ))
    } else {
        Ok(())
    }
}
