//! The jobs the scheduler runs ([`Scheduler::run`]): drift check, SLA escalation,
//! periodic environment sync, and [`retention`](super::retention) (decided from the
//! log). The engine in [`super`] decides when and where a job runs; this file decides
//! what it does. A failure on one environment or incident is logged and counted; the
//! run goes on with the others.

use std::collections::HashMap;

use aggregates::environment::EnvironmentClass;
use aggregates::incident::{IncidentCommand, SlaState};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::{LocalId, TenantId};
use aggregates::Actor;
use eventstore::Store;
use futures::StreamExt;

use super::{retention, Job, RunReport, Scheduler, SchedulerError};
use crate::command::bus::{CommandContext, CommandError};
use crate::workflows::sync::SyncError;

/// Environments checked or synced at once by one run.
const CONCURRENCY: usize = 4;

impl Scheduler {
    /// The job's work, now (without locking or claiming a slot).
    pub async fn run(&self, job: Job) -> Result<RunReport, SchedulerError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let mut report = match job {
            Job::DriftCheck => self.drift_check(&correlation_id).await?,
            Job::Sla => self.sla(&correlation_id).await?,
            Job::Retention => self.retention(&correlation_id).await?,
            Job::EnvironmentSync => self.environment_sync(&correlation_id).await?,
            Job::Deployments => self.deployments(&correlation_id).await?,
        };
        report.correlation_id = correlation_id;
        Ok(report)
    }

    fn ctx(
        &self,
        tenant: &str,
        job: Job,
        correlation_id: &str,
    ) -> Result<CommandContext, DomainError> {
        let tenant = TenantId::parse(tenant)?;
        let mut ctx = CommandContext::new(tenant, Actor::system(job.as_str()));
        ctx.correlation_id = correlation_id.to_string();
        Ok(ctx)
    }

    /// Runs `work` for each environment `applies` accepts, a few at a time.
    async fn per_environment<F, Fut>(
        &self,
        job: Job,
        correlation_id: &str,
        applies: impl Fn(&projections::models::environments::EnvironmentRow) -> bool,
        work: F,
    ) -> Result<RunReport, SchedulerError>
    where
        F: Fn(CommandContext, LocalId) -> Fut,
        Fut: std::future::Future<Output = Result<(), SyncError>>,
    {
        let services = &self.inner.services;
        services
            .catch_up(&[projections::models::environments::NAME])
            .await?;
        let environments = projections::models::environments::active_environments(&services.store)
            .await?
            .into_iter()
            .filter(|row| applies(row))
            .collect::<Vec<_>>();
        let mut report = RunReport {
            visited: environments.len() as u64,
            ..Default::default()
        };
        let results = futures::stream::iter(environments)
            .map(|row| {
                let ctx = self.ctx(&row.tenant, job, correlation_id);
                let id = LocalId::parse(row.environment_id.as_str());
                let work = &work;
                async move {
                    let outcome = match (ctx, id) {
                        (Ok(ctx), Ok(id)) => work(ctx, id).await,
                        (Err(e), _) | (_, Err(e)) => Err(SyncError::from(e)),
                    };
                    (row, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (row, outcome) in results {
            match outcome {
                Ok(()) => report.acted += 1,
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(
                        %job,
                        tenant = %row.tenant,
                        environment = %row.environment_id,
                        %error,
                        "scheduled run failed for an environment"
                    );
                }
            }
        }
        Ok(report)
    }

    /// The deployment sweep ([`crate::workflows::deployment::sweep`]).
    async fn deployments(&self, correlation_id: &str) -> Result<RunReport, SchedulerError> {
        let services = &self.inner.services;
        services
            .catch_up(&[
                projections::models::deployments::NAME,
                projections::models::environments::NAME,
            ])
            .await?;
        let stale_after = chrono::Duration::from_std(services.deployment_stale_after)
            .unwrap_or(chrono::Duration::hours(1));
        let swept =
            crate::workflows::deployment::sweep(services, correlation_id, stale_after).await?;
        Ok(RunReport {
            visited: u64::from(swept.started + swept.waiting + swept.stale + swept.failed),
            acted: u64::from(swept.started + swept.stale + swept.slots_freed),
            failed: u64::from(swept.failed),
            ..Default::default()
        })
    }

    /// Drift check of every active non-dev environment with Git configured.
    async fn drift_check(&self, correlation_id: &str) -> Result<RunReport, SchedulerError> {
        let services = &self.inner.services;
        self.per_environment(
            Job::DriftCheck,
            correlation_id,
            |row| row.class != EnvironmentClass::Dev && row.git_configured,
            |ctx, id| async move {
                crate::workflows::drift::check_drift(services, &ctx, &id)
                    .await
                    .map(|_| ())
            },
        )
        .await
    }

    /// Repository sync (where Git is configured), then environment sync, of every
    /// active environment.
    async fn environment_sync(&self, correlation_id: &str) -> Result<RunReport, SchedulerError> {
        let services = &self.inner.services;
        self.per_environment(
            Job::EnvironmentSync,
            correlation_id,
            |_| true,
            |ctx, id| async move {
                let git = crate::workflows::sync::environment(services, &ctx, &id)
                    .await?
                    .git
                    .is_some();
                if git {
                    crate::workflows::sync::sync_repository(services, &ctx, &id).await?;
                }
                crate::workflows::sync::sync_environment(services, &ctx, &id)
                    .await
                    .map(|_| ())
            },
        )
        .await
    }

    /// Moves open incidents' SLA state (where their policy enforces the SLA).
    async fn sla(&self, correlation_id: &str) -> Result<RunReport, SchedulerError> {
        let services = &self.inner.services;
        services
            .catch_up(&[projections::models::incidents::NAME])
            .await?;
        let now = services.domain.bus().clock().now();
        let mut report = RunReport::default();
        let mut policies = PolicyCache::default();
        for row in projections::models::incidents::sla_candidates(&services.store).await? {
            let due = SlaState::at(row.detected_at, row.sla_deadline, now) > row.sla_state;
            if !due {
                continue;
            }
            report.visited += 1;
            let policy = policies
                .get(&services.store, &row.tenant, &row.environment_id)
                .await?;
            if !policy.enforce_sla {
                continue;
            }
            let result = self
                .incident_command(&row, Job::Sla, correlation_id, IncidentCommand::EvaluateSla)
                .await;
            count(&mut report, Job::Sla, &row, result);
        }
        Ok(report)
    }

    /// See [`retention`]: decided from the log, never from a read model.
    async fn retention(&self, correlation_id: &str) -> Result<RunReport, SchedulerError> {
        retention::run(&self.inner.services.domain, correlation_id).await
    }

    async fn incident_command(
        &self,
        row: &projections::models::incidents::IncidentRow,
        job: Job,
        correlation_id: &str,
        command: IncidentCommand,
    ) -> Result<(), CommandError> {
        let ctx = self.ctx(&row.tenant, job, correlation_id)?;
        let id = LocalId::parse(row.incident_id.as_str())?;
        self.inner
            .services
            .domain
            .incident(&ctx, &id, command, false)
            .await
            .map(|_| ())
    }
}

fn count(
    report: &mut RunReport,
    job: Job,
    row: &projections::models::incidents::IncidentRow,
    result: Result<(), CommandError>,
) {
    match result {
        Ok(()) => report.acted += 1,
        Err(error) => {
            report.failed += 1;
            tracing::warn!(
                %job,
                tenant = %row.tenant,
                incident = %row.incident_id,
                %error,
                "scheduled run failed for an incident"
            );
        }
    }
}

/// Effective drift policies by (tenant, environment), read once per run.
#[derive(Default)]
struct PolicyCache(HashMap<(String, String), aggregates::policy::DriftPolicySettings>);

impl PolicyCache {
    async fn get(
        &mut self,
        store: &Store,
        tenant: &str,
        environment_id: &str,
    ) -> Result<aggregates::policy::DriftPolicySettings, SchedulerError> {
        let key = (tenant.to_string(), environment_id.to_string());
        if let Some(policy) = self.0.get(&key) {
            return Ok(*policy);
        }
        let policy =
            projections::models::policies::drift_policy(store, tenant, Some(environment_id))
                .await?
                .policy;
        self.0.insert(key, policy);
        Ok(policy)
    }
}
