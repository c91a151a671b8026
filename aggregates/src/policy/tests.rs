//! given / when / then for drift policies.

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, DomainCommand, Role};
use cqrs_es::DomainEvent;

type Fx = TestFramework<DriftPolicy>;

fn issue(command: DriftPolicyCommand) -> Issued<DriftPolicyCommand> {
    Issued::new(
        Actor::new("alice", Role::Admin),
        Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
        command,
    )
}

fn strict() -> DriftPolicySettings {
    DriftPolicySettings {
        severity_ttls: SeverityTtls {
            critical_hours: 4,
            high_hours: 8,
            medium_hours: 24,
            low_hours: 72,
        },
        enforce_ttl: true,
        block_on_active_drift: true,
        auto_create_for_production_only: true,
        closed_incident_retention_days: 30,
        raise_production_severity: true,
        approvals: ApprovalRequirements {
            close: true,
            ..ApprovalRequirements::default()
        },
        ..DriftPolicySettings::default()
    }
}

fn set(policy: DriftPolicySettings) -> DriftPolicyCommand {
    DriftPolicyCommand::Set {
        policy,
        reason: Some(" audit finding ".into()),
    }
}

fn policy_set(policy: DriftPolicySettings) -> DriftPolicyEvent {
    DriftPolicyEvent::PolicySet {
        policy,
        set_by: "alice".into(),
        reason: Some("audit finding".into()),
    }
}

fn cleared() -> DriftPolicyEvent {
    DriftPolicyEvent::PolicyCleared {
        cleared_by: "alice".into(),
        reason: None,
    }
}

#[test]
fn defaults_follow_the_domain() {
    let d = DriftPolicySettings::default();
    assert_eq!(
        (
            d.severity_ttls.critical_hours,
            d.severity_ttls.high_hours,
            d.severity_ttls.medium_hours,
            d.severity_ttls.low_hours
        ),
        (24, 48, 72, 168)
    );
    assert!(d.auto_create_incidents && d.enforce_sla);
    assert!(!d.enforce_ttl && !d.block_on_active_drift && !d.auto_create_for_production_only);
    assert!(!d.raise_production_severity);
    assert_eq!(d.approvals, ApprovalRequirements::default());
    assert_eq!(d.closed_incident_retention_days, DEFAULT_RETENTION_DAYS);
    assert_eq!(d.validate(), Ok(()));
    // an aggregate with no events resolves to the defaults
    assert_eq!(
        DriftPolicy::default().incident_policy(),
        d.incident_policy()
    );
    assert_eq!(DriftPolicy::default().recorded(), None);
}

#[test]
fn set_records_the_full_policy_once() {
    // first set, even of the defaults, is recorded: the scope now has a policy
    Fx::with(())
        .given_no_previous_events()
        .when(issue(set(DriftPolicySettings::default())))
        .then_expect_events(vec![policy_set(DriftPolicySettings::default())]);
    Fx::with(())
        .given(vec![policy_set(DriftPolicySettings::default())])
        .when(issue(set(strict())))
        .then_expect_events(vec![policy_set(strict())]);
    // the same policy again appends nothing, whatever the reason
    Fx::with(())
        .given(vec![policy_set(strict())])
        .when(issue(DriftPolicyCommand::Set {
            policy: strict(),
            reason: None,
        }))
        .then_expect_events(vec![]);
    // after a clear, setting the defaults is a change again
    Fx::with(())
        .given(vec![policy_set(strict()), cleared()])
        .when(issue(set(DriftPolicySettings::default())))
        .then_expect_events(vec![policy_set(DriftPolicySettings::default())]);
}

