//! The store conformance suite: the same tests on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::time::{Duration, Instant};
use workflowops::workflows::incident_slot::report_drift;

use aggregates::environment::{
    Environment, EnvironmentClass, EnvironmentCommand, EnvironmentEvent, GitProvider, GitTarget,
    SyncKind,
};
use aggregates::incident::{
    DriftIncident, IncidentCommand, IncidentEvent, IncidentStatus, ResolutionType,
};
use aggregates::kernel::command::Role;
use aggregates::kernel::error::DomainError;
use eventstore::{LogCursor, PgStore, Store, StoredEvent};
use workflowops::command::bus::CommandError;

use crate::support::{admin, both_backends, ctx, envelope, id, Kind, TestStore};

both_backends!(
    append_and_load_carry_metadata_and_chain,
    refusals_append_nothing,
    ids_are_tenant_scoped,
    duplicate_sequence_is_a_conflict,
    concurrent_writes_conflict_but_never_lose_or_duplicate,
    group_commit_keeps_each_command_whole_and_conflicts_per_command,
    a_group_of_one_event_commands_conflicts_per_command,
    global_log_returns_every_event_once_in_commit_order,
    verify_names_the_tampered_event,
    commit_refuses_transitions_outside_the_table,
    commit_refuses_another_tenants_aggregate,
);

pub fn register(name: &str) -> EnvironmentCommand {
    EnvironmentCommand::Register {
        name: name.into(),
        class: EnvironmentClass::Production,
        n8n_base_url: "https://n8n.example.com".into(),
        git: Some(GitTarget {
            provider: GitProvider::Github,
            repository: "acme/flows".into(),
            branch: "main".into(),
            folder: "prod".into(),
        }),
        n8n_secret_ref: Some(id("secret-1")),
        git_secret_ref: None,
    }
}

