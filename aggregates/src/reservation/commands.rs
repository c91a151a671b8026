//! What can be asked of the aggregate, and the role each command requires.

use crate::kernel::command::{DomainCommand, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationCommand {
    Claim { holder: String },
    Release { holder: String },
}

impl DomainCommand for ReservationCommand {
    fn required_role(&self) -> Role {
        Role::Developer
    }
    fn name(&self) -> &'static str {
        match self {
            ReservationCommand::Claim { .. } => "reservation.claim",
            ReservationCommand::Release { .. } => "reservation.release",
        }
    }
}
