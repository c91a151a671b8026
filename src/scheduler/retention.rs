//! The retention job (DOMAIN.md §6), decided from the log alone.
//!
//! Deleting a drift snapshot payload destroys evidence, so the decision never rests
//! on a read model: a rebuild that empties `rm_incidents` at the wrong moment must
//! not make every payload look unreferenced. The job reads the incident streams
//! that have no `incident.payload_purged` event and replays each incident from its
//! own events; a payload is referenced while any such incident names it. Policies
//! come from the drift-policy aggregates the same way.
//!
//! For each incident closed longer than its policy's
//! `closed_incident_retention_days`: `incident.payload_purged` first, then the
//! payload, unless another unpurged incident still names it (a failure in between
//! leaves a payload that a later run deletes as unreferenced, never an incident
//! that claims a payload it lost). Payloads no incident names are deleted after a
//! grace period (a drift check stores its payload just before it opens its
//! incident; storing a payload again makes it young again).
//!
//! Webhook deliveries that were delivered more than [`DELIVERY_HISTORY`] ago are
//! deleted (a record of HTTP attempts, not evidence: the log keeps the events).

use std::collections::HashMap;

use aggregates::incident::{DriftIncident, IncidentCommand, IncidentStatus};
use aggregates::kernel::ids::{AggregateId, LocalId, TenantId};
use aggregates::policy::{DriftPolicy, DriftPolicySettings, PolicyScope};
use aggregates::Actor;
use chrono::{DateTime, Utc};
use eventstore::sql::{fmt_time, Dialect, Sql};

use super::{Job, RunReport, SchedulerError, UNREFERENCED_SNAPSHOT_GRACE};
use crate::command::bus::{CommandBus, CommandContext};
use crate::command::domain::Domain;
use crate::storage::payloads::Payloads;

/// A closed incident whose payload has not been purged.
struct Candidate {
    tenant: TenantId,
    incident_id: LocalId,
    environment_id: String,
    closed_at: DateTime<Utc>,
    digest: String,
}

pub(super) async fn run(
    domain: &Domain,
    correlation_id: &str,
) -> Result<RunReport, SchedulerError> {
    let bus = domain.bus();
    let store = bus.store();
    let payloads = Payloads::new(store.clone());
    let now = bus.clock().now();
    let mut report = RunReport::default();

    // Every payload an unpurged incident names (how many name it), and the closed ones.
    let mut referenced: HashMap<(String, String), usize> = HashMap::new();
    let mut candidates = vec![];
    for aggregate_id in store
        .streams_without("incident", "incident.payload_purged")
        .await?
    {
        let incident = bus.load::<DriftIncident>(&aggregate_id).await?.into_state();
        let Some(digest) = incident.snapshot_digest.clone() else {
            continue;
        };
        if incident.snapshot_purged {
            continue;
        }
        let parsed = AggregateId::parse(aggregate_id.as_str()).and_then(|id| {
            let incident_id = LocalId::parse(id.local())?;
            Ok((id.tenant_id(), incident_id))
        });
        let (tenant, incident_id) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%aggregate_id, %error, "incident stream with a malformed id");
                continue;
            }
        };
        *referenced
            .entry((tenant.as_str().to_string(), digest.clone()))
            .or_default() += 1;
        if let (IncidentStatus::Closed, Some(closed_at)) = (incident.status, incident.closed_at) {
            candidates.push(Candidate {
                tenant,
                incident_id,
                environment_id: incident.environment_id.clone(),
                closed_at,
                digest,
            });
        }
    }

    let mut policies = HashMap::new();
    for candidate in candidates {
        let days = policy(
            bus,
            &mut policies,
            &candidate.tenant,
            &candidate.environment_id,
        )
        .await?
        .closed_incident_retention_days;
        if candidate.closed_at + chrono::Duration::days(i64::from(days)) > now {
            continue;
        }
        report.visited += 1;
        let mut ctx = CommandContext::new(
            candidate.tenant.clone(),
            Actor::system(Job::Retention.as_str()),
        );
        ctx.correlation_id = correlation_id.to_string();
        let purge = IncidentCommand::PurgeSnapshotPayload {
            retention_days: days,
        };
        match domain
            .incident(&ctx, &candidate.incident_id, purge, false)
            .await
        {
            Ok(_) => {
                report.acted += 1;
                let key = (candidate.tenant.as_str().to_string(), candidate.digest);
                let still_named = referenced.get_mut(&key).map(|n| {
                    *n -= 1;
                    *n > 0
                });
                if still_named == Some(false) {
                    referenced.remove(&key);
                    report.payloads_deleted += payloads.delete(&key.0, &key.1).await?;
                }
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(
                    job = %Job::Retention,
                    tenant = %candidate.tenant.as_str(),
                    incident = %candidate.incident_id,
                    %error,
                    "scheduled run failed for an incident"
                );
            }
        }
    }

    report.payloads_deleted += payloads
        .delete_unreferenced(now - UNREFERENCED_SNAPSHOT_GRACE, |tenant, digest| {
            referenced.contains_key(&(tenant.to_string(), digest.to_string()))
        })
        .await?;
    let mut prune = Sql::new(Dialect::of(store));
    let before = prune.arg(fmt_time(now - super::TICK_HISTORY));
    prune.push(&format!(
        "DELETE FROM scheduler_ticks WHERE started_at < {before}"
    ));
    prune.execute(store).await?;
    // Webhook deliveries made: their record is kept for DELIVERY_HISTORY (what is
    // not delivered yet is the queue, and stays).
    let mut deliveries = Sql::new(Dialect::of(store));
    let before = deliveries.arg(fmt_time(now - DELIVERY_HISTORY));
    deliveries.push(&format!(
        "DELETE FROM webhook_deliveries WHERE status = 'delivered' AND delivered_at < {before}"
    ));
    report.deliveries_deleted += deliveries.execute(store).await?;
    Ok(report)
}

/// How long a delivered webhook delivery stays listed in `webhookDeliveries`.
pub const DELIVERY_HISTORY: chrono::Duration = chrono::Duration::days(30);

/// The policy in force for an environment, from the drift-policy aggregates: the
/// environment's own, else the tenant's, else the default.
async fn policy(
    bus: &CommandBus,
    cache: &mut HashMap<(String, String), DriftPolicySettings>,
    tenant: &TenantId,
    environment_id: &str,
) -> Result<DriftPolicySettings, SchedulerError> {
    let key = (tenant.as_str().to_string(), environment_id.to_string());
    if let Some(policy) = cache.get(&key) {
        return Ok(*policy);
    }
    let mut scopes = vec![PolicyScope::Tenant];
    if let Ok(scope) = PolicyScope::environment(environment_id) {
        scopes.insert(0, scope);
    }
    let mut found = None;
    for scope in scopes {
        let id = aggregates::kernel::ids::aggregate_id(tenant, &[&scope.local_id()]);
        let policy = bus.load::<DriftPolicy>(&id).await?.into_state();
        if let Some(settings) = policy.recorded() {
            found = Some(*settings);
            break;
        }
    }
    let policy = found.unwrap_or_default();
    cache.insert(key, policy);
    Ok(policy)
}
