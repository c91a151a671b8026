//! Command execution: the one path every command takes.
//!
//! `execute` authorizes the actor's role ([`authorize`], the one role check of the
//! service), has the store load the aggregate, lets the aggregate decide, and hands
//! the resulting events to the store's typed commit
//! ([`eventstore::Store::commit`]), which checks every status change against its
//! machine's `VALID_TRANSITIONS` table, chains the hashes and appends in one
//! statement. A refusal appends nothing. Two commands racing on one aggregate both
//! compute the same next sequence; the primary key lets one win and the other
//! surfaces as a retryable `CONFLICT`, so no event is ever lost or duplicated.

use aggregates::kernel::command::{Actor, DomainCommand, Issued, Role};
use aggregates::kernel::error::{DomainError, ErrorCode};
use aggregates::kernel::ids::{AggregateId, LocalId, TenantId};
use aggregates::kernel::transitions::Lifecycle;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

pub use eventstore::write::{CommitError, Committed, Envelope, Loaded};
use eventstore::{Store, StoreError};

pub use super::clock::Clock;

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

/// Why a command did not go through: refused by the domain (or by the store's
/// table check), beaten by a concurrent write, or not recorded because the store
/// failed or its stream is damaged.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error("concurrent write to {aggregate_id}; retry the command")]
    Conflict { aggregate_id: String },
    #[error("the event store failed: {0}")]
    Store(#[from] StoreError),
    /// The stored stream cannot be read or chained after (see [`CommitError`]).
    #[error("the event store failed: {0}")]
    Damaged(CommitError),
}

impl From<CommitError> for CommandError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Refused(e) => CommandError::Refused(e),
            CommitError::Conflict { aggregate_id } => CommandError::Conflict { aggregate_id },
            CommitError::Store(e) => CommandError::Store(e),
            damaged @ (CommitError::BrokenChain { .. }
            | CommitError::ForgedChain { .. }
            | CommitError::Corrupt(_)) => CommandError::Damaged(damaged),
        }
    }
}

