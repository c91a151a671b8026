//! Drift found on an environment → its one active incident (DOMAIN.md §2.2).
//!
//! The environment owns the active-incident slot. A drift report updates the
//! incident the slot holds, or reserves the slot for a new incident id with what
//! opening it needs; the incident-slot reactor ([`crate::reactors::incident_slot`])
//! opens the reserved incident, and releases the slot once the incident is closed.
//! The reactor is what guarantees both steps (a report interrupted after its
//! reservation still ends with an open incident). A report that needs a step now
//! takes it itself with the same idempotent command rather than wait for the
//! reactor: it opens the incident it reserved (so the caller gets it at once), and
//! releases the slot of a closed incident it finds (closing releases it at once
//! too: [`crate::command::domain::Domain::incident`]).
//!
//! A slot that holds an incident not opened yet is another report's work in
//! progress: the report waits for the reactor to reach what is committed, then
//! looks again. A reservation recorded before the reactor existed
//! carries no opening, so the reactor skips it; the report that finds it opens it
//! with its own drift (the repair this step always had).

use std::time::Duration;

use aggregates::environment::{Environment, EnvironmentClass, EnvironmentCommand};
use aggregates::incident::{
    AffectedWorkflow, DriftIncident, IncidentCommand, IncidentEvent, IncidentOpening,
    IncidentPolicy, IncidentStatus,
};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::{aggregate_id, LocalId};

use crate::command::bus::{CommandContext, CommandError, Committed};
use crate::command::domain::{system_ctx, Domain, RETRIES};
use crate::reactors::{incident_slot, WaitError};

/// How long a report waits for the incident-slot reactor.
pub const REACTOR_WAIT: Duration = Duration::from_secs(10);

