//! Pipeline (DOMAIN.md §5): an ordered list of stages, each promoting from a source
//! environment to a target environment under its gates. A promotion names its
//! pipeline and takes the stage's gates and approval rule when it is created, so a
//! later change to the pipeline affects new promotions only.
//!
//! Environment ids arrive as text and are checked here (well-formed, source ≠
//! target, no stage twice); whether the environments exist is the caller's check,
//! as the aggregate does no lookups.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, require_text, DomainError};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    #[default]
    Active,
    Deactivated,
}

crate::state_names!(PipelineStatus { Active => "active", Deactivated => "deactivated" });

impl StateMachine for PipelineStatus {
    const MACHINE: &'static str = "pipeline";
    const ALL: &'static [Self] = &[Self::Active, Self::Deactivated];
    const INITIAL: &'static [Self] = &[Self::Active];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = &[
        (Self::Active, &[Self::Deactivated]),
        (Self::Deactivated, &[Self::Active]),
    ];
}

/// The gates of one stage (DOMAIN.md §5). `credentials_exist` and
/// `target_environment_healthy` are always checked, so they are not settings.
///
/// Missing fields take their defaults when deserialized: `require_clean_drift` is on
/// (the seeds' promotion policy matrix), everything else off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct StageGates {
    /// Drift in the target blocks the promotion.
    pub require_clean_drift: bool,
    /// An active (non-closed) drift incident in the target blocks the promotion.
    pub block_on_active_drift: bool,
    /// An expired incident in the target blocks the promotion.
    pub enforce_ttl: bool,
    /// Off: a target changed after its Git commit (a hotfix) blocks the promotion.
    pub allow_overwriting_hotfixes: bool,
    /// Off: conflicts block the promotion.
    pub allow_force_promotion_on_conflicts: bool,
    /// Off: an unmapped credential blocks the promotion.
    pub allow_placeholder_credentials: bool,
    /// The promotion waits for an admin's approval.
    pub require_approval: bool,
    /// Not a gate: the promotion's creator may approve it (DOMAIN.md §2.3).
    pub allow_self_approval: bool,
    /// Not a gate: workflows a deployment creates in the target are activated
    /// (otherwise they stay inactive, as n8n creates them). Workflows the target
    /// already had keep their activation state either way.
    pub activate_new_workflows: bool,
}

impl Default for StageGates {
    fn default() -> Self {
        StageGates {
            require_clean_drift: true,
            block_on_active_drift: false,
            enforce_ttl: false,
            allow_overwriting_hotfixes: false,
            allow_force_promotion_on_conflicts: false,
            allow_placeholder_credentials: false,
            require_approval: false,
            allow_self_approval: false,
            activate_new_workflows: false,
        }
    }
}

/// One stage: promote from `source_environment_id` to `target_environment_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipelineStage {
    pub source_environment_id: String,
    pub target_environment_id: String,
    #[serde(default)]
    pub gates: StageGates,
}

impl PipelineStage {
    pub fn new(source: &str, target: &str, gates: StageGates) -> Self {
        PipelineStage {
            source_environment_id: source.to_string(),
            target_environment_id: target.to_string(),
            gates,
        }
    }
}

/// A field that is present deserializes to `Some` even when it is `null` (serde's
/// `Option<Option<T>>` alone cannot tell `null` from absent).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub created: bool,
    pub name: String,
    pub description: Option<String>,
    pub stages: Vec<PipelineStage>,
    pub status: PipelineStatus,
    pub created_by: String,
}

const MAX_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 2000;
/// More stages than any real promotion path has; a bound on what one event holds.
pub const MAX_STAGES: usize = 32;

fn validate_name(name: &str) -> Result<String, DomainError> {
    let name = require_text("name", Some(name))?;
    if name.chars().count() > MAX_NAME {
        return Err(DomainError::validation(
            "name",
            format!("longer than {MAX_NAME} characters"),
        ));
    }
    Ok(name)
}

