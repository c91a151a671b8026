//! Property: whatever random commands are issued (any role, with or without admin
//! override, in any order), replaying each stored stream only ever passes through
//! transitions in the tables (or, for incidents, a flagged admin override that never
//! leaves a terminal state), and every chain verifies.

use std::collections::BTreeMap;
use workflowops::workflows::incident_slot::report_drift;

use aggregates::content::ContentHash;
use aggregates::deployment::{
    Deployment, DeploymentCommand, DeploymentEvent, DeploymentStatus, WorkflowDeployStatus,
};
use aggregates::incident::{
    ApprovalRequirements, IncidentCommand, IncidentEvent, IncidentPolicy, IncidentStatus,
    ResolutionType,
};
use aggregates::kernel::command::Role;
use aggregates::kernel::transitions::{allowed_targets, is_terminal, StateMachine, StatusChange};
use aggregates::mapping::{MappingCommand, MappingEvent, MappingStatus, Observation};
use aggregates::promotion::{
    GateResult, Promotion, PromotionCommand, PromotionEvent, PromotionStatus, PromotionWorkflow,
};
use chrono::{Duration, Utc};
use eventstore::StoredEvent;
use proptest::prelude::*;

use crate::conformance::register;
use crate::support::{admin, ctx, id, TestStore};

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Drift(usize),
    Incident {
        which: usize,
        action: u8,
        role: Role,
        admin_override: bool,
    },
    Mapping {
        wf: usize,
        action: u8,
        variant: u8,
    },
    Promotion {
        which: usize,
        action: u8,
        role: Role,
    },
    Deployment {
        which: usize,
        action: u8,
    },
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Viewer),
        Just(Role::Developer),
        Just(Role::Admin),
        Just(Role::System)
    ]
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..12).prop_map(Op::Drift),
        (0usize..3, 0u8..9, role(), any::<bool>()).prop_map(
            |(which, action, role, admin_override)| Op::Incident {
                which,
                action,
                role,
                admin_override
            }
        ),
        (0usize..3, 0u8..8, 0u8..3).prop_map(|(wf, action, variant)| Op::Mapping {
            wf,
            action,
            variant
        }),
        (0usize..2, 0u8..10, role()).prop_map(|(which, action, role)| Op::Promotion {
            which,
            action,
            role
        }),
        (0usize..2, 0u8..7).prop_map(|(which, action)| Op::Deployment { which, action }),
    ]
}

fn incident_command(action: u8) -> IncidentCommand {
    let resolution = Some(ResolutionType::Revert);
    match action {
        0 => IncidentCommand::Acknowledge {
            reason: Some("seen".into()),
            owner_user_id: None,
            ticket_ref: None,
            expires_at: None,
        },
        1 => IncidentCommand::Stabilize { reason: None },
        2 => IncidentCommand::Reconcile {
            resolution_type: resolution,
            resolution_details: None,
        },
        3 => IncidentCommand::Reconcile {
            resolution_type: None,
            resolution_details: None,
        },
        4 => IncidentCommand::Close {
            reason: Some("done".into()),
            resolution_type: resolution,
        },
        5 => IncidentCommand::Close {
            reason: Some("done".into()),
            resolution_type: None,
        },
        6 => IncidentCommand::ExtendTtl {
            new_deadline: Utc::now() + Duration::days(30),
            reason: None,
        },
        7 => IncidentCommand::Approve { approval_id: 1 },
        _ => IncidentCommand::EvaluateSla,
    }
}

fn mapping_command(action: u8, variant: u8, wf: &str) -> MappingCommand {
    let hash = ContentHash::parse(&format!("{:02x}", variant + 1).repeat(32)).unwrap();
    match action {
        0 | 1 => MappingCommand::Observe {
            environment_id: id("prod"),
            n8n_workflow_id: id(wf),
            observation: Observation {
                name: wf.into(),
                content_hash: hash,
                n8n_updated_at: None,
            },
            auto_link: (action == 1).then(|| id(&format!("c{variant}"))),
        },
        2 => MappingCommand::ObserveMissing,
        3 => MappingCommand::Link {
            canonical_id: id(&format!("c{variant}")),
        },
        4 => MappingCommand::Unlink { reason: None },
        5 => MappingCommand::Ignore { reason: None },
        6 => MappingCommand::Unignore,
        _ => MappingCommand::Delete { reason: None },
    }
}

