//! given / when / then for deployments.

use chrono::TimeZone;
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, Role};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::table_tests;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 8, 0, 0).unwrap()
}

fn at(minutes: i64, command: DeploymentCommand) -> Issued<DeploymentCommand> {
    Issued::new(
        Actor::new("alice", Role::Admin),
        t0() + Duration::minutes(minutes),
        command,
    )
}

fn workflows() -> Vec<DeploymentWorkflow> {
    ["w1", "w2"]
        .iter()
        .map(|w| DeploymentWorkflow::new(w.to_string(), w.to_uppercase()))
        .collect()
}

fn created(scheduled: bool) -> DeploymentEvent {
    DeploymentEvent::Created {
        promotion_id: "p1".into(),
        status: if scheduled {
            DeploymentStatus::Scheduled
        } else {
            DeploymentStatus::Pending
        },
        scheduled_for: scheduled.then(|| t0() + Duration::minutes(30)),
        workflows: workflows(),
    }
}

fn result(w: &str, status: WorkflowDeployStatus) -> DeploymentCommand {
    DeploymentCommand::RecordWorkflowResult {
        workflow_id: w.into(),
        status,
        error: None,
        attempts: 1,
        target_id: Some(format!("t-{w}")),
        created: false,
        content_hash: None,
        deleted: false,
    }
}

fn recorded(w: &str, status: WorkflowDeployStatus) -> DeploymentEvent {
    DeploymentEvent::WorkflowResultRecorded {
        workflow_id: w.into(),
        status,
        error: None,
        attempts: 1,
        target_id: Some(format!("t-{w}")),
        created: false,
        content_hash: None,
        deleted: false,
    }
}

fn histories() -> Vec<(&'static str, Vec<DeploymentEvent>)> {
    use DeploymentStatus as S;
    let started = |from| DeploymentEvent::Started { from, at: t0() };
    let running = vec![created(false), started(S::Pending)];
    let half_done = {
        let mut h = running.clone();
        h.push(recorded("w1", WorkflowDeployStatus::Success));
        h
    };
    let all_done = {
        let mut h = half_done.clone();
        h.push(recorded("w2", WorkflowDeployStatus::Unchanged));
        h
    };
    let finished = |to| {
        let mut h = running.clone();
        h.push(DeploymentEvent::Finished {
            from: S::Running,
            to,
            at: t0(),
            reason: None,
        });
        h
    };
    vec![
        ("new", vec![]),
        ("pending", vec![created(false)]),
        ("scheduled", vec![created(true)]),
        ("running, w1 done", half_done),
        ("running, all done", all_done),
        ("success", finished(S::Success)),
        ("failed", finished(S::Failed)),
        ("running", running),
        (
            "cancelled",
            vec![
                created(false),
                DeploymentEvent::Cancelled {
                    from: S::Pending,
                    reason: None,
                },
            ],
        ),
    ]
}

fn commands() -> Vec<(&'static str, Issued<DeploymentCommand>)> {
    let create = |scheduled_for| DeploymentCommand::Create {
        promotion_id: LocalId::parse("p1").unwrap(),
        scheduled_for,
        workflows: vec![("w1".into(), "W1".into())],
    };
    vec![
        ("create now", at(0, create(None))),
        (
            "create scheduled",
            at(0, create(Some(t0() + Duration::hours(1)))),
        ),
        ("start when due", at(45, DeploymentCommand::Start)),
        (
            "w2 success",
            at(50, result("w2", WorkflowDeployStatus::Success)),
        ),
        (
            "w2 unchanged",
            at(50, result("w2", WorkflowDeployStatus::Unchanged)),
        ),
        (
            "w1 failed",
            at(50, result("w1", WorkflowDeployStatus::Failed)),
        ),
        (
            "cancel",
            at(
                50,
                DeploymentCommand::Cancel {
                    reason: Some("window closed".into()),
                },
            ),
        ),
        (
            "finish success",
            at(
                55,
                DeploymentCommand::Finish {
                    outcome: DeploymentStatus::Success,
                    reason: None,
                },
            ),
        ),
        (
            "finish failed",
            at(
                55,
                DeploymentCommand::Finish {
                    outcome: DeploymentStatus::Failed,
                    reason: Some("w1 failed".into()),
                },
            ),
        ),
        (
            "stale sweep",
            at(120, DeploymentCommand::MarkStale { after: STALE_AFTER }),
        ),
    ]
}

