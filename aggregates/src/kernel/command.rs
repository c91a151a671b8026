//! Who issues a command, when, and with what authority.
//!
//! Aggregates never read a clock or a token: the time and the actor come in the
//! command envelope ([`Issued`]), so `handle` is deterministic and testable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::error::DomainError;

/// Roles of DOMAIN.md §7, ordered viewer < developer < admin. `System` is the
/// schedulers and reactors: they may run any command a job runs, but they are not a
/// person, so they can neither approve nor override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    System,
}

crate::state_names!(Role {
    Viewer => "viewer",
    Developer => "developer",
    Admin => "admin",
    System => "system",
});

impl Role {
    /// Whether this role may issue a command that requires `required`.
    pub fn satisfies(self, required: Role) -> bool {
        match (self, required) {
            (Role::System, _) => true,
            (_, Role::System) => false,
            (mine, needed) => mine >= needed,
        }
    }
}

/// The user or job behind a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub role: Role,
}

impl Actor {
    pub fn new(id: impl Into<String>, role: Role) -> Self {
        Actor {
            id: id.into(),
            role,
        }
    }

    /// A scheduler or reactor: `system:<job>`.
    pub fn system(job: &str) -> Self {
        Actor::new(format!("system:{job}"), Role::System)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses unless the actor is a (human) admin.
    pub fn require_admin(&self, action: &str) -> Result<(), DomainError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "{action} requires the admin role"
            )))
        }
    }
}

/// A command as issued: by whom, at what server time, and whether an admin forces it
/// outside the transition table.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued<C> {
    pub actor: Actor,
    pub at: DateTime<Utc>,
    pub admin_override: bool,
    pub command: C,
}

impl<C> Issued<C> {
    pub fn new(actor: Actor, at: DateTime<Utc>, command: C) -> Self {
        Issued {
            actor,
            at,
            admin_override: false,
            command,
        }
    }

    pub fn with_override(mut self, admin_override: bool) -> Self {
        self.admin_override = admin_override;
        self
    }

    /// The override flag, refused unless the actor is an admin.
    pub fn admin_override(&self) -> Result<bool, DomainError> {
        if self.admin_override && !self.actor.is_admin() {
            return Err(DomainError::Forbidden(
                "admin override is reserved to admins".to_string(),
            ));
        }
        Ok(self.admin_override)
    }
}

/// Per-command facts the audit trail needs beyond actor and time.
pub trait DomainCommand {
    /// Minimum role that may issue the command (DOMAIN.md §7).
    fn required_role(&self) -> Role;
    /// The free-text reason given by the user, where the command takes one.
    fn reason(&self) -> Option<&str> {
        None
    }
    /// Stable name of the command, for metrics and logs.
    fn name(&self) -> &'static str;
    /// Whether the command usually creates its aggregate. On an aggregate this
    /// process keeps nothing for, the command bus then decides it on the empty
    /// state without reading the stream, and the append checks that the stream is
    /// still empty; if it is not, the command is decided again on a read (decision
    /// 77). Only for commands whose decision has no effect outside the aggregate
    /// (their aggregate's `Services` are `()`): a decision on a state that turns
    /// out wrong must leave nothing behind.
    fn creates(&self) -> bool {
        false
    }
}
