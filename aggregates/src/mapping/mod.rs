//! Workflow mapping (DOMAIN.md §2.1): one n8n workflow in one environment, possibly
//! linked to a canonical workflow.
//!
//! The status is derived from facts with the precedence
//! **deleted > ignored > missing > untracked > linked**: whether the user deleted or
//! ignored the mapping, whether n8n still has the workflow, and whether it holds a
//! canonical link. Every status change is still checked against `VALID_TRANSITIONS`.
//! While ignored, observations are recorded but the status stays `ignored`.
//!
//! Entering `linked` claims the (environment, canonical) link slot through
//! [`Reservations`], so at most one mapping per environment is linked to a canonical
//! workflow even under concurrent commands. The service's link-slot reactor
//! releases the slot after a committed event that leaves `linked`
//! ([`MappingEvent::leaves_linked`]).

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::content::ContentHash;
use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, DomainError};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::{self, Lifecycle, StateMachine};
use crate::reservation::{ReservationKey, Reservations};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MappingStatus {
    Linked,
    #[default]
    Untracked,
    Missing,
    Ignored,
    Deleted,
}

crate::state_names!(MappingStatus {
    Linked => "linked",
    Untracked => "untracked",
    Missing => "missing",
    Ignored => "ignored",
    Deleted => "deleted",
});

impl StateMachine for MappingStatus {
    const MACHINE: &'static str = "workflow mapping";
    const ALL: &'static [Self] = &[
        Self::Linked,
        Self::Untracked,
        Self::Missing,
        Self::Ignored,
        Self::Deleted,
    ];
    const INITIAL: &'static [Self] = &[Self::Linked, Self::Untracked];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use MappingStatus::*;
        &[
            (Linked, &[Untracked, Missing, Ignored, Deleted]),
            (Untracked, &[Linked, Missing, Ignored, Deleted]),
            (Missing, &[Linked, Untracked, Ignored, Deleted]),
            (Ignored, &[Linked, Untracked, Missing, Deleted]),
            (Deleted, &[]),
        ]
    };
}

/// What a sync saw of a workflow in n8n.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub name: String,
    pub content_hash: ContentHash,
    pub n8n_updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowMapping {
    pub exists: bool,
    pub environment_id: String,
    pub n8n_workflow_id: String,
    pub name: String,
    pub env_content_hash: Option<ContentHash>,
    pub n8n_updated_at: Option<DateTime<Utc>>,
    pub git_content_hash: Option<ContentHash>,
    /// The canonical link; kept while missing or ignored so the link comes back.
    pub canonical_id: Option<String>,
    pub present: bool,
    pub ignored: bool,
    pub status: MappingStatus,
}

impl WorkflowMapping {
    fn observed(&mut self, observation: Observation) {
        self.name = observation.name;
        self.env_content_hash = Some(observation.content_hash);
        self.n8n_updated_at = observation.n8n_updated_at;
    }

    fn differs(&self, observation: &Observation) -> bool {
        self.name != observation.name
            || self.env_content_hash.as_ref() != Some(&observation.content_hash)
            || self.n8n_updated_at != observation.n8n_updated_at
    }

    async fn claim(
        &self,
        reservations: &dyn Reservations,
        env: &str,
        canonical: &str,
        holder: &str,
    ) -> Result<bool, DomainError> {
        let key = ReservationKey::LinkSlot {
            environment: LocalId::parse(env)?,
            canonical: LocalId::parse(canonical)?,
        };
        reservations.claim(&key, holder).await
    }

    /// The status a present, non-ignored mapping takes given a canonical candidate:
    /// linked if it wins the slot, otherwise untracked with no canonical link.
    async fn link_or_untracked(
        &self,
        reservations: &dyn Reservations,
        candidate: Option<String>,
    ) -> Result<(MappingStatus, Option<String>), DomainError> {
        if let Some(canonical) = candidate {
            if self
                .claim(
                    reservations,
                    &self.environment_id,
                    &canonical,
                    &self.n8n_workflow_id,
                )
                .await?
            {
                return Ok((MappingStatus::Linked, Some(canonical)));
            }
        }
        Ok((MappingStatus::Untracked, None))
    }

