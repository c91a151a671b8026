//! What can be asked of the aggregate, and the role each command requires.

use crate::kernel::command::{DomainCommand, Role};

#[derive(Debug, Clone, PartialEq)]
pub enum CredentialMapCommand {
    /// Maps the source's `credential_type` credential named `source_name` to the
    /// target's credential `target_id` (`target_name`). The same mapping again
    /// appends nothing.
    Set {
        credential_type: String,
        source_name: String,
        target_id: String,
        target_name: String,
    },
    /// Removes a mapping (`NOT_FOUND` when there is none).
    Remove {
        credential_type: String,
        source_name: String,
    },
}

impl DomainCommand for CredentialMapCommand {
    /// Which credentials production workflows use is admin configuration.
    fn required_role(&self) -> Role {
        Role::Admin
    }
    fn reason(&self) -> Option<&str> {
        None
    }
    fn name(&self) -> &'static str {
        match self {
            CredentialMapCommand::Set { .. } => "credential_map.set",
            CredentialMapCommand::Remove { .. } => "credential_map.remove",
        }
    }
}