impl CommandError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Refused(e) => e.code(),
            CommandError::Conflict { .. } => ErrorCode::Conflict,
            CommandError::Store(_) | CommandError::Damaged(_) => ErrorCode::Internal,
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            CommandError::Refused(e) => e.retryable(),
            CommandError::Conflict { .. } => true,
            CommandError::Store(_) | CommandError::Damaged(_) => false,
        }
    }

    /// The domain refusal, if this is one.
    pub fn refusal(&self) -> Option<&DomainError> {
        match self {
            CommandError::Refused(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct CommandBus {
    store: Store,
    clock: Clock,
}

impl CommandBus {
    pub fn new(store: Store) -> Self {
        CommandBus {
            store,
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
    pub async fn load<A: Aggregate + Clone + 'static>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, CommandError> {
        Ok(self.store.load::<A>(aggregate_id).await?)
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
        A: Aggregate<Command = Issued<C>, Error = DomainError> + Lifecycle + Clone + 'static,
        A::Event: Clone,
        C: DomainCommand + Clone,
    {
        authorize(ctx, &command)?;
        let id = AggregateId::new(&ctx.tenant, parts);
        // An aggregate whose last event this process wrote is decided on the state
        // it kept, without a read; the append checks that event in its own
        // statement (eventstore's `load_for_command`, decisions 58 and 76). A
        // creation on an aggregate this process keeps nothing for is decided on the
        // empty state; the append checks the stream is still empty (decision 77).
        let loaded = if command.creates() {
            self.store.load_for_creation::<A>(id.as_str()).await?
        } else {
            self.store.load_for_command::<A>(id.as_str()).await?
        };
        if !loaded.is_unread() {
            return self
                .execute_on(ctx, loaded, command, admin_override, services)
                .await;
        }
        match self
            .execute_on(ctx, loaded, command.clone(), admin_override, services)
            .await
        {
            Ok(committed) if !committed.events.is_empty() => Ok(committed),
            // A conflict, a refusal or nothing to do, decided on a state nobody
            // read: decided again on the stored one, as if the command had just
            // arrived (another process may have appended since).
            _ => {
                let loaded = self.load::<A>(id.as_str()).await?;
                self.execute_on(ctx, loaded, command, admin_override, services)
                    .await
            }
        }
    }

    /// [`execute`](Self::execute) on an aggregate the caller has just loaded (to
    /// look at it first), saving a second load. The commit still fails with a
    /// retryable `CONFLICT` when the stream moved since the load. The aggregate must
    /// be the caller's tenant's.
    pub async fn execute_on<A, C>(
        &self,
        ctx: &CommandContext,
        loaded: Loaded<A>,
        command: C,
        admin_override: bool,
        services: &A::Services,
    ) -> Result<Committed<A>, CommandError>
    where
        A: Aggregate<Command = Issued<C>, Error = DomainError> + Lifecycle + Clone + 'static,
        A::Event: Clone,
        C: DomainCommand,
    {
        authorize(ctx, &command)?;
        let id = AggregateId::parse(loaded.aggregate_id())?;
        if id.tenant() != ctx.tenant.as_str() {
            return Err(DomainError::NotFound {
                kind: A::TYPE,
                id: id.local().to_string(),
            }
            .into());
        }
        let envelope = Envelope {
            tenant: ctx.tenant.clone(),
            actor: ctx.actor.clone(),
            correlation_id: ctx.correlation_id.clone(),
            causation_id: ctx.causation_id.clone(),
            command: command.name(),
            reason: command.reason().map(str::to_string),
            admin_override,
            at: self.clock.now(),
        };
        let issued = Issued {
            actor: ctx.actor.clone(),
            at: envelope.at,
            admin_override,
            command,
        };
        let sink = EventSink::<A>::default();
        // cqrs-es's `handle` takes `&mut self`: the aggregate decides on a copy, and
        // the store applies the events to the state it loaded.
        let mut deciding = loaded.state().clone();
        deciding
            .handle(issued, services, &sink)
            .await
            .map_err(|e| match e {
                // an error carrying no id is about this aggregate
                DomainError::NotFound { kind, id: missing } if missing.is_empty() => {
                    DomainError::NotFound {
                        kind,
                        id: id.local().to_string(),
                    }
                }
                other => other,
            })?;
        let events = sink.collect().await;
        Ok(self.store.commit(loaded, events, &envelope).await?)
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
        A: Aggregate<Command = Issued<C>, Error = DomainError> + Lifecycle + Clone + 'static,
        A::Event: Clone,
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

/// Something only some roles may do: a command, or a use case that reaches outside
/// the service (a sync, a drift check, a promotion's comparison).
pub trait RequiresRole {
    fn required_role(&self) -> Role;
    /// What it is, for the refusal ("checking drift", "environment.register", …).
    fn what(&self) -> String;
}

impl<C: DomainCommand> RequiresRole for C {
    fn required_role(&self) -> Role {
        DomainCommand::required_role(self)
    }
    fn what(&self) -> String {
        self.name().to_string()
    }
}

/// A use case that spans commands or reaches outside the service. Each requires
/// the role of the command it leads to, so roles stay in one table (DOMAIN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    SyncEnvironment,
    SyncRepository,
    OnboardWorkflow,
    CheckDrift,
    ComparePromotion,
    CreatePromotion,
    DeployPromotion,
    RestoreSnapshot,
}

impl RequiresRole for UseCase {
    fn required_role(&self) -> Role {
        use aggregates::deployment::DeploymentCommand;
        use aggregates::environment::{DriftCheckOutcome, EnvironmentCommand, SyncKind};
        use aggregates::promotion::PromotionCommand;
        let sync = |kind| EnvironmentCommand::RecordSync {
            kind,
            workflows_seen: 0,
        };
        match self {
            UseCase::SyncEnvironment => DomainCommand::required_role(&sync(SyncKind::Environment)),
            UseCase::SyncRepository => DomainCommand::required_role(&sync(SyncKind::Repository)),
            // onboarding records the workflow in Git and links it: a sync's role
            UseCase::OnboardWorkflow => DomainCommand::required_role(&sync(SyncKind::Repository)),
            UseCase::CheckDrift => {
                DomainCommand::required_role(&EnvironmentCommand::RecordDriftCheck {
                    outcome: DriftCheckOutcome::Failed {
                        cause: String::new(),
                    },
                })
            }
            // comparing reads both environments through their connectors
            UseCase::ComparePromotion => Role::Developer,
            // creating a promotion decides its approval: an approver's role
            UseCase::CreatePromotion => DomainCommand::required_role(&PromotionCommand::Approve),
            // a restore is a promotion whose source is a snapshot
            UseCase::RestoreSnapshot => DomainCommand::required_role(&PromotionCommand::Approve),
            UseCase::DeployPromotion => DomainCommand::required_role(&DeploymentCommand::Create {
                promotion_id: aggregates::kernel::ids::LocalId::parse("p")
                    .expect("a constant id is valid"),
                scheduled_for: None,
                workflows: vec![],
            }),
        }
    }

    fn what(&self) -> String {
        match self {
            UseCase::SyncEnvironment | UseCase::SyncRepository => "syncing",
            UseCase::OnboardWorkflow => "onboarding",
            UseCase::CheckDrift => "checking drift",
            UseCase::ComparePromotion => "comparing environments",
            UseCase::CreatePromotion => "creating a promotion",
            UseCase::DeployPromotion => "deploying a promotion",
            UseCase::RestoreSnapshot => "restoring a snapshot",
        }
        .to_string()
    }
}

/// The one role check: refuses `FORBIDDEN` unless the actor's role satisfies what
/// `action` requires (DOMAIN.md §7).
pub fn authorize(ctx: &CommandContext, action: &impl RequiresRole) -> Result<(), DomainError> {
    let required = action.required_role();
    if ctx.actor.role.satisfies(required) {
        Ok(())
    } else {
        Err(DomainError::Forbidden(format!(
            "{} requires the {required} role",
            action.what()
        )))
    }
}
