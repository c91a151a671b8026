//! given / when / then for promotions.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, Role};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::table_tests;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn by(who: &str, role: Role, command: PromotionCommand) -> Issued<PromotionCommand> {
    Issued::new(Actor::new(who, role), t0() + Duration::minutes(5), command)
}

fn id(s: &str) -> LocalId {
    LocalId::parse(s).unwrap()
}

fn created(requires_approval: bool, bypass: bool) -> PromotionEvent {
    PromotionEvent::Created {
        pipeline_id: "p1".into(),
        source_environment_id: "staging".into(),
        target_environment_id: "prod".into(),
        workflows: vec![PromotionWorkflow {
            canonical_id: "c1".into(),
            name: "Orders".into(),
            source_content_hash: None,
        }],
        requires_approval,
        allow_self_approval: false,
        bypass_validation: bypass,
        created_by: "alice".into(),
        source_snapshot: None,
    }
}

fn histories() -> Vec<(&'static str, Vec<PromotionEvent>)> {
    use PromotionStatus as S;
    let gates = |to| PromotionEvent::GatesEvaluated {
        from: S::Pending,
        to,
        results: vec![],
        bypassed: false,
    };
    let approved = vec![
        created(true, false),
        gates(S::PendingApproval),
        PromotionEvent::Approved {
            from: S::PendingApproval,
            approved_by: "bob".into(),
        },
    ];
    let mut running = approved.clone();
    running.push(PromotionEvent::Started {
        from: S::Approved,
        deployment_id: "d1".into(),
        at: t0(),
    });
    let after_running = |e: PromotionEvent| {
        let mut h = running.clone();
        h.push(e);
        h
    };
    vec![
        ("new", vec![]),
        ("pending (approval)", vec![created(true, false)]),
        ("pending (no approval)", vec![created(false, false)]),
        ("pending (bypass)", vec![created(false, true)]),
        (
            "pending_approval",
            vec![created(true, false), gates(S::PendingApproval)],
        ),
        ("approved", approved.clone()),
        (
            "rejected",
            vec![
                created(true, false),
                gates(S::PendingApproval),
                PromotionEvent::Rejected {
                    from: S::PendingApproval,
                    rejected_by: "bob".into(),
                    reason: "no".into(),
                },
            ],
        ),
        ("running", running.clone()),
        (
            "completed",
            after_running(PromotionEvent::Completed {
                from: S::Running,
                outcomes: vec![],
                at: t0(),
            }),
        ),
        (
            "rolled_back",
            after_running(PromotionEvent::RolledBack {
                from: S::Running,
                outcomes: vec![],
                reason: None,
                at: t0(),
            }),
        ),
        (
            "failed",
            after_running(PromotionEvent::Failed {
                from: S::Running,
                reason: None,
                inconsistencies: vec![],
                at: t0(),
            }),
        ),
        (
            "cancelled",
            vec![
                created(false, false),
                PromotionEvent::Cancelled {
                    from: S::Pending,
                    reason: None,
                },
            ],
        ),
    ]
}

fn commands() -> Vec<(&'static str, Issued<PromotionCommand>)> {
    let pass = GateResult {
        gate: Gate::CredentialsExist,
        passed: true,
        blocking: true,
        message: None,
    };
    let fail = GateResult {
        gate: Gate::BlockOnActiveDrift,
        passed: false,
        blocking: true,
        message: Some("incident open".into()),
    };
    let create = PromotionCommand::Create {
        pipeline_id: id("p1"),
        source_environment_id: id("staging"),
        target_environment_id: id("prod"),
        workflows: vec![PromotionWorkflow {
            canonical_id: "c1".into(),
            name: "Orders".into(),
            source_content_hash: None,
        }],
        requires_approval: true,
        allow_self_approval: false,
        bypass_validation: false,
        source_snapshot: None,
    };
    vec![
        ("create", by("alice", Role::Admin, create)),
        (
            "gates pass",
            by(
                "ci",
                Role::Developer,
                PromotionCommand::RecordGateResults {
                    results: vec![pass],
                },
            ),
        ),
        (
            "gates fail",
            by(
                "ci",
                Role::Developer,
                PromotionCommand::RecordGateResults {
                    results: vec![fail],
                },
            ),
        ),
        ("approve", by("bob", Role::Admin, PromotionCommand::Approve)),
        (
            "reject",
            by(
                "bob",
                Role::Admin,
                PromotionCommand::Reject {
                    reason: Some("not now".into()),
                },
            ),
        ),
        (
            "cancel",
            by(
                "bob",
                Role::Admin,
                PromotionCommand::Cancel { reason: None },
            ),
        ),
        (
            "cancel override",
            by(
                "bob",
                Role::Admin,
                PromotionCommand::Cancel { reason: None },
            )
            .with_override(true),
        ),
        (
            "start",
            by(
                "system:deploy",
                Role::System,
                PromotionCommand::Start {
                    deployment_id: id("d1"),
                },
            ),
        ),
        (
            "complete",
            by(
                "system:deploy",
                Role::System,
                PromotionCommand::Complete { outcomes: vec![] },
            ),
        ),
        (
            "roll back",
            by(
                "system:deploy",
                Role::System,
                PromotionCommand::RollBack {
                    outcomes: vec![],
                    reason: Some("wf failed".into()),
                },
            ),
        ),
        (
            "fail",
            by(
                "system:deploy",
                Role::System,
                PromotionCommand::Fail {
                    reason: None,
                    inconsistencies: vec!["c1".into()],
                },
            ),
        ),
    ]
}