fn promotion_command(action: u8) -> PromotionCommand {
    let gate = |passed| GateResult {
        gate: aggregates::promotion::Gate::RequireCleanDrift,
        passed,
        blocking: true,
        message: None,
    };
    match action {
        0 => PromotionCommand::Create {
            pipeline_id: id("p"),
            source_environment_id: id("staging"),
            target_environment_id: id("prod"),
            workflows: vec![PromotionWorkflow {
                canonical_id: "c0".into(),
                name: "W".into(),
                source_content_hash: None,
            }],
            requires_approval: true,
            allow_self_approval: false,
            bypass_validation: false,
            source_snapshot: None,
        },
        1 => PromotionCommand::RecordGateResults {
            results: vec![gate(true)],
        },
        2 => PromotionCommand::RecordGateResults {
            results: vec![gate(false)],
        },
        3 => PromotionCommand::Approve,
        4 => PromotionCommand::Reject {
            reason: Some("no".into()),
        },
        5 => PromotionCommand::Cancel { reason: None },
        6 => PromotionCommand::Start {
            deployment_id: id("d0"),
        },
        7 => PromotionCommand::Complete { outcomes: vec![] },
        8 => PromotionCommand::RollBack {
            outcomes: vec![],
            reason: None,
        },
        _ => PromotionCommand::Fail {
            reason: None,
            inconsistencies: vec![],
        },
    }
}

fn deployment_command(action: u8) -> DeploymentCommand {
    match action {
        0 => DeploymentCommand::Create {
            promotion_id: id("p0"),
            scheduled_for: None,
            workflows: vec![("w1".into(), "W1".into())],
        },
        1 => DeploymentCommand::Start,
        2 => DeploymentCommand::RecordWorkflowResult {
            workflow_id: "w1".into(),
            status: WorkflowDeployStatus::Success,
            error: None,
            attempts: 1,
            target_id: Some("t1".into()),
            created: true,
            content_hash: None,
            deleted: false,
        },
        3 => DeploymentCommand::RecordWorkflowResult {
            workflow_id: "w1".into(),
            status: WorkflowDeployStatus::Failed,
            error: Some("500".into()),
            attempts: 4,
            target_id: None,
            created: false,
            content_hash: None,
            deleted: false,
        },
        4 => DeploymentCommand::Cancel { reason: None },
        5 => DeploymentCommand::Finish {
            outcome: aggregates::deployment::DeploymentStatus::Success,
            reason: None,
        },
        _ => DeploymentCommand::MarkStale {
            after: chrono::Duration::hours(1),
        },
    }
}

/// Issues one random operation for `tenant` (refusals are expected and ignored).
pub(crate) async fn apply_op(
    domain: &workflowops::command::domain::Domain,
    tenant: &str,
    op: Op,
    incidents: &mut Vec<aggregates::kernel::ids::LocalId>,
) {
    let policy = IncidentPolicy {
        approvals: ApprovalRequirements {
            close: true,
            ..Default::default()
        },
        ..Default::default()
    };
    // Refusals are expected and fine; the property is about what gets stored.
    match op {
        Op::Drift(n) => {
            let affected = (0..n)
                .map(|i| aggregates::incident::AffectedWorkflow {
                    workflow_id: format!("c{i}"),
                    name: "W".into(),
                })
                .collect();
            if let Ok((incident_id, _)) = report_drift(
                domain,
                &ctx(tenant, Role::System),
                &id("prod"),
                affected,
                None,
                policy,
            )
            .await
            {
                if !incidents.contains(&incident_id) {
                    incidents.push(incident_id);
                }
            }
        }
        Op::Incident {
            which,
            action,
            role,
            admin_override,
        } => {
            if let Some(incident_id) = incidents.get(which.min(incidents.len().saturating_sub(1))) {
                let mut who = ctx(tenant, role);
                if action == 7 {
                    who.actor.id = "bob".into(); // a second admin approves
                }
                let _ = domain
                    .incident(&who, incident_id, incident_command(action), admin_override)
                    .await;
            }
        }
        Op::Mapping {
            wf,
            action,
            variant,
        } => {
            let wf = format!("wf{wf}");
            let _ = domain
                .mapping(
                    &ctx(tenant, Role::Developer),
                    &id("prod"),
                    &id(&wf),
                    mapping_command(action, variant, &wf),
                )
                .await;
        }
        Op::Promotion {
            which,
            action,
            role,
        } => {
            let mut who = ctx(tenant, role);
            if action == 3 {
                who.actor.id = "bob".into();
            }
            let _ = domain
                .bus()
                .execute::<Promotion, _>(
                    &who,
                    &[&id(&format!("p{which}"))],
                    promotion_command(action),
                    false,
                    &(),
                )
                .await;
        }
        Op::Deployment { which, action } => {
            let _ = domain
                .bus()
                .execute::<Deployment, _>(
                    &ctx(tenant, Role::System),
                    &[&id(&format!("d{which}"))],
                    deployment_command(action),
                    false,
                    &(),
                )
                .await;
        }
    }
}