/// Every event of the log, read through the global reader. On PostgreSQL the reader
/// only returns events below the oldest running transaction of the whole cluster, so
/// a transaction held open by another test can delay it: poll until `expected`.
pub async fn read_all(store: &Store, expected: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut events = vec![];
        let mut cursor = LogCursor::START;
        loop {
            let batch = store.read_after(cursor, 7).await.unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.cursor();
            events.extend(batch);
        }
        if events.len() >= expected || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers environment `prod` of tenant `acme` and opens a drift incident on it.
async fn incident_on_prod(
    domain: &workflowops::command::domain::Domain,
) -> aggregates::kernel::ids::LocalId {
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let system = ctx("acme", Role::System);
    let (incident_id, _) = report_drift(
        domain,
        &system,
        &id("prod"),
        vec![],
        None,
        Default::default(),
    )
    .await
    .unwrap();
    incident_id
}

async fn count(store: &Store, aggregate_type: &str, aggregate_id: &str) -> usize {
    store
        .aggregate_events(aggregate_type, aggregate_id)
        .await
        .unwrap()
        .len()
}

async fn append_and_load_carry_metadata_and_chain(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let mut alice = admin("acme");
    alice.correlation_id = "req-42".into();
    let committed = domain
        .environment(&alice, &id("prod"), register("Production"))
        .await
        .unwrap();
    assert_eq!(committed.sequence, 1);
    assert!(committed.position.unwrap() > 0);
    assert!(committed.state.registered);
    let deactivate = EnvironmentCommand::Deactivate {
        reason: Some("maintenance window".into()),
    };
    let second = domain
        .environment(&alice, &id("prod"), deactivate)
        .await
        .unwrap();
    assert_eq!(second.sequence, 2);
    assert!(second.position > committed.position);

    let events = t
        .store
        .aggregate_events("environment", "acme:prod")
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let meta = &events[1].metadata;
    for key in [
        "tenant_id",
        "actor",
        "actor_role",
        "recorded_at",
        "correlation_id",
        "admin_override",
        "hash",
    ] {
        assert!(meta.contains_key(key), "metadata lacks {key}: {meta:?}");
    }
    assert_eq!(meta["tenant_id"], "acme");
    assert_eq!(meta["actor"], "alice");
    assert_eq!(meta["actor_role"], "admin");
    assert_eq!(meta["correlation_id"], "req-42");
    assert_eq!(meta["reason"], "maintenance window");
    assert_eq!(meta["admin_override"], false);
    assert_eq!(events[1].event_type, "environment.deactivated");
    assert_eq!(events[1].payload["from"], "active");
    // recorded_at column mirrors the metadata
    let recorded =
        chrono::DateTime::parse_from_rfc3339(meta["recorded_at"].as_str().unwrap()).unwrap();
    assert_eq!(events[1].recorded_at, recorded);
    assert_ne!(events[0].hash(), events[1].hash());
    // the secret reference is an id; no secret value exists anywhere in the log
    assert_eq!(events[0].payload["n8n_secret_ref"], "secret-1");
    // replay gives the same state
    let loaded = t.bus().load::<Environment>("acme:prod").await.unwrap();
    assert_eq!(loaded.state(), &second.state);
    assert_eq!(loaded.sequence(), 2);
}

async fn refusals_append_nothing(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let alice = admin("acme");
    let incident_id = incident_on_prod(&domain).await;
    let before = count(&t.store, "incident", &format!("acme:{incident_id}")).await;

    // invalid transition: detected → stabilized
    let err = domain
        .incident(
            &alice,
            &incident_id,
            IncidentCommand::Stabilize { reason: None },
            false,
        )
        .await
        .unwrap_err();
    match err.refusal() {
        Some(DomainError::InvalidTransition {
            from, to, allowed, ..
        }) => {
            assert_eq!((from.as_str(), to.as_str()), ("detected", "stabilized"));
            assert_eq!(
                allowed,
                &vec!["acknowledged".to_string(), "closed".to_string()]
            );
        }
        other => panic!("expected INVALID_TRANSITION, got {other:?}"),
    }
    assert_eq!(err.code().as_str(), "INVALID_TRANSITION");
    // missing required field
    let close = IncidentCommand::Close {
        reason: None,
        resolution_type: Some(ResolutionType::Revert),
    };
    let err = domain
        .incident(&alice, &incident_id, close, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err.refusal(), Some(DomainError::Validation { field, .. }) if field == "reason")
    );
    // role too low
    let viewer = ctx("acme", Role::Viewer);
    let ack = IncidentCommand::Acknowledge {
        reason: None,
        owner_user_id: None,
        ticket_ref: None,
        expires_at: None,
    };
    let err = domain
        .incident(&viewer, &incident_id, ack.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "FORBIDDEN");
    // override by a non-admin
    let err = domain
        .incident(&ctx("acme", Role::Developer), &incident_id, ack, true)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "FORBIDDEN");
    // unknown id
    let err = domain
        .incident(
            &alice,
            &id("no-such-incident"),
            IncidentCommand::Stabilize { reason: None },
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.refusal(), Some(DomainError::NotFound { id, .. }) if id == "no-such-incident")
    );
    assert_eq!(
        count(&t.store, "incident", "acme:no-such-incident").await,
        0
    );
    // text the database could not store
    let nul = IncidentCommand::Acknowledge {
        reason: Some("a\0b".into()),
        owner_user_id: None,
        ticket_ref: None,
        expires_at: None,
    };
    let err = domain
        .incident(&ctx("acme", Role::Developer), &incident_id, nul, false)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "VALIDATION");

    assert_eq!(
        count(&t.store, "incident", &format!("acme:{incident_id}")).await,
        before,
        "refusals appended events"
    );
}

