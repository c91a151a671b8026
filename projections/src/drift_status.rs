//! An environment's drift status (DOMAIN.md §2.5): derived, evaluated in a fixed
//! order, never a command target.

use aggregates::environment::DriftCounts;
use aggregates::incident::IncidentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DriftStatus {
    Unknown,
    Error,
    New,
    DriftIncidentAcknowledged,
    DriftIncidentActive,
    Untracked,
    DriftDetected,
    InSync,
}

impl DriftStatus {
    pub const ALL: [DriftStatus; 8] = [
        DriftStatus::Unknown,
        DriftStatus::Error,
        DriftStatus::New,
        DriftStatus::DriftIncidentAcknowledged,
        DriftStatus::DriftIncidentActive,
        DriftStatus::Untracked,
        DriftStatus::DriftDetected,
        DriftStatus::InSync,
    ];

    /// The stored and displayed name (`IN_SYNC`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::Unknown => "UNKNOWN",
            DriftStatus::Error => "ERROR",
            DriftStatus::New => "NEW",
            DriftStatus::DriftIncidentAcknowledged => "DRIFT_INCIDENT_ACKNOWLEDGED",
            DriftStatus::DriftIncidentActive => "DRIFT_INCIDENT_ACTIVE",
            DriftStatus::Untracked => "UNTRACKED",
            DriftStatus::DriftDetected => "DRIFT_DETECTED",
            DriftStatus::InSync => "IN_SYNC",
        }
    }
}

impl std::str::FromStr for DriftStatus {
    type Err = UnknownDriftStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DriftStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownDriftStatus(s.to_string()))
    }
}

/// A name that is no drift status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown drift status {0:?}")]
pub struct UnknownDriftStatus(pub String);

crate::named_column!(DriftStatus);

/// What the status depends on.
#[derive(Debug, Clone, Copy)]
pub struct EnvironmentFacts {
    pub git_configured: bool,
    /// The last drift check could not read n8n or Git.
    pub last_check_failed: bool,
    /// The environment has a baseline: it has been synced and drift-checked at
    /// least once.
    pub onboarded: bool,
    /// Status of the active (non-closed) incident, if any.
    pub active_incident: Option<IncidentStatus>,
    pub linked_mappings: u32,
    pub counts: DriftCounts,
}

/// The first rule that applies, in the order of DOMAIN.md §2.5.
pub fn drift_status(facts: &EnvironmentFacts) -> DriftStatus {
    let active = facts
        .active_incident
        .filter(|s| *s != IncidentStatus::Closed);
    if !facts.git_configured {
        DriftStatus::Unknown
    } else if facts.last_check_failed {
        DriftStatus::Error
    } else if !facts.onboarded {
        DriftStatus::New
    } else if active.is_some_and(|s| s != IncidentStatus::Detected) {
        DriftStatus::DriftIncidentAcknowledged
    } else if active == Some(IncidentStatus::Detected) {
        DriftStatus::DriftIncidentActive
    } else if facts.linked_mappings == 0 {
        DriftStatus::Untracked
    } else if facts.counts.with_drift > 0 || facts.counts.not_in_git > 0 {
        DriftStatus::DriftDetected
    } else {
        DriftStatus::InSync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EnvironmentFacts {
        EnvironmentFacts {
            git_configured: true,
            last_check_failed: false,
            onboarded: true,
            active_incident: None,
            linked_mappings: 3,
            counts: DriftCounts {
                in_sync: 3,
                with_drift: 0,
                not_in_git: 0,
            },
        }
    }

    #[test]
    fn stored_names_match_serde() {
        for status in DriftStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
    }

    #[test]
    fn rules_apply_in_order() {
        assert_eq!(drift_status(&base()), DriftStatus::InSync);
        let with = |f: fn(&mut EnvironmentFacts)| {
            let mut facts = base();
            f(&mut facts);
            drift_status(&facts)
        };
        assert_eq!(
            with(|f| f.counts.not_in_git = 1),
            DriftStatus::DriftDetected
        );
        assert_eq!(
            with(|f| f.counts.with_drift = 2),
            DriftStatus::DriftDetected
        );
        assert_eq!(with(|f| f.linked_mappings = 0), DriftStatus::Untracked);
        assert_eq!(
            with(|f| f.active_incident = Some(IncidentStatus::Detected)),
            DriftStatus::DriftIncidentActive
        );
        assert_eq!(
            with(|f| f.active_incident = Some(IncidentStatus::Stabilized)),
            DriftStatus::DriftIncidentAcknowledged
        );
        assert_eq!(
            with(|f| f.active_incident = Some(IncidentStatus::Closed)),
            DriftStatus::InSync
        );
        // earlier rules win over later ones
        assert_eq!(
            with(|f| {
                f.onboarded = false;
                f.active_incident = Some(IncidentStatus::Acknowledged);
            }),
            DriftStatus::New
        );
        assert_eq!(
            with(|f| {
                f.last_check_failed = true;
                f.onboarded = false;
            }),
            DriftStatus::Error
        );
        assert_eq!(
            with(|f| {
                f.git_configured = false;
                f.last_check_failed = true;
            }),
            DriftStatus::Unknown
        );
    }
}
