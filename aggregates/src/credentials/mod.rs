//! Credential mappings between two environments (DOMAIN.md §5): which credential of
//! the target a promotion writes where a workflow of the source references a
//! credential of a given type and name.
//!
//! One aggregate per (source environment, target environment) of a tenant: its
//! aggregate id is `{tenant}:{source}:{target}`. An explicit mapping comes before
//! matching by type and name among the target's known credentials (which each sync
//! learns, `environment.credentials_observed`). Only references: ids and names,
//! never a credential's secret data.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::{require_text, DomainError};

/// Longest credential type, name or id accepted.
pub const MAX_FIELD: usize = 200;

/// What a source credential maps to in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialTarget {
    pub target_id: String,
    pub target_name: String,
}

/// One mapping: the source's credential of a type and name, and the target's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialMapEntry {
    pub credential_type: String,
    pub source_name: String,
    #[serde(flatten)]
    pub target: CredentialTarget,
}

/// The mappings of one (source, target) pair, sorted by type and source name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CredentialMap {
    pub entries: Vec<CredentialMapEntry>,
}

fn field(name: &str, value: &str) -> Result<String, DomainError> {
    let value = require_text(name, Some(value))?;
    if value.chars().count() > MAX_FIELD {
        return Err(DomainError::validation(
            name,
            format!("must be at most {MAX_FIELD} characters"),
        ));
    }
    Ok(value)
}

impl CredentialMap {
    /// The target credential for a source reference of `credential_type` named
    /// `source_name`, if mapped.
    pub fn target(&self, credential_type: &str, source_name: &str) -> Option<&CredentialTarget> {
        self.position(credential_type, source_name)
            .ok()
            .map(|i| &self.entries[i].target)
    }

    fn position(&self, credential_type: &str, source_name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| {
            (e.credential_type.as_str(), e.source_name.as_str())
                .cmp(&(credential_type, source_name))
        })
    }

    pub fn decide(
        &self,
        command: CredentialMapCommand,
    ) -> Result<Vec<CredentialMapEvent>, DomainError> {
        match command {
            CredentialMapCommand::Set {
                credential_type,
                source_name,
                target_id,
                target_name,
            } => {
                let credential_type = field("type", &credential_type)?;
                let source_name = field("source_name", &source_name)?;
                let target = CredentialTarget {
                    target_id: field("target_id", &target_id)?,
                    target_name: field("target_name", &target_name)?,
                };
                if self.target(&credential_type, &source_name) == Some(&target) {
                    return Ok(vec![]);
                }
                Ok(vec![CredentialMapEvent::Set {
                    credential_type,
                    source_name,
                    target_id: target.target_id,
                    target_name: target.target_name,
                }])
            }
            CredentialMapCommand::Remove {
                credential_type,
                source_name,
            } => {
                let (credential_type, source_name) = (
                    credential_type.trim().to_string(),
                    source_name.trim().to_string(),
                );
                if self.target(&credential_type, &source_name).is_none() {
                    return Err(DomainError::NotFound {
                        kind: "credential mapping",
                        id: format!("{credential_type}/{source_name}"),
                    });
                }
                Ok(vec![CredentialMapEvent::Removed {
                    credential_type,
                    source_name,
                }])
            }
        }
    }
}

impl Aggregate for CredentialMap {
    const TYPE: &'static str = "credential_map";
    type Command = Issued<CredentialMapCommand>;
    type Event = CredentialMapEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued.command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CredentialMapEvent) {
        match event {
            CredentialMapEvent::Set {
                credential_type,
                source_name,
                target_id,
                target_name,
            } => {
                let target = CredentialTarget {
                    target_id,
                    target_name,
                };
                match self.position(&credential_type, &source_name) {
                    Ok(i) => self.entries[i].target = target,
                    Err(i) => self.entries.insert(
                        i,
                        CredentialMapEntry {
                            credential_type,
                            source_name,
                            target,
                        },
                    ),
                }
            }
            CredentialMapEvent::Removed {
                credential_type,
                source_name,
            } => {
                if let Ok(i) = self.position(&credential_type, &source_name) {
                    self.entries.remove(i);
                }
            }
        }
    }
}

impl crate::kernel::transitions::Lifecycle for CredentialMap {
    /// Credential mappings have no lifecycle: set and removed, any time.
    fn check_step(_: &Self, _: &Self, _: bool) -> Result<(), DomainError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
