//! given / when / then for the drift incident.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, Role};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::table_tests;

type Fx = TestFramework<DriftIncident>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

fn as_role(role: Role, command: IncidentCommand) -> Issued<IncidentCommand> {
    let id = match role {
        Role::Admin => "alice",
        Role::Developer => "dev",
        Role::Viewer => "viewer",
        Role::System => "system:drift",
    };
    Issued::new(Actor::new(id, role), t0() + Duration::hours(1), command)
}

fn admin(command: IncidentCommand) -> Issued<IncidentCommand> {
    as_role(Role::Admin, command)
}

fn workflows(n: usize) -> Vec<AffectedWorkflow> {
    (0..n)
        .map(|i| AffectedWorkflow {
            workflow_id: format!("wf-{i}"),
            name: format!("Workflow {i}"),
        })
        .collect()
}

fn detected_with(policy: IncidentPolicy) -> IncidentEvent {
    IncidentEvent::Detected {
        environment_id: "prod".into(),
        severity: Severity::Medium,
        affected_workflows: workflows(2),
        snapshot_digest: Some("ab".repeat(32)),
        policy,
        production: true,
        detected_at: t0(),
        sla_deadline: t0() + Duration::hours(72),
    }
}

/// Events that bring a new incident to `state` along the happy path.
fn reach(state: IncidentStatus) -> Vec<IncidentEvent> {
    reach_with(state, IncidentPolicy::default())
}

fn reach_with(state: IncidentStatus, policy: IncidentPolicy) -> Vec<IncidentEvent> {
    use IncidentStatus::*;
    let at = t0();
    let mut events = vec![detected_with(policy)];
    let path = [Acknowledged, Stabilized, Reconciled, Closed];
    let mut from = Detected;
    for step in path {
        if from == state {
            break;
        }
        events.push(match step {
            Acknowledged => IncidentEvent::Acknowledged {
                from,
                reason: None,
                owner_user_id: None,
                ticket_ref: None,
                expires_at: None,
                at,
                admin_override: false,
                approval_bypassed: false,
            },
            Stabilized => IncidentEvent::Stabilized {
                from,
                reason: None,
                at,
                admin_override: false,
            },
            Reconciled => IncidentEvent::Reconciled {
                from,
                resolution_type: ResolutionType::Revert,
                resolution_details: None,
                at,
                admin_override: false,
                approval_bypassed: false,
            },
            Closed => IncidentEvent::Closed {
                from,
                reason: "done".into(),
                resolution_type: ResolutionType::Revert,
                at,
                admin_override: false,
                approval_bypassed: false,
            },
            Detected => unreachable!(),
        });
        from = step;
    }
    events
}

/// The command that asks for `to`, with every required field present.
fn command_for(to: IncidentStatus) -> Option<IncidentCommand> {
    Some(match to {
        IncidentStatus::Detected => return None, // nothing moves an incident back to detected
        IncidentStatus::Acknowledged => IncidentCommand::Acknowledge {
            reason: Some("looking".into()),
            owner_user_id: Some("bob".into()),
            ticket_ref: None,
            expires_at: None,
        },
        IncidentStatus::Stabilized => IncidentCommand::Stabilize { reason: None },
        IncidentStatus::Reconciled => IncidentCommand::Reconcile {
            resolution_type: Some(ResolutionType::Promote),
            resolution_details: None,
        },
        IncidentStatus::Closed => IncidentCommand::Close {
            reason: Some("fixed".into()),
            resolution_type: Some(ResolutionType::Promote),
        },
    })
}

#[test]
fn tables_are_well_formed() {
    table_tests::assert_well_formed::<IncidentStatus>();
    table_tests::assert_check_matches_table::<IncidentStatus>();
    table_tests::assert_well_formed::<SlaState>();
    table_tests::assert_check_matches_table::<SlaState>();
}

