//! given / when / then for webhook endpoints.

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::Actor;
use crate::kernel::transitions::table_tests;

type Fx = TestFramework<Webhook>;

fn issue(role: Role, command: WebhookCommand) -> Issued<WebhookCommand> {
    Issued::new(
        Actor::new("alice", role),
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
        command,
    )
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        event_types: vec!["incident.detected".into()],
        aggregate_types: vec![],
        description: Some("tickets".into()),
        notification: None,
    }
}

fn created() -> WebhookEvent {
    WebhookEvent::Created {
        config: config("https://hooks.example.com/a"),
        secret_id: "s1".into(),
        created_by: "alice".into(),
    }
}

fn histories() -> Vec<(&'static str, Vec<WebhookEvent>)> {
    let disabled = WebhookEvent::Disabled {
        from: WebhookStatus::Active,
        reason: "410".into(),
        automatic: true,
    };
    vec![
        ("new", vec![]),
        ("active", vec![created()]),
        ("disabled", vec![created(), disabled.clone()]),
        (
            "deleted",
            vec![
                created(),
                WebhookEvent::Deleted {
                    from: WebhookStatus::Active,
                },
            ],
        ),
    ]
}

fn commands() -> Vec<(&'static str, Issued<WebhookCommand>)> {
    vec![
        (
            "create",
            issue(
                Role::Admin,
                WebhookCommand::Create {
                    config: config("https://hooks.example.com/b"),
                    secret_id: "s2".into(),
                },
            ),
        ),
        (
            "disable",
            issue(
                Role::Admin,
                WebhookCommand::Disable {
                    reason: "maintenance".into(),
                    automatic: false,
                },
            ),
        ),
        ("enable", issue(Role::Admin, WebhookCommand::Enable)),
        ("delete", issue(Role::Admin, WebhookCommand::Delete)),
    ]
}

#[test]
fn every_command_from_every_state_stays_in_the_table() {
    table_tests::assert_well_formed::<WebhookStatus>();
    table_tests::assert_check_matches_table::<WebhookStatus>();
    table_tests::assert_commands_cover_table::<Webhook, WebhookStatus>(
        histories(),
        commands(),
        || (),
        WebhookEvent::status_change,
    );
}

#[test]
fn secrets_rotate_keeping_the_previous_one_and_nothing_secret_is_stored() {
    let until = Utc.with_ymd_and_hms(2026, 5, 2, 9, 0, 0).unwrap();
    Fx::with(())
        .given(vec![created()])
        .when(issue(
            Role::Admin,
            WebhookCommand::RotateSecret {
                secret_id: "s2".into(),
                previous_valid_until: until,
            },
        ))
        .then_expect_events(vec![WebhookEvent::SecretRotated {
            secret_id: "s2".into(),
            previous_secret_id: "s1".into(),
            previous_valid_until: until,
        }]);
    let stored = serde_json::to_value(created()).unwrap();
    assert_eq!(stored["url"], "https://hooks.example.com/a");
    assert_eq!(stored["secret_id"], "s1");
}

#[test]
fn a_deleted_endpoint_is_gone_and_filters_match() {
    let deleted = vec![
        created(),
        WebhookEvent::Deleted {
            from: WebhookStatus::Active,
        },
    ];
    let result = Fx::with(())
        .given(deleted)
        .when(issue(Role::Admin, WebhookCommand::Enable))
        .inspect_result();
    assert!(matches!(result, Err(DomainError::NotFound { .. })));
    let c = config("https://x");
    assert!(c.matches("incident.detected", "incident"));
    assert!(!c.matches("incident.closed", "incident"));
    let all = WebhookConfig::default();
    assert!(all.matches("anything.at_all", "whatever"));
    // the sender disables as the system; a developer may not
    assert_eq!(
        WebhookCommand::Disable {
            reason: "x".into(),
            automatic: true
        }
        .required_role(),
        Role::System
    );
    let too_long = WebhookConfig {
        url: "https://x/".to_string() + &"a".repeat(MAX_URL),
        ..Default::default()
    };
    assert!(too_long.validate().is_err());
}

#[test]
fn a_notification_rule_selects_kinds_environment_and_severity() {
    use crate::incident::Severity;
    let rule = NotificationRule {
        format: ChannelFormat::Slack,
        kinds: vec![
            NotificationKind::IncidentOpened,
            NotificationKind::WebhookDisabled,
        ],
        environment_id: Some("prod".into()),
        severities: vec![Severity::High, Severity::Critical],
        url_secret_id: "s1".into(),
    };
    let opened = NotificationKind::IncidentOpened;
    assert!(rule.matches(opened, Some("prod"), Some(Severity::High)));
    assert!(!rule.matches(opened, Some("prod"), Some(Severity::Low)));
    assert!(!rule.matches(opened, Some("dev"), Some(Severity::High)));
    assert!(!rule.matches(
        NotificationKind::IncidentClosed,
        Some("prod"),
        Some(Severity::High)
    ));
    // about no environment and without a severity: not filtered by either
    assert!(rule.matches(NotificationKind::WebhookDisabled, None, None));
    let every = NotificationRule {
        kinds: vec![],
        environment_id: None,
        severities: vec![],
        ..rule
    };
    assert!(NotificationKind::ALL.iter().all(|k| every.matches(
        *k,
        Some("dev"),
        Some(Severity::Low)
    )));
    // a channel never receives raw events, and selects kinds, not event types
    let channel = WebhookConfig {
        url: "https://hooks.slack.com/".into(),
        notification: Some(every.clone()),
        ..Default::default()
    };
    assert!(!channel.matches("incident.detected", "incident"));
    assert!(channel.validate().is_ok());
    let mixed = WebhookConfig {
        event_types: vec!["incident.detected".into()],
        ..channel
    };
    assert!(mixed.validate().is_err());
}
