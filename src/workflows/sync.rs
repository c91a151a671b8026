//! Environment sync (n8n → store) and repository sync (Git → store), DOMAIN.md §4.
//!
//! A sync compares what it reads with the read models first and sends a command only
//! for what changed, so a sync that finds nothing new appends nothing (and costs one
//! read of n8n or Git and two queries). Commands go through the aggregates as always:
//! the read models only decide which commands are worth sending.

use std::collections::{HashMap, HashSet};

use aggregates::canonical::CanonicalCommand;
use aggregates::content::{content_hash, ContentError, ContentHash};
use aggregates::environment::{
    Environment, EnvironmentCommand, GitProvider, KnownCredential, SyncKind, MAX_KNOWN_CREDENTIALS,
};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::{LocalId, Slug};
use aggregates::mapping::{MappingCommand, MappingStatus, Observation};
use chrono::{DateTime, SubsecRound as _, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::command::bus::{authorize, UseCase};
use crate::command::bus::{CommandContext, CommandError};
use crate::connectors::git::{GitHubRepository, GitRepository, LocalGitRepository};
use crate::connectors::n8n::N8nClient;
use crate::connectors::UpstreamError;
use crate::storage::secrets::SecretError;
use crate::AppContext;

/// Commands a sync runs at the same time.
const CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Query(#[from] projections::query::QueryError),
    #[error(transparent)]
    Wait(#[from] projections::runtime::WaitError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl From<DomainError> for SyncError {
    fn from(e: DomainError) -> Self {
        SyncError::Command(e.into())
    }
}

/// What an environment sync saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnvironmentSyncReport {
    pub workflows_seen: u32,
    pub discovered: u32,
    pub changed: u32,
    pub linked: u32,
    pub missing: u32,
    /// Content hashes that more than one canonical workflow claims: never linked on.
    pub collisions: Vec<String>,
    /// Workflows n8n returned that cannot be recorded (no id, not a workflow).
    pub rejected: Vec<String>,
    pub events: u32,
    pub position: Option<i64>,
}

/// Records that a sync could not read n8n or Git, then hands the error back.
async fn record_failure(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
    kind: SyncKind,
    error: UpstreamError,
) -> SyncError {
    let command = EnvironmentCommand::RecordSyncFailure {
        kind,
        cause: error.to_string(),
    };
    if let Err(e) = services
        .domain
        .environment(ctx, environment_id, command)
        .await
    {
        tracing::warn!(error = %e, "cannot record a failed sync");
    }
    SyncError::Upstream(error)
}

/// Runs mapping commands of one environment, [`CONCURRENCY`] at a time.
async fn run_mapping_commands(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
    commands: Vec<(LocalId, MappingCommand)>,
) -> Vec<Result<crate::command::bus::Committed<aggregates::mapping::WorkflowMapping>, CommandError>>
{
    let domain = &services.domain;
    futures::stream::iter(commands)
        .map(|(n8n_id, command)| async move {
            domain.mapping(ctx, environment_id, &n8n_id, command).await
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Records a sync of `kind` on the environment. Called only when the sync changed
/// something, clears an earlier failure or is the first that succeeded: a later
/// sync that finds nothing new appends nothing. Returns the events appended and the position of the last one.
async fn record_sync(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
    kind: SyncKind,
    workflows_seen: u32,
) -> Result<(u32, Option<i64>), SyncError> {
    let committed = services
        .domain
        .environment(
            ctx,
            environment_id,
            EnvironmentCommand::RecordSync {
                kind,
                workflows_seen,
            },
        )
        .await?;
    Ok((committed.events.len() as u32, committed.position))
}

/// The environment, which must exist and be active.
pub(crate) async fn environment(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
) -> Result<Environment, SyncError> {
    let aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[environment_id]);
    let environment = services
        .domain
        .bus()
        .load::<Environment>(&aggregate)
        .await?
        .into_state();
    if !environment.registered {
        return Err(DomainError::NotFound {
            kind: "environment",
            id: environment_id.to_string(),
        }
        .into());
    }
    if environment.status != aggregates::environment::EnvironmentStatus::Active {
        return Err(
            DomainError::validation("environment_id", "the environment is deactivated").into(),
        );
    }
    Ok(environment)
}

/// The n8n client of an environment, with its stored API key.
pub async fn n8n_client(
    services: &AppContext,
    ctx: &CommandContext,
    environment: &Environment,
) -> Result<N8nClient, SyncError> {
    let key = match &environment.n8n_secret_ref {
        Some(id) => services.secrets.get(&ctx.tenant, id).await?,
        None => None,
    };
    let key = key.ok_or_else(|| {
        DomainError::validation(
            "n8n_api_key",
            "the environment has no n8n API key (updateEnvironment sets one)",
        )
    })?;
    Ok(N8nClient::new(
        &environment.n8n_base_url,
        key.expose(),
        services.retry,
    )?)
}

/// One workflow as n8n returned it, reduced to what the store records.
#[derive(Debug, Clone)]
pub struct Seen {
    pub(crate) id: LocalId,
    pub(crate) observation: Observation,
}

/// The id n8n lists a workflow under (very old instances used numbers).
pub(crate) fn listed_id(workflow: &Value) -> Option<String> {
    match workflow.get("id") {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    }
}

/// Why a workflow n8n listed, or a file Git holds, cannot be recorded. A sync skips
/// it and lists the reason in its report (`rejected`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejected {
    #[error("{path}: not JSON ({reason})")]
    NotJson { path: String, reason: String },
    #[error("{path}: not a workflow ({source})")]
    NotAWorkflow { path: String, source: ContentError },
    #[error("a workflow without an id")]
    NoId,
    #[error("workflow id {0:?} is not a valid id")]
    InvalidId(String),
    #[error("workflow {0} has no name")]
    NoName(LocalId),
    #[error("workflow {id} cannot be hashed: {source}")]
    Unhashable { id: LocalId, source: ContentError },
}

/// A workflow file from Git and its content hash, or why it is not one.
pub(crate) fn git_workflow(path: &str, content: &[u8]) -> Result<(Value, ContentHash), Rejected> {
    let workflow: Value = serde_json::from_slice(content).map_err(|e| Rejected::NotJson {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    let hash = content_hash(&workflow).map_err(|source| Rejected::NotAWorkflow {
        path: path.to_string(),
        source,
    })?;
    Ok((workflow, hash))
}

/// A listed workflow as a sync records it, or why it cannot be used (a shape n8n
/// never produces: no id, no name, nodes that are not a list…).
pub(crate) fn seen(workflow: &Value) -> Result<Seen, Rejected> {
    let id = listed_id(workflow).ok_or(Rejected::NoId)?;
    let id = LocalId::parse(&id).map_err(|_| Rejected::InvalidId(id))?;
    let name = workflow
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejected::NoName(id.clone()))?
        .to_string();
    let content_hash = content_hash(workflow).map_err(|source| Rejected::Unhashable {
        id: id.clone(),
        source,
    })?;
    let n8n_updated_at = workflow
        .get("updatedAt")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Seen {
        id,
        observation: Observation {
            name,
            content_hash,
            n8n_updated_at,
        },
    })
}

/// The hash registry of DOMAIN.md §3: content hash → the canonical workflows whose
/// Git version has it. A hash with more than one is a collision, never linked on.
fn registry(rows: &[projections::models::matrix::MatrixRow]) -> HashMap<String, Vec<String>> {
    let mut registry: HashMap<String, Vec<String>> = HashMap::new();
    for row in rows {
        if let (Some(hash), Some(id)) = (&row.git_content_hash, &row.canonical_id) {
            registry.entry(hash.clone()).or_default().push(id.clone());
        }
    }
    registry
}

/// What the read models record of the environment's mappings and of the tenant's
/// canonical workflows, once the matrix has applied every event committed so far.
/// A sync reads them while it reads n8n or Git (the commands it sends decide under
/// concurrency in any case: the read models only choose which to send).
async fn recorded(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
) -> Result<
    (
        Vec<projections::models::matrix::MatrixCell>,
        Vec<projections::models::matrix::MatrixRow>,
    ),
    SyncError,
> {
    services
        .catch_up(&[projections::models::matrix::NAME])
        .await?;
    let tenant = ctx.tenant.as_str();
    Ok(tokio::try_join!(
        projections::models::matrix::environment_cells(
            &services.store,
            tenant,
            environment_id.as_str()
        ),
        projections::models::matrix::canonical_rows(&services.store, tenant),
    )?)
}

/// Reads every workflow of the environment's n8n and records what changed: new
/// workflows (auto-linked when the hash registry names exactly one live canonical
/// workflow the environment has not linked yet), changed content or names, and
/// workflows gone from n8n (missing). Nothing new: nothing appended.
pub async fn sync_environment(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
) -> Result<EnvironmentSyncReport, SyncError> {
    let environment = environment(services, ctx, environment_id).await?;
    let client = n8n_client(services, ctx, &environment).await?;
    authorize(ctx, &UseCase::SyncEnvironment)?;
    // hashed page by page while the next page arrives; of each workflow only what
    // the sync records is kept. The read models are read meanwhile.
    let listing = client.list_workflow_texts_with(|text| {
        let listed = services.n8n_reads.summary(&text);
        (listed.id.clone(), listed)
    });
    let (workflows, recorded) = tokio::join!(listing, recorded(services, ctx, environment_id));
    let workflows = match workflows {
        Ok(workflows) => workflows,
        Err(error) => {
            return Err(
                record_failure(services, ctx, environment_id, SyncKind::Environment, error).await,
            )
        }
    };
    let (cells, canonicals) = recorded?;
    let registry = registry(&canonicals);
    let linked: HashSet<String> = cells
        .iter()
        .filter(|c| c.status == MappingStatus::Linked)
        .filter_map(|c| c.canonical_id.clone())
        .collect();
    let cells: HashMap<String, projections::models::matrix::MatrixCell> = cells
        .into_iter()
        .map(|c| (c.n8n_workflow_id.clone(), c))
        .collect();

    let mut report = EnvironmentSyncReport {
        workflows_seen: workflows.len() as u32,
        ..Default::default()
    };
    // what the workflows reference is what this n8n is known to hold
    let mut referenced: Vec<KnownCredential> = Vec::new();
    let mut commands = Vec::new();
    let mut present = HashSet::new();
    let mut collisions = HashSet::new();
    for listed in &workflows {
        referenced.extend(listed.credentials.iter().cloned());
        let seen = match &listed.seen {
            Ok(seen) => seen,
            Err(reason) => {
                // n8n still lists it: it is not gone, so what was recorded of it
                // stays as it is (it must not be marked missing because this one
                // answer cannot be used)
                if let Some(id) = &listed.id {
                    present.insert(id.clone());
                }
                report.rejected.push(reason.to_string());
                continue;
            }
        };
        present.insert(seen.id.to_string());
        let cell = cells.get(seen.id.as_str());
        let unchanged = cell.is_some_and(|cell| {
            cell.status != MappingStatus::Missing
                && cell.name == seen.observation.name
                && cell.env_content_hash.as_deref() == Some(seen.observation.content_hash.as_str())
                // the read model keeps times to the microsecond
                && cell.env_changed_at
                    == seen
                        .observation
                        .n8n_updated_at
                        .map(|t| t.trunc_subsecs(6))
        });
        if unchanged {
            continue;
        }
        let candidates = registry
            .get(seen.observation.content_hash.as_str())
            .cloned()
            .unwrap_or_default();
        if candidates.len() > 1 {
            collisions.insert(seen.observation.content_hash.as_str().to_string());
        }
        // auto-link: exactly one live canonical, not linked in this environment yet
        // (the link slot decides under concurrency)
        let auto_link = match candidates.as_slice() {
            [only] if !linked.contains(only) => LocalId::parse(only.as_str()).ok(),
            _ => None,
        };
        match cell {
            None => report.discovered += 1,
            Some(_) => report.changed += 1,
        }
        commands.push((
            seen.id.clone(),
            MappingCommand::Observe {
                environment_id: environment_id.clone(),
                n8n_workflow_id: seen.id.clone(),
                observation: seen.observation.clone(),
                auto_link,
            },
        ));
    }
    for (n8n_id, cell) in &cells {
        if !present.contains(n8n_id) && !matches!(cell.status.as_str(), "missing" | "deleted") {
            if cell.status == MappingStatus::Ignored && cell.env_content_hash.is_none() {
                continue;
            }
            report.missing += 1;
            commands.push((
                LocalId::parse(n8n_id.as_str())?,
                MappingCommand::ObserveMissing,
            ));
        }
    }
    report.collisions = collisions.into_iter().collect();
    report.collisions.sort();

    let results = run_mapping_commands(services, ctx, environment_id, commands).await;
    for result in results {
        let committed = result?;
        report.events += committed.events.len() as u32;
        if committed.events.iter().any(|(_, e)| {
            matches!(
                e.status_change(),
                Some((_, aggregates::mapping::MappingStatus::Linked))
            )
        }) {
            report.linked += 1;
        }
        report.position = report.position.max(committed.position);
    }
    let (credentials, left_out) = KnownCredential::set_of(referenced);
    if left_out > 0 {
        tracing::warn!(
            environment = environment_id.as_str(),
            left_out,
            kept = MAX_KNOWN_CREDENTIALS,
            "more credentials referenced than are kept"
        );
    }
    if credentials != environment.known_credentials {
        let committed = services
            .domain
            .environment(
                ctx,
                environment_id,
                EnvironmentCommand::RecordCredentials { credentials },
            )
            .await?;
        report.events += committed.events.len() as u32;
        report.position = report.position.max(committed.position);
    }
    // nothing new, no failure to clear, and synced before: nothing appended (the
    // first successful sync is recorded even when it finds nothing)
    if report.events > 0
        || environment.last_sync_error.is_some()
        || environment.last_sync_at.is_none()
    {
        let (events, position) = record_sync(
            services,
            ctx,
            environment_id,
            SyncKind::Environment,
            report.workflows_seen,
        )
        .await?;
        report.events += events;
        report.position = report.position.max(position);
    }
    Ok(report)
}

/// What a repository sync saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepositorySyncReport {
    /// The commit the folder was read at.
    pub commit_sha: String,
    /// Workflow files (`{slug}.json`, sidecars not counted).
    pub files_seen: u32,
    pub created: u32,
    pub renamed: u32,
    /// Canonical workflows whose Git content changed.
    pub updated: u32,
    /// Linked mappings of this environment given the new Git hash.
    pub mappings_updated: u32,
    /// Files that cannot be used, and why (not JSON, a bad sidecar, …).
    pub rejected: Vec<String>,
    pub events: u32,
    pub position: Option<i64>,
}

/// The sidecar next to `{slug}.json`: `{slug}.wfo.json`.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct Sidecar {
    pub canonical_id: String,
    #[serde(default)]
    pub canonical_slug: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

pub const SIDECAR_SUFFIX: &str = ".wfo.json";

/// The Git repository of an environment, with its stored token.
pub async fn git_repository(
    services: &AppContext,
    ctx: &CommandContext,
    environment: &Environment,
) -> Result<(Box<dyn GitRepository>, aggregates::environment::GitTarget), SyncError> {
    let git = environment.git.clone().ok_or_else(|| {
        DomainError::validation("git", "the environment has no Git repository configured")
    })?;
    let config =
        |e: crate::connectors::git::GitConfigError| DomainError::validation("git", e.to_string());
    let repository: Box<dyn GitRepository> = match git.provider {
        GitProvider::Github => {
            let token = match &environment.git_secret_ref {
                Some(id) => services.secrets.get(&ctx.tenant, id).await?,
                None => None,
            }
            .ok_or_else(|| {
                DomainError::validation(
                    "git_token",
                    "the environment has no Git token (updateEnvironment sets one)",
                )
            })?;
            Box::new(
                GitHubRepository::new(
                    services.github_api_url.as_deref(),
                    &git.repository,
                    &git.branch,
                    token.expose(),
                    services.retry,
                )
                .map_err(config)?,
            )
        }
        GitProvider::Local => {
            Box::new(LocalGitRepository::new(&git.repository, &git.branch).map_err(config)?)
        }
    };
    Ok((repository, git))
}

/// The environment's Git folder at the branch head. Concurrent reads of one folder
/// with the same credentials share one read ([`GitReads`](super::git_reads::GitReads)).
/// The outer error is the configuration's, the inner one Git's.
pub(crate) async fn read_git_folder(
    services: &AppContext,
    ctx: &CommandContext,
    environment: &Environment,
) -> Result<Result<std::sync::Arc<crate::connectors::git::GitSnapshot>, UpstreamError>, SyncError> {
    let (repository, git) = git_repository(services, ctx, environment).await?;
    let key = format!(
        "{}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{:?}",
        ctx.tenant.as_str(),
        services.github_api_url,
        git.provider,
        git.repository,
        git.branch,
        environment.git_secret_ref,
    );
    Ok(services
        .git_reads
        .read_folder(&key, repository, &git.folder)
        .await)
}

/// Reads the environment's Git folder and records the canonical workflows it holds:
/// new ones (with the sidecar's canonical id and slug), renames, new Git versions,
/// and the Git hash of this environment's linked mappings. Nothing new: nothing
/// appended. A file that cannot be used is reported and skipped; the rest proceeds.
pub async fn sync_repository(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
) -> Result<RepositorySyncReport, SyncError> {
    authorize(ctx, &UseCase::SyncRepository)?;
    let environment = environment(services, ctx, environment_id).await?;
    let (snapshot, recorded) = tokio::join!(
        read_git_folder(services, ctx, &environment),
        recorded(services, ctx, environment_id)
    );
    let snapshot = match snapshot? {
        Ok(snapshot) => snapshot,
        Err(error) => {
            return Err(
                record_failure(services, ctx, environment_id, SyncKind::Repository, error).await,
            )
        }
    };
    let (cells, canonicals) = recorded?;
    let canonicals: HashMap<String, projections::models::matrix::MatrixRow> = canonicals
        .into_iter()
        .filter_map(|row| Some((row.canonical_id.clone()?, row)))
        .collect();
    let files: HashMap<&str, &[u8]> = snapshot
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_slice()))
        .collect();
    let mut report = RepositorySyncReport {
        commit_sha: snapshot.commit_sha.clone(),
        ..Default::default()
    };
    let system = CommandContext {
        tenant: ctx.tenant.clone(),
        actor: aggregates::Actor::system("repository-sync"),
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.causation_id.clone(),
    };
    let mut git_hashes: HashMap<String, ContentHash> = HashMap::new();
    // The canonical id a workflow file of this snapshot names (its sidecar's, else
    // its slug), and the file that holds each canonical id in this sync.
    let names = |path: &str| -> Option<String> {
        files.get(path)?;
        let stem = path.strip_suffix(".json")?;
        match files.get(format!("{stem}{SIDECAR_SUFFIX}").as_str()) {
            Some(bytes) => serde_json::from_slice::<Sidecar>(bytes)
                .ok()
                .map(|s| s.canonical_id),
            None => Some(stem.rsplit('/').next().unwrap_or(stem).to_string()),
        }
    };
    let mut held: HashMap<String, String> = HashMap::new();
    let mut plans = Vec::new();
    for file in &snapshot.files {
        let path = file.path.as_str();
        let Some(slug) = path
            .rsplit('/')
            .next()
            .filter(|name| !name.ends_with(SIDECAR_SUFFIX))
            .and_then(|name| name.strip_suffix(".json"))
        else {
            continue;
        };
        report.files_seen += 1;
        let hashed = match services.git_reads.hashed(file) {
            Ok(hashed) => hashed,
            Err(reason) => {
                report.rejected.push(reason.to_string());
                continue;
            }
        };
        let sidecar_path = format!("{}{SIDECAR_SUFFIX}", &path[..path.len() - ".json".len()]);
        let sidecar = match files.get(sidecar_path.as_str()) {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Sidecar>(bytes) {
                Ok(sidecar) => Some(sidecar),
                Err(e) => {
                    report
                        .rejected
                        .push(format!("{sidecar_path}: not a sidecar ({e})"));
                    continue;
                }
            },
        };
        let canonical_id = match &sidecar {
            Some(sidecar) => LocalId::parse(sidecar.canonical_id.as_str()),
            None => LocalId::parse(slug),
        };
        let Ok(canonical_id) = canonical_id else {
            report
                .rejected
                .push(format!("{path}: the sidecar names an invalid canonical id"));
            continue;
        };
        // Two files naming one canonical workflow (a copied sidecar, say): the file
        // the canonical workflow already records keeps it, else the first by path;
        // the other is reported. Otherwise every sync would move the canonical
        // workflow from one file to the other and back (renames, new Git versions,
        // and the linked mappings given the wrong file's hash).
        let holder = held.get(canonical_id.as_str()).cloned().or_else(|| {
            canonicals
                .get(canonical_id.as_str())
                .and_then(|row| row.git_path.as_deref())
                .filter(|recorded| {
                    *recorded != path && names(recorded).as_deref() == Some(canonical_id.as_str())
                })
                .map(str::to_string)
        });
        if let Some(holder) = holder {
            report.rejected.push(format!(
                "{path}: canonical id {canonical_id} is already held by {holder}"
            ));
            continue;
        }
        held.insert(canonical_id.to_string(), path.to_string());
        let hash = hashed.hash.clone();
        let name = hashed
            .name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(slug)
            .to_string();
        let preferred_slug = sidecar
            .as_ref()
            .and_then(|s| s.canonical_slug.as_deref())
            .unwrap_or(slug);
        let existing = canonicals.get(canonical_id.as_str());
        let mut commands = Vec::new();
        match existing {
            None => {
                commands.push(CanonicalCommand::Create {
                    canonical_id: canonical_id.clone(),
                    name: name.clone(),
                    slug: Slug::parse(preferred_slug).ok(),
                    git_path: Some(path.to_string()),
                });
                report.created += 1;
            }
            Some(row) if row.name != name => {
                commands.push(CanonicalCommand::Rename { name: name.clone() });
                report.renamed += 1;
            }
            Some(_) => {}
        }
        let known = existing.is_some_and(|row| {
            row.git_content_hash.as_deref() == Some(hash.as_str())
                && row.git_path.as_deref() == Some(path)
        });
        if !known {
            commands.push(CanonicalCommand::RecordGitVersion {
                git_content_hash: hash.clone(),
                commit_sha: snapshot.commit_sha.clone(),
                git_path: path.to_string(),
            });
            if existing.is_some() {
                report.updated += 1;
            }
        }
        if commands.is_empty() {
            git_hashes.insert(canonical_id.to_string(), hash);
        } else {
            plans.push((path.to_string(), canonical_id, hash, commands));
        }
    }
    // Each file's commands run in order; files run CONCURRENTLY at a time, so that
    // their appends share group commits. Answers are taken in file order.
    let domain = &services.domain;
    let system = &system;
    let mut runs = futures::stream::iter(plans)
        .map(|(path, canonical_id, hash, commands)| async move {
            let mut committed = Vec::with_capacity(commands.len());
            for command in commands {
                match domain.canonical(system, &canonical_id, command).await {
                    Ok(c) => committed.push((c.events.len() as u32, c.position)),
                    // a refused file is reported; the rest of the sync proceeds
                    Err(CommandError::Refused(e)) => {
                        return (path, canonical_id, hash, committed, Some(Ok(e)))
                    }
                    Err(e) => return (path, canonical_id, hash, committed, Some(Err(e))),
                }
            }
            (path, canonical_id, hash, committed, None)
        })
        .buffered(CONCURRENCY);
    while let Some((path, canonical_id, hash, committed, stopped)) = runs.next().await {
        for (events, position) in committed {
            report.events += events;
            report.position = report.position.max(position);
        }
        match stopped {
            None => {
                // the linked mappings learn only a Git hash the canonical workflow recorded
                git_hashes.insert(canonical_id.to_string(), hash);
            }
            Some(Ok(refusal)) => report.rejected.push(format!("{path}: {refusal}")),
            Some(Err(e)) => return Err(e.into()),
        }
    }
    // this environment's linked mappings learn their canonical workflow's Git hash
    let mut updates = Vec::new();
    for cell in &cells {
        let Some(canonical) = cell.canonical_id.as_deref() else {
            continue;
        };
        let Some(hash) = git_hashes.get(canonical) else {
            continue;
        };
        if cell.status == MappingStatus::Deleted
            || cell.git_content_hash.as_deref() == Some(hash.as_str())
        {
            continue;
        }
        updates.push((
            LocalId::parse(cell.n8n_workflow_id.as_str())?,
            MappingCommand::ObserveGitHash {
                git_content_hash: hash.clone(),
            },
        ));
    }
    let results = run_mapping_commands(services, ctx, environment_id, updates).await;
    for result in results {
        let committed = result?;
        if !committed.events.is_empty() {
            report.mappings_updated += 1;
        }
        report.events += committed.events.len() as u32;
        report.position = report.position.max(committed.position);
    }
    // nothing new, no failure to clear, and synced before: nothing appended
    if report.events > 0
        || environment.last_repository_sync_error.is_some()
        || environment.last_repository_sync_at.is_none()
    {
        let (events, position) = record_sync(
            services,
            ctx,
            environment_id,
            SyncKind::Repository,
            report.files_seen,
        )
        .await?;
        report.events += events;
        report.position = report.position.max(position);
    }
    Ok(report)
}