#[test]
fn every_command_from_every_state_stays_in_the_table() {
    table_tests::assert_well_formed::<PromotionStatus>();
    table_tests::assert_check_matches_table::<PromotionStatus>();
    table_tests::assert_commands_cover_table::<Promotion, PromotionStatus>(
        histories(),
        commands(),
        || (),
        PromotionEvent::status_change,
    );
}

#[test]
fn gate_failure_fails_and_keeps_results_unless_bypassed() {
    let fail = GateResult {
        gate: Gate::RequireCleanDrift,
        passed: false,
        blocking: true,
        message: None,
    };
    let cmd = || {
        by(
            "ci",
            Role::Developer,
            PromotionCommand::RecordGateResults {
                results: vec![fail.clone()],
            },
        )
    };
    let events = TestFramework::<Promotion>::with(())
        .given(vec![created(false, false)])
        .when(cmd())
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[..], [PromotionEvent::GatesEvaluated { to: PromotionStatus::Failed, results, bypassed: false, .. }] if results.len() == 1)
    );
    let events = TestFramework::<Promotion>::with(())
        .given(vec![created(false, true)])
        .when(cmd())
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [PromotionEvent::GatesEvaluated {
            to: PromotionStatus::Approved,
            bypassed: true,
            ..
        }]
    ));
}

#[test]
fn approval_rules() {
    let pending_approval = vec![
        created(true, false),
        PromotionEvent::GatesEvaluated {
            from: PromotionStatus::Pending,
            to: PromotionStatus::PendingApproval,
            results: vec![],
            bypassed: false,
        },
    ];
    let own = TestFramework::<Promotion>::with(())
        .given(pending_approval.clone())
        .when(by("alice", Role::Admin, PromotionCommand::Approve))
        .inspect_result();
    assert!(
        matches!(own, Err(DomainError::Forbidden(_))),
        "creator cannot approve"
    );
    let dev = TestFramework::<Promotion>::with(())
        .given(pending_approval.clone())
        .when(by("bob", Role::Developer, PromotionCommand::Approve))
        .inspect_result();
    assert!(matches!(dev, Err(DomainError::Forbidden(_))));
    let no_reason = TestFramework::<Promotion>::with(())
        .given(pending_approval.clone())
        .when(by(
            "bob",
            Role::Admin,
            PromotionCommand::Reject { reason: None },
        ))
        .inspect_result();
    assert_eq!(no_reason, Err(DomainError::required("reason")));
    let mut self_ok = pending_approval;
    if let PromotionEvent::Created {
        allow_self_approval,
        ..
    } = &mut self_ok[0]
    {
        *allow_self_approval = true;
    }
    let ok = TestFramework::<Promotion>::with(())
        .given(self_ok)
        .when(by("alice", Role::Admin, PromotionCommand::Approve))
        .inspect_result();
    assert!(ok.is_ok());
}

