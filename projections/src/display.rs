//! Display state of a mapping in the workflow matrix (DOMAIN.md §2.1), computed at
//! query time from the mapping's facts, never stored.

use aggregates::mapping::MappingStatus;
use chrono::{DateTime, Utc};

/// What a matrix cell shows about a mapping's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// Linked, and the environment runs exactly what Git holds.
    InSync,
    /// Linked, and the environment differs from Git (changed in the environment).
    Drift,
    /// Linked, and Git changed after the environment last did.
    OutOfDate,
    /// Not linked, or a hash is unknown: nothing to compare.
    None,
}

/// The facts a cell's display state depends on.
#[derive(Debug, Clone, Copy)]
pub struct CellFacts<'a> {
    pub status: MappingStatus,
    pub env_content_hash: Option<&'a str>,
    pub git_content_hash: Option<&'a str>,
    /// When n8n last changed the workflow.
    pub env_changed_at: Option<DateTime<Utc>>,
    /// When the Git file last changed (its commit time).
    pub git_changed_at: Option<DateTime<Utc>>,
}

/// `IN_SYNC` when the hashes are equal; when they differ, `OUT_OF_DATE` if Git
/// changed after the environment, otherwise `DRIFT` (the environment moved away from
/// Git, which is also the safe reading when either time is unknown).
pub fn sync_state(facts: &CellFacts<'_>) -> SyncState {
    if facts.status != MappingStatus::Linked {
        return SyncState::None;
    }
    let (Some(env), Some(git)) = (facts.env_content_hash, facts.git_content_hash) else {
        return SyncState::None;
    };
    if env == git {
        return SyncState::InSync;
    }
    match (facts.env_changed_at, facts.git_changed_at) {
        (Some(env_at), Some(git_at)) if git_at > env_at => SyncState::OutOfDate,
        _ => SyncState::Drift,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn facts<'a>(
        status: MappingStatus,
        env: Option<&'a str>,
        git: Option<&'a str>,
        env_h: u32,
        git_h: u32,
    ) -> CellFacts<'a> {
        CellFacts {
            status,
            env_content_hash: env,
            git_content_hash: git,
            env_changed_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, env_h, 0, 0).unwrap()),
            git_changed_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, git_h, 0, 0).unwrap()),
        }
    }

    #[test]
    fn display_states() {
        use MappingStatus::*;
        assert_eq!(
            sync_state(&facts(Linked, Some("a"), Some("a"), 1, 2)),
            SyncState::InSync
        );
        assert_eq!(
            sync_state(&facts(Linked, Some("a"), Some("b"), 3, 2)),
            SyncState::Drift
        );
        assert_eq!(
            sync_state(&facts(Linked, Some("a"), Some("b"), 1, 2)),
            SyncState::OutOfDate
        );
        assert_eq!(
            sync_state(&facts(Linked, Some("a"), None, 1, 2)),
            SyncState::None
        );
        for status in [Untracked, Missing, Ignored, Deleted] {
            assert_eq!(
                sync_state(&facts(status, Some("a"), Some("b"), 1, 2)),
                SyncState::None
            );
        }
        let mut unknown_times = facts(Linked, Some("a"), Some("b"), 1, 2);
        unknown_times.env_changed_at = None;
        assert_eq!(sync_state(&unknown_times), SyncState::Drift);
    }
}
