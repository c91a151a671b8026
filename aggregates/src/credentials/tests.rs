use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, Role};

type Fx = TestFramework<CredentialMap>;

fn issue(command: CredentialMapCommand) -> Issued<CredentialMapCommand> {
    Issued::new(
        Actor::new("alice", Role::Admin),
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        command,
    )
}

fn set(kind: &str, source: &str, id: &str, name: &str) -> CredentialMapCommand {
    CredentialMapCommand::Set {
        credential_type: kind.into(),
        source_name: source.into(),
        target_id: id.into(),
        target_name: name.into(),
    }
}

fn was_set(kind: &str, source: &str, id: &str, name: &str) -> CredentialMapEvent {
    CredentialMapEvent::Set {
        credential_type: kind.into(),
        source_name: source.into(),
        target_id: id.into(),
        target_name: name.into(),
    }
}

#[test]
fn set_change_and_remove() {
    Fx::with(())
        .given_no_previous_events()
        .when(issue(set("slackApi", "Slack Bot", "41", "Slack Prod")))
        .then_expect_events(vec![was_set("slackApi", "Slack Bot", "41", "Slack Prod")]);
    let given = vec![was_set("slackApi", "Slack Bot", "41", "Slack Prod")];
    // the same mapping again: nothing
    Fx::with(())
        .given(given.clone())
        .when(issue(set("slackApi", "Slack Bot", "41", "Slack Prod")))
        .then_expect_events(vec![]);
    // another target for the same source credential replaces it
    Fx::with(())
        .given(given.clone())
        .when(issue(set("slackApi", "Slack Bot", "42", "Slack Ops")))
        .then_expect_events(vec![was_set("slackApi", "Slack Bot", "42", "Slack Ops")]);
    Fx::with(())
        .given(given.clone())
        .when(issue(CredentialMapCommand::Remove {
            credential_type: "slackApi".into(),
            source_name: "Slack Bot".into(),
        }))
        .then_expect_events(vec![CredentialMapEvent::Removed {
            credential_type: "slackApi".into(),
            source_name: "Slack Bot".into(),
        }]);
    // removing what is not mapped is a clear error
    Fx::with(())
        .given(given)
        .when(issue(CredentialMapCommand::Remove {
            credential_type: "postgres".into(),
            source_name: "Slack Bot".into(),
        }))
        .then_expect_error(DomainError::NotFound {
            kind: "credential mapping",
            id: "postgres/Slack Bot".into(),
        });
}

#[test]
fn fields_are_required_and_bounded() {
    Fx::with(())
        .given_no_previous_events()
        .when(issue(set("slackApi", "  ", "41", "Slack Prod")))
        .then_expect_error(DomainError::required("source_name"));
    Fx::with(())
        .given_no_previous_events()
        .when(issue(set(
            "slackApi",
            "Slack Bot",
            "41",
            &"x".repeat(MAX_FIELD + 1),
        )))
        .then_expect_error(DomainError::validation(
            "target_name",
            format!("must be at most {MAX_FIELD} characters"),
        ));
    let mut map = CredentialMap::default();
    map.apply(was_set("slackApi", "Slack Bot", "41", "Slack Prod"));
    assert_eq!(
        map.target("slackApi", "Slack Bot")
            .map(|t| t.target_id.as_str()),
        Some("41")
    );
    assert_eq!(map.target("postgres", "Slack Bot"), None);
}
