//! What can be asked of the aggregate, and the role each command requires.

use super::*;
use crate::content::ContentHash;
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;

#[derive(Debug, Clone, PartialEq)]
pub enum MappingCommand {
    /// A sync saw the workflow. `auto_link` is a canonical id that satisfies the hash
    /// registry's conditions (resolved by the sync); it is used only if the mapping
    /// can take the link slot.
    Observe {
        environment_id: LocalId,
        n8n_workflow_id: LocalId,
        observation: Observation,
        auto_link: Option<LocalId>,
    },
    /// A sync no longer saw the workflow.
    ObserveMissing,
    /// A repository sync saw the linked canonical workflow's file with this hash.
    ObserveGitHash {
        git_content_hash: ContentHash,
    },
    Link {
        canonical_id: LocalId,
    },
    Unlink {
        reason: Option<String>,
    },
    Ignore {
        reason: Option<String>,
    },
    Unignore,
    Delete {
        reason: Option<String>,
    },
}

impl DomainCommand for MappingCommand {
    fn required_role(&self) -> Role {
        Role::Developer
    }
    fn reason(&self) -> Option<&str> {
        match self {
            MappingCommand::Unlink { reason }
            | MappingCommand::Ignore { reason }
            | MappingCommand::Delete { reason } => reason.as_deref(),
            _ => None,
        }
    }
    fn name(&self) -> &'static str {
        use MappingCommand::*;
        match self {
            Observe { .. } => "mapping.observe",
            ObserveMissing => "mapping.observe_missing",
            ObserveGitHash { .. } => "mapping.observe_git_hash",
            Link { .. } => "mapping.link",
            Unlink { .. } => "mapping.unlink",
            Ignore { .. } => "mapping.ignore",
            Unignore => "mapping.unignore",
            Delete { .. } => "mapping.delete",
        }
    }
}
