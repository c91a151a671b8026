use chrono::TimeZone;
use cqrs_es::test::TestFramework;

use super::*;
use crate::kernel::command::{Actor, DomainCommand, Role};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::table_tests;

type Fx = TestFramework<Environment>;

fn issue(command: EnvironmentCommand) -> Issued<EnvironmentCommand> {
    Issued::new(
        Actor::new("alice", Role::Admin),
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        command,
    )
}

fn registered(class: EnvironmentClass) -> EnvironmentEvent {
    EnvironmentEvent::Registered {
        name: "Production".into(),
        class,
        n8n_base_url: "https://n8n.example.com".into(),
        git: Some(GitTarget {
            provider: GitProvider::Github,
            repository: "acme/workflows".into(),
            branch: "main".into(),
            folder: "prod".into(),
        }),
        n8n_secret_ref: Some("sec-1".into()),
        git_secret_ref: None,
    }
}

fn id(s: &str) -> LocalId {
    LocalId::parse(s).unwrap()
}

#[test]
fn table_and_every_pair() {
    table_tests::assert_well_formed::<EnvironmentStatus>();
    table_tests::assert_check_matches_table::<EnvironmentStatus>();
    let deactivated = EnvironmentEvent::Deactivated {
        from: EnvironmentStatus::Active,
        reason: None,
    };
    for (given, command, ok) in [
        (
            vec![registered(EnvironmentClass::Production)],
            EnvironmentCommand::Deactivate { reason: None },
            true,
        ),
        (
            vec![registered(EnvironmentClass::Production)],
            EnvironmentCommand::Reactivate,
            false,
        ),
        (
            vec![
                registered(EnvironmentClass::Production),
                deactivated.clone(),
            ],
            EnvironmentCommand::Reactivate,
            true,
        ),
        (
            vec![registered(EnvironmentClass::Production), deactivated],
            EnvironmentCommand::Deactivate { reason: None },
            false,
        ),
    ] {
        let result = Fx::with(())
            .given(given)
            .when(issue(command))
            .inspect_result();
        match result {
            Ok(events) => assert!(ok && events.len() == 1),
            Err(DomainError::InvalidTransition {
                machine: "environment",
                ..
            }) => assert!(!ok),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn register_validates_fields() {
    let bad_url = EnvironmentCommand::Register {
        name: "Prod".into(),
        class: EnvironmentClass::Production,
        n8n_base_url: "ftp://x".into(),
        git: None,
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    Fx::with(())
        .given_no_previous_events()
        .when(issue(bad_url))
        .then_expect_error(DomainError::validation(
            "n8n_base_url",
            "must be an http(s) URL",
        ));
    let blank = EnvironmentCommand::Register {
        name: " ".into(),
        class: EnvironmentClass::Dev,
        n8n_base_url: "http://n8n:5678/".into(),
        git: None,
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    Fx::with(())
        .given_no_previous_events()
        .when(issue(blank))
        .then_expect_error(DomainError::required("name"));
    let escape = EnvironmentCommand::Register {
        name: "Prod".into(),
        class: EnvironmentClass::Production,
        n8n_base_url: "http://n8n".into(),
        git: Some(GitTarget {
            provider: GitProvider::Local,
            repository: "/srv/repo".into(),
            branch: "main".into(),
            folder: "../etc".into(),
        }),
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    let result = Fx::with(())
        .given_no_previous_events()
        .when(issue(escape))
        .inspect_result();
    assert!(
        matches!(result, Err(DomainError::Validation { ref field, .. }) if field == "git.folder")
    );
    let unknown = Fx::with(())
        .given_no_previous_events()
        .when(issue(EnvironmentCommand::Reactivate))
        .inspect_result();
    assert!(matches!(unknown, Err(DomainError::NotFound { .. })));
}

#[test]
fn one_active_incident_slot() {
    let reserve = |i: &str| {
        issue(EnvironmentCommand::ReserveIncidentSlot {
            incident_id: id(i),
            opening: None,
        })
    };
    let given = vec![
        registered(EnvironmentClass::Production),
        EnvironmentEvent::IncidentSlotReserved {
            incident_id: "inc-1".into(),
            opening: None,
        },
    ];
    Fx::with(())
        .given(given.clone())
        .when(reserve("inc-1"))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(given.clone())
        .when(reserve("inc-2"))
        .then_expect_error(DomainError::validation(
            "active_incident",
            "environment already has active incident `inc-1`",
        ));
    Fx::with(())
        .given(given.clone())
        .when(issue(EnvironmentCommand::ReleaseIncidentSlot {
            incident_id: id("inc-9"),
        }))
        .then_expect_events(vec![]);
    let mut released = given;
    released.push(EnvironmentEvent::IncidentSlotReleased {
        incident_id: "inc-1".into(),
    });
    Fx::with(())
        .given(released)
        .when(reserve("inc-2"))
        .then_expect_events(vec![EnvironmentEvent::IncidentSlotReserved {
            incident_id: "inc-2".into(),
            opening: None,
        }]);
}

/// The reservation carries what opening the incident needs, refuses an opening
/// the incident would refuse, and reservations stored before it existed still
/// decode (and keep their shape).
#[test]
fn reservation_carries_the_opening() {
    use crate::incident::{AffectedWorkflow, IncidentOpening};
    let opening = IncidentOpening {
        production: true,
        affected_workflows: vec![AffectedWorkflow {
            workflow_id: "orders".into(),
            name: "Orders".into(),
        }],
        snapshot_digest: Some("ab".repeat(32)),
        policy: Default::default(),
    };
    let reserve = |opening: IncidentOpening| {
        issue(EnvironmentCommand::ReserveIncidentSlot {
            incident_id: id("inc-1"),
            opening: Some(opening),
        })
    };
    Fx::with(())
        .given(vec![registered(EnvironmentClass::Production)])
        .when(reserve(opening.clone()))
        .then_expect_events(vec![EnvironmentEvent::IncidentSlotReserved {
            incident_id: "inc-1".into(),
            opening: Some(opening.clone()),
        }]);
    let bad = IncidentOpening {
        snapshot_digest: Some("not a digest".into()),
        ..opening
    };
    Fx::with(())
        .given(vec![registered(EnvironmentClass::Production)])
        .when(reserve(bad))
        .then_expect_error(DomainError::validation(
            "snapshot_digest",
            "must be a lowercase hex SHA-256",
        ));
    let stored = serde_json::json!({"type": "incident_slot_reserved", "incident_id": "inc-0"});
    let old: EnvironmentEvent = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(
        old,
        EnvironmentEvent::IncidentSlotReserved {
            incident_id: "inc-0".into(),
            opening: None
        }
    );
    assert_eq!(serde_json::to_value(&old).unwrap(), stored);
}

#[test]
fn drift_checks_only_where_git_and_not_dev() {
    let check = issue(EnvironmentCommand::RecordDriftCheck {
        outcome: DriftCheckOutcome::Failed {
            cause: "n8n: 401".into(),
        },
    });
    let dev = Fx::with(())
        .given(vec![registered(EnvironmentClass::Dev)])
        .when(check.clone())
        .inspect_result();
    assert!(matches!(dev, Err(DomainError::Validation { .. })));
    let events = Fx::with(())
        .given(vec![registered(EnvironmentClass::Staging)])
        .when(check)
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[0], EnvironmentEvent::DriftCheckFailed { cause, .. } if cause == "n8n: 401")
    );
}

#[test]
fn failed_check_keeps_counts_and_noop_update_appends_nothing() {
    let mut env = Environment::default();
    env.apply(registered(EnvironmentClass::Production));
    let at = Utc::now();
    let counts = DriftCounts {
        in_sync: 3,
        with_drift: 1,
        not_in_git: 2,
    };
    env.apply(EnvironmentEvent::DriftChecked { counts, at });
    env.apply(EnvironmentEvent::DriftCheckFailed {
        cause: "timeout".into(),
        at,
    });
    assert_eq!(env.counts, counts);
    let same = EnvironmentCommand::Update {
        name: Some("Production".into()),
        n8n_base_url: Some("https://n8n.example.com/".into()),
        git: None,
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    assert_eq!(env.decide(issue(same)).unwrap(), vec![]);
}

/// Removing the Git configuration survives a round trip through the log, and an
/// update that leaves Git alone (`"git": null`, as every earlier event stores it)
/// still means "unchanged".
#[test]
fn removing_git_survives_replay() {
    let mut env = Environment::default();
    env.apply(registered(EnvironmentClass::Production));
    let update = |git| EnvironmentCommand::Update {
        name: Some("Prod".into()),
        n8n_base_url: None,
        git,
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    let replay = |events: Vec<EnvironmentEvent>, env: &mut Environment| {
        for event in events {
            let stored = serde_json::to_value(&event).unwrap();
            env.apply(serde_json::from_value(stored).unwrap());
        }
    };
    let events = env.decide(issue(update(None))).unwrap();
    let stored = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(stored["git"], serde_json::Value::Null);
    assert!(
        stored.get("git_removed").is_none(),
        "unchanged events keep their shape"
    );
    replay(events, &mut env);
    assert!(env.git.is_some());
    let events = env.decide(issue(update(Some(None)))).unwrap();
    replay(events, &mut env);
    assert_eq!(env.git, None);
    // removing what is not there changes nothing
    let mut renamed = update(Some(None));
    if let EnvironmentCommand::Update { name, .. } = &mut renamed {
        *name = None;
    }
    assert_eq!(env.decide(issue(renamed)).unwrap(), vec![]);
}

/// A failed sync is shown until a sync of the same kind succeeds.
#[test]
fn sync_failures_are_kept_until_a_sync_succeeds() {
    let mut env = Environment::default();
    env.apply(registered(EnvironmentClass::Production));
    let fail = |kind| EnvironmentCommand::RecordSyncFailure {
        kind,
        cause: "n8n failed (503)".into(),
    };
    for event in env.decide(issue(fail(SyncKind::Environment))).unwrap() {
        env.apply(event);
    }
    for event in env.decide(issue(fail(SyncKind::Repository))).unwrap() {
        env.apply(event);
    }
    assert_eq!(env.last_sync_error.as_deref(), Some("n8n failed (503)"));
    assert!(env.last_repository_sync_error.is_some());
    let blank = EnvironmentCommand::RecordSyncFailure {
        kind: SyncKind::Environment,
        cause: " ".into(),
    };
    assert!(matches!(
        env.decide(issue(blank)),
        Err(DomainError::Validation { .. })
    ));
    let ok = EnvironmentCommand::RecordSync {
        kind: SyncKind::Environment,
        workflows_seen: 3,
    };
    for event in env.decide(issue(ok)).unwrap() {
        env.apply(event);
    }
    assert_eq!(env.last_sync_error, None);
    assert!(
        env.last_repository_sync_error.is_some(),
        "a repository failure stays until a repository sync succeeds"
    );
}

/// Known credentials: the whole set, sorted and without duplicates; the same set
/// again changes nothing; blank types or ids are refused; a workflow's references
/// are read from its nodes.
#[test]
fn known_credentials_are_a_set() {
    let credential = |kind: &str, id: &str, name: &str| KnownCredential {
        kind: kind.into(),
        id: id.into(),
        name: name.into(),
    };
    let at = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let slack = credential("slackApi", "3", "Slack Bot");
    let db = credential("postgres", "7", "Orders DB");
    let record = |credentials: Vec<KnownCredential>| {
        issue(EnvironmentCommand::RecordCredentials { credentials })
    };
    Fx::with(())
        .given(vec![registered(EnvironmentClass::Staging)])
        .when(record(vec![slack.clone(), db.clone(), slack.clone()]))
        .then_expect_events(vec![EnvironmentEvent::CredentialsObserved {
            credentials: vec![db.clone(), slack.clone()],
            at,
        }]);
    let known = vec![
        registered(EnvironmentClass::Staging),
        EnvironmentEvent::CredentialsObserved {
            credentials: vec![db.clone(), slack.clone()],
            at,
        },
    ];
    Fx::with(())
        .given(known.clone())
        .when(record(vec![slack.clone(), db.clone()]))
        .then_expect_events(vec![]);
    Fx::with(())
        .given(known)
        .when(record(vec![]))
        .then_expect_events(vec![EnvironmentEvent::CredentialsObserved {
            credentials: vec![],
            at,
        }]);
    Fx::with(())
        .given(vec![registered(EnvironmentClass::Staging)])
        .when(record(vec![credential(" ", "1", "x")]))
        .then_expect_error(DomainError::required("credentials.type"));

    let workflow = serde_json::json!({ "nodes": [
        { "name": "a", "credentials": { "slackApi": { "id": "3", "name": "Slack Bot" } } },
        { "name": "b", "credentials": { "postgres": { "id": "7", "name": "Orders DB" },
                                        "noId": { "name": "x" } } },
        { "name": "c" },
    ] });
    let mut referenced = KnownCredential::referenced_by(&workflow);
    referenced.sort();
    assert_eq!(referenced, vec![db, slack]);
}

#[test]
fn one_running_promotion_and_pinning() {
    let reserve = |p: &str, d: &str| {
        issue(EnvironmentCommand::ReservePromotionSlot {
            promotion_id: id(p),
            deployment_id: id(d),
        })
    };
    let held = vec![
        registered(EnvironmentClass::Staging),
        EnvironmentEvent::PromotionSlotReserved {
            promotion_id: "p1".into(),
            deployment_id: "p1.1".into(),
        },
    ];
    Fx::with(())
        .given(held.clone())
        .when(reserve("p1", "p1.1"))
        .then_expect_events(vec![]);
    let second = Fx::with(())
        .given(held.clone())
        .when(reserve("p2", "p2.1"))
        .inspect_result();
    assert!(
        matches!(&second, Err(DomainError::Conflict(m)) if m.contains("p1") && m.contains("p1.1")),
        "the refusal names the holder: {second:?}"
    );
    Fx::with(())
        .given(held.clone())
        .when(issue(EnvironmentCommand::ReleasePromotionSlot {
            deployment_id: id("p2.1"),
        }))
        .then_expect_events(vec![]);
    let mut released = held.clone();
    released.push(EnvironmentEvent::PromotionSlotReleased {
        deployment_id: "p1.1".into(),
    });
    Fx::with(())
        .given(released)
        .when(reserve("p2", "p2.1"))
        .then_expect_events(vec![EnvironmentEvent::PromotionSlotReserved {
            promotion_id: "p2".into(),
            deployment_id: "p2.1".into(),
        }]);

    let at = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let pin = issue(EnvironmentCommand::Pin {
        reason: "rolled back p1.1".into(),
        deployment_id: Some(id("p1.1")),
    });
    Fx::with(())
        .given(held.clone())
        .when(pin.clone())
        .then_expect_events(vec![EnvironmentEvent::Pinned {
            reason: "rolled back p1.1".into(),
            deployment_id: Some("p1.1".into()),
            at,
        }]);
    let mut pinned = held;
    pinned.push(EnvironmentEvent::Pinned {
        reason: "rolled back p1.1".into(),
        deployment_id: Some("p1.1".into()),
        at,
    });
    Fx::with(())
        .given(pinned.clone())
        .when(pin)
        .then_expect_events(vec![]);
    Fx::with(())
        .given(pinned)
        .when(issue(EnvironmentCommand::Unpin {
            reason: Some("fixed".into()),
        }))
        .then_expect_events(vec![EnvironmentEvent::Unpinned {
            reason: Some("fixed".into()),
            at,
        }]);
    let not_pinned = Fx::with(())
        .given(vec![registered(EnvironmentClass::Staging)])
        .when(issue(EnvironmentCommand::Unpin { reason: None }))
        .inspect_result();
    assert!(matches!(not_pinned, Err(DomainError::Validation { .. })));
    assert_eq!(
        EnvironmentCommand::Unpin { reason: None }.required_role(),
        Role::Admin
    );
}
