//! Wiring of the read side into the service: the projector that runs with `serve`,
//! and `workflowops rebuild`.

use std::time::Instant;

use anyhow::bail;
use projections::rebuild::{RebuildOptions, RebuildProgress};
use projections::{Projector, ProjectorHandle, ProjectorOptions};
use serde::Serialize;

use eventstore::Store;

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
    /// PostgreSQL: readying the shadow's tables to be moved into place (their
    /// secondary indexes built, analyzed) after the replay, before the swap (0 on
    /// SQLite).
    pub prepare_seconds: f64,
    /// The swap transaction: how long the live checkpoint rows were locked (serving
    /// projectors wait; on PostgreSQL queries of a moved table wait for the commit,
    /// on SQLite they never do).
    pub swap_seconds: f64,
    /// PostgreSQL: the tables the swap moved into place.
    pub tables_moved: u32,
    /// SQLite: live rows the swap deleted or inserted (0 when the rebuilt read models
    /// equal the live ones; always 0 on PostgreSQL, which moves tables).
    pub rows_copied: u64,
}

/// Rebuilds the named read models (all when `names` is empty) from position 0 into a
/// shadow and swaps them in with one transaction: safe while services run, which keep
/// answering from the complete old read models until the swap commits.
pub async fn rebuild(store: &Store, names: &[String]) -> anyhow::Result<RebuildReport> {
    rebuild_with(store, names, RebuildOptions::default()).await
}

/// [`rebuild`] with its tuning (batch size, a progress hook).
pub async fn rebuild_with(
    store: &Store,
    names: &[String],
    mut options: RebuildOptions,
) -> anyhow::Result<RebuildReport> {
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
    if options.on_progress.is_none() {
        options.on_progress = Some(std::sync::Arc::new(|progress: Vec<RebuildProgress>| {
            if let Some(first) = progress.iter().min_by_key(|p| p.position) {
                tracing::info!(
                    position = first.position,
                    target = first.target,
                    events = first.events,
                    "rebuilding"
                );
            }
            Box::pin(async {})
        }));
    }
    let started = Instant::now();
    let outcome = projections::rebuild::rebuild(store, selected, options).await?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        events = outcome.events,
        replay_seconds = outcome.replay_seconds,
        swap_seconds = outcome.swap_seconds,
        swap_attempts = outcome.swap_attempts,
        prepare_seconds = outcome.prepare_seconds,
        tables_moved = outcome.tables_moved,
        rows_copied = outcome.rows_copied,
        maintenance_seconds = outcome.maintenance_seconds,
        "rebuilt and swapped in"
    );
    Ok(RebuildReport {
        projections: names,
        events: outcome.events,
        seconds,
        events_per_second: outcome.events as f64 / seconds.max(1e-9),
        prepare_seconds: outcome.prepare_seconds,
        swap_seconds: outcome.swap_seconds,
        tables_moved: outcome.tables_moved,
        rows_copied: outcome.rows_copied,
    })
}
