//! The incident page's drift snapshot: what the check that opened the incident saw,
//! and each drifted workflow's diff (nodes added, removed and modified, connections
//! and settings), read from the payload store as the API's `incident { snapshot }`
//! reads it.

use maud::{html, Markup};
use projections::models::incidents::IncidentRow;
use serde::Deserialize;

use crate::http::HttpState;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Snapshot {
    in_sync: u32,
    with_drift: u32,
    not_in_git: u32,
    drifted: Vec<Drifted>,
    not_in_git_workflows: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Drifted {
    workflow_id: String,
    n8n_workflow_id: String,
    name: String,
    matched_by_name: bool,
    diff: Diff,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Diff {
    nodes_added: Vec<String>,
    nodes_removed: Vec<String>,
    nodes_modified: Vec<String>,
    connections_changed: bool,
    settings_changed: bool,
}

/// The incident's drift snapshot, rendered (or why it is not shown).
pub async fn snapshot(state: &HttpState, incident: &IncidentRow) -> Markup {
    let note = |text: &str| html! { p.muted { (text) } };
    let Some(digest) = &incident.snapshot_digest else {
        return note("No drift snapshot was taken for this incident.");
    };
    if incident.payload_purged {
        return note(
            "Retention purged this incident's drift snapshot; its digest stays in the log.",
        );
    }
    match state.context.payloads.get(&incident.tenant, digest).await {
        Ok(Some(payload)) => match serde_json::from_str::<Snapshot>(&payload) {
            Ok(snapshot) => render(&snapshot),
            Err(_) => note("The drift snapshot cannot be read."),
        },
        Ok(None) => note("The drift snapshot is no longer stored."),
        Err(error) => {
            tracing::warn!(%error, "console: a drift snapshot cannot be read");
            note("The drift snapshot cannot be read now; try again in a moment.")
        }
    }
}

fn names(label: &str, names: &[String]) -> Markup {
    html! {
        @if !names.is_empty() {
            li { (label) ": " @for (i, name) in names.iter().enumerate() {
                @if i > 0 { ", " } code { (name) }
            } }
        }
    }
}

fn render(snapshot: &Snapshot) -> Markup {
    html! {
        p { "At detection: " (snapshot.in_sync) " in sync, " (snapshot.with_drift) " drifted, "
            (snapshot.not_in_git) " not in Git." }
        @if snapshot.drifted.is_empty() {
            p.muted { "No workflow differed from Git." }
        }
        @for w in &snapshot.drifted {
            section.diff {
                h3 { (w.name) " " span.muted.hash { (w.workflow_id) } }
                @if w.matched_by_name { p.muted { "Matched to Git by name (n8n id " (w.n8n_workflow_id) ")." } }
                ul {
                    (names("Nodes added in n8n", &w.diff.nodes_added))
                    (names("Nodes removed in n8n", &w.diff.nodes_removed))
                    (names("Nodes modified", &w.diff.nodes_modified))
                    @if w.diff.connections_changed { li { "Connections changed" } }
                    @if w.diff.settings_changed { li { "Settings changed" } }
                    @if w.diff.nodes_added.is_empty() && w.diff.nodes_removed.is_empty()
                        && w.diff.nodes_modified.is_empty() && !w.diff.connections_changed
                        && !w.diff.settings_changed {
                        li { "The content differs outside nodes, connections and settings." }
                    }
                }
            }
        }
        @if !snapshot.not_in_git_workflows.is_empty() {
            p { "Not in Git (n8n ids): " (snapshot.not_in_git_workflows.join(", ")) }
        }
    }
}