#[test]
fn every_pair_through_the_aggregate() {
    for &from in IncidentStatus::ALL {
        for &to in IncidentStatus::ALL {
            let Some(command) = command_for(to) else {
                continue;
            };
            for admin_override in [false, true] {
                let issued = admin(command.clone()).with_override(admin_override);
                let result = Fx::with(())
                    .given(reach(from))
                    .when(issued)
                    .inspect_result();
                let in_table = transitions::allowed_targets(from).contains(&to);
                let by_override = admin_override && from != to && from != IncidentStatus::Closed;
                match result {
                    Ok(events) => {
                        assert!(
                            in_table || by_override,
                            "{from} → {to} (override {admin_override}) must be refused"
                        );
                        assert_eq!(events.len(), 1);
                        assert_eq!(events[0].status_change(), Some((Some(from), to)));
                        let flagged =
                            serde_json::to_value(&events[0]).unwrap()["admin_override"] == true;
                        assert_eq!(flagged, !in_table, "override flag for {from} → {to}");
                    }
                    Err(DomainError::InvalidTransition {
                        machine,
                        from: f,
                        to: t,
                        allowed,
                    }) => {
                        assert!(
                            !in_table && !by_override,
                            "{from} → {to} (override {admin_override}) must be allowed"
                        );
                        assert_eq!(
                            (machine, f.as_str(), t.as_str()),
                            ("incident", from.as_str(), to.as_str())
                        );
                        let expected: Vec<&str> = transitions::allowed_targets(from)
                            .iter()
                            .map(|s| s.as_str())
                            .collect();
                        assert_eq!(allowed, expected);
                    }
                    Err(other) => panic!("{from} → {to}: unexpected {other:?}"),
                }
            }
        }
    }
}

#[test]
fn refusal_carries_allowed_targets() {
    Fx::with(())
        .given(reach(IncidentStatus::Stabilized))
        .when(admin(command_for(IncidentStatus::Acknowledged).unwrap()))
        .then_expect_error(DomainError::InvalidTransition {
            machine: "incident",
            from: "stabilized".into(),
            to: "acknowledged".into(),
            allowed: vec!["reconciled".into(), "closed".into()],
        });
}

#[test]
fn closed_is_terminal_even_for_admins() {
    for to in [
        IncidentStatus::Acknowledged,
        IncidentStatus::Stabilized,
        IncidentStatus::Reconciled,
    ] {
        let result = Fx::with(())
            .given(reach(IncidentStatus::Closed))
            .when(admin(command_for(to).unwrap()).with_override(true))
            .inspect_result();
        assert!(matches!(result, Err(DomainError::InvalidTransition { .. })));
    }
}

#[test]
fn override_is_for_admins_only() {
    Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(
            as_role(Role::Developer, IncidentCommand::Stabilize { reason: None })
                .with_override(true),
        )
        .then_expect_error(DomainError::Forbidden(
            "admin override is reserved to admins".into(),
        ));
}

#[test]
fn reconcile_requires_resolution_type() {
    Fx::with(())
        .given(reach(IncidentStatus::Stabilized))
        .when(admin(IncidentCommand::Reconcile {
            resolution_type: None,
            resolution_details: None,
        }))
        .then_expect_error(DomainError::required("resolution_type"));
}

#[test]
fn close_requires_reason_and_resolution_unless_reconciled() {
    Fx::with(())
        .given(reach(IncidentStatus::Acknowledged))
        .when(admin(IncidentCommand::Close {
            reason: Some("  ".into()),
            resolution_type: Some(ResolutionType::Revert),
        }))
        .then_expect_error(DomainError::required("reason"));
    Fx::with(())
        .given(reach(IncidentStatus::Acknowledged))
        .when(admin(IncidentCommand::Close {
            reason: Some("ok".into()),
            resolution_type: None,
        }))
        .then_expect_error(DomainError::required("resolution_type"));
    let events = Fx::with(())
        .given(reach(IncidentStatus::Reconciled))
        .when(admin(IncidentCommand::Close {
            reason: Some("ok".into()),
            resolution_type: None,
        }))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[0],
        IncidentEvent::Closed {
            resolution_type: ResolutionType::Revert,
            ..
        }
    ));
}

