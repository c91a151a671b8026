//! Drift incidents: the lifecycle of DOMAIN.md §2.2 (queries and one mutation per
//! transition; each transition takes `adminOverride`, honoured for admins only).

use aggregates::incident::IncidentCommand;
use async_graphql::connection::Connection;
use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::incidents::{self as model, IncidentRow};

use super::environments::Environment;
use super::types::{
    connection, list, AffectedWorkflow, IncidentStatus, LocalIdArg, ResolutionType, Severity,
    SlaState,
};
use super::{app, caller, loaders, read_back_row, run, wait_for, ApiError};

pub struct Incident(pub IncidentRow);

/// An approval a policy requires before the transition happens.
#[derive(SimpleObject)]
pub struct PendingApproval {
    pub approval_id: i64,
    pub requested_by: String,
    /// The requested action and its arguments.
    pub action: async_graphql::Json<serde_json::Value>,
}

#[Object]
impl Incident {
    async fn id(&self) -> ID {
        ID(self.0.incident_id.clone())
    }
    async fn environment_id(&self) -> ID {
        ID(self.0.environment_id.clone())
    }
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Environment>> {
        let id = self.0.environment_id.clone();
        Ok(loaders(ctx)?
            .environments
            .load_one(id)
            .await?
            .map(Environment))
    }
    async fn status(&self) -> IncidentStatus {
        self.0.status.into()
    }
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    async fn sla_state(&self) -> SlaState {
        self.0.sla_state.into()
    }
    /// When the SLA/TTL expires (moved by `extendIncidentTtl`).
    async fn sla_deadline(&self) -> Option<DateTime<Utc>> {
        Some(self.0.sla_deadline)
    }
    async fn affected_workflows(&self) -> Vec<AffectedWorkflow> {
        list(&self.0.affected_workflows)
    }
    async fn detected_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.detected_at)
    }
    async fn acknowledged_at(&self) -> Option<DateTime<Utc>> {
        self.0.acknowledged_at
    }
    async fn stabilized_at(&self) -> Option<DateTime<Utc>> {
        self.0.stabilized_at
    }
    async fn reconciled_at(&self) -> Option<DateTime<Utc>> {
        self.0.reconciled_at
    }
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
    async fn owner_user_id(&self) -> Option<&str> {
        self.0.owner_user_id.as_deref()
    }
    async fn ticket_ref(&self) -> Option<&str> {
        self.0.ticket_ref.as_deref()
    }
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    async fn resolution_type(&self) -> Option<ResolutionType> {
        self.0.resolution_type.map(Into::into)
    }
    async fn resolution_details(&self) -> Option<&str> {
        self.0.resolution_details.as_deref()
    }
    /// The reason given with the latest transition.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn pending_approval(&self) -> Option<PendingApproval> {
        let payload = self.0.pending_approval.as_ref()?.0.clone();
        Some(PendingApproval {
            approval_id: payload.get("approval_id")?.as_i64()?,
            requested_by: payload.get("requested_by")?.as_str()?.to_string(),
            action: async_graphql::Json(payload),
        })
    }
    /// Some transition of this incident was forced by an admin.
    async fn admin_override(&self) -> bool {
        self.0.admin_override
    }
    /// Retention purged the drift snapshot's payload (its digest stays in the log).
    async fn payload_purged(&self) -> bool {
        self.0.payload_purged
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.updated_at)
    }
    /// SHA-256 of the drift snapshot taken at detection (the log keeps it after a
    /// purge, so the snapshot stays verifiable against it).
    async fn snapshot_digest(&self) -> Option<&str> {
        self.0.snapshot_digest.as_deref()
    }
    /// The drift snapshot taken at detection: the check's counts and each drifted
    /// workflow with its diff. Null once retention purged it.
    async fn snapshot(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Option<async_graphql::Json<serde_json::Value>>, ApiError> {
        let Some(digest) = self.0.snapshot_digest.as_deref() else {
            return Ok(None);
        };
        if self.0.payload_purged {
            return Ok(None);
        }
        let payload = app(ctx)?
            .payloads
            .get(&self.0.tenant, digest)
            .await
            .map_err(|e| ApiError::Store(e.into()))?;
        Ok(payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .map(async_graphql::Json))
    }
}

