//! Cross-aggregate invariants under concurrent commands, on both backends.

use std::collections::HashSet;
use workflowops::workflows::incident_slot::report_drift;

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::incident::{AffectedWorkflow, DriftIncident, IncidentCommand, ResolutionType};
use aggregates::kernel::command::Role;
use aggregates::kernel::error::DomainError;
use aggregates::mapping::{MappingCommand, MappingStatus, Observation, WorkflowMapping};
use workflowops::command::bus::CommandError;
use workflowops::command::domain::Domain;

use workflowops::reactors::{ReactorOptions, ReactorRuntime};

use crate::conformance::register;
use crate::support::{admin, both_backends, ctx, id, AbortOnDrop, Kind, TestStore, WAIT};

both_backends!(
    one_linked_mapping_per_canonical_and_environment,
    one_active_incident_per_environment,
    incident_slot_recovers_from_interrupted_steps,
    slugs_stay_unique_under_concurrent_creates,
);

fn observe(env: &str, wf: &str) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: id(env),
        n8n_workflow_id: id(wf),
        observation: Observation {
            name: format!("Workflow {wf}"),
            content_hash: ContentHash::parse(&"ab".repeat(32)).unwrap(),
            n8n_updated_at: None,
        },
        auto_link: None,
    }
}

/// A refusal or a conflict, never anything else.
fn refused_or_conflict(e: &CommandError) -> bool {
    matches!(e, CommandError::Conflict { .. })
        || matches!(e.refusal(), Some(DomainError::Validation { field, .. }) if field == "canonical_id")
        || e.code().as_str() == "CONFLICT"
}