#[test]
fn commands_on_an_unknown_incident_are_not_found() {
    let result = Fx::with(())
        .given_no_previous_events()
        .when(admin(command_for(IncidentStatus::Closed).unwrap()))
        .inspect_result();
    assert!(matches!(
        result,
        Err(DomainError::NotFound {
            kind: "incident",
            ..
        })
    ));
}

fn open(affected: usize, production: bool, raise: bool) -> IncidentEvent {
    let policy = IncidentPolicy {
        raise_production_severity: raise,
        ..Default::default()
    };
    let cmd = IncidentCommand::Open {
        environment_id: LocalId::parse("prod").unwrap(),
        production,
        affected_workflows: workflows(affected),
        snapshot_digest: None,
        policy,
    };
    let mut events = Fx::with(())
        .given_no_previous_events()
        .when(as_role(Role::System, cmd))
        .inspect_result()
        .unwrap();
    events.remove(0)
}

#[test]
fn severity_follows_affected_count_and_policy() {
    let severity = |e: IncidentEvent| match e {
        IncidentEvent::Detected {
            severity,
            sla_deadline,
            detected_at,
            ..
        } => (severity, (sla_deadline - detected_at).num_hours()),
        _ => unreachable!(),
    };
    assert_eq!(severity(open(1, false, false)), (Severity::Low, 168));
    assert_eq!(severity(open(2, false, false)), (Severity::Medium, 72));
    assert_eq!(severity(open(5, false, false)), (Severity::High, 48));
    assert_eq!(severity(open(10, false, false)), (Severity::Critical, 24));
    assert_eq!(severity(open(2, true, true)), (Severity::High, 48));
    assert_eq!(severity(open(12, true, true)), (Severity::Critical, 24));
}

#[test]
fn open_is_idempotent_and_update_drift_records_only_changes() {
    let env = LocalId::parse("prod").unwrap();
    let reopen = IncidentCommand::Open {
        environment_id: env,
        production: true,
        affected_workflows: workflows(2),
        snapshot_digest: None,
        policy: IncidentPolicy::default(),
    };
    Fx::with(())
        .given(reach(IncidentStatus::Acknowledged))
        .when(as_role(Role::System, reopen))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(as_role(
            Role::System,
            IncidentCommand::UpdateDrift {
                affected_workflows: workflows(2),
            },
        ))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(as_role(
            Role::System,
            IncidentCommand::UpdateDrift {
                affected_workflows: workflows(6),
            },
        ))
        .then_expect_events(vec![IncidentEvent::DriftUpdated {
            severity: Severity::High,
            affected_workflows: workflows(6),
        }]);
    let closed = Fx::with(())
        .given(reach(IncidentStatus::Closed))
        .when(as_role(
            Role::System,
            IncidentCommand::UpdateDrift {
                affected_workflows: workflows(3),
            },
        ))
        .inspect_result();
    assert!(matches!(closed, Err(DomainError::Validation { .. })));
}

fn approval_policy() -> IncidentPolicy {
    IncidentPolicy {
        approvals: ApprovalRequirements {
            close: true,
            acknowledge: true,
            reconcile: false,
            extend_ttl: true,
        },
        ..Default::default()
    }
}

