//! Environment: one n8n instance (dev, staging, production), its optional Git folder,
//! the results of its drift checks, and the slot that allows at most one active
//! (non-closed) drift incident at a time.
//!
//! Secrets are never here: the n8n API key and Git token live encrypted in their own
//! table, and the environment only keeps opaque references to them.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::incident::IncidentOpening;
use crate::kernel::command::{DomainCommand, Issued, Role};
use crate::kernel::error::{non_blank, require_text, DomainError};
use crate::kernel::ids::LocalId;
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

#[derive(Debug, Clone, PartialEq)]
pub enum EnvironmentCommand {
    Register {
        name: String,
        class: EnvironmentClass,
        n8n_base_url: String,
        git: Option<GitTarget>,
        n8n_secret_ref: Option<LocalId>,
        git_secret_ref: Option<LocalId>,
    },
    Update {
        name: Option<String>,
        n8n_base_url: Option<String>,
        /// `Some(None)` removes the Git configuration.
        git: Option<Option<GitTarget>>,
        n8n_secret_ref: Option<LocalId>,
        git_secret_ref: Option<LocalId>,
    },
    Deactivate {
        reason: Option<String>,
    },
    Reactivate,
    RecordSync {
        kind: SyncKind,
        workflows_seen: u32,
    },
    /// A sync could not read n8n or Git; the cause is shown on the environment until
    /// a sync of that kind succeeds.
    RecordSyncFailure {
        kind: SyncKind,
        cause: String,
    },
    RecordDriftCheck {
        outcome: DriftCheckOutcome,
    },
    /// Reserves the active-incident slot for `incident_id`. `opening` is what the
    /// incident-slot reactor opens it with (a reservation without one is repaired
    /// by the next drift report instead).
    ReserveIncidentSlot {
        incident_id: LocalId,
        opening: Option<IncidentOpening>,
    },
    ReleaseIncidentSlot {
        incident_id: LocalId,
    },
}