async fn one_linked_mapping_per_canonical_and_environment(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let dev = ctx("acme", Role::Developer);
    domain
        .canonical(
            &admin("acme"),
            &id("orders"),
            aggregates::canonical::CanonicalCommand::Create {
                canonical_id: id("orders"),
                name: "Orders".into(),
                slug: None,
                git_path: None,
            },
        )
        .await
        .unwrap();
    let workflows: Vec<String> = (0..8).map(|i| format!("wf{i}")).collect();
    for wf in &workflows {
        domain
            .mapping(&dev, &id("prod"), &id(wf), observe("prod", wf))
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for wf in workflows.clone() {
        let domain = domain.clone();
        let dev = dev.clone();
        tasks.push(tokio::spawn(async move {
            let link = MappingCommand::Link {
                canonical_id: id("orders"),
            };
            (
                wf.clone(),
                domain.mapping(&dev, &id("prod"), &id(&wf), link).await,
            )
        }));
    }
    let mut winners = vec![];
    for task in tasks {
        let (wf, result) = task.await.unwrap();
        match result {
            Ok(_) => winners.push(wf),
            Err(e) => assert!(refused_or_conflict(&e), "{wf}: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one link wins: {winners:?}");
    let linked = linked_mappings(&t, &domain, &workflows).await;
    assert_eq!(linked, winners);

    // unlinking frees the slot for another workflow
    let unlink = MappingCommand::Unlink {
        reason: Some("wrong workflow".into()),
    };
    domain
        .mapping(&dev, &id("prod"), &id(&winners[0]), unlink)
        .await
        .unwrap();
    let other = workflows.iter().find(|w| **w != winners[0]).unwrap();
    domain
        .mapping(
            &dev,
            &id("prod"),
            &id(other),
            MappingCommand::Link {
                canonical_id: id("orders"),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        linked_mappings(&t, &domain, &workflows).await,
        vec![other.clone()]
    );
    // leaving `linked` any other way (ignored, missing, deleted) frees the slot too
    let fresh: Vec<&String> = workflows
        .iter()
        .filter(|w| **w != winners[0] && **w != *other)
        .take(3)
        .collect();
    let exits = [
        MappingCommand::Ignore {
            reason: Some("noise".into()),
        },
        MappingCommand::ObserveMissing,
        MappingCommand::Delete { reason: None },
    ];
    let mut holder = other.clone();
    for (exit, next) in exits.into_iter().zip(fresh) {
        domain
            .mapping(&dev, &id("prod"), &id(&holder), exit)
            .await
            .unwrap();
        let relink = MappingCommand::Link {
            canonical_id: id("orders"),
        };
        domain
            .mapping(&dev, &id("prod"), &id(next), relink)
            .await
            .unwrap();
        assert_eq!(
            linked_mappings(&t, &domain, &workflows).await,
            vec![next.clone()]
        );
        holder = next.clone();
    }
    // another environment has its own slot
    domain
        .mapping(&dev, &id("staging"), &id("wf0"), observe("staging", "wf0"))
        .await
        .unwrap();
    domain
        .mapping(
            &dev,
            &id("staging"),
            &id("wf0"),
            MappingCommand::Link {
                canonical_id: id("orders"),
            },
        )
        .await
        .unwrap();
}

async fn linked_mappings(_t: &TestStore, domain: &Domain, workflows: &[String]) -> Vec<String> {
    let mut linked = vec![];
    for wf in workflows {
        let mapping = domain
            .bus()
            .load::<WorkflowMapping>(&format!("acme:prod:{wf}"))
            .await
            .unwrap()
            .into_state();
        if mapping.status == MappingStatus::Linked {
            linked.push(wf.clone());
        }
    }
    linked
}

fn affected(n: usize) -> Vec<AffectedWorkflow> {
    (0..n)
        .map(|i| AffectedWorkflow {
            workflow_id: format!("c{i}"),
            name: format!("W{i}"),
        })
        .collect()
}

async fn detected_count(t: &TestStore) -> i64 {
    crate::support::count_of_type(&t.store, "incident.detected").await
}

async fn one_active_incident_per_environment(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let mut tasks = vec![];
    for n in 1..=8 {
        let domain = domain.clone();
        tasks.push(tokio::spawn(async move {
            report_drift(
                &domain,
                &ctx("acme", Role::System),
                &id("prod"),
                affected(n),
                None,
                Default::default(),
            )
            .await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((incident_id, _)) => {
                ids.insert(incident_id.to_string());
            }
            Err(e) => assert_eq!(e.code().as_str(), "CONFLICT", "{e:?}"),
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "every report lands on the same incident: {ids:?}"
    );
    assert_eq!(detected_count(&t).await, 1);
    let incident_id = id(ids.iter().next().unwrap());
    let env = domain
        .bus()
        .load::<Environment>("acme:prod")
        .await
        .unwrap()
        .into_state();
    assert_eq!(env.active_incident.as_deref(), Some(incident_id.as_str()));

    // closing frees the slot; the next drift opens a new incident
    let close = IncidentCommand::Close {
        reason: Some("reverted".into()),
        resolution_type: Some(ResolutionType::Revert),
    };
    let closed = domain
        .incident(&admin("acme"), &incident_id, close, false)
        .await
        .unwrap();
    // the incident-slot reactor releases the slot once it has seen the close
    domain
        .reactors()
        .wait_for(closed.position.unwrap(), WAIT)
        .await
        .unwrap();
    let env = domain
        .bus()
        .load::<Environment>("acme:prod")
        .await
        .unwrap()
        .into_state();
    assert_eq!(env.active_incident, None);
    let (next, _) = report_drift(
        &domain,
        &ctx("acme", Role::System),
        &id("prod"),
        affected(1),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_ne!(next, incident_id);
    assert_eq!(detected_count(&t).await, 2);
}

async fn incident_slot_recovers_from_interrupted_steps(kind: Kind) {
    let t = TestStore::new(kind).await;
    // The service's steps are driven by hand here: reactors run only where the test
    // starts them, so it can stop them between two steps, as a crash would.
    let domain = t.domain_without_reactors();
    let start_reactors = |domain: &Domain| {
        ReactorRuntime::standard(domain, ReactorOptions::default())
            .spawn()
            .1
    };
    let system = ctx("acme", Role::System);
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    // crash after reserving, before opening, in a version before reactors (the
    // reservation carries no opening): the next report opens the reserved incident
    let reserve = EnvironmentCommand::ReserveIncidentSlot {
        incident_id: id("reserved-1"),
        opening: None,
    };
    domain
        .environment(&system, &id("prod"), reserve)
        .await
        .unwrap();
    let reactors = start_reactors(&domain);
    let (opened, committed) = report_drift(
        &domain,
        &system,
        &id("prod"),
        affected(2),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(opened.as_str(), "reserved-1");
    assert!(committed.state.opened);

    // crash after closing, before releasing: the slot still holds the closed
    // incident; once the reactors run again, the next report opens a new one
    reactors.abort();
    let _ = reactors.await;
    let close = IncidentCommand::Close {
        reason: Some("fixed".into()),
        resolution_type: Some(ResolutionType::Replace),
    };
    domain
        .bus()
        .execute::<DriftIncident, _>(&admin("acme"), &[&opened], close, false, &())
        .await
        .unwrap();
    let env = domain
        .bus()
        .load::<Environment>("acme:prod")
        .await
        .unwrap()
        .into_state();
    assert_eq!(env.active_incident.as_deref(), Some(opened.as_str()));
    let _reactors = AbortOnDrop(start_reactors(&domain));
    let (fresh, _) = report_drift(
        &domain,
        &system,
        &id("prod"),
        affected(1),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_ne!(fresh, opened);
    let env = domain
        .bus()
        .load::<Environment>("acme:prod")
        .await
        .unwrap()
        .into_state();
    assert_eq!(env.active_incident.as_deref(), Some(fresh.as_str()));

    // an unknown environment is NOT_FOUND and appends nothing
    let err = report_drift(
        &domain,
        &system,
        &id("nowhere"),
        affected(1),
        None,
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code().as_str(), "NOT_FOUND");
}

async fn slugs_stay_unique_under_concurrent_creates(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let mut tasks = vec![];
    for i in 0..6 {
        let domain = domain.clone();
        tasks.push(tokio::spawn(async move {
            let create = CanonicalCommand::Create {
                canonical_id: id(&format!("c{i}")),
                name: "Order Sync".into(),
                slug: None,
                git_path: None,
            };
            domain
                .canonical(&ctx("acme", Role::Developer), &id(&format!("c{i}")), create)
                .await
        }));
    }
    let mut slugs = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(committed) => assert!(slugs.insert(committed.state.slug.unwrap().to_string())),
            Err(e) => assert_eq!(e.code().as_str(), "CONFLICT", "{e:?}"),
        }
    }
    assert!(slugs.contains("order-sync"), "{slugs:?}");
    assert!(slugs.len() >= 2);
    // the same slug in another tenant is free
    let create = CanonicalCommand::Create {
        canonical_id: id("c0"),
        name: "Order Sync".into(),
        slug: None,
        git_path: None,
    };
    let other = domain
        .canonical(&ctx("globex", Role::Developer), &id("c0"), create)
        .await
        .unwrap();
    assert_eq!(other.state.slug.unwrap().as_str(), "order-sync");
}