#[test]
fn approval_needs_a_different_admin() {
    let close = IncidentCommand::Close {
        reason: Some("fixed".into()),
        resolution_type: Some(ResolutionType::Replace),
    };
    let mut history = reach_with(IncidentStatus::Stabilized, approval_policy());
    let requested = Fx::with(())
        .given(history.clone())
        .when(admin(close.clone()))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&requested[..], [IncidentEvent::ApprovalRequested { approval_id: 1, requested_by, .. }] if requested_by == "alice")
    );
    history.extend(requested);

    // the requester cannot approve their own request
    let own = Fx::with(())
        .given(history.clone())
        .when(admin(IncidentCommand::Approve { approval_id: 1 }))
        .inspect_result();
    assert!(matches!(own, Err(DomainError::Forbidden(_))));
    // a developer cannot approve
    let dev = Fx::with(())
        .given(history.clone())
        .when(as_role(
            Role::Developer,
            IncidentCommand::Approve { approval_id: 1 },
        ))
        .inspect_result();
    assert!(matches!(dev, Err(DomainError::Forbidden(_))));
    // a second request while one is pending is refused
    let again = Fx::with(())
        .given(history.clone())
        .when(admin(close))
        .inspect_result();
    assert!(matches!(again, Err(DomainError::Validation { ref field, .. }) if field == "approval"));
    // an unknown approval id is not found
    let unknown = Fx::with(())
        .given(history.clone())
        .when(admin(IncidentCommand::Approve { approval_id: 9 }))
        .inspect_result();
    assert!(matches!(
        unknown,
        Err(DomainError::NotFound {
            kind: "approval",
            ..
        })
    ));

    let mut bob = admin(IncidentCommand::Approve { approval_id: 1 });
    bob.actor = Actor::new("bob", Role::Admin);
    let approved = Fx::with(())
        .given(history)
        .when(bob)
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&approved[0], IncidentEvent::ApprovalGranted { approved_by, .. } if approved_by == "bob")
    );
    assert_eq!(
        approved[1].status_change(),
        Some((Some(IncidentStatus::Stabilized), IncidentStatus::Closed))
    );
}

#[test]
fn rejection_needs_a_reason_and_ends_the_request() {
    let mut history = reach_with(IncidentStatus::Detected, approval_policy());
    let ack = IncidentCommand::Acknowledge {
        reason: None,
        owner_user_id: None,
        ticket_ref: None,
        expires_at: None,
    };
    history.extend(
        Fx::with(())
            .given(history.clone())
            .when(as_role(Role::Developer, ack.clone()))
            .inspect_result()
            .unwrap(),
    );
    let no_reason = Fx::with(())
        .given(history.clone())
        .when(admin(IncidentCommand::Reject {
            approval_id: 1,
            reason: None,
        }))
        .inspect_result();
    assert_eq!(no_reason, Err(DomainError::required("reason")));
    let rejected = Fx::with(())
        .given(history.clone())
        .when(admin(IncidentCommand::Reject {
            approval_id: 1,
            reason: Some("no".into()),
        }))
        .inspect_result()
        .unwrap();
    history.extend(rejected);
    // a new request gets a new id
    let again = Fx::with(())
        .given(history)
        .when(as_role(Role::Developer, ack))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &again[0],
        IncidentEvent::ApprovalRequested { approval_id: 2, .. }
    ));
}

#[test]
fn admin_override_bypasses_approval_and_says_so() {
    let close = IncidentCommand::Close {
        reason: Some("now".into()),
        resolution_type: Some(ResolutionType::Revert),
    };
    let events = Fx::with(())
        .given(reach_with(IncidentStatus::Stabilized, approval_policy()))
        .when(admin(close).with_override(true))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [IncidentEvent::Closed {
            approval_bypassed: true,
            admin_override: false,
            ..
        }]
    ));
}

#[test]
fn sla_steps_once_each_and_not_when_closed() {
    let at = |hours: i64| {
        let mut i = as_role(Role::System, IncidentCommand::EvaluateSla);
        i.at = t0() + Duration::hours(hours);
        i
    };
    // TTL is 72 h: 25 % = 18 h, 75 % = 54 h, 100 % = 72 h
    Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(at(10))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(at(20))
        .then_expect_events(vec![IncidentEvent::SlaEscalated {
            from: SlaState::OnTrack,
            to: SlaState::Escalated,
        }]);
    let late = Fx::with(())
        .given(reach(IncidentStatus::Acknowledged))
        .when(at(80))
        .inspect_result()
        .unwrap();
    assert_eq!(late.len(), 3, "one event per step reached: {late:?}");
    let mut history = reach(IncidentStatus::Acknowledged);
    history.extend(late);
    Fx::with(())
        .given(history)
        .when(at(90))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(reach(IncidentStatus::Closed))
        .when(at(90))
        .then_expect_events(vec![]);
}

