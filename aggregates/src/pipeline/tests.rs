//! given / when / then for pipelines.

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, DomainCommand, Role};
use crate::kernel::transitions::table_tests;
use cqrs_es::DomainEvent;

type Fx = TestFramework<Pipeline>;

fn issue(command: PipelineCommand) -> Issued<PipelineCommand> {
    Issued::new(
        Actor::new("alice", Role::Admin),
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
        command,
    )
}

fn stage(source: &str, target: &str) -> PipelineStage {
    PipelineStage::new(source, target, StageGates::default())
}

fn approval_stage(source: &str, target: &str) -> PipelineStage {
    PipelineStage::new(
        source,
        target,
        StageGates {
            require_approval: true,
            block_on_active_drift: true,
            ..StageGates::default()
        },
    )
}

fn two_stages() -> Vec<PipelineStage> {
    vec![stage("dev", "staging"), approval_stage("staging", "prod")]
}

fn create(stages: Vec<PipelineStage>) -> PipelineCommand {
    PipelineCommand::Create {
        name: "  Dev → Prod ".into(),
        description: Some("main path".into()),
        stages,
    }
}

fn created() -> PipelineEvent {
    PipelineEvent::Created {
        name: "Dev → Prod".into(),
        description: Some("main path".into()),
        stages: two_stages(),
        created_by: "alice".into(),
    }
}

fn deactivated() -> PipelineEvent {
    PipelineEvent::Deactivated {
        from: PipelineStatus::Active,
        reason: None,
    }
}

fn update(
    name: Option<&str>,
    description: Option<&str>,
    stages: Option<Vec<PipelineStage>>,
) -> PipelineCommand {
    PipelineCommand::Update {
        name: name.map(Into::into),
        description: description.map(Into::into),
        stages,
    }
}