#[test]
fn bypass_is_admin_only_and_create_validates() {
    let mk = |bypass: bool, target: &str, workflows: usize| PromotionCommand::Create {
        pipeline_id: id("p1"),
        source_environment_id: id("staging"),
        target_environment_id: id(target),
        workflows: (0..workflows)
            .map(|i| PromotionWorkflow {
                canonical_id: format!("c{i}"),
                name: "x".into(),
                source_content_hash: None,
            })
            .collect(),
        requires_approval: false,
        allow_self_approval: false,
        bypass_validation: bypass,
        source_snapshot: None,
    };
    let dev = TestFramework::<Promotion>::with(())
        .given_no_previous_events()
        .when(by("dev", Role::Developer, mk(true, "prod", 1)))
        .inspect_result();
    assert!(matches!(dev, Err(DomainError::Forbidden(_))));
    let same = TestFramework::<Promotion>::with(())
        .given_no_previous_events()
        .when(by("a", Role::Admin, mk(false, "staging", 1)))
        .inspect_result();
    assert!(
        matches!(same, Err(DomainError::Validation { ref field, .. }) if field == "target_environment_id")
    );
    let empty = TestFramework::<Promotion>::with(())
        .given_no_previous_events()
        .when(by("a", Role::Admin, mk(false, "prod", 0)))
        .inspect_result();
    assert!(
        matches!(empty, Err(DomainError::Validation { ref field, .. }) if field == "workflows")
    );
}

#[test]
fn a_restore_comes_from_a_snapshot_of_its_own_target() {
    let mk = |source: &str, snapshot: Option<(&str, &str)>| PromotionCommand::Create {
        pipeline_id: id("p1"),
        source_environment_id: id(source),
        target_environment_id: id("prod"),
        workflows: vec![PromotionWorkflow {
            canonical_id: "c1".into(),
            name: "x".into(),
            source_content_hash: None,
        }],
        requires_approval: true,
        allow_self_approval: false,
        bypass_validation: false,
        source_snapshot: snapshot.map(|(id, digest)| SnapshotSource {
            snapshot_id: id.into(),
            digest: digest.into(),
        }),
    };
    let create = |command| {
        TestFramework::<Promotion>::with(())
            .given_no_previous_events()
            .when(by("a", Role::Admin, command))
            .inspect_result()
    };
    let field = |result: Result<Vec<PromotionEvent>, DomainError>| match result {
        Err(DomainError::Validation { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    };
    assert_eq!(
        field(create(mk("staging", Some(("d1.pre", "abc"))))),
        "source_environment_id"
    );
    assert_eq!(
        field(create(mk("prod", Some(("d1.pre", " "))))),
        "source_snapshot.digest"
    );
    let events = create(mk("prod", Some(("d1.pre", "abc")))).unwrap();
    let stored = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(stored["source_snapshot"]["snapshot_id"], "d1.pre");
    let mut state = Promotion::default();
    state.apply(events[0].clone());
    assert_eq!(
        state.source_snapshot.map(|s| s.digest).as_deref(),
        Some("abc")
    );
    // a promotion's event stored before restores existed has no such field
    let plain = serde_json::to_value(created(false, false)).unwrap();
    assert!(plain.get("source_snapshot").is_none());
}

#[test]
fn gates_keep_the_names_stored_events_use() {
    let gates = [
        (Gate::TargetEnvironmentHealthy, "target_environment_healthy"),
        (Gate::RequireCleanDrift, "require_clean_drift"),
        (Gate::BlockOnActiveDrift, "block_on_active_drift"),
        (Gate::EnforceTtl, "enforce_ttl"),
        (Gate::AllowOverwritingHotfixes, "allow_overwriting_hotfixes"),
        (
            Gate::AllowForcePromotionOnConflicts,
            "allow_force_promotion_on_conflicts",
        ),
        (
            Gate::AllowPlaceholderCredentials,
            "allow_placeholder_credentials",
        ),
        (Gate::RequireApproval, "require_approval"),
        (Gate::CredentialsExist, "credentials_exist"),
        (Gate::SubWorkflowsResolved, "sub_workflows_resolved"),
        (Gate::SourceUnchanged, "source_unchanged"),
    ];
    for (gate, name) in gates {
        assert_eq!(gate.as_str(), name);
        assert_eq!(serde_json::to_value(gate).unwrap(), name);
        assert_eq!(name.parse::<Gate>().unwrap(), gate);
    }
    // a result as events stored it before gates were typed
    let stored = serde_json::json!({
        "gate": "enforce_ttl", "passed": false, "blocking": true, "message": null
    });
    let result: GateResult = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(result.gate, Gate::EnforceTtl);
    assert_eq!(serde_json::to_value(&result).unwrap(), stored);
    assert!(serde_json::from_value::<GateResult>(
        serde_json::json!({"gate": "no_such_gate", "passed": true, "blocking": false, "message": null})
    )
    .is_err());
}