#[test]
fn extend_ttl_is_admin_only_and_recomputes_sla() {
    let extend = IncidentCommand::ExtendTtl {
        new_deadline: t0() + Duration::hours(200),
        reason: Some("vendor".into()),
    };
    let dev = Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(as_role(Role::Developer, extend.clone()))
        .inspect_result();
    assert!(matches!(dev, Err(DomainError::Forbidden(_))));
    let mut history = reach(IncidentStatus::Detected);
    history.push(IncidentEvent::SlaEscalated {
        from: SlaState::OnTrack,
        to: SlaState::Escalated,
    });
    let events = Fx::with(())
        .given(history)
        .when(admin(extend))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[..],
        [IncidentEvent::TtlExtended {
            sla_state: SlaState::OnTrack,
            ..
        }]
    ));
    let shorter = IncidentCommand::ExtendTtl {
        new_deadline: t0(),
        reason: None,
    };
    let refused = Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(admin(shorter))
        .inspect_result();
    assert!(
        matches!(refused, Err(DomainError::Validation { ref field, .. }) if field == "new_deadline")
    );
}

#[test]
fn retention_purges_payload_once_after_the_window() {
    let purge = |days_after_close: i64| {
        let mut i = as_role(
            Role::System,
            IncidentCommand::PurgeSnapshotPayload { retention_days: 30 },
        );
        i.at = t0() + Duration::days(days_after_close);
        i
    };
    let too_early = Fx::with(())
        .given(reach(IncidentStatus::Closed))
        .when(purge(10))
        .inspect_result();
    assert!(matches!(too_early, Err(DomainError::Validation { .. })));
    let mut history = reach(IncidentStatus::Closed);
    let purged = Fx::with(())
        .given(history.clone())
        .when(purge(31))
        .inspect_result()
        .unwrap();
    assert_eq!(
        purged,
        vec![IncidentEvent::SnapshotPayloadPurged {
            snapshot_digest: "ab".repeat(32)
        }]
    );
    history.extend(purged);
    Fx::with(())
        .given(history)
        .when(purge(40))
        .then_expect_events(vec![]);
    let open = Fx::with(())
        .given(reach(IncidentStatus::Acknowledged))
        .when(purge(40))
        .inspect_result();
    assert!(matches!(open, Err(DomainError::Validation { .. })));
}

#[test]
fn extreme_numbers_are_refused_not_panics() {
    let policy = IncidentPolicy {
        severity_ttls: SeverityTtls {
            critical_hours: u32::MAX,
            high_hours: u32::MAX,
            medium_hours: u32::MAX,
            low_hours: u32::MAX,
        },
        ..Default::default()
    };
    let mut open = as_role(
        Role::System,
        IncidentCommand::Open {
            environment_id: LocalId::parse("prod").unwrap(),
            production: false,
            affected_workflows: workflows(1),
            snapshot_digest: None,
            policy,
        },
    );
    open.at = DateTime::<Utc>::MAX_UTC - Duration::days(1);
    let result = Fx::with(())
        .given_no_previous_events()
        .when(open)
        .inspect_result();
    assert!(
        matches!(result, Err(DomainError::Validation { ref field, .. }) if field == "policy.severity_ttls")
    );
    let purge = as_role(
        Role::System,
        IncidentCommand::PurgeSnapshotPayload {
            retention_days: u32::MAX,
        },
    );
    let result = Fx::with(())
        .given(reach(IncidentStatus::Closed))
        .when(purge)
        .inspect_result();
    assert!(matches!(result, Err(DomainError::Validation { .. })));
    let far = IncidentCommand::ExtendTtl {
        new_deadline: DateTime::<Utc>::MAX_UTC,
        reason: None,
    };
    assert!(Fx::with(())
        .given(reach(IncidentStatus::Detected))
        .when(admin(far))
        .inspect_result()
        .is_ok());
}