fn validation_field(result: Result<Vec<PipelineEvent>, DomainError>) -> String {
    match result {
        Err(DomainError::Validation { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn histories() -> Vec<(&'static str, Vec<PipelineEvent>)> {
    vec![
        ("new", vec![]),
        ("active", vec![created()]),
        ("deactivated", vec![created(), deactivated()]),
        (
            "reactivated",
            vec![
                created(),
                deactivated(),
                PipelineEvent::Reactivated {
                    from: PipelineStatus::Deactivated,
                },
            ],
        ),
    ]
}

fn commands() -> Vec<(&'static str, Issued<PipelineCommand>)> {
    vec![
        ("create", issue(create(two_stages()))),
        ("rename", issue(update(Some("Main"), None, None))),
        (
            "deactivate",
            issue(PipelineCommand::Deactivate {
                reason: Some("replaced".into()),
            }),
        ),
        ("reactivate", issue(PipelineCommand::Reactivate)),
    ]
}

#[test]
fn every_command_from_every_state_stays_in_the_table() {
    table_tests::assert_well_formed::<PipelineStatus>();
    table_tests::assert_check_matches_table::<PipelineStatus>();
    table_tests::assert_commands_cover_table::<Pipeline, PipelineStatus>(
        histories(),
        commands(),
        || (),
        PipelineEvent::status_change,
    );
}

#[test]
fn create_trims_and_records_the_creator() {
    Fx::with(())
        .given_no_previous_events()
        .when(issue(create(two_stages())))
        .then_expect_events(vec![created()]);
    let blank_description = PipelineCommand::Create {
        name: "P".into(),
        description: Some("   ".into()),
        stages: vec![stage("dev", "prod")],
    };
    let events = Fx::with(())
        .given_no_previous_events()
        .when(issue(blank_description))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [PipelineEvent::Created {
            description: None,
            ..
        }]
    ));
}

#[test]
fn create_twice_is_refused() {
    Fx::with(())
        .given(vec![created()])
        .when(issue(create(two_stages())))
        .then_expect_error(DomainError::validation("pipeline_id", "already exists"));
}

#[test]
fn create_validates_name_and_stages() {
    let cases: Vec<(PipelineCommand, &str)> = vec![
        (
            PipelineCommand::Create {
                name: "  ".into(),
                description: None,
                stages: two_stages(),
            },
            "name",
        ),
        (
            PipelineCommand::Create {
                name: "x".repeat(101),
                description: None,
                stages: two_stages(),
            },
            "name",
        ),
        (
            PipelineCommand::Create {
                name: "P".into(),
                description: Some("d".repeat(2001)),
                stages: two_stages(),
            },
            "description",
        ),
        (create(vec![]), "stages"),
        (
            create(
                (0..=MAX_STAGES)
                    .map(|i| stage(&format!("e{i}"), "prod"))
                    .collect(),
            ),
            "stages",
        ),
        (
            create(vec![stage("prod", "prod")]),
            "stages[0].target_environment_id",
        ),
        (
            create(vec![stage("dev", "staging"), stage("", "prod")]),
            "stages[1].source_environment_id",
        ),
        (
            create(vec![stage("dev", "stag:ing")]),
            "stages[0].target_environment_id",
        ),
        (
            create(vec![
                stage("dev", "staging"),
                stage("staging", "prod"),
                approval_stage("dev", "staging"),
            ]),
            "stages[2]",
        ),
    ];
    for (command, field) in cases {
        let result = Fx::with(())
            .given_no_previous_events()
            .when(issue(command.clone()))
            .inspect_result();
        assert_eq!(validation_field(result), field, "{command:?}");
    }
    // the same pair in both directions is two different stages
    let both_ways = Fx::with(())
        .given_no_previous_events()
        .when(issue(create(vec![stage("a", "b"), stage("b", "a")])))
        .inspect_result();
    assert!(both_ways.is_ok());
}

#[test]
fn commands_on_an_unknown_pipeline_are_not_found() {
    for command in [
        update(Some("x"), None, None),
        PipelineCommand::Deactivate { reason: None },
        PipelineCommand::Reactivate,
    ] {
        Fx::with(())
            .given_no_previous_events()
            .when(issue(command))
            .then_expect_error(DomainError::NotFound {
                kind: "pipeline",
                id: String::new(),
            });
    }
}

#[test]
fn update_appends_only_what_changes() {
    // nothing given, or everything equal (after trimming): nothing appended
    for command in [
        update(None, None, None),
        update(Some(" Dev → Prod "), Some("main path "), Some(two_stages())),
    ] {
        Fx::with(())
            .given(vec![created()])
            .when(issue(command))
            .then_expect_events(vec![]);
    }
    Fx::with(())
        .given(vec![created()])
        .when(issue(update(
            Some("Dev → Prod"),
            Some("new words"),
            Some(two_stages()),
        )))
        .then_expect_events(vec![PipelineEvent::Updated {
            name: None,
            description: Some(Some("new words".into())),
            stages: None,
        }]);
    let reordered = vec![approval_stage("staging", "prod"), stage("dev", "staging")];
    Fx::with(())
        .given(vec![created()])
        .when(issue(update(Some("Main"), None, Some(reordered.clone()))))
        .then_expect_events(vec![PipelineEvent::Updated {
            name: Some("Main".into()),
            description: None,
            stages: Some(reordered),
        }]);
    // a blank description removes it
    Fx::with(())
        .given(vec![created()])
        .when(issue(update(None, Some(""), None)))
        .then_expect_events(vec![PipelineEvent::Updated {
            name: None,
            description: Some(None),
            stages: None,
        }]);
}

#[test]
fn update_validates_like_create() {
    for (command, field) in [
        (update(Some(" "), None, None), "name"),
        (update(None, None, Some(vec![])), "stages"),
        (
            update(None, None, Some(vec![stage("dev", "dev")])),
            "stages[0].target_environment_id",
        ),
    ] {
        let result = Fx::with(())
            .given(vec![created()])
            .when(issue(command))
            .inspect_result();
        assert_eq!(validation_field(result), field);
    }
}

#[test]
fn a_deactivated_pipeline_can_be_edited() {
    let events = Fx::with(())
        .given(vec![created(), deactivated()])
        .when(issue(update(None, None, Some(vec![stage("dev", "prod")]))))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1);
    Fx::with(())
        .given(vec![created(), deactivated()])
        .when(issue(PipelineCommand::Deactivate { reason: None }))
        .then_expect_error(transitions::refusal(
            PipelineStatus::Deactivated,
            PipelineStatus::Deactivated,
        ));
}

#[test]
fn state_follows_the_events_and_finds_stages() {
    let mut pipeline = Pipeline::default();
    assert!(!pipeline.is_active());
    pipeline.apply(created());
    assert!(pipeline.is_active());
    assert_eq!(pipeline.created_by, "alice");
    let gates = pipeline.stage("staging", "prod").unwrap().gates;
    assert!(gates.require_approval && gates.require_clean_drift && !gates.allow_self_approval);
    assert!(pipeline.stage("prod", "staging").is_none());
    assert!(pipeline.stage("dev", "prod").is_none());

    pipeline.apply(PipelineEvent::Updated {
        name: Some("Main".into()),
        description: Some(None),
        stages: Some(vec![stage("dev", "prod")]),
    });
    assert_eq!(pipeline.name, "Main");
    assert_eq!(pipeline.description, None);
    assert!(pipeline.stage("dev", "prod").is_some());
    assert!(pipeline.stage("dev", "staging").is_none());

    pipeline.apply(deactivated());
    assert!(!pipeline.is_active());
    assert_eq!(pipeline.status, PipelineStatus::Deactivated);
}

#[test]
fn events_keep_their_stored_shape() {
    let removed = PipelineEvent::Updated {
        name: None,
        description: Some(None),
        stages: None,
    };
    let json = serde_json::to_value(&removed).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "updated", "name": null, "description": null, "stages": null})
    );
    assert_eq!(
        serde_json::from_value::<PipelineEvent>(json).unwrap(),
        removed
    );
    let unchanged = PipelineEvent::Updated {
        name: Some("N".into()),
        description: None,
        stages: None,
    };
    let json = serde_json::to_value(&unchanged).unwrap();
    assert!(json.get("description").is_none(), "absent means unchanged");
    assert_eq!(
        serde_json::from_value::<PipelineEvent>(json).unwrap(),
        unchanged
    );

    let created = serde_json::to_value(created()).unwrap();
    assert_eq!(created["type"], "created");
    assert_eq!(created["stages"][1]["gates"]["require_approval"], true);
    // gates missing from a stored stage take their defaults
    let stage: PipelineStage = serde_json::from_value(
        serde_json::json!({"source_environment_id": "a", "target_environment_id": "b"}),
    )
    .unwrap();
    assert_eq!(stage.gates, StageGates::default());
    assert!(stage.gates.require_clean_drift);
    assert_eq!(self::created().event_type(), "pipeline.created");
    assert_eq!(deactivated().event_version(), "1");
}

#[test]
fn commands_are_admin_only_and_named() {
    for (_, issued) in commands() {
        assert_eq!(issued.command.required_role(), Role::Admin);
        assert!(issued.command.name().starts_with("pipeline."));
    }
    let deactivate = PipelineCommand::Deactivate {
        reason: Some("replaced".into()),
    };
    assert_eq!(deactivate.reason(), Some("replaced"));
    assert_eq!(deactivate.name(), "pipeline.deactivate");
    assert_eq!(create(vec![]).name(), "pipeline.create");
    assert_eq!(create(vec![]).reason(), None);
}
