//! Pipelines and drift policies through the bus, on both backends: their read models
//! and queries (pages, tenant isolation, the effective-policy fallback), the audit
//! trail and history of the new aggregates, and rebuild = live for their tables.

use projections::sql::QueryRows as _;
use std::time::Duration;

use aggregates::incident::SeverityTtls;
use aggregates::kernel::command::Role;
use aggregates::kernel::error::DomainError;
use aggregates::pipeline::{Pipeline, PipelineCommand, PipelineStage, StageGates};
use aggregates::policy::{DriftPolicy, DriftPolicyCommand, DriftPolicySettings, PolicyScope};
use eventstore::Store;
use projections::models::pipelines::{pipeline, pipelines, PipelineRow};
use projections::models::policies::{drift_policies, drift_policy, DriftPolicyRow, PolicySource};
use projections::query::QueryError;
use projections::sql::{select, Dialect, Row};
use projections::{Projector, ProjectorHandle, ProjectorOptions};
use workflowops::command::bus::{CommandBus, CommandContext, CommandError};

use crate::support::{admin, both_backends, ctx, id, Kind, TestStore};

both_backends!(pipelines_read_model, drift_policy_read_model);

const WAIT: Duration = Duration::from_secs(30);

fn stage(source: &str, target: &str, require_approval: bool) -> PipelineStage {
    PipelineStage::new(
        source,
        target,
        StageGates {
            require_approval,
            ..StageGates::default()
        },
    )
}

fn create(name: &str, stages: Vec<PipelineStage>) -> PipelineCommand {
    PipelineCommand::Create {
        name: name.into(),
        description: None,
        stages,
    }
}

async fn pipeline_command(
    bus: &CommandBus,
    ctx: &CommandContext,
    pipeline_id: &str,
    command: PipelineCommand,
) -> Result<Option<i64>, CommandError> {
    bus.execute::<Pipeline, _>(ctx, &[&id(pipeline_id)], command, false, &())
        .await
        .map(|c| c.position)
}

async fn set_policy(
    bus: &CommandBus,
    ctx: &CommandContext,
    scope: &PolicyScope,
    policy: DriftPolicySettings,
) -> Result<Option<i64>, CommandError> {
    let command = DriftPolicyCommand::Set {
        policy,
        reason: Some("test".into()),
    };
    bus.execute::<DriftPolicy, _>(ctx, &[&scope.local_id()], command, false, &())
        .await
        .map(|c| c.position)
}

async fn wait(handle: &ProjectorHandle, name: &str, position: Option<i64>) {
    handle
        .wait_for(name, position.expect("an event was appended"), WAIT)
        .await
        .unwrap();
}