#[test]
fn every_command_from_every_state_stays_in_the_table() {
    table_tests::assert_well_formed::<DeploymentStatus>();
    table_tests::assert_check_matches_table::<DeploymentStatus>();
    table_tests::assert_well_formed::<WorkflowDeployStatus>();
    table_tests::assert_check_matches_table::<WorkflowDeployStatus>();
    table_tests::assert_commands_cover_table::<Deployment, DeploymentStatus>(
        histories(),
        commands(),
        || (),
        DeploymentEvent::status_change,
    );
}

#[test]
fn success_only_when_every_workflow_is_done_and_nothing_rolled_back() {
    let mut running = vec![
        created(false),
        DeploymentEvent::Started {
            from: DeploymentStatus::Pending,
            at: t0(),
        },
    ];
    let finish = |outcome| DeploymentCommand::Finish {
        outcome,
        reason: None,
    };
    let first = TestFramework::<Deployment>::with(())
        .given(running.clone())
        .when(at(1, result("w1", WorkflowDeployStatus::Skipped)))
        .inspect_result()
        .unwrap();
    assert_eq!(first.len(), 1, "a result never finishes the deployment");
    running.extend(first);
    let early = TestFramework::<Deployment>::with(())
        .given(running.clone())
        .when(at(2, finish(DeploymentStatus::Success)))
        .inspect_result();
    assert!(
        matches!(early, Err(DomainError::Validation { ref field, .. }) if field == "outcome"),
        "w2 still pending: {early:?}"
    );
    running.push(recorded("w2", WorkflowDeployStatus::Unchanged));
    let done = TestFramework::<Deployment>::with(())
        .given(running.clone())
        .when(at(3, finish(DeploymentStatus::Success)))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        done.as_slice(),
        [DeploymentEvent::Finished {
            to: DeploymentStatus::Success,
            ..
        }]
    ));

    // a rollback: no more pushes, restores only while it runs, never a success
    let mut rolling = running.clone();
    rolling.push(DeploymentEvent::RollbackStarted {
        reason: "w2 failed".into(),
    });
    let refused = TestFramework::<Deployment>::with(())
        .given(rolling.clone())
        .when(at(4, result("w1", WorkflowDeployStatus::Success)))
        .inspect_result();
    assert!(
        matches!(refused, Err(DomainError::Conflict(_))),
        "{refused:?}"
    );
    let restored = TestFramework::<Deployment>::with(())
        .given(rolling.clone())
        .when(at(
            4,
            DeploymentCommand::RecordRestore {
                workflow_id: "w1".into(),
                action: Some(RestoreAction::Updated),
                attempts: 2,
                error: None,
            },
        ))
        .inspect_result()
        .unwrap();
    assert_eq!(restored.len(), 1);
    rolling.extend(restored);
    rolling.push(DeploymentEvent::RollbackFinished {
        inconsistencies: vec![],
    });
    let late = TestFramework::<Deployment>::with(())
        .given(rolling.clone())
        .when(at(
            5,
            DeploymentCommand::RecordRestore {
                workflow_id: "w1".into(),
                action: None,
                attempts: 1,
                error: Some("again".into()),
            },
        ))
        .inspect_result();
    assert!(matches!(late, Err(DomainError::Validation { .. })));
    let success = TestFramework::<Deployment>::with(())
        .given(rolling.clone())
        .when(at(5, finish(DeploymentStatus::Success)))
        .inspect_result();
    assert!(matches!(success, Err(DomainError::Validation { .. })));
    let mut state = Deployment::default();
    for event in rolling {
        state.apply(event);
    }
    assert_eq!(state.phase, DeploymentPhase::RollingBack);
    assert_eq!(state.workflows[0].restored, Some(RestoreAction::Updated));
    assert_eq!(state.rollback.and_then(|r| r.inconsistencies), Some(vec![]));
}