async fn ids_are_tenant_scoped(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Acme production"))
        .await
        .unwrap();
    // tenant B addressing the same local id finds nothing and changes nothing
    let err = domain
        .environment(
            &admin("globex"),
            &id("prod"),
            EnvironmentCommand::Deactivate { reason: None },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "NOT_FOUND");
    assert_eq!(count(&t.store, "environment", "globex:prod").await, 0);
    assert_eq!(count(&t.store, "environment", "acme:prod").await, 1);
    // registering "prod" in tenant B is a different aggregate
    domain
        .environment(&admin("globex"), &id("prod"), register("Globex production"))
        .await
        .unwrap();
    let acme = t
        .bus()
        .load::<Environment>("acme:prod")
        .await
        .unwrap()
        .into_state();
    assert_eq!(acme.name, "Acme production");
    let events = read_all(&t.store, 2).await;
    let tenants: HashSet<&str> = events.iter().map(|e| e.tenant()).collect();
    assert_eq!(tenants, HashSet::from(["acme", "globex"]));
    assert!(events.iter().all(|e| e.metadata["tenant_id"] == e.tenant()));
}

async fn duplicate_sequence_is_a_conflict(kind: Kind) {
    let t = TestStore::new(kind).await;
    t.domain()
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    // Two writers load the same state; the first commit wins, the second finds its
    // sequence taken and stores nothing.
    let first = t.store.load::<Environment>("acme:prod").await.unwrap();
    let second = t.store.load::<Environment>("acme:prod").await.unwrap();
    let deactivate = || {
        vec![EnvironmentEvent::Deactivated {
            from: aggregates::environment::EnvironmentStatus::Active,
            reason: None,
        }]
    };
    let envelope = envelope("acme", Role::Admin);
    t.store
        .commit(first, deactivate(), &envelope)
        .await
        .unwrap();
    let result = t.store.commit(second, deactivate(), &envelope).await;
    assert!(
        matches!(result, Err(eventstore::CommitError::Conflict { .. })),
        "{result:?}"
    );
    assert_eq!(count(&t.store, "environment", "acme:prod").await, 2);
}