/// Drift found on an environment: updates its active incident, or reserves the slot
/// for a new one, which the incident-slot reactor opens. Returns the incident's id
/// and what this report appended to it (the `Detected` event the reactor appended
/// for it, under its correlation id, when it opened the incident).
pub async fn report_drift(
    domain: &Domain,
    ctx: &CommandContext,
    environment_id: &LocalId,
    affected_workflows: Vec<AffectedWorkflow>,
    snapshot_digest: Option<String>,
    policy: IncidentPolicy,
) -> Result<(LocalId, Committed<DriftIncident>), CommandError> {
    let bus = domain.bus();
    let env_aggregate = aggregate_id(&ctx.tenant, &[environment_id]);
    let mut last_error = None;
    for _ in 0..RETRIES {
        let loaded = bus.load::<Environment>(&env_aggregate).await?;
        let environment = loaded.state();
        if !environment.registered {
            return Err(DomainError::NotFound {
                kind: "environment",
                id: environment_id.to_string(),
            }
            .into());
        }
        let opening = IncidentOpening {
            production: environment.class == EnvironmentClass::Production,
            affected_workflows: affected_workflows.clone(),
            snapshot_digest: snapshot_digest.clone(),
            policy,
        };
        let Some(active) = environment.active_incident.clone() else {
            let incident_id = LocalId::parse(uuid::Uuid::new_v4().to_string())?;
            let open = opening.open(environment_id.clone());
            let reserve = EnvironmentCommand::ReserveIncidentSlot {
                incident_id: incident_id.clone(),
                opening: Some(opening),
            };
            // on the state just looked at (a reservation since is a conflict)
            match bus
                .execute_on(
                    &system_ctx(ctx, "incident-slot"),
                    loaded,
                    reserve,
                    false,
                    &(),
                )
                .await
            {
                Ok(_) => {
                    // The reactor opens what the reservation names; the report takes
                    // the same idempotent step at once rather than wait for it
                    // (whichever lands first opens the incident, the other changes
                    // nothing; both act under this report's correlation id).
                    let opened = bus
                        .execute_retrying::<DriftIncident, _>(
                            &system_ctx(ctx, "drift"),
                            &[&incident_id],
                            open,
                            &(),
                            RETRIES,
                        )
                        .await?;
                    if !opened.events.is_empty() {
                        return Ok((incident_id, opened));
                    }
                    // the reactor was first: what it appended for this report
                    let opened = opened_by(domain, ctx, &incident_id).await?;
                    return Ok((incident_id, opened));
                }
                // someone else reserved first: reload and update theirs
                Err(
                    e @ (CommandError::Conflict { .. }
                    | CommandError::Refused(DomainError::Validation { .. })),
                ) => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        let active = LocalId::parse(active.as_str())?;
        let incident = load_incident(domain, ctx, &active).await?;
        if incident.opened && incident.status != IncidentStatus::Closed {
            let update = IncidentCommand::UpdateDrift {
                affected_workflows: affected_workflows.clone(),
            };
            match domain
                .incident(&system_ctx(ctx, "drift"), &active, update, false)
                .await
            {
                Ok(committed) => return Ok((active, committed)),
                // closed meanwhile: the reactor frees the slot; look again
                Err(CommandError::Refused(DomainError::Validation { ref field, .. }))
                    if field == "status" =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        if incident.status == IncidentStatus::Closed {
            // Closed, its slot not released yet: the reactor's step, taken here at
            // once (idempotent: a slot that moved on is left alone). Look again.
            domain
                .release_incident_slot(ctx, environment_id.as_str(), &active)
                .await;
            continue;
        }
        // Reserved and not opened yet: another report's reservation, which it and
        // the reactor are opening. Wait until the reactor has handled everything
        // committed so far, look again.
        let head = bus.store().last_position().await?;
        wait_for_reactor(domain, head).await?;
        let environment = bus.load::<Environment>(&env_aggregate).await?.into_state();
        let incident = load_incident(domain, ctx, &active).await?;
        if !incident.opened && environment.active_incident.as_deref() == Some(active.as_str()) {
            // The reactor passed the reservation and left it: one recorded before the
            // reactor existed, with no opening. Open it with this report's drift.
            let open = opening.open(environment_id.clone());
            let committed = domain
                .incident(&system_ctx(ctx, "drift"), &active, open, false)
                .await?;
            return Ok((active, committed));
        }
    }
    Err(last_error.unwrap_or_else(|| CommandError::Conflict {
        aggregate_id: env_aggregate,
    }))
}

async fn load_incident(
    domain: &Domain,
    ctx: &CommandContext,
    incident_id: &LocalId,
) -> Result<DriftIncident, CommandError> {
    Ok(domain
        .bus()
        .load::<DriftIncident>(&aggregate_id(&ctx.tenant, &[incident_id]))
        .await?
        .into_state())
}

/// Waits for the incident-slot reactor to handle the log up to `position`.
async fn wait_for_reactor(domain: &Domain, position: i64) -> Result<(), CommandError> {
    match domain
        .reactors()
        .wait_for_reactor(incident_slot::NAME, position, REACTOR_WAIT)
        .await
    {
        Ok(()) => Ok(()),
        Err(WaitError::Store(e)) => Err(CommandError::Store(e)),
        Err(e) => Err(DomainError::Unavailable(format!(
            "the incident slot is being updated and the update has not landed yet ({e}); \
             retry the drift report"
        ))
        .into()),
    }
}

/// The incident the reactor opened for this report's reservation, with the events
/// appended to it under the report's correlation id.
async fn opened_by(
    domain: &Domain,
    ctx: &CommandContext,
    incident_id: &LocalId,
) -> Result<Committed<DriftIncident>, CommandError> {
    let aggregate = aggregate_id(&ctx.tenant, &[incident_id]);
    let loaded = domain.bus().load::<DriftIncident>(&aggregate).await?;
    let sequence = loaded.sequence();
    let state = loaded.into_state();
    if !state.opened {
        return Err(DomainError::Unavailable(format!(
            "incident {incident_id} was reserved but the incident-slot reactor did not open it"
        ))
        .into());
    }
    let mut events = vec![];
    let mut position = None;
    for stored in domain
        .bus()
        .store()
        .aggregate_events(<DriftIncident as cqrs_es::Aggregate>::TYPE, &aggregate)
        .await?
    {
        let ours = stored
            .metadata
            .get("correlation_id")
            .and_then(|v| v.as_str())
            == Some(ctx.correlation_id.as_str());
        if !ours {
            continue;
        }
        let event: IncidentEvent = serde_json::from_value(stored.payload).map_err(|e| {
            CommandError::Store(eventstore::StoreError::Corrupt {
                position: stored.position,
                message: e.to_string(),
            })
        })?;
        position = Some(stored.position);
        events.push((stored.sequence, event));
    }
    Ok(Committed {
        aggregate_id: aggregate,
        state,
        events,
        sequence,
        position,
    })
}