/// What onboarding did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnboardReport {
    pub canonical_id: String,
    pub slug: String,
    pub git_path: String,
    pub commit_sha: String,
    pub position: Option<i64>,
}

/// Top-level fields of an n8n workflow that belong to the instance, not to the
/// workflow: left out of the file committed to Git (the content hash ignores them).
pub(crate) const INSTANCE_FIELDS: &[&str] = &[
    "id",
    "createdAt",
    "updatedAt",
    "versionId",
    "activeVersionId",
    "activeVersion",
    "triggerCount",
    "shared",
    "scopes",
    "isArchived",
    "active",
    "homeProject",
    "usedCredentials",
];

/// Scenario 4: an untracked workflow becomes a canonical workflow. The workflow is
/// read from n8n, a canonical workflow is created (its slug from the name, with a
/// suffix on a collision), the JSON and its sidecar are committed to the
/// environment's Git folder in one commit, the Git version is recorded, and the
/// mapping is linked.
///
/// The canonical id is derived from the environment and the n8n id, so onboarding
/// again after a failure (Git unreachable, say) picks up where it stopped instead
/// of creating a second canonical workflow.
pub async fn onboard_workflow(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
    n8n_workflow_id: &LocalId,
) -> Result<OnboardReport, SyncError> {
    authorize(ctx, &UseCase::OnboardWorkflow)?;
    let environment = environment(services, ctx, environment_id).await?;
    let mapping_aggregate =
        aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[environment_id, n8n_workflow_id]);
    let mapping = services
        .domain
        .bus()
        .load::<aggregates::mapping::WorkflowMapping>(&mapping_aggregate)
        .await?
        .into_state();
    if !mapping.exists {
        return Err(DomainError::NotFound {
            kind: "workflow mapping",
            id: format!("{environment_id}:{n8n_workflow_id}"),
        }
        .into());
    }
    if mapping.status != aggregates::mapping::MappingStatus::Untracked {
        return Err(DomainError::validation(
            "n8n_workflow_id",
            format!(
                "only an untracked workflow can be onboarded (this one is {})",
                mapping.status
            ),
        )
        .into());
    }
    let (repository, git) = git_repository(services, ctx, &environment).await?;
    let client = n8n_client(services, ctx, &environment).await?;
    let workflow = client.get_workflow(n8n_workflow_id.as_str()).await?;
    let hash = content_hash(&workflow)
        .map_err(|e| DomainError::validation("n8n_workflow_id", format!("not a workflow: {e}")))?;
    let name = workflow
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(mapping.name.as_str())
        .to_string();

    let system = CommandContext {
        tenant: ctx.tenant.clone(),
        actor: aggregates::Actor::system("onboarding"),
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.causation_id.clone(),
    };
    let canonical_id = LocalId::parse(format!("{environment_id}.{n8n_workflow_id}"))?;
    let canonical_aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[&canonical_id]);
    let mut position = None;
    let mut canonical = services
        .domain
        .bus()
        .load::<aggregates::canonical::CanonicalWorkflow>(&canonical_aggregate)
        .await?
        .into_state();
    if !canonical.created {
        let committed = services
            .domain
            .canonical(
                &system,
                &canonical_id,
                CanonicalCommand::Create {
                    canonical_id: canonical_id.clone(),
                    name: name.clone(),
                    slug: None,
                    git_path: None,
                },
            )
            .await?;
        position = committed.position;
        canonical = committed.state;
    }
    let slug = canonical
        .slug
        .clone()
        .ok_or_else(|| DomainError::validation("slug", "the canonical workflow has no slug"))?;
    let folder = git.folder.trim_matches('/');
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let git_path = format!("{prefix}{}.json", slug.as_str());
    let sidecar_path = format!("{prefix}{}{SIDECAR_SUFFIX}", slug.as_str());
    let mut exported = workflow.clone();
    if let Some(object) = exported.as_object_mut() {
        for field in INSTANCE_FIELDS {
            object.remove(*field);
        }
    }
    let tags: Vec<String> = workflow
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).or(t.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let sidecar = Sidecar {
        canonical_id: canonical_id.to_string(),
        canonical_slug: Some(slug.as_str().to_string()),
        tags,
    };
    let files = vec![
        (git_path.clone(), pretty(&exported)),
        (sidecar_path, pretty(&sidecar)),
    ];
    let message = format!("Onboard {name} from {environment_id}");
    let commit_sha = repository.commit_files(&files, &message).await?;
    let steps: Vec<(LocalId, CanonicalCommand)> = vec![(
        canonical_id.clone(),
        CanonicalCommand::RecordGitVersion {
            git_content_hash: hash.clone(),
            commit_sha: commit_sha.clone(),
            git_path: git_path.clone(),
        },
    )];
    for (id, command) in steps {
        let committed = services.domain.canonical(&system, &id, command).await?;
        position = position.max(committed.position);
    }
    for command in [
        MappingCommand::Link {
            canonical_id: canonical_id.clone(),
        },
        MappingCommand::ObserveGitHash {
            git_content_hash: hash,
        },
    ] {
        let committed = services
            .domain
            .mapping(ctx, environment_id, n8n_workflow_id, command)
            .await?;
        position = position.max(committed.position);
    }
    Ok(OnboardReport {
        canonical_id: canonical_id.to_string(),
        slug: slug.as_str().to_string(),
        git_path,
        commit_sha,
        position,
    })
}

/// JSON as committed to Git: pretty, with a final newline.
pub(crate) fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