    pub async fn decide(
        &self,
        issued: Issued<MappingCommand>,
        reservations: &dyn Reservations,
    ) -> Result<Vec<MappingEvent>, DomainError> {
        use MappingCommand::*;
        if let Observe {
            environment_id,
            n8n_workflow_id,
            observation,
            auto_link,
        } = issued.command
        {
            return self
                .observe(
                    environment_id,
                    n8n_workflow_id,
                    observation,
                    auto_link,
                    reservations,
                )
                .await;
        }
        if !self.exists {
            return Err(DomainError::NotFound {
                kind: "workflow mapping",
                id: String::new(),
            });
        }
        let from = self.status;
        match issued.command {
            Observe { .. } => unreachable!("handled above"),
            ObserveMissing => {
                if from == MappingStatus::Deleted || !self.present {
                    return Ok(vec![]);
                }
                let to = if self.ignored {
                    MappingStatus::Ignored
                } else {
                    MappingStatus::Missing
                };
                if from != to {
                    transitions::check(from, to, false)?;
                }
                Ok(vec![MappingEvent::Disappeared { from, to }])
            }
            ObserveGitHash { git_content_hash } => {
                if self.git_content_hash.as_ref() == Some(&git_content_hash)
                    || from == MappingStatus::Deleted
                {
                    return Ok(vec![]);
                }
                Ok(vec![MappingEvent::GitHashObserved { git_content_hash }])
            }
            Link { canonical_id } => {
                if from == MappingStatus::Linked
                    && self.canonical_id.as_deref() == Some(canonical_id.as_str())
                {
                    return Ok(vec![]);
                }
                transitions::check(from, MappingStatus::Linked, false)?;
                if from != MappingStatus::Untracked {
                    return Err(DomainError::validation(
                        "status",
                        format!(
                            "a {from} workflow is linked again when it reappears or is unignored"
                        ),
                    ));
                }
                if !self
                    .claim(
                        reservations,
                        &self.environment_id,
                        canonical_id.as_str(),
                        &self.n8n_workflow_id,
                    )
                    .await?
                {
                    return Err(DomainError::validation(
                        "canonical_id",
                        format!("canonical workflow `{canonical_id}` is already linked to another workflow in this environment"),
                    ));
                }
                Ok(vec![MappingEvent::Linked {
                    from,
                    canonical_id: canonical_id.into(),
                    auto: false,
                }])
            }
            Unlink { reason } => {
                transitions::check(from, MappingStatus::Untracked, false)?;
                let (MappingStatus::Linked, Some(canonical_id)) = (from, self.canonical_id.clone())
                else {
                    return Err(DomainError::validation(
                        "status",
                        format!("a {from} workflow is not linked"),
                    ));
                };
                Ok(vec![MappingEvent::Unlinked {
                    from,
                    canonical_id,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            Ignore { reason } => {
                transitions::check(from, MappingStatus::Ignored, false)?;
                Ok(vec![MappingEvent::Ignored {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            Unignore => {
                if from != MappingStatus::Ignored {
                    return Err(DomainError::validation(
                        "status",
                        format!("a {from} workflow is not ignored"),
                    ));
                }
                let (to, canonical_id) = if self.present {
                    self.link_or_untracked(reservations, self.canonical_id.clone())
                        .await?
                } else {
                    (MappingStatus::Missing, self.canonical_id.clone())
                };
                transitions::check(from, to, false)?;
                Ok(vec![MappingEvent::Unignored { to, canonical_id }])
            }
            Delete { reason } => {
                transitions::check(from, MappingStatus::Deleted, false)?;
                Ok(vec![MappingEvent::Deleted {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
        }
    }

    async fn observe(
        &self,
        environment_id: LocalId,
        n8n_workflow_id: LocalId,
        observation: Observation,
        auto_link: Option<LocalId>,
        reservations: &dyn Reservations,
    ) -> Result<Vec<MappingEvent>, DomainError> {
        let auto_link = auto_link.map(String::from);
        if !self.exists {
            let fresh = WorkflowMapping {
                environment_id: environment_id.to_string(),
                n8n_workflow_id: n8n_workflow_id.to_string(),
                ..Default::default()
            };
            let (status, canonical_id) = fresh.link_or_untracked(reservations, auto_link).await?;
            transitions::check_initial(status)?;
            return Ok(vec![MappingEvent::Discovered {
                environment_id: fresh.environment_id,
                n8n_workflow_id: fresh.n8n_workflow_id,
                observation,
                auto_linked: canonical_id.is_some(),
                canonical_id,
                status,
            }]);
        }
        if self.environment_id != environment_id.as_str()
            || self.n8n_workflow_id != n8n_workflow_id.as_str()
        {
            return Err(DomainError::validation(
                "n8n_workflow_id",
                "does not match this mapping",
            ));
        }
        let from = self.status;
        if from == MappingStatus::Deleted {
            return Ok(vec![]);
        }
        if !self.present {
            let (to, canonical_id) = if self.ignored {
                (MappingStatus::Ignored, self.canonical_id.clone())
            } else {
                self.link_or_untracked(reservations, self.canonical_id.clone().or(auto_link))
                    .await?
            };
            if from != to {
                transitions::check(from, to, false)?;
            }
            return Ok(vec![MappingEvent::Reappeared {
                from,
                to,
                observation,
                canonical_id,
            }]);
        }
        let mut events = vec![];
        if self.differs(&observation) {
            events.push(MappingEvent::ContentObserved { observation });
        }
        if let (MappingStatus::Untracked, Some(candidate)) = (from, auto_link) {
            if let (MappingStatus::Linked, Some(canonical_id)) = self
                .link_or_untracked(reservations, Some(candidate))
                .await?
            {
                transitions::check(from, MappingStatus::Linked, false)?;
                events.push(MappingEvent::Linked {
                    from,
                    canonical_id,
                    auto: true,
                });
            }
        }
        Ok(events)
    }
}

impl Aggregate for WorkflowMapping {
    const TYPE: &'static str = "workflow_mapping";
    type Command = Issued<MappingCommand>;
    type Event = MappingEvent;
    type Error = DomainError;
    type Services = Arc<dyn Reservations>;

    async fn handle(
        &mut self,
        issued: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued, services.as_ref()).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: MappingEvent) {
        use MappingEvent::*;
        match event {
            Discovered {
                environment_id,
                n8n_workflow_id,
                observation,
                canonical_id,
                status,
                auto_linked,
            } => {
                self.exists = true;
                self.environment_id = environment_id;
                self.n8n_workflow_id = n8n_workflow_id;
                self.observed(observation);
                self.canonical_id = canonical_id;
                self.present = true;
                self.status = status;
                if auto_linked {
                    self.git_content_hash = self.env_content_hash.clone();
                }
            }
            ContentObserved { observation } => self.observed(observation),
            GitHashObserved { git_content_hash } => self.git_content_hash = Some(git_content_hash),
            Disappeared { to, .. } => {
                self.present = false;
                self.status = to;
            }
            Reappeared {
                to,
                observation,
                canonical_id,
                ..
            } => {
                self.present = true;
                self.observed(observation);
                self.canonical_id = canonical_id;
                self.status = to;
            }
            Linked {
                canonical_id, auto, ..
            } => {
                self.canonical_id = Some(canonical_id);
                self.status = MappingStatus::Linked;
                if auto {
                    // auto-link means the content is the canonical workflow's Git
                    // content: the mapping knows its Git hash from here on
                    self.git_content_hash = self.env_content_hash.clone();
                }
            }
            Unlinked { .. } => {
                self.canonical_id = None;
                self.status = MappingStatus::Untracked;
            }
            Ignored { .. } => {
                self.ignored = true;
                self.status = MappingStatus::Ignored;
            }
            Unignored { to, canonical_id } => {
                self.ignored = false;
                self.canonical_id = canonical_id;
                self.status = to;
            }
            Deleted { .. } => self.status = MappingStatus::Deleted,
        }
    }
}

impl Lifecycle for WorkflowMapping {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.exists.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

#[cfg(test)]
mod tests;