#[test]
fn schedule_unknown_workflows_and_staleness() {
    let early = TestFramework::<Deployment>::with(())
        .given(vec![created(true)])
        .when(at(10, DeploymentCommand::Start))
        .inspect_result();
    assert!(
        matches!(early, Err(DomainError::Validation { ref field, .. }) if field == "scheduled_for")
    );
    let unknown = TestFramework::<Deployment>::with(())
        .given(vec![
            created(false),
            DeploymentEvent::Started {
                from: DeploymentStatus::Pending,
                at: t0(),
            },
        ])
        .when(at(1, result("nope", WorkflowDeployStatus::Success)))
        .inspect_result();
    assert!(matches!(unknown, Err(DomainError::NotFound { .. })));
    let fresh = TestFramework::<Deployment>::with(())
        .given(vec![
            created(false),
            DeploymentEvent::Started {
                from: DeploymentStatus::Pending,
                at: t0(),
            },
        ])
        .when(at(30, DeploymentCommand::MarkStale { after: STALE_AFTER }))
        .inspect_result()
        .unwrap();
    assert!(fresh.is_empty(), "not stale before an hour");
    let stale = TestFramework::<Deployment>::with(())
        .given(vec![
            created(false),
            DeploymentEvent::Started {
                from: DeploymentStatus::Pending,
                at: t0(),
            },
        ])
        .when(at(61, DeploymentCommand::MarkStale { after: STALE_AFTER }))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(
            stale.as_slice(),
            [DeploymentEvent::RecoveryRequested { .. }]
        ),
        "a stale deployment is recovered, not failed in place: {stale:?}"
    );
}

#[test]
fn unchanged_workflows_are_recorded_in_one_append() {
    let running = vec![
        created(false),
        DeploymentEvent::Started {
            from: DeploymentStatus::Pending,
            at: t0(),
        },
        recorded("w1", WorkflowDeployStatus::Success),
    ];
    let unchanged = |ids: &[&str]| DeploymentCommand::RecordUnchanged {
        workflows: ids
            .iter()
            .map(|w| (w.to_string(), format!("t-{w}"), Some("h".to_string())))
            .collect(),
    };
    // w1 is already recorded: skipped; w2 gets its event
    let events = TestFramework::<Deployment>::with(())
        .given(running.clone())
        .when(at(50, unchanged(&["w1", "w2"])))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let DeploymentEvent::WorkflowResultRecorded {
        workflow_id,
        status,
        target_id,
        attempts,
        ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (
            workflow_id.as_str(),
            *status,
            target_id.as_deref(),
            *attempts
        ),
        ("w2", WorkflowDeployStatus::Unchanged, Some("t-w2"), 0)
    );
    // an unknown workflow refuses the whole batch
    let unknown = TestFramework::<Deployment>::with(())
        .given(running.clone())
        .when(at(50, unchanged(&["w2", "w9"])))
        .inspect_result();
    assert!(
        matches!(unknown, Err(DomainError::NotFound { .. })),
        "{unknown:?}"
    );
    // not while rolling back
    let mut rolling_back = running;
    rolling_back.push(DeploymentEvent::RollbackStarted {
        reason: "w1 failed".into(),
    });
    let refused = TestFramework::<Deployment>::with(())
        .given(rolling_back)
        .when(at(50, unchanged(&["w2"])))
        .inspect_result();
    assert!(
        matches!(refused, Err(DomainError::Conflict(_))),
        "{refused:?}"
    );
}
