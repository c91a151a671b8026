//! Use cases that span aggregates or reach outside the service: syncing with n8n
//! and Git ([`sync`]), drift checks ([`drift`]) and promotions ([`promotion`]).
//!
//! Each use case authorizes its caller first, through the same check as every
//! command ([`crate::command::bus::authorize`] with a [`UseCase`]); resolvers never
//! check roles themselves.

pub mod drift;
pub mod promotion;
pub mod sync;

use aggregates::environment::{DriftCheckOutcome, EnvironmentCommand, SyncKind};
use aggregates::promotion::PromotionCommand;
use aggregates::{DomainCommand, Role};

use crate::command::bus::RequiresRole;

/// A use case, for the role check: it requires the role of the commands it exists
/// to issue (a sync records syncs, creating a promotion leads to its approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    /// An environment or repository sync.
    Sync,
    CheckDrift,
    /// Onboarding an untracked workflow (Git commit, canonical workflow, link).
    Onboard,
    /// Comparing two environments for a promotion (records nothing).
    Compare,
    CreatePromotion,
}

impl RequiresRole for UseCase {
    fn required_role(&self) -> Role {
        match self {
            UseCase::Sync => DomainCommand::required_role(&EnvironmentCommand::RecordSync {
                kind: SyncKind::Environment,
                workflows_seen: 0,
            }),
            UseCase::CheckDrift => {
                DomainCommand::required_role(&EnvironmentCommand::RecordDriftCheck {
                    outcome: DriftCheckOutcome::Failed {
                        cause: String::new(),
                    },
                })
            }
            UseCase::Onboard | UseCase::Compare => Role::Developer,
            UseCase::CreatePromotion => DomainCommand::required_role(&PromotionCommand::Approve),
        }
    }

    fn what(&self) -> String {
        match self {
            UseCase::Sync => "syncing",
            UseCase::CheckDrift => "checking drift",
            UseCase::Onboard => "onboarding",
            UseCase::Compare => "comparing",
            UseCase::CreatePromotion => "creating a promotion",
        }
        .to_string()
    }
}
