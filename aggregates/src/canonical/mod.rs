//! Canonical workflow: the logical workflow, stable across environments, backed by a
//! file in Git. Its slug is unique per tenant (claimed through [`Reservations`]); a
//! taken slug gets a suffix, never a silent overwrite.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::content::ContentHash;
use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, require_text, DomainError};
use crate::kernel::ids::Slug;
use crate::kernel::transitions::{self, Lifecycle, StateMachine};
use crate::reservation::{ReservationKey, Reservations};

/// How many suffixed slugs are tried before giving up.
const MAX_SLUG_ATTEMPTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CanonicalStatus {
    #[default]
    Active,
    Deleted,
}

crate::state_names!(CanonicalStatus { Active => "active", Deleted => "deleted" });

impl StateMachine for CanonicalStatus {
    const MACHINE: &'static str = "canonical workflow";
    const ALL: &'static [Self] = &[Self::Active, Self::Deleted];
    const INITIAL: &'static [Self] = &[Self::Active];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] =
        &[(Self::Active, &[Self::Deleted]), (Self::Deleted, &[])];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanonicalWorkflow {
    pub created: bool,
    pub name: String,
    pub slug: Option<Slug>,
    pub status: CanonicalStatus,
    pub git_path: Option<String>,
    pub git_content_hash: Option<ContentHash>,
    pub commit_sha: Option<String>,
}

impl CanonicalWorkflow {
    pub async fn decide(
        &self,
        issued: Issued<CanonicalCommand>,
        reservations: &dyn Reservations,
    ) -> Result<Vec<CanonicalEvent>, DomainError> {
        if let CanonicalCommand::Create {
            canonical_id,
            name,
            slug,
            git_path,
        } = issued.command
        {
            if self.created {
                return Err(DomainError::validation("canonical_id", "already exists"));
            }
            transitions::check_initial(CanonicalStatus::Active)?;
            let name = require_text("name", Some(&name))?;
            let base = match slug {
                Some(slug) => slug,
                None => Slug::from_name(&name)?,
            };
            for candidate in base.candidates().take(MAX_SLUG_ATTEMPTS) {
                if reservations
                    .claim(
                        &ReservationKey::Slug(candidate.clone()),
                        canonical_id.as_str(),
                    )
                    .await?
                {
                    return Ok(vec![CanonicalEvent::Created {
                        name,
                        slug: candidate,
                        git_path: git_path.and_then(|p| non_blank(Some(&p)).map(str::to_string)),
                    }]);
                }
            }
            return Err(DomainError::validation(
                "slug",
                format!("`{base}` and its suffixes are all taken"),
            ));
        }
        if !self.created {
            return Err(DomainError::NotFound {
                kind: "canonical workflow",
                id: String::new(),
            });
        }
        match issued.command {
            CanonicalCommand::Create { .. } => unreachable!("handled above"),
            CanonicalCommand::Delete { reason } => {
                transitions::check(self.status, CanonicalStatus::Deleted, false)?;
                Ok(vec![CanonicalEvent::Deleted {
                    from: self.status,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            _ if self.status == CanonicalStatus::Deleted => Err(DomainError::validation(
                "canonical_id",
                "canonical workflow is deleted",
            )),
            CanonicalCommand::Rename { name } => {
                let name = require_text("name", Some(&name))?;
                Ok(if name == self.name {
                    vec![]
                } else {
                    vec![CanonicalEvent::Renamed { name }]
                })
            }
            CanonicalCommand::RecordGitVersion {
                git_content_hash,
                commit_sha,
                git_path,
            } => {
                let commit_sha = require_text("commit_sha", Some(&commit_sha))?;
                let git_path = require_text("git_path", Some(&git_path))?;
                let unchanged = self.git_content_hash.as_ref() == Some(&git_content_hash)
                    && self.commit_sha.as_deref() == Some(commit_sha.as_str())
                    && self.git_path.as_deref() == Some(git_path.as_str());
                Ok(if unchanged {
                    vec![]
                } else {
                    vec![CanonicalEvent::GitVersionRecorded {
                        git_content_hash,
                        commit_sha,
                        git_path,
                    }]
                })
            }
        }
    }
}

impl Aggregate for CanonicalWorkflow {
    const TYPE: &'static str = "canonical_workflow";
    type Command = Issued<CanonicalCommand>;
    type Event = CanonicalEvent;
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

    fn apply(&mut self, event: CanonicalEvent) {
        match event {
            CanonicalEvent::Created {
                name,
                slug,
                git_path,
            } => {
                self.created = true;
                self.name = name;
                self.slug = Some(slug);
                self.git_path = git_path;
            }
            CanonicalEvent::Renamed { name } => self.name = name,
            CanonicalEvent::GitVersionRecorded {
                git_content_hash,
                commit_sha,
                git_path,
            } => {
                self.git_content_hash = Some(git_content_hash);
                self.commit_sha = Some(commit_sha);
                self.git_path = Some(git_path);
            }
            CanonicalEvent::Deleted { .. } => self.status = CanonicalStatus::Deleted,
        }
    }
}

impl Lifecycle for CanonicalWorkflow {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.created.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::kernel::command::{Actor, Role};
    use crate::kernel::ids::LocalId;
    use crate::kernel::transitions::table_tests;
    use crate::reservation::InMemoryReservations;

    fn issue(command: CanonicalCommand) -> Issued<CanonicalCommand> {
        Issued::new(Actor::new("alice", Role::Admin), Utc::now(), command)
    }

    fn create(id: &str, name: &str) -> Issued<CanonicalCommand> {
        issue(CanonicalCommand::Create {
            canonical_id: LocalId::parse(id).unwrap(),
            name: name.into(),
            slug: None,
            git_path: None,
        })
    }

    #[test]
    fn slug_collisions_get_a_suffix() {
        let reservations: Arc<dyn Reservations> = Arc::new(InMemoryReservations::default());
        let slug_of = |events: Vec<CanonicalEvent>| match &events[0] {
            CanonicalEvent::Created { slug, .. } => slug.to_string(),
            other => panic!("{other:?}"),
        };
        let first = TestFramework::<CanonicalWorkflow>::with(reservations.clone())
            .given_no_previous_events()
            .when(create("c1", "Order Sync"))
            .inspect_result()
            .unwrap();
        let second = TestFramework::<CanonicalWorkflow>::with(reservations.clone())
            .given_no_previous_events()
            .when(create("c2", "Order sync"))
            .inspect_result()
            .unwrap();
        assert_eq!(
            (slug_of(first), slug_of(second)),
            ("order-sync".into(), "order-sync-2".into())
        );
    }

    #[test]
    fn table_and_deleted_is_terminal() {
        table_tests::assert_well_formed::<CanonicalStatus>();
        table_tests::assert_check_matches_table::<CanonicalStatus>();
        let reservations: Arc<dyn Reservations> = Arc::new(InMemoryReservations::default());
        let created = CanonicalEvent::Created {
            name: "A".into(),
            slug: Slug::parse("a").unwrap(),
            git_path: None,
        };
        let deleted = CanonicalEvent::Deleted {
            from: CanonicalStatus::Active,
            reason: None,
        };
        let again = TestFramework::<CanonicalWorkflow>::with(reservations.clone())
            .given(vec![created.clone(), deleted.clone()])
            .when(issue(CanonicalCommand::Delete { reason: None }))
            .inspect_result();
        assert!(matches!(again, Err(DomainError::InvalidTransition { .. })));
        let ok = TestFramework::<CanonicalWorkflow>::with(reservations.clone())
            .given(vec![created])
            .when(issue(CanonicalCommand::Delete {
                reason: Some("obsolete".into()),
            }))
            .inspect_result();
        assert_eq!(
            ok,
            Ok(vec![CanonicalEvent::Deleted {
                from: CanonicalStatus::Active,
                reason: Some("obsolete".into())
            }])
        );
        let unknown = TestFramework::<CanonicalWorkflow>::with(reservations)
            .given_no_previous_events()
            .when(issue(CanonicalCommand::Rename { name: "x".into() }))
            .inspect_result();
        assert!(matches!(unknown, Err(DomainError::NotFound { .. })));
    }
}