async fn concurrent_writes_conflict_but_never_lose_or_duplicate(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let writers = 16;
    let mut tasks = vec![];
    for _ in 0..writers {
        let domain = domain.clone();
        tasks.push(tokio::spawn(async move {
            let dev = ctx("acme", Role::Developer);
            domain
                .environment(
                    &dev,
                    &id("prod"),
                    EnvironmentCommand::RecordSync {
                        kind: SyncKind::Environment,
                        workflows_seen: 3,
                    },
                )
                .await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e @ CommandError::Conflict { .. }) => {
                assert!(e.retryable());
                assert_eq!(e.code().as_str(), "CONFLICT");
                conflicts += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok + conflicts, writers);
    assert!(ok >= 1);
    let events = t
        .store
        .aggregate_events("environment", "acme:prod")
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        1 + ok,
        "every success is stored once, no conflict is stored"
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert!(t.store.verify().await.unwrap().ok);
}

/// Concurrent commands share group commits (one statement on PostgreSQL, one
/// transaction on SQLite), yet each command lands whole or not at all and a
/// conflict refuses only its own command. Two stores on one database stand for two
/// processes, each with its own committer: writers of both race on the same
/// aggregates with two-event commands.
async fn group_commit_keeps_each_command_whole_and_conflicts_per_command(kind: Kind) {
    race_group_commits(kind, 2).await;
}

/// The same race with one-event commands, the usual case, which PostgreSQL first
/// tries as one plain `INSERT` (a taken sequence fails it whole, and the group goes
/// again through the statement that tells the conflicting commands apart).
async fn a_group_of_one_event_commands_conflicts_per_command(kind: Kind) {
    race_group_commits(kind, 1).await;
}

async fn race_group_commits(kind: Kind, events_per_command: usize) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let aggregates = 24;
    for e in 0..aggregates {
        domain
            .environment(&admin("acme"), &id(&format!("g-{e}")), register("Grouped"))
            .await
            .unwrap();
    }
    // One command on `g-{e}`: `events_per_command` sync records.
    let spawn = |store: Store, e: usize, seen: u32| {
        tokio::spawn(async move {
            let aggregate = format!("acme:g-{e}");
            let loaded = store.load::<Environment>(&aggregate).await.unwrap();
            let recorded = |seen| EnvironmentEvent::SyncRecorded {
                kind: SyncKind::Environment,
                workflows_seen: seen,
                at: chrono::Utc::now(),
            };
            let mut events = vec![recorded(seen), recorded(99)];
            events.truncate(events_per_command);
            let result = store
                .commit(loaded, events, &envelope("acme", Role::Admin))
                .await;
            (e, result)
        })
    };
    // Without a taken sequence (one writer per aggregate), a shared group is stored
    // by its first statement.
    let calm = t.store.group_stats();
    let tasks: Vec<_> = (0..aggregates)
        .map(|e| spawn(t.store.clone(), e, 1))
        .collect();
    for task in tasks {
        task.await.unwrap().1.unwrap();
    }
    let after_calm = t.store.group_stats();
    assert!(after_calm.shared > calm.shared, "no group was shared");
    assert_eq!(
        after_calm.retried, calm.retried,
        "a group without a taken sequence went again"
    );
    let other = Store::connect(&t.url, 4).await.unwrap();
    let before = t.store.group_stats();
    let mut tasks = vec![];
    for round in 0..3 {
        for e in 0..aggregates {
            for writer in 0..4 {
                let store = if writer % 2 == 0 {
                    t.store.clone()
                } else {
                    other.clone()
                };
                tasks.push(spawn(store, e, round * 10 + writer));
            }
        }
    }
    // each aggregate's calm command, then the race's
    let mut stored = vec![1usize; aggregates];
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (e, Ok(committed)) => {
                assert_eq!(committed.events.len(), events_per_command);
                assert!(committed.position.is_some());
                stored[e] += 1;
            }
            (_, Err(eventstore::CommitError::Conflict { .. })) => conflicts += 1,
            (_, Err(other)) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        stored.iter().sum::<usize>() + conflicts,
        aggregates + 3 * aggregates * 4
    );
    assert!(conflicts > 0, "writers on one state must conflict");
    for (e, commands) in stored.iter().enumerate() {
        assert!(*commands >= 2, "g-{e}: some writer of the race must win");
        let events = t
            .store
            .aggregate_events("environment", &format!("acme:g-{e}"))
            .await
            .unwrap();
        // registration + the events of each successful command: never one of a pair
        assert_eq!(events.len(), 1 + events_per_command * commands, "g-{e}");
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
        for pair in events[1..].chunks(2).filter(|_| events_per_command == 2) {
            assert_eq!(pair[1].payload["workflows_seen"], 99, "g-{e}: {pair:?}");
            assert_eq!(
                pair[0].metadata["correlation_id"], pair[1].metadata["correlation_id"],
                "g-{e}: a pair is one command's"
            );
        }
    }
    // SQLite numbers the log 1, 2, 3, … in commit order, a group's events too.
    if matches!(kind, Kind::Sqlite) {
        let log = t.store.read_after(LogCursor::START, 10_000).await.unwrap();
        let positions: Vec<i64> = log.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=log.len() as i64).collect::<Vec<_>>());
    }
    let after = t.store.group_stats();
    let (groups, appends) = (after.groups - before.groups, after.appends - before.appends);
    assert!(
        appends > 0 && groups < appends,
        "concurrent appends shared groups: {groups} groups for {appends} appends"
    );
    assert!(t.store.verify().await.unwrap().ok);
    other.close().await;
}

