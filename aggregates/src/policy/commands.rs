//! What can be asked of the aggregate, and the role each command requires.

use super::*;
use crate::kernel::command::{DomainCommand, Role};

#[derive(Debug, Clone, PartialEq)]
pub enum DriftPolicyCommand {
    /// Records the whole policy of the scope. The same policy again appends nothing.
    Set {
        policy: DriftPolicySettings,
        reason: Option<String>,
    },
    /// Removes the scope's policy: an environment falls back to the tenant default,
    /// the tenant to the built-in defaults. Nothing to remove appends nothing.
    Clear { reason: Option<String> },
}

impl DomainCommand for DriftPolicyCommand {
    /// Policies are admin configuration (DOMAIN.md §7).
    fn required_role(&self) -> Role {
        Role::Admin
    }
    fn reason(&self) -> Option<&str> {
        match self {
            DriftPolicyCommand::Set { reason, .. } | DriftPolicyCommand::Clear { reason } => {
                reason.as_deref()
            }
        }
    }
    fn name(&self) -> &'static str {
        match self {
            DriftPolicyCommand::Set { .. } => "drift_policy.set",
            DriftPolicyCommand::Clear { .. } => "drift_policy.clear",
        }
    }
}