/// Trimmed, and `None` when blank.
fn validate_description(description: Option<&str>) -> Result<Option<String>, DomainError> {
    let description = non_blank(description).map(str::to_string);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(DomainError::validation(
            "description",
            format!("longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(description)
}

fn environment_id(field: String, value: &str) -> Result<LocalId, DomainError> {
    LocalId::parse(value).map_err(|e| match e {
        DomainError::Validation { message, .. } => DomainError::Validation { field, message },
        other => other,
    })
}

fn validate_stages(stages: Vec<PipelineStage>) -> Result<Vec<PipelineStage>, DomainError> {
    if stages.is_empty() {
        return Err(DomainError::validation(
            "stages",
            "at least one stage is required",
        ));
    }
    if stages.len() > MAX_STAGES {
        return Err(DomainError::validation(
            "stages",
            format!("at most {MAX_STAGES} stages"),
        ));
    }
    for (i, stage) in stages.iter().enumerate() {
        let source = environment_id(
            format!("stages[{i}].source_environment_id"),
            &stage.source_environment_id,
        )?;
        let target = environment_id(
            format!("stages[{i}].target_environment_id"),
            &stage.target_environment_id,
        )?;
        if source == target {
            return Err(DomainError::validation(
                format!("stages[{i}].target_environment_id"),
                "must differ from the source environment",
            ));
        }
        if let Some(j) = stages[..i].iter().position(|earlier| {
            earlier.source_environment_id == stage.source_environment_id
                && earlier.target_environment_id == stage.target_environment_id
        }) {
            return Err(DomainError::validation(
                format!("stages[{i}]"),
                format!("same source and target as stages[{j}] ({source} → {target})"),
            ));
        }
    }
    Ok(stages)
}

impl Pipeline {
    /// The stage that promotes from `source` to `target`, if the pipeline has one.
    pub fn stage(&self, source: &str, target: &str) -> Option<&PipelineStage> {
        self.stages
            .iter()
            .find(|s| s.source_environment_id == source && s.target_environment_id == target)
    }

    /// The stage that promotes into `target` (a restore of `target` runs through its
    /// gates).
    pub fn stage_into(&self, target: &str) -> Option<&PipelineStage> {
        self.stages
            .iter()
            .find(|s| s.target_environment_id == target)
    }

    /// Created and not deactivated: promotions may be created on it.
    pub fn is_active(&self) -> bool {
        self.created && self.status == PipelineStatus::Active
    }

    pub fn decide(
        &self,
        issued: Issued<PipelineCommand>,
    ) -> Result<Vec<PipelineEvent>, DomainError> {
        use PipelineCommand::*;
        if let Create {
            name,
            description,
            stages,
        } = issued.command
        {
            if self.created {
                return Err(DomainError::validation("pipeline_id", "already exists"));
            }
            transitions::check_initial(PipelineStatus::Active)?;
            return Ok(vec![PipelineEvent::Created {
                name: validate_name(&name)?,
                description: validate_description(description.as_deref())?,
                stages: validate_stages(stages)?,
                created_by: issued.actor.id,
            }]);
        }
        if !self.created {
            return Err(DomainError::NotFound {
                kind: "pipeline",
                id: String::new(),
            });
        }
        match issued.command {
            Create { .. } => unreachable!("handled above"),
            // A deactivated pipeline may still be edited, so it can be fixed before
            // it is reactivated; promotions check `is_active`.
            Update {
                name,
                description,
                stages,
            } => {
                let name = name
                    .map(|n| validate_name(&n))
                    .transpose()?
                    .filter(|n| *n != self.name);
                let description = description
                    .map(|d| validate_description(Some(&d)))
                    .transpose()?
                    .filter(|d| *d != self.description);
                let stages = stages
                    .map(validate_stages)
                    .transpose()?
                    .filter(|s| *s != self.stages);
                if name.is_none() && description.is_none() && stages.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![PipelineEvent::Updated {
                    name,
                    description,
                    stages,
                }])
            }
            Deactivate { reason } => {
                transitions::check(self.status, PipelineStatus::Deactivated, false)?;
                Ok(vec![PipelineEvent::Deactivated {
                    from: self.status,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            Reactivate => {
                transitions::check(self.status, PipelineStatus::Active, false)?;
                Ok(vec![PipelineEvent::Reactivated { from: self.status }])
            }
        }
    }
}

impl Aggregate for Pipeline {
    const TYPE: &'static str = "pipeline";
    type Command = Issued<PipelineCommand>;
    type Event = PipelineEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PipelineEvent) {
        if let Some((_, to)) = event.status_change() {
            self.status = to;
        }
        match event {
            PipelineEvent::Created {
                name,
                description,
                stages,
                created_by,
            } => {
                self.created = true;
                self.name = name;
                self.description = description;
                self.stages = stages;
                self.created_by = created_by;
            }
            PipelineEvent::Updated {
                name,
                description,
                stages,
            } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(description) = description {
                    self.description = description;
                }
                if let Some(stages) = stages {
                    self.stages = stages;
                }
            }
            PipelineEvent::Deactivated { .. } | PipelineEvent::Reactivated { .. } => {}
        }
    }
}

impl Lifecycle for Pipeline {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.created.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

#[cfg(test)]
mod tests;