async fn global_log_returns_every_event_once_in_commit_order(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let mut tasks = vec![];
    for e in 0..6 {
        let domain = domain.clone();
        tasks.push(tokio::spawn(async move {
            let env = id(&format!("env-{e}"));
            let alice = admin("acme");
            domain
                .environment(&alice, &env, register("Env"))
                .await
                .unwrap();
            for _ in 0..4 {
                let sync = EnvironmentCommand::RecordSync {
                    kind: SyncKind::Repository,
                    workflows_seen: 1,
                };
                domain.environment(&alice, &env, sync).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = read_all(&t.store, 30).await;
    assert_eq!(events.len(), 30);
    let positions: HashSet<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions.len(), 30, "each event exactly once");
    // the read order is the cursor order, and each aggregate's events come in sequence order
    let cursors: Vec<LogCursor> = events.iter().map(StoredEvent::cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
    for e in 0..6 {
        let seqs: Vec<i64> = events
            .iter()
            .filter(|ev| ev.aggregate_id == format!("acme:env-{e}"))
            .map(|ev| ev.sequence)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
    // resuming from a bare position continues right after it
    let middle = &events[14];
    let cursor = t
        .store
        .cursor_after_position(middle.position)
        .await
        .unwrap()
        .unwrap();
    let rest = t.store.read_after(cursor, 100).await.unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].position, events[15].position);
    assert_eq!(t.store.cursor_after_position(999_999).await.unwrap(), None);
}

async fn verify_names_the_tampered_event(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let alice = admin("acme");
    let incident_id = incident_on_prod(&domain).await;
    let ack = IncidentCommand::Acknowledge {
        reason: Some("on it".into()),
        owner_user_id: None,
        ticket_ref: None,
        expires_at: None,
    };
    domain
        .incident(&alice, &incident_id, ack, false)
        .await
        .unwrap();
    domain
        .environment(
            &alice,
            &id("prod"),
            EnvironmentCommand::RecordSync {
                kind: SyncKind::Environment,
                workflows_seen: 9,
            },
        )
        .await
        .unwrap();

    let clean = t.store.verify().await.unwrap();
    assert!(clean.ok, "{clean:?}");
    assert!(clean.checked_events >= 5);
    assert_eq!(run_verify(&t.url).0, 0, "untouched log verifies clean");

    let target = t
        .store
        .aggregate_events("incident", &format!("acme:{incident_id}"))
        .await
        .unwrap();
    let victim = target
        .iter()
        .find(|e| e.event_type == "incident.acknowledged")
        .unwrap();
    let forged = r#"{"type":"acknowledged","from":"detected","reason":"nothing to see","owner_user_id":null,"ticket_ref":null,"expires_at":null,"at":"2026-01-01T00:00:00Z","admin_override":false,"approval_bypassed":false}"#;
    match &t.store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query("UPDATE events SET payload = $1::json WHERE position = $2")
                .bind(forged)
                .bind(victim.position)
                .execute(pool)
                .await
                .unwrap();
        }
        Store::Sqlite(eventstore::SqliteStore { pool, .. }) => {
            sqlx::query("UPDATE events SET payload = ?1 WHERE position = ?2")
                .bind(forged)
                .bind(victim.position)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    let report = t.store.verify().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken_position, Some(victim.position));
    assert_eq!(report.broken.len(), 1, "only the altered event: {report:?}");
    let (code, stdout, stderr) = run_verify(&t.url);
    assert_eq!(code, 1, "verify exits non-zero on a broken chain: {stderr}");
    assert!(
        stderr.contains(&format!("position {}", victim.position)),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("\"first_broken_position\":{}", victim.position)),
        "{stdout}"
    );
}

/// Runs `workflowops verify` against a database; returns (exit code, stdout, stderr).
fn run_verify(database_url: &str) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_workflowops"))
        .arg("verify")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run workflowops verify");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The store's commit is the only public write, and it checks the table whatever
/// produced the events: an event that moves an incident from `detected` straight to
/// `stabilized` (not in the table) is refused and nothing is stored; the same event
/// under an admin's override is allowed, and an override asked for by a developer
/// counts for nothing.
async fn commit_refuses_transitions_outside_the_table(kind: Kind) {
    let t = TestStore::new(kind).await;
    let incident = incident_on_prod(&t.domain()).await;
    let aggregate = format!("acme:{incident}");
    let stabilized = || {
        vec![IncidentEvent::Stabilized {
            from: IncidentStatus::Detected,
            reason: Some("forged".into()),
            at: chrono::Utc::now(),
            admin_override: false,
        }]
    };
    let before = t.store.event_count().await.unwrap();

    for (role, admin_override) in [
        (Role::Admin, false),
        (Role::Developer, true),
        (Role::System, true),
    ] {
        let loaded = t.store.load::<DriftIncident>(&aggregate).await.unwrap();
        let mut envelope = envelope("acme", role);
        envelope.admin_override = admin_override;
        let refused = t
            .store
            .commit(loaded, stabilized(), &envelope)
            .await
            .unwrap_err();
        match &refused {
            eventstore::CommitError::Refused(DomainError::InvalidTransition {
                machine,
                from,
                to,
                allowed,
            }) => {
                assert_eq!(
                    (*machine, from.as_str(), to.as_str()),
                    ("incident", "detected", "stabilized")
                );
                assert_eq!(allowed, &["acknowledged", "closed"]);
            }
            other => panic!("{role:?}: expected an invalid transition, got {other:?}"),
        }
        assert_eq!(
            t.store.event_count().await.unwrap(),
            before,
            "nothing stored"
        );
    }
    // what the API answers for it
    let refused: workflowops::command::bus::CommandError = t
        .store
        .commit(
            t.store.load::<DriftIncident>(&aggregate).await.unwrap(),
            stabilized(),
            &envelope("acme", Role::Admin),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(refused.code(), aggregates::ErrorCode::InvalidTransition);

    // an admin's override is the one way outside the table (never out of a terminal state)
    let loaded = t.store.load::<DriftIncident>(&aggregate).await.unwrap();
    let mut admin_override = envelope("acme", Role::Admin);
    admin_override.admin_override = true;
    let committed = t
        .store
        .commit(loaded, stabilized(), &admin_override)
        .await
        .unwrap();
    assert_eq!(committed.state.status, IncidentStatus::Stabilized);
    assert_eq!(t.store.event_count().await.unwrap(), before + 1);
    let stored = t
        .store
        .aggregate_events("incident", &aggregate)
        .await
        .unwrap();
    assert_eq!(stored.last().unwrap().metadata["admin_override"], true);
    assert!(t.store.verify().await.unwrap().ok);
}

/// A loaded aggregate of one tenant cannot be committed to under another's envelope.
async fn commit_refuses_another_tenants_aggregate(kind: Kind) {
    let t = TestStore::new(kind).await;
    t.domain()
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let before = t.store.event_count().await.unwrap();
    let loaded = t.store.load::<Environment>("acme:prod").await.unwrap();
    let refused = t
        .store
        .commit(
            loaded,
            vec![EnvironmentEvent::Deactivated {
                from: aggregates::environment::EnvironmentStatus::Active,
                reason: None,
            }],
            &envelope("globex", Role::Admin),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            eventstore::CommitError::Refused(DomainError::Forbidden(_))
        ),
        "{refused:?}"
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing stored"
    );
}

/// A PostgreSQL read of 10,000 events or more is parsed in two halves at once
/// (decision 83): it returns the log whole and in order, exactly as reads of small
/// batches do, and a corrupt event in the second half is reported at its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_read_parsed_in_halves_is_the_log_in_order_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let Store::Postgres(PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    // 12,000 events in three transactions (an aggregate type no model folds).
    for part in 0..3 {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) \
             SELECT 'reservation', 'acme:r-' || $1 || '-' || n, 1, 'reservation.claimed', \
             '1', json_build_object('n', n, 'part', $1), json_build_object('actor', 'a-' || n) \
             FROM generate_series(1, 4000) AS n",
        )
        .bind(part)
        .execute(pool)
        .await
        .unwrap();
    }
    // (a transaction of another test may hold the log's horizon back a moment)
    let deadline = Instant::now() + Duration::from_secs(30);
    let whole = loop {
        let whole = t.store.read_after(LogCursor::START, 20_000).await.unwrap();
        if whole.len() == 12_000 || Instant::now() > deadline {
            break whole;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(whole.len(), 12_000);
    let mut pieces: Vec<StoredEvent> = Vec::new();
    let mut cursor = LogCursor::START;
    loop {
        let batch = t.store.read_after(cursor, 999).await.unwrap();
        let Some(last) = batch.last() else {
            break;
        };
        cursor = last.cursor();
        pieces.extend(batch);
    }
    assert_eq!(whole, pieces, "the same events in the same order");
    assert_eq!(whole[7_000].payload["n"], 3_001);
    assert_eq!(whole[7_000].metadata["actor"], "a-3001");

    // A metadata that is not an object, three quarters of the way: in the second half.
    let bad = whole[9_000].position;
    sqlx::query("UPDATE events SET metadata = '[1]' WHERE position = $1")
        .bind(bad)
        .execute(pool)
        .await
        .unwrap();
    match t.store.read_after(LogCursor::START, 20_000).await {
        Err(eventstore::StoreError::Corrupt { position, .. }) => assert_eq!(position, bad),
        other => panic!(
            "a corrupt event must be an error: {:?}",
            other.map(|e| e.len())
        ),
    }
}

/// Decision 57: a pooled connection goes back without a ping when nothing is queued
/// to send. On a pool of one connection: a query cancelled mid-answer leaves rows
/// unread, and the next query on that connection still gets its own answer; a
/// transaction dropped without commit is rolled back before the connection serves
/// anyone else (its write is gone, and the next query runs outside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_connection_serves_the_next_query_cleanly_postgres() {
    /// The id of the transaction the next statement on `pool` runs in, if it has one.
    async fn transaction_id(pool: &sqlx::PgPool) -> Option<String> {
        sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
            .fetch_one(pool)
            .await
            .unwrap()
    }
    let t = TestStore::new(Kind::Postgres).await;
    let store = Store::connect(&t.url, 1).await.unwrap();
    let Store::Postgres(PgStore { pool, .. }) = &store else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE released (n int)")
        .execute(pool)
        .await
        .unwrap();
    for round in 0..20 {
        // a big answer, cancelled once its first rows are in
        let mut rows = sqlx::query_scalar::<_, i32>(
            "SELECT g FROM generate_series(1, 200000) g, pg_sleep(0.01)",
        )
        .fetch(pool);
        use futures::StreamExt as _;
        assert!(rows.next().await.unwrap().is_ok());
        drop(rows);
        let answer: i64 = sqlx::query_scalar("SELECT $1::bigint + 1")
            .bind(round as i64)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            answer,
            round as i64 + 1,
            "round {round}: another query's answer"
        );

        // a transaction dropped without commit
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO released VALUES ($1)")
            .bind(round)
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        let in_transaction = transaction_id(pool).await;
        assert_eq!(
            in_transaction, None,
            "round {round}: ran inside the dropped transaction"
        );
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM released")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            kept, 0,
            "round {round}: the dropped transaction's write stayed"
        );

        // a `begin` cancelled after its BEGIN went out, before the answer came back
        // (a timeout, a client gone, an aborted task): the connection must not
        // serve anyone inside that transaction, where their writes would never
        // commit and their locks never go
        let mut cancelled = false;
        for _ in 0..100 {
            let conn = pool.acquire().await.unwrap();
            let mut begin = sqlx::Transaction::begin(conn, None);
            match futures::poll!(begin.as_mut()) {
                std::task::Poll::Pending => {
                    // BEGIN sent, its answer not read yet
                    drop(begin);
                    cancelled = true;
                    break;
                }
                // answered at once: rolled back on drop, as above; try again
                std::task::Poll::Ready(tx) => drop(tx),
            }
        }
        assert!(cancelled, "round {round}: no begin was caught in flight");
        sqlx::query("INSERT INTO released VALUES ($1)")
            .bind(round)
            .execute(pool)
            .await
            .unwrap();
        let in_transaction = transaction_id(pool).await;
        assert_eq!(
            in_transaction, None,
            "round {round}: ran inside the cancelled begin's transaction"
        );
        let other = Store::connect(&t.url, 1).await.unwrap();
        let Store::Postgres(PgStore {
            pool: other_pool, ..
        }) = &other
        else {
            unreachable!()
        };
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM released")
            .fetch_one(other_pool)
            .await
            .unwrap();
        assert_eq!(seen, 1, "round {round}: the plain insert committed");
        other.close().await;
        sqlx::query("DELETE FROM released")
            .execute(pool)
            .await
            .unwrap();
    }
    store.close().await;
}