#[test]
fn set_validates_ttls_and_retention() {
    let field_of = |policy: DriftPolicySettings| match Fx::with(())
        .given(vec![policy_set(strict())])
        .when(issue(set(policy)))
        .inspect_result()
    {
        Err(DomainError::Validation { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    };
    let with_ttls = |f: fn(&mut SeverityTtls)| {
        let mut policy = strict();
        f(&mut policy.severity_ttls);
        policy
    };
    assert_eq!(
        field_of(with_ttls(|t| t.critical_hours = 0)),
        "severity_ttls.critical_hours"
    );
    assert_eq!(
        field_of(with_ttls(|t| t.high_hours = 0)),
        "severity_ttls.high_hours"
    );
    assert_eq!(
        field_of(with_ttls(|t| t.medium_hours = MAX_TTL_HOURS + 1)),
        "severity_ttls.medium_hours"
    );
    assert_eq!(
        field_of(with_ttls(|t| t.low_hours = u32::MAX)),
        "severity_ttls.low_hours"
    );
    assert_eq!(
        field_of(DriftPolicySettings {
            closed_incident_retention_days: 0,
            ..strict()
        }),
        "closed_incident_retention_days"
    );
    // TTLs need not grow with falling severity (neither DOMAIN.md nor the seeds ask)
    let inverted = with_ttls(|t| {
        t.critical_hours = 200;
        t.low_hours = MAX_TTL_HOURS;
    });
    assert_eq!(inverted.validate(), Ok(()));
}

#[test]
fn clear_removes_the_recorded_policy_once() {
    Fx::with(())
        .given(vec![policy_set(strict())])
        .when(issue(DriftPolicyCommand::Clear {
            reason: Some("  ".into()),
        }))
        .then_expect_events(vec![cleared()]);
    for given in [vec![], vec![policy_set(strict()), cleared()]] {
        Fx::with(())
            .given(given)
            .when(issue(DriftPolicyCommand::Clear { reason: None }))
            .then_expect_events(vec![]);
    }
}

#[test]
fn state_and_incident_policy() {
    let mut policy = DriftPolicy::default();
    policy.apply(policy_set(strict()));
    assert_eq!(policy.recorded(), Some(&strict()));
    assert_eq!(policy.updated_by.as_deref(), Some("alice"));
    let captured = policy.incident_policy();
    assert_eq!(captured.severity_ttls.critical_hours, 4);
    assert!(captured.raise_production_severity);
    assert!(captured.approvals.close && !captured.approvals.acknowledge);
    policy.apply(cleared());
    assert_eq!(policy.recorded(), None);
    assert_eq!(policy.policy, DriftPolicySettings::default());
}

#[test]
fn opening_incidents_follows_auto_create() {
    let d = DriftPolicySettings::default();
    assert!(d.opens_incident(true) && d.opens_incident(false));
    let production_only = strict();
    assert!(production_only.opens_incident(true));
    assert!(!production_only.opens_incident(false));
    let off = DriftPolicySettings {
        auto_create_incidents: false,
        ..DriftPolicySettings::default()
    };
    assert!(!off.opens_incident(true) && !off.opens_incident(false));
}

#[test]
fn scopes() {
    let tenant = PolicyScope::Tenant;
    assert_eq!(tenant.local_id().as_str(), TENANT_SCOPE);
    assert_eq!(tenant.environment_id(), None);
    let prod = PolicyScope::environment("prod").unwrap();
    assert_eq!(prod.local_id().as_str(), "prod");
    assert_eq!(prod.to_string(), "prod");
    assert_eq!(PolicyScope::from_local_id(&prod.local_id()), prod);
    assert_eq!(PolicyScope::from_local_id(&tenant.local_id()), tenant);
    for bad in ["tenant", "", "a:b"] {
        assert!(
            matches!(
                PolicyScope::environment(bad),
                Err(DomainError::Validation { ref field, .. }) if field == "environment_id"
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn events_and_commands_keep_their_names() {
    let json = serde_json::to_value(policy_set(strict())).unwrap();
    assert_eq!(json["type"], "policy_set");
    assert_eq!(json["policy"]["severity_ttls"]["critical_hours"], 4);
    assert_eq!(json["policy"]["approvals"]["close"], true);
    assert_eq!(
        serde_json::from_value::<DriftPolicyEvent>(json).unwrap(),
        policy_set(strict())
    );
    // fields a stored policy lacks take their defaults
    let sparse: DriftPolicySettings =
        serde_json::from_value(serde_json::json!({"enforce_ttl": true})).unwrap();
    assert_eq!(
        sparse,
        DriftPolicySettings {
            enforce_ttl: true,
            ..DriftPolicySettings::default()
        }
    );
    assert_eq!(policy_set(strict()).event_type(), "drift_policy.set");
    assert_eq!(cleared().event_type(), "drift_policy.cleared");
    assert_eq!(cleared().event_version(), "1");
    let command = set(strict());
    assert_eq!(command.required_role(), Role::Admin);
    assert_eq!(command.name(), "drift_policy.set");
    assert_eq!(command.reason(), Some(" audit finding "));
    let clear = DriftPolicyCommand::Clear { reason: None };
    assert_eq!(clear.required_role(), Role::Admin);
    assert_eq!(clear.name(), "drift_policy.clear");
}
