//! Schedulers (DOMAIN.md §6): drift check, TTL/SLA escalation, retention and an
//! optional periodic environment sync, each at its own configurable interval.
//!
//! Time is cut into slots of one interval, counted from the Unix epoch, so every
//! process agrees on them. At each slot boundary a process tries the job's tick:
//!
//! 1. On PostgreSQL it takes the job's advisory lock ([`PooledLock`]) on a
//!    connection it holds for the run: while one process runs a job, no other runs
//!    the same job, even when a run outlasts its interval. A busy lock skips.
//! 2. It claims the slot: `INSERT INTO scheduler_ticks (job, slot, …) ON CONFLICT DO
//!    NOTHING`. Only the process whose insert landed runs the tick, so each tick runs
//!    once across processes even when they do not overlap in time (and on SQLite,
//!    where there is no advisory lock).
//! 3. It runs the job, records how it ended on the tick's row, and unlocks.
//!
//! Every run has one correlation id, shared by all the events it causes, and acts as
//! `system:<job>`. A failure on one environment or incident is logged and counted;
//! the run goes on with the others.

mod jobs;
pub mod retention;
pub mod sealer;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use eventstore::sql::{fmt_time, Dialect, Sql};
use serde::Serialize;

use crate::AppContext;
use eventstore::locks::PooledLock;

/// Payloads no incident refers to are deleted after this long.
const UNREFERENCED_SNAPSHOT_GRACE: chrono::Duration = chrono::Duration::days(1);
/// Tick rows are kept this long (they say which process ran what, and how it ended).
const TICK_HISTORY: chrono::Duration = chrono::Duration::days(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    DriftCheck,
    Sla,
    Retention,
    EnvironmentSync,
    Deployments,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::DriftCheck,
        Job::Sla,
        Job::Retention,
        Job::EnvironmentSync,
        Job::Deployments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::DriftCheck => "drift_check",
            Job::Sla => "sla",
            Job::Retention => "retention",
            Job::EnvironmentSync => "environment_sync",
            Job::Deployments => "deployments",
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often each job runs; `None` turns a job off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub drift_check: Option<Duration>,
    pub sla: Option<Duration>,
    pub retention: Option<Duration>,
    pub environment_sync: Option<Duration>,
    /// Due scheduled deployments, stale ones, orphaned promotion slots.
    pub deployments: Option<Duration>,
}

impl Default for Intervals {
    /// DOMAIN.md §6: drift 5 min, TTL/SLA 1 min, deployments 10 s, retention
    /// daily, sync off.
    fn default() -> Self {
        Intervals {
            drift_check: Some(Duration::from_secs(5 * 60)),
            sla: Some(Duration::from_secs(60)),
            retention: Some(Duration::from_secs(24 * 3600)),
            environment_sync: None,
            deployments: Some(Duration::from_secs(10)),
        }
    }
}

impl Intervals {
    /// Every job off (tests drive ticks by hand).
    pub fn off() -> Intervals {
        Intervals {
            drift_check: None,
            sla: None,
            retention: None,
            environment_sync: None,
            deployments: None,
        }
    }

    pub fn of(&self, job: Job) -> Option<Duration> {
        match job {
            Job::DriftCheck => self.drift_check,
            Job::Sla => self.sla,
            Job::Retention => self.retention,
            Job::EnvironmentSync => self.environment_sync,
            Job::Deployments => self.deployments,
        }
    }
}

/// What one run of a job did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Environments or incidents the job looked at.
    pub visited: u64,
    /// … of which it changed something for (checked, escalated, purged, synced).
    pub acted: u64,
    /// … of which failed (logged with their cause).
    pub failed: u64,
    /// Payloads deleted (retention).
    #[serde(skip_serializing_if = "is_zero")]
    pub payloads_deleted: u64,
    /// Delivered webhook deliveries older than the history kept (retention).
    #[serde(skip_serializing_if = "is_zero")]
    pub deliveries_deleted: u64,
    /// The correlation id of the run's events.
    pub correlation_id: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How one tick attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    Ran(RunReport),
    /// Another process runs this job right now (its advisory lock is held).
    Busy,
    /// Another process already ran this slot.
    AlreadyRun,
}