/// Decision 59: on PostgreSQL the committer runs on a thread of its own with
/// connections of its own. Commands go through it (groups are counted), and closing
/// the store closes those connections too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committer_has_its_own_connections_and_they_close_with_the_store_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    // A pool of its own, under another name, counts the service's connections: had
    // it been the test store's pool, a query at a busy moment could open a second
    // connection of that pool and be counted as one left open.
    let options: sqlx::postgres::PgConnectOptions = t.url.parse().unwrap();
    let probe = &sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.application_name("conformance-probe"))
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(probe)
        .await
        .unwrap();
    let count = || {
        let database = database.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND application_name = 'workflowops' AND backend_type = 'client backend'",
            )
            .bind(database)
            .fetch_one(probe)
            .await
            .unwrap()
        }
    };
    let before = count().await;
    let store = Store::connect(&t.url, 1).await.unwrap();
    let bus = workflowops::command::bus::CommandBus::new(store.clone());
    for env in ["a", "b", "c"] {
        bus.execute::<Environment, _>(&admin("acme"), &[&id(env)], register(env), false, &())
            .await
            .unwrap();
    }
    assert_eq!(
        store.group_stats().appends,
        3,
        "every append went through it"
    );
    // the store's own connection and the committer's
    assert!(count().await >= before + 2, "{} vs {before}", count().await);
    store.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count().await > before {
        assert!(
            Instant::now() < deadline,
            "connections left open: {} vs {before}",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.store.event_count().await.unwrap(), 3);
}

