//! What can be asked of the aggregate, and the role each command requires.

use crate::content::ContentHash;
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::{LocalId, Slug};

#[derive(Debug, Clone, PartialEq)]
pub enum CanonicalCommand {
    Create {
        canonical_id: LocalId,
        name: String,
        /// Preferred slug (from a Git sidecar); derived from the name when absent.
        slug: Option<Slug>,
        git_path: Option<String>,
    },
    Rename {
        name: String,
    },
    RecordGitVersion {
        git_content_hash: ContentHash,
        commit_sha: String,
        git_path: String,
    },
    Delete {
        reason: Option<String>,
    },
}

impl DomainCommand for CanonicalCommand {
    fn required_role(&self) -> Role {
        match self {
            CanonicalCommand::Create { .. } | CanonicalCommand::RecordGitVersion { .. } => {
                Role::Developer
            }
            CanonicalCommand::Rename { .. } | CanonicalCommand::Delete { .. } => Role::Admin,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            CanonicalCommand::Delete { reason } => reason.as_deref(),
            _ => None,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            CanonicalCommand::Create { .. } => "canonical.create",
            CanonicalCommand::Rename { .. } => "canonical.rename",
            CanonicalCommand::RecordGitVersion { .. } => "canonical.record_git_version",
            CanonicalCommand::Delete { .. } => "canonical.delete",
        }
    }
}