#[derive(Default)]
pub struct IncidentQuery;

#[Object]
impl IncidentQuery {
    /// Incidents of the caller's tenant, newest first.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn incidents(
        &self,
        ctx: &Context<'_>,
        environment_id: Option<ID>,
        status: Option<IncidentStatus>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, Incident>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let page = model::incidents(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            environment_id.as_ref().map(|id| id.as_str()),
            status.map(Into::into),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Incident))
    }

    async fn incident(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Incident>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load(ctx, id.as_str()).await?)
    }
}

pub(crate) async fn load(ctx: &Context<'_>, id: &str) -> Result<Option<Incident>, ApiError> {
    let row = model::incident(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Incident))
}

pub struct IncidentPayload {
    id: String,
    position: Option<i64>,
}

#[Object]
impl IncidentPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        let row = read_back_row(ctx, model::NAME, self.position, &self.id).await?;
        Ok(row.map(Incident))
    }
}

#[derive(Default)]
pub struct IncidentMutation;

async fn transition(
    ctx: &Context<'_>,
    id: &LocalIdArg,
    command: IncidentCommand,
    admin_override: Option<bool>,
) -> async_graphql::Result<IncidentPayload> {
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .incident(
                &caller.command_context(),
                id,
                command,
                admin_override.unwrap_or(false),
            )
            .await?)
    })
    .await?;
    Ok(IncidentPayload {
        id: id.to_string(),
        position: committed.position,
    })
}

#[Object]
impl IncidentMutation {
    /// detected → acknowledged (developer).
    #[allow(clippy::too_many_arguments)]
    async fn acknowledge_incident(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
        owner_user_id: Option<String>,
        ticket_ref: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let command = IncidentCommand::Acknowledge {
            reason,
            owner_user_id,
            ticket_ref,
            expires_at,
        };
        transition(ctx, &id, command, admin_override).await
    }

    /// acknowledged → stabilized (developer).
    async fn stabilize_incident(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        transition(
            ctx,
            &id,
            IncidentCommand::Stabilize { reason },
            admin_override,
        )
        .await
    }

    /// → reconciled (admin); `resolutionType` is required.
    async fn reconcile_incident(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        resolution_type: Option<ResolutionType>,
        resolution_details: Option<String>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let command = IncidentCommand::Reconcile {
            resolution_type: resolution_type.map(Into::into),
            resolution_details,
        };
        transition(ctx, &id, command, admin_override).await
    }

    /// → closed (admin); `reason` is required, and `resolutionType` unless the
    /// incident was reconciled. Closing frees the environment's incident slot.
    async fn close_incident(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
        resolution_type: Option<ResolutionType>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let command = IncidentCommand::Close {
            reason,
            resolution_type: resolution_type.map(Into::into),
        };
        transition(ctx, &id, command, admin_override).await
    }

    /// Moves the SLA deadline (admin).
    async fn extend_incident_ttl(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        new_deadline: DateTime<Utc>,
        reason: Option<String>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let command = IncidentCommand::ExtendTtl {
            new_deadline,
            reason,
        };
        transition(ctx, &id, command, admin_override).await
    }

    /// Grants the pending approval (an admin other than the requester); the
    /// requested transition happens.
    async fn approve_incident_action(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        approval_id: i64,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let approval_id = approval(approval_id)?;
        transition(
            ctx,
            &id,
            IncidentCommand::Approve { approval_id },
            admin_override,
        )
        .await
    }

    /// Rejects the pending approval; the request ends.
    async fn reject_incident_action(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        approval_id: i64,
        reason: Option<String>,
        admin_override: Option<bool>,
    ) -> async_graphql::Result<IncidentPayload> {
        let approval_id = approval(approval_id)?;
        let command = IncidentCommand::Reject {
            approval_id,
            reason,
        };
        transition(ctx, &id, command, admin_override).await
    }
}

fn approval(id: i64) -> Result<u32, ApiError> {
    u32::try_from(id).map_err(|_| ApiError::validation("approvalId", "no such approval"))
}
