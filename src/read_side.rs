//! Wiring of the read side into the service: the projector that runs with `serve`,
//! and `workflowops rebuild`.

use std::time::Instant;

use anyhow::{bail, Context};
use projections::{Projector, ProjectorHandle, ProjectorOptions};
use serde::Serialize;

use crate::store::Store;

/// Starts every read model's projector on the runtime.
pub fn start(
    store: &Store,
    options: ProjectorOptions,
) -> (ProjectorHandle, tokio::task::JoinHandle<()>) {
    Projector::new(store.clone(), projections::all(), options).spawn()
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub projections: Vec<String>,
    /// Events read from the log and applied.
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Projections another process runs: reset here, replayed there.
    pub replayed_elsewhere: Vec<String>,
}

/// Empties the named read models (all when `names` is empty) and replays them from
/// position 0 to the end of the log.
pub async fn rebuild(store: &Store, names: &[String]) -> anyhow::Result<RebuildReport> {
    let names: Vec<String> = if names.is_empty() {
        projections::NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        names.to_vec()
    };
    let mut selected = Vec::new();
    for name in &names {
        match projections::projection(name) {
            Some(p) => selected.push(p),
            None => bail!(
                "unknown projection {name:?}; one of: {}",
                projections::NAMES.join(", ")
            ),
        }
    }
    let tables: Vec<_> = selected.iter().map(|p| (p.name(), p.tables())).collect();
    let started = Instant::now();
    for projection in &selected {
        projections::runtime::reset(store, projection.as_ref())
            .await
            .with_context(|| format!("resetting {}", projection.name()))?;
    }
    let options = ProjectorOptions {
        batch_size: 50000,
        ..ProjectorOptions::default()
    };
    let mut projector = Projector::new(store.clone(), selected, options);
    let events = projector.catch_up().await?;
    for (name, tables) in tables {
        projections::runtime::analyze(store, tables)
            .await
            .with_context(|| format!("analyzing {name}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let replayed_elsewhere = projector
        .handle()
        .status()
        .into_iter()
        .filter(|s| !s.running_here)
        .map(|s| s.name)
        .collect();
    for status in projector.handle().status() {
        if let Some(failure) = status.failed {
            bail!(
                "projection {} stopped at position {} ({}): {}",
                status.name,
                failure.position,
                failure.event,
                failure.error
            );
        }
    }
    Ok(RebuildReport {
        projections: names,
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        replayed_elsewhere,
    })
}

/// Waits (up to `timeout` each) until the named read models have applied every event
/// committed so far — for decisions that read models and must not rest on a stale
/// view (promotion gates, syncs choosing which commands to send).
pub async fn catch_up(
    store: &Store,
    projections: &ProjectorHandle,
    names: &[&str],
    timeout: std::time::Duration,
) -> Result<(), projections::runtime::WaitError> {
    let last = store.last_position().await?;
    for name in names {
        projections.wait_for(name, last, timeout).await?;
    }
    Ok(())
}