impl DomainCommand for EnvironmentCommand {
    fn required_role(&self) -> Role {
        use EnvironmentCommand::*;
        match self {
            Register { .. } | Update { .. } | Deactivate { .. } | Reactivate => Role::Admin,
            RecordSync { .. } | RecordSyncFailure { .. } | RecordDriftCheck { .. } => {
                Role::Developer
            }
            ReserveIncidentSlot { .. } | ReleaseIncidentSlot { .. } => Role::System,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            EnvironmentCommand::Deactivate { reason } => reason.as_deref(),
            _ => None,
        }
    }
    fn name(&self) -> &'static str {
        use EnvironmentCommand::*;
        match self {
            Register { .. } => "environment.register",
            Update { .. } => "environment.update",
            Deactivate { .. } => "environment.deactivate",
            Reactivate => "environment.reactivate",
            RecordSync { .. } => "environment.record_sync",
            RecordSyncFailure { .. } => "environment.record_sync_failure",
            RecordDriftCheck { .. } => "environment.record_drift_check",
            ReserveIncidentSlot { .. } => "environment.reserve_incident_slot",
            ReleaseIncidentSlot { .. } => "environment.release_incident_slot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EnvironmentEvent {
    Registered {
        name: String,
        class: EnvironmentClass,
        n8n_base_url: String,
        git: Option<GitTarget>,
        n8n_secret_ref: Option<String>,
        git_secret_ref: Option<String>,
    },
    /// Only what changed. `git` is the new Git configuration; `git_removed` says the
    /// configuration was removed (a separate flag: a `null` `git` has always meant
    /// "unchanged", so it cannot also mean "removed").
    Updated {
        name: Option<String>,
        n8n_base_url: Option<String>,
        git: Option<GitTarget>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        git_removed: bool,
        n8n_secret_ref: Option<String>,
        git_secret_ref: Option<String>,
    },
    Deactivated {
        from: EnvironmentStatus,
        reason: Option<String>,
    },
    Reactivated {
        from: EnvironmentStatus,
    },
    SyncRecorded {
        kind: SyncKind,
        workflows_seen: u32,
        at: DateTime<Utc>,
    },
    SyncFailed {
        kind: SyncKind,
        cause: String,
        at: DateTime<Utc>,
    },
    DriftChecked {
        counts: DriftCounts,
        at: DateTime<Utc>,
    },
    DriftCheckFailed {
        cause: String,
        at: DateTime<Utc>,
    },
    IncidentSlotReserved {
        incident_id: String,
        /// What opening the reserved incident needs (absent in reservations recorded
        /// before the incident-slot reactor existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opening: Option<IncidentOpening>,
    },
    IncidentSlotReleased {
        incident_id: String,
    },
}

impl DomainEvent for EnvironmentEvent {
    fn event_type(&self) -> String {
        use EnvironmentEvent::*;
        match self {
            Registered { .. } => "environment.registered",
            Updated { .. } => "environment.updated",
            Deactivated { .. } => "environment.deactivated",
            Reactivated { .. } => "environment.reactivated",
            SyncRecorded { .. } => "environment.sync_recorded",
            DriftChecked { .. } => "environment.drift_checked",
            DriftCheckFailed { .. } => "environment.drift_check_failed",
            SyncFailed { .. } => "environment.sync_failed",
            IncidentSlotReserved { .. } => "environment.incident_slot_reserved",
            IncidentSlotReleased { .. } => "environment.incident_slot_released",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
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
            _ if self.status == EnvironmentStatus::Deactivated => Err(DomainError::validation(
                "environment_id",
                "environment is deactivated",
            )),
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
            SyncRecorded { kind, at, .. } => match kind {
                SyncKind::Environment => {
                    self.last_sync_at = Some(at);
                    self.last_sync_error = None;
                }
                SyncKind::Repository => self.last_repository_sync_error = None,
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
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::kernel::command::Actor;
    use crate::kernel::transitions::table_tests;

    type Fx = TestFramework<Environment>;

    fn issue(command: EnvironmentCommand) -> Issued<EnvironmentCommand> {
        Issued::new(
            Actor::new("alice", Role::Admin),
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            command,
        )
    }

    fn registered(class: EnvironmentClass) -> EnvironmentEvent {
        EnvironmentEvent::Registered {
            name: "Production".into(),
            class,
            n8n_base_url: "https://n8n.example.com".into(),
            git: Some(GitTarget {
                provider: GitProvider::Github,
                repository: "acme/workflows".into(),
                branch: "main".into(),
                folder: "prod".into(),
            }),
            n8n_secret_ref: Some("sec-1".into()),
            git_secret_ref: None,
        }
    }

    fn id(s: &str) -> LocalId {
        LocalId::parse(s).unwrap()
    }

    #[test]
    fn table_and_every_pair() {
        table_tests::assert_well_formed::<EnvironmentStatus>();
        table_tests::assert_check_matches_table::<EnvironmentStatus>();
        let deactivated = EnvironmentEvent::Deactivated {
            from: EnvironmentStatus::Active,
            reason: None,
        };
        for (given, command, ok) in [
            (
                vec![registered(EnvironmentClass::Production)],
                EnvironmentCommand::Deactivate { reason: None },
                true,
            ),
            (
                vec![registered(EnvironmentClass::Production)],
                EnvironmentCommand::Reactivate,
                false,
            ),
            (
                vec![
                    registered(EnvironmentClass::Production),
                    deactivated.clone(),
                ],
                EnvironmentCommand::Reactivate,
                true,
            ),
            (
                vec![registered(EnvironmentClass::Production), deactivated],
                EnvironmentCommand::Deactivate { reason: None },
                false,
            ),
        ] {
            let result = Fx::with(())
                .given(given)
                .when(issue(command))
                .inspect_result();
            match result {
                Ok(events) => assert!(ok && events.len() == 1),
                Err(DomainError::InvalidTransition {
                    machine: "environment",
                    ..
                }) => assert!(!ok),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn register_validates_fields() {
        let bad_url = EnvironmentCommand::Register {
            name: "Prod".into(),
            class: EnvironmentClass::Production,
            n8n_base_url: "ftp://x".into(),
            git: None,
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        Fx::with(())
            .given_no_previous_events()
            .when(issue(bad_url))
            .then_expect_error(DomainError::validation(
                "n8n_base_url",
                "must be an http(s) URL",
            ));
        let blank = EnvironmentCommand::Register {
            name: " ".into(),
            class: EnvironmentClass::Dev,
            n8n_base_url: "http://n8n:5678/".into(),
            git: None,
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        Fx::with(())
            .given_no_previous_events()
            .when(issue(blank))
            .then_expect_error(DomainError::required("name"));
        let escape = EnvironmentCommand::Register {
            name: "Prod".into(),
            class: EnvironmentClass::Production,
            n8n_base_url: "http://n8n".into(),
            git: Some(GitTarget {
                provider: GitProvider::Local,
                repository: "/srv/repo".into(),
                branch: "main".into(),
                folder: "../etc".into(),
            }),
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        let result = Fx::with(())
            .given_no_previous_events()
            .when(issue(escape))
            .inspect_result();
        assert!(
            matches!(result, Err(DomainError::Validation { ref field, .. }) if field == "git.folder")
        );
        let unknown = Fx::with(())
            .given_no_previous_events()
            .when(issue(EnvironmentCommand::Reactivate))
            .inspect_result();
        assert!(matches!(unknown, Err(DomainError::NotFound { .. })));
    }

    #[test]
    fn one_active_incident_slot() {
        let reserve = |i: &str| {
            issue(EnvironmentCommand::ReserveIncidentSlot {
                incident_id: id(i),
                opening: None,
            })
        };
        let given = vec![
            registered(EnvironmentClass::Production),
            EnvironmentEvent::IncidentSlotReserved {
                incident_id: "inc-1".into(),
                opening: None,
            },
        ];
        Fx::with(())
            .given(given.clone())
            .when(reserve("inc-1"))
            .then_expect_events(vec![]);
        Fx::with(())
            .given(given.clone())
            .when(reserve("inc-2"))
            .then_expect_error(DomainError::validation(
                "active_incident",
                "environment already has active incident `inc-1`",
            ));
        Fx::with(())
            .given(given.clone())
            .when(issue(EnvironmentCommand::ReleaseIncidentSlot {
                incident_id: id("inc-9"),
            }))
            .then_expect_events(vec![]);
        let mut released = given;
        released.push(EnvironmentEvent::IncidentSlotReleased {
            incident_id: "inc-1".into(),
        });
        Fx::with(())
            .given(released)
            .when(reserve("inc-2"))
            .then_expect_events(vec![EnvironmentEvent::IncidentSlotReserved {
                incident_id: "inc-2".into(),
                opening: None,
            }]);
    }

    /// The reservation carries what opening the incident needs, refuses an opening
    /// the incident would refuse, and reservations stored before it existed still
    /// decode (and keep their shape).
    #[test]
    fn reservation_carries_the_opening() {
        use crate::incident::{AffectedWorkflow, IncidentOpening};
        let opening = IncidentOpening {
            production: true,
            affected_workflows: vec![AffectedWorkflow {
                workflow_id: "orders".into(),
                name: "Orders".into(),
            }],
            snapshot_digest: Some("ab".repeat(32)),
            policy: Default::default(),
        };
        let reserve = |opening: IncidentOpening| {
            issue(EnvironmentCommand::ReserveIncidentSlot {
                incident_id: id("inc-1"),
                opening: Some(opening),
            })
        };
        Fx::with(())
            .given(vec![registered(EnvironmentClass::Production)])
            .when(reserve(opening.clone()))
            .then_expect_events(vec![EnvironmentEvent::IncidentSlotReserved {
                incident_id: "inc-1".into(),
                opening: Some(opening.clone()),
            }]);
        let bad = IncidentOpening {
            snapshot_digest: Some("not a digest".into()),
            ..opening
        };
        Fx::with(())
            .given(vec![registered(EnvironmentClass::Production)])
            .when(reserve(bad))
            .then_expect_error(DomainError::validation(
                "snapshot_digest",
                "must be a lowercase hex SHA-256",
            ));
        let stored = serde_json::json!({"type": "incident_slot_reserved", "incident_id": "inc-0"});
        let old: EnvironmentEvent = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(
            old,
            EnvironmentEvent::IncidentSlotReserved {
                incident_id: "inc-0".into(),
                opening: None
            }
        );
        assert_eq!(serde_json::to_value(&old).unwrap(), stored);
    }

    #[test]
    fn drift_checks_only_where_git_and_not_dev() {
        let check = issue(EnvironmentCommand::RecordDriftCheck {
            outcome: DriftCheckOutcome::Failed {
                cause: "n8n: 401".into(),
            },
        });
        let dev = Fx::with(())
            .given(vec![registered(EnvironmentClass::Dev)])
            .when(check.clone())
            .inspect_result();
        assert!(matches!(dev, Err(DomainError::Validation { .. })));
        let events = Fx::with(())
            .given(vec![registered(EnvironmentClass::Staging)])
            .when(check)
            .inspect_result()
            .unwrap();
        assert!(
            matches!(&events[0], EnvironmentEvent::DriftCheckFailed { cause, .. } if cause == "n8n: 401")
        );
    }

    #[test]
    fn failed_check_keeps_counts_and_noop_update_appends_nothing() {
        let mut env = Environment::default();
        env.apply(registered(EnvironmentClass::Production));
        let at = Utc::now();
        let counts = DriftCounts {
            in_sync: 3,
            with_drift: 1,
            not_in_git: 2,
        };
        env.apply(EnvironmentEvent::DriftChecked { counts, at });
        env.apply(EnvironmentEvent::DriftCheckFailed {
            cause: "timeout".into(),
            at,
        });
        assert_eq!(env.counts, counts);
        let same = EnvironmentCommand::Update {
            name: Some("Production".into()),
            n8n_base_url: Some("https://n8n.example.com/".into()),
            git: None,
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        assert_eq!(env.decide(issue(same)).unwrap(), vec![]);
    }

    /// Removing the Git configuration survives a round trip through the log, and an
    /// update that leaves Git alone (`"git": null`, as every earlier event stores it)
    /// still means "unchanged".
    #[test]
    fn removing_git_survives_replay() {
        let mut env = Environment::default();
        env.apply(registered(EnvironmentClass::Production));
        let update = |git| EnvironmentCommand::Update {
            name: Some("Prod".into()),
            n8n_base_url: None,
            git,
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        let replay = |events: Vec<EnvironmentEvent>, env: &mut Environment| {
            for event in events {
                let stored = serde_json::to_value(&event).unwrap();
                env.apply(serde_json::from_value(stored).unwrap());
            }
        };
        let events = env.decide(issue(update(None))).unwrap();
        let stored = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(stored["git"], serde_json::Value::Null);
        assert!(
            stored.get("git_removed").is_none(),
            "unchanged events keep their shape"
        );
        replay(events, &mut env);
        assert!(env.git.is_some());
        let events = env.decide(issue(update(Some(None)))).unwrap();
        replay(events, &mut env);
        assert_eq!(env.git, None);
        // removing what is not there changes nothing
        let mut renamed = update(Some(None));
        if let EnvironmentCommand::Update { name, .. } = &mut renamed {
            *name = None;
        }
        assert_eq!(env.decide(issue(renamed)).unwrap(), vec![]);
    }

    /// A failed sync is shown until a sync of the same kind succeeds.
    #[test]
    fn sync_failures_are_kept_until_a_sync_succeeds() {
        let mut env = Environment::default();
        env.apply(registered(EnvironmentClass::Production));
        let fail = |kind| EnvironmentCommand::RecordSyncFailure {
            kind,
            cause: "n8n failed (503)".into(),
        };
        for event in env.decide(issue(fail(SyncKind::Environment))).unwrap() {
            env.apply(event);
        }
        for event in env.decide(issue(fail(SyncKind::Repository))).unwrap() {
            env.apply(event);
        }
        assert_eq!(env.last_sync_error.as_deref(), Some("n8n failed (503)"));
        assert!(env.last_repository_sync_error.is_some());
        let blank = EnvironmentCommand::RecordSyncFailure {
            kind: SyncKind::Environment,
            cause: " ".into(),
        };
        assert!(matches!(
            env.decide(issue(blank)),
            Err(DomainError::Validation { .. })
        ));
        let ok = EnvironmentCommand::RecordSync {
            kind: SyncKind::Environment,
            workflows_seen: 3,
        };
        for event in env.decide(issue(ok)).unwrap() {
            env.apply(event);
        }
        assert_eq!(env.last_sync_error, None);
        assert!(
            env.last_repository_sync_error.is_some(),
            "a repository failure stays until a repository sync succeeds"
        );
    }
}