async fn rows_of<R: Row + serde::Serialize>(store: &Store) -> Vec<String> {
    let mut sql = select::<R>(Dialect::of(store));
    sql.push(" ORDER BY 1");
    let rows: Vec<R> = sql.fetch(store).await.expect("read table");
    rows.iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

async fn config_tables(store: &Store) -> (Vec<String>, Vec<String>) {
    (
        rows_of::<PipelineRow>(store).await,
        rows_of::<DriftPolicyRow>(store).await,
    )
}

/// Stops the live projector, rebuilds the config read models from the log, and
/// checks they come out row for row as the live ones.
async fn assert_rebuild_equals_live(t: &TestStore, task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
    let live = config_tables(&t.store).await;
    let report = workflowops::read_side::rebuild(
        &t.store,
        &[
            projections::models::pipelines::NAME.to_string(),
            projections::models::policies::NAME.to_string(),
        ],
    )
    .await
    .unwrap();
    assert!(report.events > 0, "{report:?}");
    assert_eq!(
        config_tables(&t.store).await,
        live,
        "rebuild differs from live"
    );
}

fn refusal(result: Result<Option<i64>, CommandError>) -> DomainError {
    match result {
        Err(CommandError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn pipelines_read_model(kind: Kind) {
    let t = TestStore::new(kind).await;
    let bus = t.bus();
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let acme = admin("acme");
    for (pipeline_id, name) in [("p1", "beta"), ("p2", "Alpha"), ("p3", "gamma")] {
        pipeline_command(
            &bus,
            &acme,
            pipeline_id,
            create(name, vec![stage("dev", "staging", false)]),
        )
        .await
        .unwrap();
    }
    // another tenant, same pipeline id: a different stream
    let globex_position = pipeline_command(
        &bus,
        &admin("globex"),
        "p1",
        create("Globex main", vec![stage("qa", "live", true)]),
    )
    .await
    .unwrap();

    // refusals append nothing and say why
    assert!(matches!(
        refusal(
            pipeline_command(
                &bus,
                &ctx("acme", Role::Developer),
                "p9",
                create("x", vec![stage("a", "b", false)]),
            )
            .await
        ),
        DomainError::Forbidden(_)
    ));
    assert_eq!(
        refusal(
            pipeline_command(
                &bus,
                &acme,
                "p1",
                create("again", vec![stage("a", "b", false)])
            )
            .await
        ),
        DomainError::validation("pipeline_id", "already exists")
    );
    assert_eq!(
        refusal(
            pipeline_command(
                &bus,
                &acme,
                "nope",
                PipelineCommand::Update {
                    name: Some("x".into()),
                    description: None,
                    stages: None,
                },
            )
            .await
        ),
        DomainError::NotFound {
            kind: "pipeline",
            id: "nope".into()
        }
    );
    assert!(matches!(
        refusal(
            pipeline_command(
                &bus,
                &acme,
                "p9",
                create("x", vec![stage("dev", "dev", false)])
            )
            .await
        ),
        DomainError::Validation { field, .. } if field == "stages[0].target_environment_id"
    ));

    // edit p1: new name, description, and a second stage; then deactivate p3
    let stages = vec![
        stage("dev", "staging", false),
        stage("staging", "prod", true),
    ];
    pipeline_command(
        &bus,
        &acme,
        "p1",
        PipelineCommand::Update {
            name: Some("Beta main".into()),
            description: Some("dev to prod".into()),
            stages: Some(stages.clone()),
        },
    )
    .await
    .unwrap();
    let same = pipeline_command(
        &bus,
        &acme,
        "p1",
        PipelineCommand::Update {
            name: Some("Beta main".into()),
            description: None,
            stages: Some(stages.clone()),
        },
    )
    .await
    .unwrap();
    assert_eq!(same, None, "an update that changes nothing appends nothing");
    let last = pipeline_command(
        &bus,
        &acme,
        "p3",
        PipelineCommand::Deactivate {
            reason: Some("unused".into()),
        },
    )
    .await
    .unwrap();
    wait(&handle, projections::models::pipelines::NAME, last).await;
    wait(
        &handle,
        projections::models::pipelines::NAME,
        globex_position,
    )
    .await;

    // name order, case-insensitive, two per page
    let first = pipelines(&t.store, "acme", 2, None).await.unwrap();
    let names: Vec<&str> = first.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Alpha", "Beta main"]);
    assert!(first.has_next_page);
    let rest = pipelines(&t.store, "acme", 2, first.end_cursor.as_deref())
        .await
        .unwrap();
    let names: Vec<&str> = rest.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["gamma"]);
    assert!(!rest.has_next_page);
    assert!(!rest.items[0].active, "p3 was deactivated");

    let p1 = pipeline(&t.store, "acme", "p1").await.unwrap().unwrap();
    assert_eq!(p1.pipeline_id, "p1");
    assert_eq!(p1.tenant, "acme");
    assert_eq!(p1.description.as_deref(), Some("dev to prod"));
    assert_eq!(p1.created_by, "alice");
    assert!(p1.active);
    assert_eq!(p1.stages.0, stages);
    assert!(p1.updated_at > p1.created_at);

    // tenant isolation: globex sees only its own p1, acme's ids find nothing
    let theirs = pipelines(&t.store, "globex", 50, None).await.unwrap();
    assert_eq!(theirs.items.len(), 1);
    assert_eq!(theirs.items[0].name, "Globex main");
    assert!(theirs.items[0].stages[0].gates.require_approval);
    assert!(pipeline(&t.store, "globex", "p2").await.unwrap().is_none());
    assert!(pipelines(&t.store, "initech", 50, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(matches!(
        pipelines(&t.store, "acme", 0, None).await,
        Err(QueryError::Validation { .. })
    ));
    assert!(matches!(
        pipelines(&t.store, "acme", 10, Some("zz")).await,
        Err(QueryError::Validation { .. })
    ));

    // the audit trail shows the lifecycle move; history replays the aggregate
    let deactivations: Vec<String> = rows_of::<projections::models::audit::AuditEntry>(&t.store)
        .await
        .into_iter()
        .filter(|r| r.contains("\"event_type\":\"pipeline.deactivated\""))
        .collect();
    assert_eq!(deactivations.len(), 1);
    assert!(deactivations[0].contains("\"to_status\":\"deactivated\""));
    assert!(deactivations[0].contains("\"reason\":\"unused\""));
    let state = projections::history::state_at(
        &t.store,
        "acme",
        "pipeline",
        "p1",
        projections::history::AsOf::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.state["name"], "Beta main");
    assert_eq!(state.sequence, Some(2));

    assert_rebuild_equals_live(&t, task).await;
}

async fn drift_policy_read_model(kind: Kind) {
    let t = TestStore::new(kind).await;
    let bus = t.bus();
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let acme = admin("acme");
    let tenant = PolicyScope::Tenant;
    let prod = PolicyScope::environment("prod").unwrap();

    // nothing recorded: the built-in defaults
    let effective = drift_policy(&t.store, "acme", Some("prod")).await.unwrap();
    assert_eq!(effective.source, PolicySource::Default);
    assert_eq!(effective.policy, DriftPolicySettings::default());
    assert_eq!(effective.scope, None);

    let tenant_policy = DriftPolicySettings {
        enforce_ttl: true,
        closed_incident_retention_days: 30,
        ..DriftPolicySettings::default()
    };
    let prod_policy = DriftPolicySettings {
        severity_ttls: SeverityTtls {
            critical_hours: 4,
            high_hours: 12,
            medium_hours: 24,
            low_hours: 48,
        },
        raise_production_severity: true,
        block_on_active_drift: true,
        ..tenant_policy
    };
    assert!(matches!(
        refusal(set_policy(&bus, &ctx("acme", Role::Developer), &tenant, tenant_policy).await),
        DomainError::Forbidden(_)
    ));
    assert!(matches!(
        refusal(
            set_policy(
                &bus,
                &acme,
                &tenant,
                DriftPolicySettings {
                    closed_incident_retention_days: 0,
                    ..tenant_policy
                }
            )
            .await
        ),
        DomainError::Validation { field, .. } if field == "closed_incident_retention_days"
    ));
    set_policy(&bus, &acme, &tenant, tenant_policy)
        .await
        .unwrap();
    let again = set_policy(&bus, &acme, &tenant, tenant_policy)
        .await
        .unwrap();
    assert_eq!(again, None, "the same policy again appends nothing");
    let staging = PolicyScope::environment("staging").unwrap();
    set_policy(&bus, &acme, &staging, DriftPolicySettings::default())
        .await
        .unwrap();
    let last = set_policy(&bus, &acme, &prod, prod_policy).await.unwrap();
    // another tenant's override of an environment with the same id
    let globex = set_policy(
        &bus,
        &admin("globex"),
        &prod,
        DriftPolicySettings {
            auto_create_incidents: false,
            ..DriftPolicySettings::default()
        },
    )
    .await
    .unwrap();
    wait(&handle, projections::models::policies::NAME, last).await;
    wait(&handle, projections::models::policies::NAME, globex).await;

    let for_prod = drift_policy(&t.store, "acme", Some("prod")).await.unwrap();
    assert_eq!(for_prod.source, PolicySource::Environment);
    assert_eq!(for_prod.scope.as_deref(), Some("prod"));
    assert_eq!(for_prod.policy, prod_policy);
    assert_eq!(for_prod.updated_by.as_deref(), Some("alice"));
    let captured = for_prod.incident_policy();
    assert_eq!(captured.severity_ttls.critical_hours, 4);
    assert!(captured.raise_production_severity);
    // an override equal to the defaults is still the environment's own
    let for_staging = drift_policy(&t.store, "acme", Some("staging"))
        .await
        .unwrap();
    assert_eq!(for_staging.source, PolicySource::Environment);
    assert_eq!(for_staging.policy, DriftPolicySettings::default());
    // no override: the tenant default
    for environment in [Some("dev"), None] {
        let effective = drift_policy(&t.store, "acme", environment).await.unwrap();
        assert_eq!(effective.source, PolicySource::Tenant, "{environment:?}");
        assert_eq!(effective.scope.as_deref(), Some("tenant"));
        assert_eq!(effective.policy, tenant_policy);
    }
    // tenant isolation: globex has only its prod override, no tenant default
    let theirs = drift_policy(&t.store, "globex", Some("prod"))
        .await
        .unwrap();
    assert_eq!(theirs.source, PolicySource::Environment);
    assert!(!theirs.policy.auto_create_incidents);
    let theirs = drift_policy(&t.store, "globex", Some("dev")).await.unwrap();
    assert_eq!(theirs.source, PolicySource::Default);
    assert_eq!(theirs.policy, DriftPolicySettings::default());
    assert!(drift_policies(&t.store, "initech")
        .await
        .unwrap()
        .is_empty());
    let scopes: Vec<String> = drift_policies(&t.store, "acme")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.scope)
        .collect();
    assert_eq!(scopes, ["tenant", "prod", "staging"]);
    for bad in ["tenant", "a:b", ""] {
        assert!(
            matches!(
                drift_policy(&t.store, "acme", Some(bad)).await,
                Err(QueryError::Validation { ref field, .. }) if field == "environmentId"
            ),
            "{bad:?}"
        );
    }

    // clearing the override falls back to the tenant default; clearing that, to
    // the built-in defaults
    let clear = |scope: &PolicyScope| {
        let scope = scope.local_id();
        let bus = bus.clone();
        let acme = acme.clone();
        async move {
            bus.execute::<DriftPolicy, _>(
                &acme,
                &[&scope],
                DriftPolicyCommand::Clear { reason: None },
                false,
                &(),
            )
            .await
            .unwrap()
            .position
        }
    };
    let cleared = clear(&prod).await;
    wait(&handle, projections::models::policies::NAME, cleared).await;
    let for_prod = drift_policy(&t.store, "acme", Some("prod")).await.unwrap();
    assert_eq!(for_prod.source, PolicySource::Tenant);
    assert_eq!(for_prod.policy, tenant_policy);
    let cleared = clear(&tenant).await;
    wait(&handle, projections::models::policies::NAME, cleared).await;
    assert_eq!(clear(&tenant).await, None, "nothing left to clear");
    let for_prod = drift_policy(&t.store, "acme", Some("prod")).await.unwrap();
    assert_eq!(for_prod.source, PolicySource::Default);
    // set again after a clear: recorded again
    let reset = set_policy(&bus, &acme, &prod, prod_policy).await.unwrap();
    wait(&handle, projections::models::policies::NAME, reset).await;
    assert_eq!(
        drift_policy(&t.store, "acme", Some("prod"))
            .await
            .unwrap()
            .source,
        PolicySource::Environment
    );

    let state = projections::history::state_at(
        &t.store,
        "acme",
        "drift_policy",
        "tenant",
        projections::history::AsOf::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.state["set"], false);
    assert_eq!(state.sequence, Some(2));

    assert_rebuild_equals_live(&t, task).await;
}