/// Per-process counts of tick attempts (also in `/metrics`).
#[derive(Debug, Default)]
pub struct TickCounts {
    pub ran: AtomicU64,
    pub busy: AtomicU64,
    pub already_run: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Query(#[from] projections::query::QueryError),
    #[error("read models: {0}")]
    Wait(#[from] projections::runtime::WaitError),
    #[error("job panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
    #[error(transparent)]
    Command(#[from] crate::command::bus::CommandError),
}

/// The running job loops of [`Scheduler::start`].
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops the loops: each finishes the tick it is running (for up to `grace`; then
    /// it is aborted, and its slot stays claimed without an outcome).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// The schedulers of one process.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    services: AppContext,
    /// Names this process in `scheduler_ticks`.
    instance: String,
    counts: HashMap<Job, TickCounts>,
}

impl Scheduler {
    /// The schedulers over `context` (its store, domain, read models, connectors'
    /// settings and metrics).
    pub fn new(context: AppContext) -> Scheduler {
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Scheduler {
            inner: Arc::new(Inner {
                services: context,
                instance,
                counts: Job::ALL
                    .iter()
                    .map(|j| (*j, TickCounts::default()))
                    .collect(),
            }),
        }
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn counts(&self, job: Job) -> &TickCounts {
        &self.inner.counts[&job]
    }

    /// Starts one task per enabled job; each ticks at its slot boundaries until
    /// [`Running::stop`].
    pub fn start(&self, intervals: Intervals) -> Running {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = Job::ALL
            .iter()
            .filter_map(|&job| Some((job, intervals.of(job)?)))
            .filter(|(_, every)| !every.is_zero())
            .map(|(job, every)| {
                let scheduler = self.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { scheduler.every(job, every, stopped).await })
            })
            .collect();
        Running { tasks, stop }
    }

    async fn every(
        self,
        job: Job,
        every: Duration,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
        tracing::info!(%job, every_ms, "scheduler started");
        loop {
            let now = Utc::now().timestamp_millis();
            let slot = now / every_ms + 1;
            let wait = u64::try_from(slot.saturating_mul(every_ms) - now).unwrap_or(0);
            // stopping waits for a tick in progress, never interrupts it
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            match self.tick(job, slot).await {
                Ok(Tick::Ran(report)) => tracing::info!(%job, slot, ?report, "tick ran"),
                Ok(other) => tracing::debug!(%job, slot, outcome = ?other, "tick skipped"),
                Err(error) => {
                    self.inner.counts[&job]
                        .errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.inner
                        .services
                        .metrics
                        .scheduler_tick(job.as_str(), "error");
                    tracing::warn!(%job, slot, %error, "tick failed")
                }
            }
        }
    }

    /// One tick of `job` for `slot`: lock, claim, run, record (see the module docs).
    pub async fn tick(&self, job: Job, slot: i64) -> Result<Tick, SchedulerError> {
        let Some(lock) = PooledLock::try_take(&self.inner.services.store, &lock_key(job)).await?
        else {
            return Ok(self.skipped(job, Tick::Busy));
        };
        let outcome = self.claimed_run(job, slot).await;
        lock.release().await;
        outcome
    }

    async fn claimed_run(&self, job: Job, slot: i64) -> Result<Tick, SchedulerError> {
        let store = &self.inner.services.store;
        let mut claim = Sql::new(Dialect::of(store));
        let args = [
            claim.arg(job.as_str()),
            claim.arg(slot),
            claim.arg(self.inner.instance.as_str()),
            claim.arg(fmt_time(Utc::now())),
        ];
        claim.push(&format!(
            "INSERT INTO scheduler_ticks (job, slot, instance, started_at) VALUES ({}) \
             ON CONFLICT (job, slot) DO NOTHING",
            args.join(", ")
        ));
        if claim.execute(store).await? == 0 {
            return Ok(self.skipped(job, Tick::AlreadyRun));
        }
        // a panic in a job must not leave the lock held: run it as its own task
        let scheduler = self.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move { scheduler.run(job).await }));
        let run = (&mut task.0).await;
        let (outcome, result) = match run {
            Ok(Ok(report)) => (
                serde_json::to_string(&report).unwrap_or_default(),
                Ok(Tick::Ran(report)),
            ),
            Ok(Err(e)) => (format!("error: {e}"), Err(e)),
            Err(e) => (
                format!("error: job panicked: {e}"),
                Err(SchedulerError::Panicked(e.to_string())),
            ),
        };
        let mut finish = Sql::new(Dialect::of(store));
        let (at, text, j, s) = (
            finish.arg(fmt_time(Utc::now())),
            finish.arg(outcome),
            finish.arg(job.as_str()),
            finish.arg(slot),
        );
        finish.push(&format!(
            "UPDATE scheduler_ticks SET finished_at = {at}, outcome = {text} \
             WHERE job = {j} AND slot = {s}"
        ));
        finish.execute(store).await?;
        if let Ok(Tick::Ran(report)) = &result {
            self.inner.counts[&job].ran.fetch_add(1, Ordering::Relaxed);
            let label = if report.failed > 0 { "partial" } else { "ok" };
            self.inner
                .services
                .metrics
                .scheduler_tick(job.as_str(), label);
        }
        result
    }

    fn skipped(&self, job: Job, tick: Tick) -> Tick {
        let (counter, label) = match tick {
            Tick::Busy => (&self.inner.counts[&job].busy, "busy"),
            _ => (&self.inner.counts[&job].already_run, "already_run"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner
            .services
            .metrics
            .scheduler_tick(job.as_str(), label);
        tick
    }
}

/// A job's run, aborted if the tick waiting for it is cancelled (so no run goes on
/// without the lock).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock_key(job: Job) -> String {
    format!("workflowops.scheduler.{}", job.as_str())
}