/// Runs the operations and checks every stored stream; returns how many status
/// changes were stored (so a test can check the harness is not vacuous).
async fn run(ops: Vec<Op>) -> usize {
    let t = TestStore::sqlite().await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    // the canonical workflows links name (a link to an unknown one is refused)
    for variant in 0..3 {
        let canonical = id(&format!("c{variant}"));
        domain
            .canonical(
                &admin("acme"),
                &canonical,
                aggregates::canonical::CanonicalCommand::Create {
                    canonical_id: canonical.clone(),
                    name: format!("Workflow {variant}"),
                    slug: None,
                    git_path: None,
                },
            )
            .await
            .unwrap();
    }
    let mut incidents = vec![];
    for op in ops {
        apply_op(&domain, "acme", op, &mut incidents).await;
    }
    let events = crate::conformance::read_all(&t.store, 0).await;
    let mut streams: BTreeMap<(String, String), Vec<StoredEvent>> = BTreeMap::new();
    for event in events {
        streams
            .entry((event.aggregate_type.clone(), event.aggregate_id.clone()))
            .or_default()
            .push(event);
    }
    let mut changes = 0;
    for ((kind, aggregate), stream) in streams {
        assert!(
            stream
                .windows(2)
                .all(|w| w[1].sequence == w[0].sequence + 1),
            "{aggregate}: sequence gap"
        );
        match kind.as_str() {
            "incident" => {
                changes += replay::<IncidentStatus, IncidentEvent>(
                    &aggregate,
                    &stream,
                    IncidentEvent::status_change,
                    true,
                )
            }
            "workflow_mapping" => {
                changes += replay::<MappingStatus, MappingEvent>(
                    &aggregate,
                    &stream,
                    MappingEvent::status_change,
                    false,
                )
            }
            "promotion" => {
                changes += replay::<PromotionStatus, PromotionEvent>(
                    &aggregate,
                    &stream,
                    PromotionEvent::status_change,
                    false,
                )
            }
            "deployment" => {
                changes += replay::<DeploymentStatus, DeploymentEvent>(
                    &aggregate,
                    &stream,
                    DeploymentEvent::status_change,
                    false,
                )
            }
            _ => {}
        }
    }
    let report = t.store.verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    changes
}

fn replay<S, E>(
    aggregate: &str,
    stream: &[StoredEvent],
    change: fn(&E) -> Option<StatusChange<S>>,
    override_allowed: bool,
) -> usize
where
    S: StateMachine,
    E: serde::de::DeserializeOwned,
{
    let mut current: Option<S> = None;
    let mut changes = 0;
    for stored in stream {
        let event: E = serde_json::from_value(stored.payload.clone())
            .unwrap_or_else(|e| panic!("{aggregate}: {e}"));
        let Some((from, to)) = change(&event) else {
            continue;
        };
        assert_eq!(
            from, current,
            "{aggregate} #{}: event says from {from:?}, stream was in {current:?}",
            stored.sequence
        );
        match from {
            None => assert!(S::INITIAL.contains(&to), "{aggregate}: created in {to}"),
            Some(from) => {
                let in_table = allowed_targets(from).contains(&to);
                let overridden = stored.payload["admin_override"] == true;
                assert!(
                    in_table
                        || (override_allowed && overridden && !is_terminal(from) && from != to),
                    "{aggregate} #{}: {from} → {to} is not in the table",
                    stored.sequence
                );
                if overridden {
                    assert_eq!(
                        stored.metadata["admin_override"], true,
                        "override flagged in metadata too"
                    );
                }
            }
        }
        current = Some(to);
        changes += 1;
    }
    changes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        .. ProptestConfig::default()
    })]

    #[test]
    fn stored_streams_only_pass_through_table_transitions(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}

/// The harness itself: a known sequence must store every lifecycle step it drives
/// (so the property above cannot pass by refusing everything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_stores_what_a_known_sequence_drives() {
    use Op::*;
    let incident = |action, role| Incident {
        which: 0,
        action,
        role,
        admin_override: false,
    };
    let mapping = |action| Mapping {
        wf: 0,
        action,
        variant: 0,
    };
    let promotion = |action| Promotion {
        which: 0,
        action,
        role: Role::Admin,
    };
    let ops = vec![
        Drift(2),
        incident(0, Role::Developer), // acknowledge
        incident(1, Role::Developer), // stabilize
        incident(2, Role::Admin),     // reconcile
        incident(4, Role::Admin),     // close: the policy asks for approval
        incident(7, Role::Admin),     // a second admin approves: closed
        mapping(0),                   // discovered, untracked
        mapping(3),                   // linked
        mapping(5),                   // ignored
        mapping(6),                   // unignored: linked again
        mapping(7),                   // deleted
        promotion(0),                 // created
        promotion(1),                 // gates pass: pending approval
        promotion(3),                 // approved by another admin
        promotion(6),                 // running
        Deployment {
            which: 0,
            action: 0,
        }, // created
        Deployment {
            which: 0,
            action: 1,
        }, // running
        Deployment {
            which: 0,
            action: 2,
        }, // its only workflow succeeded
        Deployment {
            which: 0,
            action: 5,
        }, // the runner finishes it: success
    ];
    assert_eq!(run(ops).await, 5 + 5 + 4 + 3);
}
