//! Environment: one n8n instance (dev, staging, production), its optional Git folder,
//! the results of its drift checks, and the slot that allows at most one active
//! (non-closed) drift incident at a time.
//!
//! Secrets are never here: the n8n API key and Git token live encrypted in their own
//! table, and the environment only keeps opaque references to them.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, require_text, DomainError};
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentClass {
    #[default]
    Dev,
    Staging,
    Production,
}

crate::state_names!(EnvironmentClass { Dev => "dev", Staging => "staging", Production => "production" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentStatus {
    #[default]
    Active,
    Deactivated,
}

crate::state_names!(EnvironmentStatus { Active => "active", Deactivated => "deactivated" });

impl StateMachine for EnvironmentStatus {
    const MACHINE: &'static str = "environment";
    const ALL: &'static [Self] = &[Self::Active, Self::Deactivated];
    const INITIAL: &'static [Self] = &[Self::Active];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = &[
        (Self::Active, &[Self::Deactivated]),
        (Self::Deactivated, &[Self::Active]),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitProvider {
    Github,
    Local,
}

/// Where an environment's workflows live in Git: `{folder}/{slug}.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitTarget {
    pub provider: GitProvider,
    /// `owner/name` on GitHub, or a local path for a working copy.
    pub repository: String,
    pub branch: String,
    pub folder: String,
}

impl GitTarget {
    fn validate(&self) -> Result<(), DomainError> {
        require_text("git.repository", Some(&self.repository))?;
        require_text("git.branch", Some(&self.branch))?;
        let folder = self.folder.trim_matches('/');
        if folder.split('/').any(|part| part == ".." || part == ".") || self.folder.starts_with('/')
        {
            return Err(DomainError::validation(
                "git.folder",
                "must be a relative path inside the repository",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    Environment,
    Repository,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriftCounts {
    pub in_sync: u32,
    pub with_drift: u32,
    pub not_in_git: u32,
}

/// A credential an environment's n8n holds, as its workflows reference it
/// (`nodes[].credentials.{type}: {id, name}`). n8n 1.x cannot list credentials, so
/// each sync learns them from the references it sees. Not a secret: ids and names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KnownCredential {
    /// The credential type (`slackApi`, `postgres`, …).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
}

impl KnownCredential {
    /// Every credential reference of a workflow as n8n returns it (references
    /// without an id, or without a name, are skipped: nothing to learn from them).
    pub fn referenced_by(workflow: &serde_json::Value) -> Vec<KnownCredential> {
        let nodes = workflow.get("nodes").and_then(serde_json::Value::as_array);
        nodes
            .into_iter()
            .flatten()
            .filter_map(|node| node.get("credentials")?.as_object())
            .flatten()
            .filter_map(|(kind, reference)| {
                Some(KnownCredential {
                    kind: kind.clone(),
                    id: reference.get("id")?.as_str()?.to_string(),
                    name: reference.get("name")?.as_str()?.to_string(),
                })
            })
            .collect()
    }

    /// `credentials` as an environment keeps them: sorted, without duplicates, at
    /// most [`MAX_KNOWN_CREDENTIALS`] (the first ones in order); and how many were
    /// left out.
    pub fn set_of(mut credentials: Vec<KnownCredential>) -> (Vec<KnownCredential>, usize) {
        credentials.sort();
        credentials.dedup();
        let left_out = credentials.len().saturating_sub(MAX_KNOWN_CREDENTIALS);
        credentials.truncate(MAX_KNOWN_CREDENTIALS);
        (credentials, left_out)
    }
}

/// At most this many known credentials per environment (a larger set is cut, in
/// order, and the sync says so in its log).
pub const MAX_KNOWN_CREDENTIALS: usize = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftCheckOutcome {
    Checked {
        counts: DriftCounts,
    },
    /// n8n or Git could not be read. The previous counts are kept.
    Failed {
        cause: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub registered: bool,
    pub name: String,
    pub class: EnvironmentClass,
    pub status: EnvironmentStatus,
    pub n8n_base_url: String,
    pub git: Option<GitTarget>,
    pub n8n_secret_ref: Option<String>,
    pub git_secret_ref: Option<String>,
    pub active_incident: Option<String>,
    pub counts: DriftCounts,
    pub last_drift_check_at: Option<DateTime<Utc>>,
    pub last_drift_error: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Why the last environment sync failed (cleared by one that succeeds).
    #[serde(default)]
    pub last_sync_error: Option<String>,
    /// Why the last repository sync failed (cleared by one that succeeds).
    #[serde(default)]
    pub last_repository_sync_error: Option<String>,
    /// When the last repository sync succeeded.
    #[serde(default)]
    pub last_repository_sync_at: Option<DateTime<Utc>>,
    /// The credentials the last sync saw referenced, sorted.
    #[serde(default)]
    pub known_credentials: Vec<KnownCredential>,
    /// The deployment running a promotion to this environment: (promotion, deployment).
    #[serde(default)]
    pub promotion_slot: Option<(String, String)>,
    /// Why scheduled deployments to this environment wait (a rollback pinned it).
    #[serde(default)]
    pub pinned: Option<String>,
}

const MAX_NAME: usize = 100;

fn validate_name(name: &str) -> Result<String, DomainError> {
    let name = require_text("name", Some(name))?;
    if name.chars().count() > MAX_NAME {
        return Err(DomainError::validation(
            "name",
            format!("longer than {MAX_NAME} characters"),
        ));
    }
    Ok(name)
}

fn validate_url(url: &str) -> Result<String, DomainError> {
    let url = url.trim();
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace)
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(DomainError::validation(
            "n8n_base_url",
            "must be an http(s) URL",
        ))
    }
}

impl Environment {
    pub fn decide(
        &self,
        issued: Issued<EnvironmentCommand>,
    ) -> Result<Vec<EnvironmentEvent>, DomainError> {
        use EnvironmentCommand::*;
        let at = issued.at;
        if let Register {
            name,
            class,
            n8n_base_url,
            git,
            n8n_secret_ref,
            git_secret_ref,
        } = issued.command
        {
            if self.registered {
                return Err(DomainError::validation(
                    "environment_id",
                    "already registered",
                ));
            }
            transitions::check_initial(EnvironmentStatus::Active)?;
            if let Some(git) = &git {
                git.validate()?;
            }
            return Ok(vec![EnvironmentEvent::Registered {
                name: validate_name(&name)?,
                class,
                n8n_base_url: validate_url(&n8n_base_url)?,
                git,
                n8n_secret_ref: n8n_secret_ref.map(String::from),
                git_secret_ref: git_secret_ref.map(String::from),
            }]);
        }
        if !self.registered {
            return Err(DomainError::NotFound {
                kind: "environment",
                id: String::new(),
            });
        }
        match issued.command {
            Register { .. } => unreachable!("handled above"),
            Deactivate { reason } => {
                transitions::check(self.status, EnvironmentStatus::Deactivated, false)?;
                Ok(vec![EnvironmentEvent::Deactivated {
                    from: self.status,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            Reactivate => {
                transitions::check(self.status, EnvironmentStatus::Active, false)?;
                Ok(vec![EnvironmentEvent::Reactivated { from: self.status }])
            }
            // Releasing is allowed while deactivated: closing an incident must always work.
            ReleaseIncidentSlot { incident_id } => Ok(match &self.active_incident {
                Some(active) if active == incident_id.as_str() => {
                    vec![EnvironmentEvent::IncidentSlotReleased {
                        incident_id: incident_id.into(),
                    }]
                }
                _ => vec![],
            }),
            // Releasing, pinning and unpinning are allowed while deactivated: a
            // finishing deployment must always be able to record its end.
            ReleasePromotionSlot { deployment_id } => Ok(match &self.promotion_slot {
                Some((_, holder)) if holder == deployment_id.as_str() => {
                    vec![EnvironmentEvent::PromotionSlotReleased {
                        deployment_id: deployment_id.into(),
                    }]
                }
                _ => vec![],
            }),
            Pin {
                reason,
                deployment_id,
            } => Ok(match &self.pinned {
                Some(_) => vec![],
                None => vec![EnvironmentEvent::Pinned {
                    reason: require_text("reason", Some(&reason))?,
                    deployment_id: deployment_id.map(String::from),
                    at,
                }],
            }),
            Unpin { reason } => match &self.pinned {
                Some(_) => Ok(vec![EnvironmentEvent::Unpinned {
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    at,
                }]),
                None => Err(DomainError::validation(
                    "environment_id",
                    "the environment is not pinned",
                )),
            },
            _ if self.status == EnvironmentStatus::Deactivated => Err(DomainError::validation(
                "environment_id",
                "environment is deactivated",
            )),
            ReservePromotionSlot {
                promotion_id,
                deployment_id,
            } => match &self.promotion_slot {
                Some((_, holder)) if holder == deployment_id.as_str() => Ok(vec![]),
                Some((promotion, holder)) => Err(DomainError::Conflict(format!(
                    "promotion {promotion} (deployment {holder}) is running on this \
                     environment; one promotion at a time"
                ))),
                None => Ok(vec![EnvironmentEvent::PromotionSlotReserved {
                    promotion_id: promotion_id.into(),
                    deployment_id: deployment_id.into(),
                }]),
            },
            Update {
                name,
                n8n_base_url,
                git,
                n8n_secret_ref,
                git_secret_ref,
            } => {
                let name = name
                    .map(|n| validate_name(&n))
                    .transpose()?
                    .filter(|n| *n != self.name);
                let n8n_base_url = n8n_base_url
                    .map(|u| validate_url(&u))
                    .transpose()?
                    .filter(|u| *u != self.n8n_base_url);
                if let Some(Some(git)) = &git {
                    git.validate()?;
                }
                let git = git.filter(|g| *g != self.git);
                let n8n_secret_ref = n8n_secret_ref
                    .map(String::from)
                    .filter(|r| Some(r) != self.n8n_secret_ref.as_ref());
                let git_secret_ref = git_secret_ref
                    .map(String::from)
                    .filter(|r| Some(r) != self.git_secret_ref.as_ref());
                if name.is_none()
                    && n8n_base_url.is_none()
                    && git.is_none()
                    && n8n_secret_ref.is_none()
                    && git_secret_ref.is_none()
                {
                    return Ok(vec![]);
                }
                Ok(vec![EnvironmentEvent::Updated {
                    name,
                    n8n_base_url,
                    git_removed: matches!(git, Some(None)),
                    git: git.flatten(),
                    n8n_secret_ref,
                    git_secret_ref,
                }])
            }
            RecordSync {
                kind,
                workflows_seen,
            } => Ok(vec![EnvironmentEvent::SyncRecorded {
                kind,
                workflows_seen,
                at,
            }]),
            RecordCredentials { credentials } => {
                let (credentials, _) = KnownCredential::set_of(credentials);
                for credential in &credentials {
                    require_text("credentials.type", Some(&credential.kind))?;
                    require_text("credentials.id", Some(&credential.id))?;
                }
                if credentials == self.known_credentials {
                    return Ok(vec![]);
                }
                Ok(vec![EnvironmentEvent::CredentialsObserved {
                    credentials,
                    at,
                }])
            }
            RecordSyncFailure { kind, cause } => Ok(vec![EnvironmentEvent::SyncFailed {
                kind,
                cause: require_text("cause", Some(&cause))?,
                at,
            }]),
            RecordDriftCheck { outcome } => {
                if self.class == EnvironmentClass::Dev || self.git.is_none() {
                    return Err(DomainError::validation(
                        "environment_id",
                        "drift detection runs on non-dev environments with Git configured",
                    ));
                }
                Ok(vec![match outcome {
                    DriftCheckOutcome::Checked { counts } => {
                        EnvironmentEvent::DriftChecked { counts, at }
                    }
                    DriftCheckOutcome::Failed { cause } => EnvironmentEvent::DriftCheckFailed {
                        cause: require_text("cause", Some(&cause))?,
                        at,
                    },
                }])
            }
            ReserveIncidentSlot {
                incident_id,
                opening,
            } => match &self.active_incident {
                Some(active) if active == incident_id.as_str() => Ok(vec![]),
                Some(active) => Err(DomainError::validation(
                    "active_incident",
                    format!("environment already has active incident `{active}`"),
                )),
                None => {
                    if let Some(opening) = &opening {
                        opening.check(at)?;
                    }
                    Ok(vec![EnvironmentEvent::IncidentSlotReserved {
                        incident_id: incident_id.into(),
                        opening,
                    }])
                }
            },
        }
    }
}

impl Aggregate for Environment {
    const TYPE: &'static str = "environment";
    type Command = Issued<EnvironmentCommand>;
    type Event = EnvironmentEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: EnvironmentEvent) {
        use EnvironmentEvent::*;
        match event {
            Registered {
                name,
                class,
                n8n_base_url,
                git,
                n8n_secret_ref,
                git_secret_ref,
            } => {
                *self = Environment {
                    registered: true,
                    name,
                    class,
                    n8n_base_url,
                    git,
                    n8n_secret_ref,
                    git_secret_ref,
                    ..Environment::default()
                };
            }
            Updated {
                name,
                n8n_base_url,
                git,
                git_removed,
                n8n_secret_ref,
                git_secret_ref,
            } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(url) = n8n_base_url {
                    self.n8n_base_url = url;
                }
                if git_removed {
                    self.git = None;
                } else if git.is_some() {
                    self.git = git;
                }
                if n8n_secret_ref.is_some() {
                    self.n8n_secret_ref = n8n_secret_ref;
                }
                if git_secret_ref.is_some() {
                    self.git_secret_ref = git_secret_ref;
                }
            }
            Deactivated { .. } => self.status = EnvironmentStatus::Deactivated,
            Reactivated { .. } => self.status = EnvironmentStatus::Active,
            PromotionSlotReserved {
                promotion_id,
                deployment_id,
            } => self.promotion_slot = Some((promotion_id, deployment_id)),
            PromotionSlotReleased { .. } => self.promotion_slot = None,
            Pinned { reason, .. } => self.pinned = Some(reason),
            Unpinned { .. } => self.pinned = None,
            SyncRecorded { kind, at, .. } => match kind {
                SyncKind::Environment => {
                    self.last_sync_at = Some(at);
                    self.last_sync_error = None;
                }
                SyncKind::Repository => {
                    self.last_repository_sync_at = Some(at);
                    self.last_repository_sync_error = None;
                }
            },
            SyncFailed { kind, cause, .. } => match kind {
                SyncKind::Environment => self.last_sync_error = Some(cause),
                SyncKind::Repository => self.last_repository_sync_error = Some(cause),
            },
            DriftChecked { counts, at } => {
                self.counts = counts;
                self.last_drift_check_at = Some(at);
                self.last_drift_error = None;
            }
            DriftCheckFailed { cause, at } => {
                self.last_drift_check_at = Some(at);
                self.last_drift_error = Some(cause);
            }
            IncidentSlotReserved { incident_id, .. } => self.active_incident = Some(incident_id),
            IncidentSlotReleased { .. } => self.active_incident = None,
            CredentialsObserved { credentials, .. } => self.known_credentials = credentials,
        }
    }
}

impl Lifecycle for Environment {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.registered.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

#[cfg(test)]
mod tests;