/// Decision 70: a connection to this machine's PostgreSQL skips TLS unless a mode
/// is asked for; any mode asked for is kept. The committer's own connections (decision
/// 59) are made with the pool's options, so they follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_connection_skips_tls_unless_a_mode_is_asked_for_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    assert!(
        !t.url.contains("sslmode"),
        "the test store's URL names no mode: {}",
        t.url
    );
    let tls = |store: Store| async move {
        let Store::Postgres(PgStore { pool, .. }) = &store else {
            unreachable!()
        };
        let on: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(pool)
                .await
                .unwrap();
        let server: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(pool)
            .await
            .unwrap();
        store.close().await;
        (on, server == "on")
    };
    let (on, server_offers_tls) = tls(t.store.clone()).await;
    assert!(!on, "no mode asked for, to 127.0.0.1: plain");
    let sep = if t.url.contains('?') { '&' } else { '?' };
    let asked = format!("{}{sep}sslmode=prefer", t.url);
    let (on, _) = tls(Store::connect(&asked, 1).await.unwrap()).await;
    // `prefer` takes TLS when the server offers it (this machine's does: Debian's
    // PostgreSQL ships with a certificate), and is kept as asked
    assert_eq!(on, server_offers_tls, "sslmode=prefer is kept");
    let disabled = format!("{}{sep}sslmode=disable", t.url);
    let (on, _) = tls(Store::connect(&disabled, 1).await.unwrap()).await;
    assert!(!on);
}
