//! Projections on both backends: what the read models show, rebuild = live, crash
//! safety, a poisoned event, read-your-writes, history, and (PostgreSQL) two
//! projector processes on one database.

use projections::sql::QueryRows as _;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use workflowops::workflows::incident_slot::report_drift;

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::environment::{DriftCheckOutcome, DriftCounts, EnvironmentCommand, SyncKind};
use aggregates::incident::{IncidentCommand, IncidentPolicy};
use aggregates::kernel::command::Role;
use aggregates::mapping::{MappingCommand, Observation};
use eventstore::{PgStore, Store};
use futures::future::BoxFuture;
use projections::models::matrix::{matrix_page, MatrixFilter};
use projections::query::QueryError;
use projections::runtime::{ApplyError, Step, WaitError};
use projections::sql::{select, Dialect, Row, Tx};
use projections::{Projection, Projector, ProjectorOptions};
use proptest::strategy::{Strategy, ValueTree};

use crate::conformance::register;
use crate::support::{admin, ctx, id, Kind, TestStore};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn rows_of<R: Row + serde::Serialize>(store: &Store) -> Vec<String> {
    let mut sql = select::<R>(Dialect::of(store));
    sql.push(" ORDER BY 1");
    let rows: Vec<R> = sql.fetch(store).await.expect("read table");
    rows.iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

/// Every read-model table, row by row.
pub(crate) async fn dump(store: &Store) -> BTreeMap<&'static str, Vec<String>> {
    use projections::models::*;
    BTreeMap::from([
        ("matrix_rows", rows_of::<matrix::MatrixRow>(store).await),
        ("matrix_cells", rows_of::<matrix::MatrixCell>(store).await),
        (
            "environments",
            rows_of::<environments::EnvironmentRow>(store).await,
        ),
        (
            "environment_incidents",
            rows_of::<environments::IncidentEnvironment>(store).await,
        ),
        ("incidents", rows_of::<incidents::IncidentRow>(store).await),
        (
            "promotions",
            rows_of::<promotions::PromotionRow>(store).await,
        ),
        (
            "deployments",
            rows_of::<deployments::DeploymentRow>(store).await,
        ),
        ("audit", rows_of::<audit::AuditEntry>(store).await),
    ])
}

/// Empties every read model and forgets every checkpoint (the service must be
/// stopped): a projector then replays from position 0, as into a rebuild's shadow.
pub(crate) async fn empty_read_models(store: &Store) {
    let mut statements: Vec<String> = projections::all()
        .iter()
        .flat_map(|p| p.tables().iter().map(|t| format!("DELETE FROM {t}")))
        .collect();
    statements.push("DELETE FROM projection_checkpoints".into());
    for sql in statements {
        crate::digest::exec(store, &sql).await;
    }
}

/// The whole log once gap-safe reads reach the committed head, and that head: on
/// PostgreSQL the highest position need not be the last event read (positions are
/// allocated before commit), and an append still in flight (a reactor's, after a
/// workload) holds gap-safe reads back until it commits.
pub(crate) async fn settled_log(
    store: &Store,
) -> (Vec<eventstore::StoredEvent>, eventstore::LogCursor) {
    for _ in 0..100 {
        let all = store
            .read_after(eventstore::LogCursor::START, 1_000_000)
            .await
            .unwrap();
        let head = store.committed_head().await.unwrap();
        if all.last().map(|e| e.cursor()) == Some(head) {
            return (all, head);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the log did not settle within 2 s");
}

pub(crate) async fn head(store: &Store) -> i64 {
    scalar(store, "SELECT COALESCE(MAX(position), 0) FROM events").await
}

pub(crate) async fn event_count(store: &Store) -> usize {
    scalar(store, "SELECT COUNT(*) FROM events").await as usize
}

/// The one integer `sql` selects.
async fn scalar(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Store::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.pool).await,
    }
    .unwrap()
}

fn hash(n: u32) -> ContentHash {
    ContentHash::parse(&format!("{n:064x}")).unwrap()
}

fn observe(n8n_id: &str, name: &str, n: u32, auto_link: Option<&str>) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: id("prod"),
        n8n_workflow_id: id(n8n_id),
        observation: Observation {
            name: name.into(),
            content_hash: hash(n),
            n8n_updated_at: None,
        },
        auto_link: auto_link.map(id),
    }
}

/// A randomized workload over every aggregate, for several tenants, interleaved.
/// Deterministic (proptest's deterministic runner), so a failure reproduces.
pub(crate) async fn workload(t: &TestStore, ops_per_tenant: usize) {
    let domain = t.domain();
    let tenants = ["acme", "globex", "initech"];
    let mut incidents: Vec<Vec<aggregates::kernel::ids::LocalId>> = vec![vec![]; tenants.len()];
    for tenant in tenants {
        domain
            .environment(&admin(tenant), &id("prod"), register("Production"))
            .await
            .unwrap();
        for c in 0..3 {
            domain
                .canonical(
                    &ctx(tenant, Role::Developer),
                    &id(&format!("c{c}")),
                    CanonicalCommand::Create {
                        canonical_id: id(&format!("c{c}")),
                        name: format!("Workflow {c}"),
                        slug: None,
                        git_path: None,
                    },
                )
                .await
                .unwrap();
        }
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = crate::props::op();
    for i in 0..ops_per_tenant {
        for (k, tenant) in tenants.iter().enumerate() {
            let op = strategy.new_tree(&mut runner).unwrap().current();
            crate::props::apply_op(&domain, tenant, op, &mut incidents[k]).await;
            if i % 25 == 0 {
                let outcome = if i % 100 == 50 {
                    DriftCheckOutcome::Failed {
                        cause: "n8n timed out".into(),
                    }
                } else {
                    DriftCheckOutcome::Checked {
                        counts: DriftCounts {
                            in_sync: i as u32 % 7,
                            with_drift: i as u32 % 3,
                            not_in_git: 0,
                        },
                    }
                };
                let dev = ctx(tenant, Role::Developer);
                let _ = domain
                    .environment(
                        &dev,
                        &id("prod"),
                        EnvironmentCommand::RecordDriftCheck { outcome },
                    )
                    .await;
                let _ = domain
                    .environment(
                        &dev,
                        &id("prod"),
                        EnvironmentCommand::RecordSync {
                            kind: SyncKind::Environment,
                            workflows_seen: 3,
                        },
                    )
                    .await;
            }
        }
    }
    // The reactors finish what the workload started (opening reserved incidents,
    // releasing slots) before anyone measures the log.
    let head = t.store.last_position().await.unwrap();
    domain
        .reactors()
        .wait_for(head, crate::support::WAIT)
        .await
        .unwrap();
}

fn assert_not_vacuous(tables: &BTreeMap<&'static str, Vec<String>>, events: usize) {
    for table in [
        "matrix_rows",
        "matrix_cells",
        "environments",
        "incidents",
        "promotions",
        "deployments",
    ] {
        assert!(!tables[table].is_empty(), "workload left {table} empty");
    }
    assert_eq!(tables["audit"].len(), events, "one audit row per event");
}

async fn wait_all(handle: &projections::ProjectorHandle, position: i64) {
    for name in projections::NAMES {
        handle.wait_for(name, position, WAIT).await.unwrap();
    }
}

/// The projector of every read model, running.
fn running_projector(t: &TestStore) -> (projections::ProjectorHandle, tokio::task::JoinHandle<()>) {
    Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn()
}

/// Waits until every read model has applied the log as it is now, then stops the
/// projector and waits until it has stopped: no batch commits after this returns.
async fn caught_up_and_stopped(
    t: &TestStore,
    handle: &projections::ProjectorHandle,
    task: tokio::task::JoinHandle<()>,
) {
    wait_all(handle, head(&t.store).await).await;
    task.abort();
    let _ = task.await;
}

async fn rebuild_equals_live(kind: Kind) {
    let t = TestStore::new(kind).await;
    // Live: the projector runs while the commands are issued.
    let (handle, task) = running_projector(&t);
    workload(&t, 700).await;
    caught_up_and_stopped(&t, &handle, task).await;
    let live = dump(&t.store).await;
    assert_not_vacuous(&live, event_count(&t.store).await);

    let report = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .unwrap();
    assert_eq!(report.events as usize, event_count(&t.store).await);
    let rebuilt = dump(&t.store).await;
    for (table, rows) in &live {
        assert_eq!(rows, &rebuilt[table], "{table}: rebuild differs from live");
    }
}

/// Wraps a projection and makes its flush fail (after writing its rows) on chosen
/// flushes: a failure in the middle of a batch, with half the batch written.
struct Flaky {
    inner: Box<dyn Projection>,
    flushes: Arc<AtomicUsize>,
    fail_on: &'static [usize],
}

impl Projection for Flaky {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        event: &'a projections::event::Envelope,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        self.inner.apply(tx, event)
    }
    fn flush<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            self.inner.flush(tx).await?;
            let n = self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail_on.contains(&n) {
                return Err(sqlx::Error::Protocol(format!(
                    "injected failure in flush {n}"
                )));
            }
            Ok(())
        })
    }
    fn committed(&mut self) {
        self.inner.committed()
    }
    fn rolled_back(&mut self) {
        self.inner.rolled_back()
    }
    fn reset(&mut self, empty: bool) {
        self.inner.reset(empty)
    }
    fn defer_writes(&mut self, defer: bool) {
        self.inner.defer_writes(defer)
    }
}

/// Wraps the projection `name` of `list` in [`Flaky`], failing on flushes `fail_on`
/// (counted in `flushes`).
fn make_flaky(
    list: &mut [Box<dyn Projection>],
    name: &str,
    flushes: &Arc<AtomicUsize>,
    fail_on: &'static [usize],
) {
    for p in list.iter_mut().filter(|p| p.name() == name) {
        let inner = std::mem::replace(
            p,
            Box::new(projections::models::audit::AuditTrail::default()),
        );
        *p = Box::new(Flaky {
            inner,
            flushes: flushes.clone(),
            fail_on,
        });
    }
}

async fn failure_mid_batch_loses_nothing(kind: Kind) {
    let t = TestStore::new(kind).await;
    workload(&t, 150).await;
    // (a reactor's last append may still be in flight: the count below needs all)
    settled_log(&t.store).await;
    let flushes = Arc::new(AtomicUsize::new(0));
    let audit_flushes = Arc::new(AtomicUsize::new(0));
    let mut list = projections::all();
    // The matrix writes its rows, then fails; so does the audit trail (plain INSERTs:
    // a batch applied twice would hit its primary key).
    make_flaky(
        &mut list,
        projections::models::matrix::NAME,
        &flushes,
        &[2, 5],
    );
    make_flaky(
        &mut list,
        projections::models::audit::NAME,
        &audit_flushes,
        &[4],
    );
    let options = ProjectorOptions {
        batch_size: 25,
        ..ProjectorOptions::default()
    };
    let mut projector = Projector::new(t.store.clone(), list, options.clone());
    let mut failures = 0;
    loop {
        match projector.step().await {
            Ok(Step::Idle) => break,
            Ok(Step::Applied(_)) => {}
            Err(_) => failures += 1,
        }
        if failures == 2 {
            // A "restart": a new runner resumes from the stored checkpoints.
            let mut list = projections::all();
            make_flaky(
                &mut list,
                projections::models::audit::NAME,
                &audit_flushes,
                &[4],
            );
            drop(projector);
            projector = Projector::new(t.store.clone(), list, options.clone());
            failures += 1;
        }
    }
    assert!(failures >= 3, "the injected failures happened ({failures})");
    // The runner's locks go with it (a rebuild elsewhere would only reset).
    drop(projector);
    let after_failures = dump(&t.store).await;
    assert_not_vacuous(&after_failures, event_count(&t.store).await);
    workflowops::read_side::rebuild(&t.store, &[])
        .await
        .unwrap();
    assert_eq!(
        after_failures,
        dump(&t.store).await,
        "nothing lost, nothing applied twice"
    );
}

async fn unappliable_event_stops_one_projection(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    // An event no mapping can be: written behind the service's back.
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                  VALUES ('workflow_mapping', 'acme:prod:bad', 0, 'mapping.exploded', '1', '{\"type\":\"exploded\"}', \
                  '{\"recorded_at\":\"2026-01-01T00:00:00.000000Z\",\"actor\":\"mallory\"}')";
    match &t.store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query(insert).execute(pool).await.unwrap();
        }
        Store::Sqlite(s) => {
            sqlx::query(insert).execute(&s.pool).await.unwrap();
        }
    }
    let poison = head(&t.store).await;
    let opened = report_drift(
        &domain,
        &ctx("acme", Role::System),
        &id("prod"),
        vec![],
        None,
        IncidentPolicy::default(),
    )
    .await
    .unwrap();
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    // Projections that do not read mappings go past it.
    handle
        .wait_for(
            projections::models::incidents::NAME,
            opened.1.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    let err = handle
        .wait_for(
            projections::models::matrix::NAME,
            opened.1.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap_err();
    let WaitError::Failed { failure, .. } = err else {
        panic!("expected the matrix to report its failure, got {err}");
    };
    assert_eq!(failure.position, poison);
    assert!(failure.event.contains("mapping.exploded"), "{failure:?}");
    let status = handle.status();
    let matrix = status
        .iter()
        .find(|s| s.name == projections::models::matrix::NAME)
        .unwrap();
    assert!(
        matrix.checkpoint.position < poison,
        "did not advance past the event"
    );
    // The failure is recorded for other processes too.
    let stored = projections::runtime::stored_checkpoints(&t.store)
        .await
        .unwrap();
    assert_eq!(
        stored[projections::models::matrix::NAME]
            .2
            .as_ref()
            .map(|f| f.position),
        Some(poison)
    );
    task.abort();
}

async fn matrix_and_environment_status(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let a = admin("acme");
    let dev = ctx("acme", Role::Developer);
    domain
        .environment(&a, &id("prod"), register("Production"))
        .await
        .unwrap();
    domain
        .canonical(
            &dev,
            &id("order-sync"),
            CanonicalCommand::Create {
                canonical_id: id("order-sync"),
                name: "Order Sync".into(),
                slug: None,
                git_path: Some("prod/order-sync.json".into()),
            },
        )
        .await
        .unwrap();
    domain
        .canonical(
            &dev,
            &id("order-sync"),
            CanonicalCommand::RecordGitVersion {
                git_content_hash: hash(1),
                commit_sha: "abc123".into(),
                git_path: "prod/order-sync.json".into(),
            },
        )
        .await
        .unwrap();
    // Linked and in sync, then drifted; one untracked workflow.
    domain
        .mapping(
            &dev,
            &id("prod"),
            &id("n1"),
            observe("n1", "Order Sync", 1, Some("order-sync")),
        )
        .await
        .unwrap();
    domain
        .mapping(
            &dev,
            &id("prod"),
            &id("n2"),
            observe("n2", "Daily Report", 7, None),
        )
        .await
        .unwrap();
    let last = domain
        .mapping(
            &dev,
            &id("prod"),
            &id("n1"),
            observe("n1", "Order Sync", 2, None),
        )
        .await
        .unwrap();
    handle
        .wait_for(
            projections::models::matrix::NAME,
            last.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();

    let page = matrix_page(&t.store, "acme", &MatrixFilter::default(), 10, None)
        .await
        .unwrap();
    let names: Vec<_> = page
        .items
        .iter()
        .map(|r| (r.row.name.as_str(), r.row.kind.as_str()))
        .collect();
    assert_eq!(
        names,
        [("Daily Report", "untracked"), ("Order Sync", "canonical")]
    );
    let order = &page.items[1];
    assert_eq!(order.cells.len(), 1);
    assert_eq!(
        order.cells[0].cell.status,
        aggregates::mapping::MappingStatus::Linked
    );
    assert_eq!(
        order.cells[0].sync_state,
        projections::display::SyncState::Drift
    );
    assert_eq!(
        order.cells[0].effective_git_content_hash.as_deref(),
        Some(hash(1).as_str())
    );

    // Filters: drift only, search, unknown environment, another tenant.
    let drift = MatrixFilter {
        only_drift: true,
        ..Default::default()
    };
    let page = matrix_page(&t.store, "acme", &drift, 10, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let search = MatrixFilter {
        search: Some("REPORT".into()),
        ..Default::default()
    };
    assert_eq!(
        matrix_page(&t.store, "acme", &search, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let nowhere = MatrixFilter {
        environment_ids: Some(vec!["nowhere".into()]),
        ..Default::default()
    };
    assert!(matrix_page(&t.store, "acme", &nowhere, 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(
        matrix_page(&t.store, "globex", &MatrixFilter::default(), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The console's grouped counts per environment are the per-environment counts.
    let untracked = MatrixFilter {
        untracked_only: true,
        ..Default::default()
    };
    for filter in [
        MatrixFilter::default(),
        drift.clone(),
        search.clone(),
        untracked,
    ] {
        let grouped =
            projections::models::matrix::matrix_counts_by_environment(&t.store, "acme", &filter)
                .await
                .unwrap();
        assert!(!grouped.is_empty() || filter.search.is_some(), "{filter:?}");
        for env in ["prod", "dev", "staging", "nowhere"] {
            let one = projections::models::matrix::matrix_count(
                &t.store,
                "acme",
                &MatrixFilter {
                    environment_ids: Some(vec![env.into()]),
                    ..filter.clone()
                },
            )
            .await
            .unwrap();
            let from_grouped = grouped
                .iter()
                .find(|(e, _)| e == env)
                .map_or(0, |(_, n)| *n);
            assert_eq!(from_grouped, one, "{env} {filter:?}: {grouped:?}");
        }
    }

    // Bad input.
    for first in [0, 201] {
        let err = matrix_page(&t.store, "acme", &MatrixFilter::default(), first, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueryError::Validation { ref field, .. } if field == "first"),
            "{err}"
        );
    }
    let err = matrix_page(
        &t.store,
        "acme",
        &MatrixFilter::default(),
        10,
        Some("not-a-cursor"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, QueryError::Validation { ref field, .. } if field == "after"),
        "{err}"
    );

    // Pagination walks every row once.
    let first = matrix_page(&t.store, "acme", &MatrixFilter::default(), 1, None)
        .await
        .unwrap();
    assert!(first.has_next_page);
    let second = matrix_page(
        &t.store,
        "acme",
        &MatrixFilter::default(),
        1,
        first.end_cursor.as_deref(),
    )
    .await
    .unwrap();
    assert!(!second.has_next_page);
    assert_eq!(second.items[0].row.name, "Order Sync");

    // Environment status through the §2.5 order.
    let env = |t: &TestStore| {
        let store = t.store.clone();
        async move {
            projections::models::environments::environment(&store, "acme", "prod")
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(
        env(&t).await.drift_status,
        projections::drift_status::DriftStatus::New
    );
    domain
        .environment(
            &dev,
            &id("prod"),
            EnvironmentCommand::RecordSync {
                kind: SyncKind::Environment,
                workflows_seen: 2,
            },
        )
        .await
        .unwrap();
    let checked = domain
        .environment(
            &dev,
            &id("prod"),
            EnvironmentCommand::RecordDriftCheck {
                outcome: DriftCheckOutcome::Checked {
                    counts: DriftCounts {
                        in_sync: 0,
                        with_drift: 1,
                        not_in_git: 1,
                    },
                },
            },
        )
        .await
        .unwrap();
    handle
        .wait_for(
            projections::models::environments::NAME,
            checked.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    let e = env(&t).await;
    assert_eq!(
        e.drift_status,
        projections::drift_status::DriftStatus::DriftDetected
    );
    assert_eq!((e.linked_mappings, e.with_drift, e.not_in_git), (1, 1, 1));
    let since = e.drift_status_since;

    let (incident_id, opened) = report_drift(
        &domain,
        &ctx("acme", Role::System),
        &id("prod"),
        vec![],
        None,
        IncidentPolicy::default(),
    )
    .await
    .unwrap();
    handle
        .wait_for(
            projections::models::environments::NAME,
            opened.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    let e = env(&t).await;
    assert_eq!(
        e.drift_status,
        projections::drift_status::DriftStatus::DriftIncidentActive
    );
    assert_eq!(e.active_incident_id.as_deref(), Some(incident_id.as_str()));
    assert!(
        e.drift_status_since > since,
        "time-in-state restarts on a change"
    );

    let acked = domain
        .incident(
            &dev,
            &incident_id,
            IncidentCommand::Acknowledge {
                reason: Some("looking".into()),
                owner_user_id: Some("ann".into()),
                ticket_ref: None,
                expires_at: None,
            },
            false,
        )
        .await
        .unwrap();
    handle
        .wait_for(
            projections::models::audit::NAME,
            acked.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    handle
        .wait_for(
            projections::models::environments::NAME,
            acked.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        env(&t).await.drift_status,
        projections::drift_status::DriftStatus::DriftIncidentAcknowledged
    );
    let incident = projections::models::incidents::incident(&t.store, "acme", incident_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (incident.status.as_str(), incident.owner_user_id.as_deref()),
        ("acknowledged", Some("ann"))
    );

    // The audit trail of the incident, in log order, with from/to and reason.
    let filter = projections::models::audit::AuditFilter {
        aggregate_type: Some("incident".into()),
        aggregate_id: Some(incident_id.as_str().into()),
        ..Default::default()
    };
    let trail = projections::models::audit::audit_trail(&t.store, "acme", &filter, 50, None)
        .await
        .unwrap();
    let steps: Vec<_> = trail
        .items
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.from_status.as_deref(),
                e.to_status.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("incident.detected", None, Some("detected")),
            (
                "incident.acknowledged",
                Some("detected"),
                Some("acknowledged")
            ),
        ]
    );
    assert_eq!(trail.items[1].reason.as_deref(), Some("looking"));
    assert_eq!(trail.items[1].actor_role, "developer");
    assert!(trail.items[1].correlation_id.is_some());
    let other = projections::models::audit::audit_trail(&t.store, "globex", &filter, 50, None)
        .await
        .unwrap();
    assert!(other.items.is_empty(), "another tenant sees nothing");
    task.abort();
}

async fn read_your_writes_and_history(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let (incident_id, opened) = report_drift(
        &domain,
        &ctx("acme", Role::System),
        &id("prod"),
        vec![],
        None,
        IncidentPolicy::default(),
    )
    .await
    .unwrap();
    // Nobody runs the projections yet: a bounded wait times out.
    let idle = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    let err = idle
        .handle()
        .wait_for(
            projections::models::incidents::NAME,
            opened.position.unwrap(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    let err = idle
        .handle()
        .wait_for(projections::models::incidents::NAME, 1_000_000, WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WaitError::UnknownPosition(1_000_000)),
        "{err}"
    );
    drop(idle);

    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let acked = domain
        .incident(
            &ctx("acme", Role::Developer),
            &incident_id,
            IncidentCommand::Acknowledge {
                reason: None,
                owner_user_id: None,
                ticket_ref: None,
                expires_at: None,
            },
            false,
        )
        .await
        .unwrap();
    // Read-your-writes: once the wait returns, the read model shows the write.
    handle
        .wait_for(
            projections::models::incidents::NAME,
            acked.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    let row = projections::models::incidents::incident(&t.store, "acme", incident_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.status,
        aggregates::incident::IncidentStatus::Acknowledged
    );
    task.abort();

    // History and state as of a position or a time, replayed from the log.
    let history =
        projections::history::event_history(&t.store, "acme", "incident", incident_id.as_str())
            .await
            .unwrap();
    assert_eq!(history.len(), 2);
    let as_of = |position: Option<i64>, at| projections::history::AsOf { position, at };
    let before = projections::history::state_at(
        &t.store,
        "acme",
        "incident",
        incident_id.as_str(),
        as_of(Some(opened.position.unwrap()), None),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(before.state["status"], "detected");
    let now = projections::history::state_at(
        &t.store,
        "acme",
        "incident",
        incident_id.as_str(),
        as_of(None, Some(chrono::Utc::now())),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(now.state["status"], "acknowledged");
    let earlier = chrono::Utc::now() - chrono::Duration::days(1);
    assert!(projections::history::state_at(
        &t.store,
        "acme",
        "incident",
        incident_id.as_str(),
        as_of(None, Some(earlier))
    )
    .await
    .unwrap()
    .is_none());
    assert!(projections::history::event_history(
        &t.store,
        "globex",
        "incident",
        incident_id.as_str()
    )
    .await
    .unwrap()
    .is_empty());
    assert!(matches!(
        projections::history::event_history(&t.store, "acme", "nonsense", "x").await,
        Err(QueryError::Validation { .. })
    ));
}

/// Two service processes on one PostgreSQL database: each projection runs in exactly
/// one of them, and the result equals a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_apply_each_event_once_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let second = Store::connect(&t.url, 8).await.unwrap();
    let (h1, t1) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let (h2, t2) = Projector::new(
        second.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    workload(&t, 150).await;
    let position = head(&t.store).await;
    wait_all(&h1, position).await;
    wait_all(&h2, position).await;
    for (a, b) in h1.status().iter().zip(h2.status()) {
        assert!(
            a.running_here != b.running_here,
            "{} runs in exactly one process",
            a.name
        );
    }
    t1.abort();
    t2.abort();
    let live = dump(&t.store).await;
    assert_not_vacuous(&live, event_count(&t.store).await);
    workflowops::read_side::rebuild(&t.store, &[])
        .await
        .unwrap();
    assert_eq!(live, dump(&t.store).await);
    second.close().await;
}

/// Steps `projector` until projection `name` has applied the log to `position` (an
/// event is read once no older transaction holds it back).
async fn steps_until(projector: &mut Projector, name: &str, position: i64) {
    let handle = projector.handle();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        projector.step().await.unwrap();
        let at = handle
            .status()
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.checkpoint.position);
        if at >= position {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} did not apply the log to {position}");
}

/// A rebuild's replay writes the audit trail behind (decision 83): each batch's rows
/// are written on a connection of their own while the next batch is applied. A
/// write that fails stops the replay at the next flush with its error, the rows of
/// that batch are not there, and the projector stays stopped: rows written behind
/// cannot be taken back, so it never goes on past a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_behind_stops_the_replay_postgres() {
    use projections::models::audit;
    let t = TestStore::new(Kind::Postgres).await;
    let (handle, task) = running_projector(&t);
    workload(&t, 150).await;
    caught_up_and_stopped(&t, &handle, task).await;
    assert!(event_count(&t.store).await > 100);
    empty_read_models(&t.store).await;
    // A row in the way of the second batch's COPY: the 30th event's position.
    let Store::Postgres(PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    let blocked: i64 = sqlx::query_scalar(
        "SELECT position FROM events ORDER BY tx_id, position OFFSET 29 LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO rm_audit (position, tenant, recorded_at, actor, actor_role, \
         aggregate_type, aggregate_id, sequence, event_type, admin_override, tx_id) \
         VALUES ($1, 'x', 'x', 'x', 'x', 'x', 'x', 1, 'x', false, 0)",
    )
    .bind(blocked)
    .execute(pool)
    .await
    .unwrap();

    let options = ProjectorOptions {
        batch_size: 25,
        defer_writes: true,
        ..ProjectorOptions::default()
    };
    let list: Vec<Box<dyn Projection>> = vec![Box::new(audit::AuditTrail::default())];
    let mut projector = Projector::new(t.store.clone(), list, options);
    // The first two batches hand their rows over; the third waits for the second's.
    assert!(matches!(projector.step().await, Ok(Step::Applied(25))));
    assert!(matches!(projector.step().await, Ok(Step::Applied(25))));
    let error = projector
        .step()
        .await
        .expect_err("the second batch's write failed");
    assert!(
        error.to_string().contains("rm_audit_pkey"),
        "the write's own error: {error}"
    );
    let written: Vec<i64> = sqlx::query_scalar("SELECT position FROM rm_audit ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        written.len(),
        26,
        "the first batch and the planted row: {written:?}"
    );
    assert!(written.contains(&blocked));
    // It stays stopped, and stopping to defer fails too.
    for _ in 0..2 {
        let error = projector.step().await.expect_err("stays stopped");
        assert!(error.to_string().contains("written behind"), "{error}");
    }
    assert!(projector.stop_deferring().await.is_err());
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_audit")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(after, 26, "nothing written past the gap");
}

/// A small batch reaches every projection it concerns in one PostgreSQL transaction
/// (decision 73): their checkpoint rows carry the same writing transaction. When one
/// of those checkpoints moved meanwhile (as a rebuild swapped in elsewhere moves it),
/// the others still apply the batch, and the moved one reloads and applies it next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_commits_every_projection_together_postgres() {
    use projections::models::{audit, environments};
    let t = TestStore::new(Kind::Postgres).await;
    let Store::Postgres(PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    let domain = t.domain_without_reactors();
    let mut projector = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    projector.catch_up().await.unwrap();
    let writers = |names: [&'static str; 2]| async move {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, xmin::text FROM projection_checkpoints WHERE name = ANY($1) ORDER BY name",
        )
        .bind(names.to_vec())
        .fetch_all(pool)
        .await
        .unwrap();
        rows
    };
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let first = head(&t.store).await;
    steps_until(&mut projector, projections::models::audit::NAME, first).await;
    let rows = writers([audit::NAME, environments::NAME]).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].1, rows[1].1,
        "both checkpoints written by one transaction: {rows:?}"
    );

    // The next event, readable (no older transaction of the cluster holds it back:
    // an idle projector would notice the move below before it reads the batch).
    domain
        .environment(&admin("acme"), &id("stage"), register("Staging"))
        .await
        .unwrap();
    let second = head(&t.store).await;
    let after = projector
        .handle()
        .status()
        .iter()
        .map(|s| s.checkpoint)
        .min()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !t
        .store
        .read_after(after, 100)
        .await
        .unwrap()
        .iter()
        .any(|e| e.position == second)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the event became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The environments' checkpoint moves behind the runner's back, and one step
    // applies the batch.
    sqlx::query("UPDATE projection_checkpoints SET generation = generation + 1 WHERE name = $1")
        .bind(environments::NAME)
        .execute(pool)
        .await
        .unwrap();
    assert!(matches!(projector.step().await.unwrap(), Step::Applied(n) if n > 0));
    let status = projector.handle().status();
    let of = |name: &str| status.iter().find(|s| s.name == name).unwrap().clone();
    assert!(
        of(audit::NAME).checkpoint.position >= second,
        "the audit trail applied it"
    );
    assert!(
        of(environments::NAME).checkpoint.position < second,
        "the moved checkpoint was not passed"
    );
    // Reloaded, it applies the batch too.
    projector.catch_up().await.unwrap();
    let status = projector.handle().status();
    let environments_status = status
        .iter()
        .find(|s| s.name == environments::NAME)
        .unwrap();
    assert!(environments_status.checkpoint.position >= second);
    assert_eq!(environments_status.generation, 1);
    let shown: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_environments WHERE tenant = 'acme'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(shown, 2, "both environments are shown");
}

/// Another process's appends wake the projector through `LISTEN/NOTIFY` (sent after
/// the append committed), not through polling: the projector here polls once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_appends_wake_the_projector_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    // No reactors: nothing but the test writes, so the projector's first read sees
    // the first event (a concurrent transaction would hide it until the next wake-up).
    let domain = t.domain_without_reactors();
    let elsewhere = Store::connect(&t.url, 4).await.unwrap();
    let first = domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let (handle, task) = Projector::new(
        elsewhere.clone(),
        projections::all(),
        ProjectorOptions {
            poll: Duration::from_secs(60),
            ..ProjectorOptions::default()
        },
    )
    .spawn();
    // The first step runs at once (and after the listener is up).
    handle
        .wait_for(
            projections::models::environments::NAME,
            first.position.unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    for name in ["Staging", "Development"] {
        let next = domain
            .environment(&admin("acme"), &id(&name.to_lowercase()), register(name))
            .await
            .unwrap();
        handle
            .wait_for(
                projections::models::environments::NAME,
                next.position.unwrap(),
                Duration::from_secs(20),
            )
            .await
            .expect("woken by NOTIFY well before the next poll");
    }
    task.abort();
    elsewhere.close().await;
}

/// A transaction in another database, with a transaction id, left open: it holds
/// PostgreSQL's gap-safe reads back until it ends (`COMMIT` on the connection).
async fn transaction_elsewhere() -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let mut elsewhere = sqlx::PgConnection::connect(&crate::support::admin_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut elsewhere).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut elsewhere)
        .await
        .unwrap();
    elsewhere
}

/// The gap-safe read stops below the oldest transaction running anywhere in the
/// cluster: here one in another database that never appends. The projector is woken
/// for an event it cannot read yet, and comes back for it as soon as that
/// transaction ends, not at its next poll (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_held_back_by_a_transaction_elsewhere_are_read_when_it_ends_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let domain = t.domain_without_reactors();
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions {
            poll: Duration::from_secs(60),
            ..ProjectorOptions::default()
        },
    )
    .spawn();
    let first = domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let environments = projections::models::environments::NAME;
    handle
        .wait_for(environments, first.position.unwrap(), WAIT)
        .await
        .unwrap();
    let mut elsewhere = transaction_elsewhere().await;
    let next = domain
        .environment(&admin("acme"), &id("staging"), register("Staging"))
        .await
        .unwrap();
    let held = handle
        .wait_for(
            environments,
            next.position.unwrap(),
            Duration::from_millis(500),
        )
        .await;
    assert!(
        matches!(held, Err(WaitError::Timeout { .. })),
        "read past a running transaction: {held:?}"
    );
    sqlx::query("COMMIT").execute(&mut elsewhere).await.unwrap();
    handle
        .wait_for(
            environments,
            next.position.unwrap(),
            Duration::from_secs(20),
        )
        .await
        .expect("read once the transaction ended, well before the next poll");
    task.abort();
}

/// A catch-up reaches every event committed before it was called, even while a
/// transaction elsewhere in the cluster holds gap-safe reads back (other tests'
/// transactions do, on a shared server): it waits for them instead of returning
/// with nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_waits_for_events_held_back_by_a_transaction_elsewhere_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let domain = t.domain_without_reactors();
    let mut elsewhere = transaction_elsewhere().await;
    let mut last = 0;
    for name in ["Production", "Staging", "Development"] {
        last = domain
            .environment(&admin("acme"), &id(&name.to_lowercase()), register(name))
            .await
            .unwrap()
            .position
            .unwrap();
    }
    let target = t.store.cursor_after_position(last).await.unwrap().unwrap();
    let mut projector = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    let handle = projector.handle();
    let catch_up = tokio::spawn(async move { projector.catch_up().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !catch_up.is_finished(),
        "returned while committed events were held back: {:?}",
        handle.status()
    );
    sqlx::query("COMMIT").execute(&mut elsewhere).await.unwrap();
    let applied = tokio::time::timeout(WAIT, catch_up)
        .await
        .expect("the catch-up ends once the transaction did")
        .unwrap()
        .unwrap();
    assert_eq!(applied, 3);
    for status in handle.status() {
        assert!(status.checkpoint >= target, "{status:?}");
    }
    assert_eq!(
        dump(&t.store).await["audit"].len(),
        3,
        "every event in the audit trail"
    );
}

/// Crash safety with a real crash: `serve` is killed (SIGKILL) while its projector is
/// catching up in batches of 5 events — inside a transaction most of the time. A new
/// process resumes from the checkpoints, and every read model then equals a rebuild:
/// nothing lost, nothing applied twice.
async fn killed_service_resumes_without_loss_or_double_apply(kind: Kind) {
    use crate::cli::{free_port, workflowops, Killed};
    let t = TestStore::new(kind).await;
    workload(&t, 200).await;
    let head_cursor = t
        .store
        .cursor_after_position(head(&t.store).await)
        .await
        .unwrap()
        .unwrap();
    let child = workflowops()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("DATABASE_URL", &t.url)
        .env("WORKFLOWOPS_PROJECTOR_BATCH", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut service = Killed(child);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stored = projections::runtime::stored_checkpoints(&t.store)
            .await
            .unwrap();
        if stored.values().any(|(cursor, ..)| cursor.position > 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service never applied a batch"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.0.kill().unwrap(); // SIGKILL: no shutdown path runs
    service.0.wait().unwrap();
    let at_kill = projections::runtime::stored_checkpoints(&t.store)
        .await
        .unwrap();
    assert!(
        at_kill.values().any(|(cursor, ..)| *cursor < head_cursor),
        "killed before it caught up: {at_kill:?}"
    );

    // The killed service ran its reactors and schedulers too, so the log can have
    // grown after `head_cursor`: the next projector must reach the head as it
    // stands now, or the audit count below races with those late appends.
    let final_cursor = t
        .store
        .cursor_after_position(head(&t.store).await)
        .await
        .unwrap()
        .unwrap();
    // The next process: its projector resumes where each checkpoint stands (the dead
    // process's locks go with its connections).
    let mut projector = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    let handle = projector.handle();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        projector.catch_up().await.unwrap();
        let status = handle.status();
        if status
            .iter()
            .all(|s| s.running_here && s.checkpoint >= final_cursor)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(projector); // releases its locks, so the rebuild below runs here
    let live = dump(&t.store).await;
    assert_not_vacuous(&live, event_count(&t.store).await);
    let report = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .unwrap();
    assert_eq!(report.events as usize, event_count(&t.store).await);
    assert_eq!(
        live,
        dump(&t.store).await,
        "nothing lost, nothing applied twice"
    );
}

/// A stored value that does not decode as its column's type (an unknown state name,
/// a time that is no time, JSON of another shape) is an error naming the table and
/// column, never a default or an empty list.
async fn corrupt_stored_values_are_errors(kind: Kind) {
    use aggregates::pipeline::{PipelineCommand, PipelineStage, StageGates};
    use sqlx::Executor as _;
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    domain
        .canonical(
            &ctx("acme", Role::Developer),
            &id("c1"),
            CanonicalCommand::Create {
                canonical_id: id("c1"),
                name: "Orders".into(),
                slug: None,
                git_path: None,
            },
        )
        .await
        .unwrap();
    domain
        .pipeline(
            &admin("acme"),
            &id("p1"),
            PipelineCommand::Create {
                name: "Release".into(),
                description: None,
                stages: vec![PipelineStage::new("dev", "prod", StageGates::default())],
            },
        )
        .await
        .unwrap();
    let (handle, task) = running_projector(&t);
    // Stopped, not just asked to stop: a batch the projector still committed after
    // a corrupting UPDATE below would write the row back as it should be.
    caught_up_and_stopped(&t, &handle, task).await;
    // everything reads before anything is corrupted
    let environments = projections::models::environments::environments(&t.store, "acme");
    assert_eq!(environments.await.unwrap().len(), 1);
    let pipeline = projections::models::pipelines::pipeline(&t.store, "acme", "p1").await;
    assert_eq!(pipeline.unwrap().unwrap().stages.len(), 1);

    for (sql, table, column) in [
        (
            "UPDATE rm_environments SET class = 'lab'",
            "rm_environments",
            "class",
        ),
        (
            "UPDATE rm_pipelines SET stages = '[{\"oops\"'",
            "rm_pipelines",
            "stages",
        ),
        (
            "UPDATE rm_pipelines SET stages = '{}'",
            "rm_pipelines",
            "stages",
        ),
        (
            "UPDATE rm_matrix_rows SET created_at = 'yesterday'",
            "rm_matrix_rows",
            "created_at",
        ),
    ] {
        let result = match &t.store {
            Store::Postgres(PgStore { pool, .. }) => pool.execute(sql).await.map(|_| ()),
            Store::Sqlite(s) => s.pool.execute(sql).await.map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let error = match table {
            "rm_environments" => projections::models::environments::environments(&t.store, "acme")
                .await
                .map(|_| ())
                .unwrap_err(),
            "rm_pipelines" => projections::models::pipelines::pipeline(&t.store, "acme", "p1")
                .await
                .map(|_| ())
                .unwrap_err(),
            _ => projections::models::matrix::canonical_rows(&t.store, "acme")
                .await
                .map(|_| ())
                .unwrap_err(),
        };
        let QueryError::Store(eventstore::StoreError::Database(sqlx::Error::ColumnDecode {
            source,
            ..
        })) = &error
        else {
            panic!("{sql}: not a decode error: {error:?}");
        };
        assert!(
            source
                .to_string()
                .starts_with(&format!("{table}.{column}: ")),
            "{sql}: {source}"
        );
    }
}

/// `read_after_matching` (what the reactors read): only the asked-for types, and
/// how far the log was read: to the head on SQLite (filtered in the database),
/// through the gap-safe batch on PostgreSQL (filtered after it); a limit stops at
/// the last event returned.
async fn filtered_reads_return_their_types_and_how_far_they_read(kind: Kind) {
    use eventstore::LogCursor;
    let t = TestStore::new(kind).await;
    workload(&t, 40).await;
    let (all, head) = settled_log(&t.store).await;
    let last = head.position;
    assert_eq!(
        all.iter().map(|e| e.position).max(),
        Some(t.store.last_position().await.unwrap())
    );
    // the two rarest types of the log
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &all {
        *counts.entry(e.event_type.as_str()).or_default() += 1;
    }
    let mut rare: Vec<(&str, usize)> = counts.into_iter().collect();
    rare.sort_by_key(|(t, n)| (*n, *t));
    let types = [rare[0].0, rare[1].0];
    let expected: Vec<i64> = all
        .iter()
        .filter(|e| types.contains(&e.event_type.as_str()))
        .map(|e| e.position)
        .collect();
    assert!(
        expected.len() >= 2 && expected.len() < all.len(),
        "{rare:?}"
    );

    let (batch, scanned) = t
        .store
        .read_after_matching(LogCursor::START, 100_000, Some(&types))
        .await
        .unwrap();
    let got: Vec<i64> = batch.iter().map(|e| e.position).collect();
    assert_eq!(got, expected);
    assert_eq!(scanned, head, "read to the head");

    let (first, upto) = t
        .store
        .read_after_matching(LogCursor::START, 1, Some(&types))
        .await
        .unwrap();
    match kind {
        Kind::Sqlite => {
            assert_eq!(first.len(), 1);
            assert_eq!(
                upto,
                first[0].cursor(),
                "a full batch stops at its last event"
            );
        }
        // one event read, filtered afterwards
        Kind::Postgres => assert_eq!(upto, all[0].cursor()),
    }
    let (none, moved) = t
        .store
        .read_after_matching(LogCursor::START, 10, Some(&["no.such_type"]))
        .await
        .unwrap();
    assert!(none.is_empty());
    match kind {
        Kind::Sqlite => assert_eq!(moved.position, last),
        Kind::Postgres => assert_eq!(moved, all[9].cursor()),
    }
    let (unfiltered, through) = t
        .store
        .read_after_matching(LogCursor::START, 100_000, None)
        .await
        .unwrap();
    assert_eq!(unfiltered.len(), all.len());
    assert_eq!(through, all.last().unwrap().cursor());
}

/// A read model with none of its aggregate types in a batch skips it without a
/// transaction: its position moves in memory at once, its row within
/// `CHECKPOINT_FLUSH` (or when `catch_up` returns).
async fn a_batch_of_no_concern_is_skipped_and_its_checkpoint_written_soon(kind: Kind) {
    use projections::runtime::stored_checkpoints;
    let t = TestStore::new(kind).await;
    workload(&t, 20).await;
    let mut projector = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    let last = t.store.last_position().await.unwrap();
    // On PostgreSQL a catch-up stops below a transaction still open anywhere on the
    // server (another test's): catch up again until the log's end is readable.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        projector.catch_up().await.unwrap();
        let stored = stored_checkpoints(&t.store).await.unwrap();
        if stored.values().all(|(cursor, ..)| cursor.position == last) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "catch_up writes every checkpoint: {stored:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // one environment event: no concern of the pipelines read model
    t.domain()
        .environment(
            &admin("acme"),
            &id("prod"),
            EnvironmentCommand::RecordSync {
                kind: SyncKind::Environment,
                workflows_seen: 99,
            },
        )
        .await
        .unwrap();
    let now = t.store.last_position().await.unwrap();
    // (on PostgreSQL a transaction elsewhere in the cluster may hold the event back
    // for a moment: the gap-safe read returns it once nothing older is running)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(projector.step().await.unwrap(), Step::Applied(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the event was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = projector.handle().status();
    let position = |name: &str| {
        status
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .checkpoint
            .position
    };
    assert_eq!(
        position(projections::models::pipelines::NAME),
        now,
        "in memory at once"
    );
    let stored = stored_checkpoints(&t.store).await.unwrap();
    assert_eq!(
        stored[projections::models::environments::NAME].0.position,
        now,
        "the concerned read model wrote its batch"
    );
    assert_eq!(
        stored[projections::models::pipelines::NAME].0.position,
        last,
        "the skipping one has not written yet"
    );
    tokio::time::sleep(projections::runtime::CHECKPOINT_FLUSH + Duration::from_millis(20)).await;
    projector.step().await.unwrap();
    let stored = stored_checkpoints(&t.store).await.unwrap();
    for (name, (cursor, ..)) in stored {
        assert_eq!(cursor.position, now, "{name}: written within the flush");
    }
}

/// A replay that defers its writes (a rebuild's shadow, decision 66) commits its
/// checkpoints but keeps the rows it rewrites in memory: until deferring stops, the
/// tables hold none of them (the append-only audit trail is written as it goes).
/// Then every owed row is written, and the tables equal those of a plain replay,
/// although the matrix's flush failed twice on the way (a rolled-back batch keeps
/// what earlier batches owe). A projection that must reload its checkpoint while it
/// owes rows stops the projector instead of going on without them.
async fn deferred_writes_land_whole_when_deferring_stops(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (handle, task) = running_projector(&t);
    workload(&t, 150).await;
    caught_up_and_stopped(&t, &handle, task).await;
    let live = dump(&t.store).await;
    let events = event_count(&t.store).await;
    assert_not_vacuous(&live, events);

    empty_read_models(&t.store).await;
    let flushes = Arc::new(AtomicUsize::new(0));
    let mut list = projections::all();
    make_flaky(
        &mut list,
        projections::models::matrix::NAME,
        &flushes,
        &[3, 7],
    );
    let options = ProjectorOptions {
        batch_size: 25,
        defer_writes: true,
        ..ProjectorOptions::default()
    };
    let mut projector = Projector::new(t.store.clone(), list, options.clone());
    let mut failures = 0;
    loop {
        match projector.step().await {
            Ok(Step::Idle) => break,
            Ok(Step::Applied(_)) => {}
            Err(_) => failures += 1,
        }
    }
    assert_eq!(failures, 2, "the injected failures happened");
    projector.flush_checkpoints(true).await.unwrap();
    let now = head(&t.store).await;
    let stored = projections::runtime::stored_checkpoints(&t.store)
        .await
        .unwrap();
    for name in projections::NAMES {
        assert_eq!(
            stored[*name].0.position, now,
            "{name}: checkpoint committed"
        );
    }
    let deferred = dump(&t.store).await;
    for (table, rows) in &deferred {
        match *table {
            // (on PostgreSQL it writes behind: the last batch may still be in flight)
            "audit" => assert!(
                rows.len() <= events && rows.len() + 25 >= events,
                "the audit trail is written as it goes: {} of {events} rows",
                rows.len()
            ),
            _ => assert!(
                rows.is_empty(),
                "{table}: {} rows written while deferring",
                rows.len()
            ),
        }
    }

    projector.stop_deferring().await.unwrap();
    assert_eq!(
        live,
        dump(&t.store).await,
        "every owed row written, as a plain replay writes them"
    );
    // Stopping twice writes nothing more (and does not fail).
    projector.stop_deferring().await.unwrap();
    drop(projector);

    // A reload while rows are owed: the checkpoint's generation moves under the
    // deferring projector (as a swap elsewhere would).
    empty_read_models(&t.store).await;
    let mut projector = Projector::new(t.store.clone(), projections::all(), options);
    assert!(matches!(projector.step().await, Ok(Step::Applied(25))));
    crate::digest::exec(
        &t.store,
        "UPDATE projection_checkpoints SET generation = generation + 1",
    )
    .await;
    let mut stopped = None;
    for _ in 0..3 {
        if let Err(error) = projector.step().await {
            stopped = Some(error.to_string());
            break;
        }
    }
    let stopped = stopped.expect("the deferring projector stops when it must reload");
    assert!(stopped.contains("deferred its writes"), "{stopped}");
}

/// Rows of an append-only table (the audit trail: a binary `COPY` on PostgreSQL)
/// read back exactly as written: NULLs, both booleans, text that a text format would
/// have to escape, and non-ASCII text. Writing one of them again fails and leaves
/// the table as it was.
async fn append_only_rows_read_back_exactly_and_refuse_duplicates(kind: Kind) {
    use projections::models::audit::AuditEntry;
    let t = TestStore::new(kind).await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00.123456Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let entry = |position: i64, reason: Option<&str>, admin_override: bool| AuditEntry {
        position,
        tenant: "acme".into(),
        recorded_at: at,
        actor: "zoë \\ o'brien \"quoted\"".into(),
        actor_role: "admin".into(),
        aggregate_type: "incident".into(),
        aggregate_id: format!("acme:inc-{position}"),
        sequence: position.wrapping_mul(1_000_000_007),
        event_type: "incident.acknowledged".into(),
        from_status: Some("detected".into()),
        to_status: None,
        reason: reason.map(str::to_string),
        admin_override,
        correlation_id: None,
        causation_id: Some("cause\tend\nline\r\\N".into()),
        tx_id: -position,
    };
    let rows = [
        entry(1, None, false),
        entry(2, Some("tab\there, newline\nthere, 🚀 and ß"), true),
        entry(i64::MAX, Some(""), false),
    ];
    let write = |rows: Vec<AuditEntry>| {
        let store = t.store.clone();
        async move {
            let mut tx = Tx::begin(&store).await.unwrap();
            let refs: Vec<&AuditEntry> = rows.iter().collect();
            let result = projections::sql::write_rows(&mut tx, &refs, false).await;
            match result {
                Ok(()) => tx.commit().await,
                Err(error) => {
                    let _ = tx.rollback().await;
                    Err(error)
                }
            }
        }
    };
    write(rows.to_vec()).await.unwrap();
    let expected: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let mut read = rows_of::<AuditEntry>(&t.store).await;
    read.sort_by_key(|r| serde_json::from_str::<AuditEntry>(r).unwrap().position);
    assert_eq!(read, expected);

    let again = write(vec![entry(3, None, true), rows[1].clone()]).await;
    assert!(again.is_err(), "a duplicate key is refused");
    assert_eq!(
        rows_of::<AuditEntry>(&t.store).await.len(),
        3,
        "nothing of it stored"
    );

    // A larger batch (on SQLite, more than one statement's rows): the same rows
    // back, and the same refusal of a duplicate.
    let many = 1_200;
    let large: Vec<AuditEntry> = (0..many as i64)
        .map(|k| entry(100 + k, (k % 3 == 0).then_some("tab\there 🚀"), k % 2 == 0))
        .collect();
    write(large.clone()).await.unwrap();
    let mut expected = expected;
    expected.extend(large.iter().map(|r| serde_json::to_string(r).unwrap()));
    expected.sort_by_key(|r| serde_json::from_str::<AuditEntry>(r).unwrap().position);
    let mut read = rows_of::<AuditEntry>(&t.store).await;
    read.sort_by_key(|r| serde_json::from_str::<AuditEntry>(r).unwrap().position);
    assert_eq!(read, expected);
    let mut again: Vec<AuditEntry> = (0..many as i64)
        .map(|k| entry(1000 + k, None, false))
        .collect();
    again.push(large[7].clone());
    assert!(write(again).await.is_err(), "a duplicate key is refused");
    assert_eq!(
        rows_of::<AuditEntry>(&t.store).await.len(),
        3 + many,
        "nothing of it stored"
    );
}

/// Checks every row of `R`'s table that `handle` shares (decision 80) against the
/// table; returns how many it shares.
async fn shared_rows_match<R>(
    store: &Store,
    handle: &projections::ProjectorHandle,
    name: &str,
) -> usize
where
    R: projections::sql::KeyedRow + PartialEq + std::fmt::Debug,
{
    let rows: Vec<R> = select::<R>(Dialect::of(store))
        .fetch(store)
        .await
        .expect("read table");
    let mut shared = 0;
    for row in rows {
        match handle.recent_row::<R>(name, row.id()) {
            Some(Some(kept)) => {
                assert_eq!(kept, row, "{name}: the shared row is the table's");
                shared += 1;
            }
            Some(None) => panic!("{name}: {} shared as deleted, but in the table", row.id()),
            None => {}
        }
    }
    shared
}

/// Waits until `handle` shows projection `name` past `generation` (a rebuild was
/// swapped in and the running projector reloaded it).
async fn reloaded(handle: &projections::ProjectorHandle, name: &str, generation: i64) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let now = handle.status().into_iter().find(|s| s.name == name);
        if now.is_some_and(|s| s.generation > generation && s.running_here) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} was not reloaded after the rebuild");
}

/// A live projector shares each commit's rows with readers in its own process
/// (decision 80, a mutation's read-back): exactly the rows the tables give back;
/// none where another process runs the projection; none kept across a reload (a
/// rebuild swapped in), and rows changed after it shared again.
async fn shared_rows_are_the_tables_rows(kind: Kind) {
    use projections::models::{deployments, incidents, pipelines, policies, promotions};
    let t = TestStore::new(kind).await;
    let (handle, task) = running_projector(&t);
    workload(&t, 150).await;
    let position = head(&t.store).await;
    wait_all(&handle, position).await;

    let incident_rows = rows_of::<incidents::IncidentRow>(&t.store).await.len();
    assert!(incident_rows > 0, "the workload opened incidents");
    // (fewer rows than a table shares at most: every one is shared)
    assert_eq!(
        shared_rows_match::<incidents::IncidentRow>(&t.store, &handle, incidents::NAME).await,
        incident_rows
    );
    let others = [
        shared_rows_match::<promotions::PromotionRow>(&t.store, &handle, promotions::NAME).await,
        shared_rows_match::<deployments::DeploymentRow>(&t.store, &handle, deployments::NAME).await,
        shared_rows_match::<pipelines::PipelineRow>(&t.store, &handle, pipelines::NAME).await,
        shared_rows_match::<policies::DriftPolicyRow>(&t.store, &handle, policies::NAME).await,
    ];
    assert!(others.iter().sum::<usize>() > 0, "{others:?}");
    // A row nobody wrote, another tenant's key, a projection that shares none, and a
    // row type that is not the projection's: ask the table.
    assert!(handle
        .recent_row::<incidents::IncidentRow>(incidents::NAME, "acme:no-such-incident")
        .is_none());
    assert!(handle
        .recent_row::<incidents::IncidentRow>(promotions::NAME, "acme:x")
        .is_none());
    assert!(handle
        .recent_row::<projections::models::matrix::MatrixRow>(
            projections::models::matrix::NAME,
            "acme:c0"
        )
        .is_none());

    if matches!(kind, Kind::Postgres) {
        // Another process on the same database runs none of them: it shares nothing.
        let second = Store::connect(&t.url, 4).await.unwrap();
        let (h2, t2) = Projector::new(
            second.clone(),
            projections::all(),
            ProjectorOptions::default(),
        )
        .spawn();
        wait_all(&h2, position).await;
        assert!(h2.status().iter().all(|s| !s.running_here));
        assert_eq!(
            shared_rows_match::<incidents::IncidentRow>(&second, &h2, incidents::NAME).await,
            0
        );
        t2.abort();
        let _ = t2.await;
        second.close().await;
    }

    // A rebuild swapped in: the running projector reloads and forgets what it shared.
    let generation = handle
        .status()
        .into_iter()
        .find(|s| s.name == incidents::NAME)
        .unwrap()
        .generation;
    workflowops::read_side::rebuild(&t.store, &[incidents::NAME.to_string()])
        .await
        .unwrap();
    reloaded(&handle, incidents::NAME, generation).await;
    assert_eq!(
        shared_rows_match::<incidents::IncidentRow>(&t.store, &handle, incidents::NAME).await,
        0
    );
    // What it commits after the reload is shared again.
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("staging"), register("Staging"))
        .await
        .unwrap();
    let (_, opened) = report_drift(
        &domain,
        &ctx("acme", Role::System),
        &id("staging"),
        vec![],
        None,
        IncidentPolicy::default(),
    )
    .await
    .unwrap();
    wait_all(&handle, opened.position.unwrap()).await;
    assert_eq!(
        shared_rows_match::<incidents::IncidentRow>(&t.store, &handle, incidents::NAME).await,
        1
    );
    task.abort();
}

crate::support::both_backends!(
    raw_decoding_is_the_parsed_decoding,
    deferred_writes_land_whole_when_deferring_stops,
    append_only_rows_read_back_exactly_and_refuse_duplicates,
    a_batch_of_no_concern_is_skipped_and_its_checkpoint_written_soon,
    filtered_reads_return_their_types_and_how_far_they_read,
    killed_service_resumes_without_loss_or_double_apply,
    corrupt_stored_values_are_errors,
    rebuild_equals_live,
    failure_mid_batch_loses_nothing,
    unappliable_event_stops_one_projection,
    matrix_and_environment_status,
    matrix_rows_carry_exactly_their_cells,
    read_your_writes_and_history,
    shared_rows_are_the_tables_rows
);

/// Each matrix row's `cells` (what a page reads, decision 63) are exactly the cells
/// of the cell table attached to it, in (environment, id) order, after a workload
/// that links, unlinks, relinks and observes mappings (cells moving between rows);
/// and a page shows them.
async fn matrix_rows_carry_exactly_their_cells(kind: Kind) {
    use projections::models::matrix::{MatrixCell, MatrixRow, RowKind};
    let t = TestStore::new(kind).await;
    let (handle, task) = running_projector(&t);
    workload(&t, 400).await;
    // cells that move: linked, unlinked (an untracked row), relinked elsewhere,
    // observed in between
    let domain = t.domain();
    let observe = |n: u32, link: Option<&str>| MappingCommand::Observe {
        environment_id: id("prod"),
        n8n_workflow_id: id("moving"),
        observation: Observation {
            name: "Moving".into(),
            content_hash: hash(n),
            // n8n's own change time, on some observations
            n8n_updated_at: (n % 2 == 1)
                .then(|| chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0))
                .flatten(),
        },
        auto_link: link.map(id),
    };
    for command in [
        observe(1, Some("c0")),
        MappingCommand::Unlink { reason: None },
        observe(2, None),
        MappingCommand::Link {
            canonical_id: id("c1"),
        },
        observe(3, None),
        MappingCommand::Unlink { reason: None },
        MappingCommand::Link {
            canonical_id: id("c2"),
        },
    ] {
        domain
            .mapping(
                &ctx("acme", Role::Developer),
                &id("prod"),
                &id("moving"),
                command,
            )
            .await
            .unwrap();
    }
    caught_up_and_stopped(&t, &handle, task).await;

    let dialect = Dialect::of(&t.store);
    let unlinks = scalar(
        &t.store,
        "SELECT COUNT(*) FROM events WHERE event_type = 'mapping.unlinked'",
    )
    .await;
    assert!(unlinks > 0, "the workload unlinked nothing");
    let rows: Vec<MatrixRow> = select::<MatrixRow>(dialect).fetch(&t.store).await.unwrap();
    let mut sql = select::<MatrixCell>(dialect);
    sql.push(" ORDER BY row_id, environment_id, id");
    let mut by_row: BTreeMap<String, Vec<MatrixCell>> = BTreeMap::new();
    for cell in sql.fetch::<MatrixCell>(&t.store).await.unwrap() {
        by_row.entry(cell.row_id.clone()).or_default().push(cell);
    }
    let (mut untracked, mut canonical_with_cells) = (0, 0);
    for row in &rows {
        let expected = by_row.get(&row.id).cloned().unwrap_or_default();
        assert_eq!(row.cells.0 .0, expected, "row {}", row.id);
        untracked += usize::from(row.kind == RowKind::Untracked && !expected.is_empty());
        canonical_with_cells += usize::from(row.kind == RowKind::Canonical && !expected.is_empty());
    }
    assert!(
        untracked > 0 && canonical_with_cells > 0,
        "{untracked} / {canonical_with_cells}"
    );

    // a page shows each row's cells
    for tenant in ["acme", "globex", "initech"] {
        let page = matrix_page(&t.store, tenant, &MatrixFilter::default(), 100, None)
            .await
            .unwrap();
        assert!(!page.items.is_empty(), "{tenant}");
        for item in page.items {
            let expected = by_row.get(&item.row.id).cloned().unwrap_or_default();
            let shown: Vec<MatrixCell> = item.cells.into_iter().map(|v| v.cell).collect();
            assert_eq!(shown, expected, "page row {}", item.row.id);
        }
    }

    // the API's page (decision 64) shows the same rows, cells and cursors
    let some_environments = Some(vec!["prod".to_string(), "staging".to_string()]);
    let filters = [
        MatrixFilter::default(),
        MatrixFilter {
            only_drift: true,
            ..Default::default()
        },
        MatrixFilter {
            environment_ids: some_environments,
            ..Default::default()
        },
        MatrixFilter {
            search: Some("1".into()),
            canonical_only: true,
            ..Default::default()
        },
    ];
    let mut compared = vec![0; filters.len()];
    for tenant in ["acme", "globex", "initech"] {
        for (filter, compared) in filters.iter().zip(&mut compared) {
            *compared += shown_pages_equal_full_pages(&t.store, tenant, filter).await;
        }
    }
    // unfiltered, every cell of every row that is not deleted was compared
    let shown_cells: usize = rows
        .iter()
        .filter(|r| r.status != projections::models::matrix::RowStatus::Deleted)
        .map(|r| r.cells.0 .0.len())
        .sum();
    assert!(shown_cells > 0);
    assert_eq!(compared[0], shown_cells, "{compared:?}");
}

/// Pages through `filter`'s matrix of `tenant` with [`matrix_page`] and with
/// `shown_page` and asserts both give the same rows, cursors and shown fields;
/// returns how many cells it compared.
async fn shown_pages_equal_full_pages(store: &Store, tenant: &str, filter: &MatrixFilter) -> usize {
    use projections::models::matrix::shown_page;
    let (mut after, mut compared) = (None::<String>, 0);
    loop {
        let full = matrix_page(store, tenant, filter, 7, after.as_deref())
            .await
            .unwrap();
        let shown = shown_page(store, tenant, filter, 7, after.as_deref())
            .await
            .unwrap();
        assert_eq!(full.cursors, shown.cursors);
        assert_eq!(full.has_next_page, shown.has_next_page);
        assert_eq!(full.items.len(), shown.items.len());
        for (full, shown) in full.items.iter().zip(&shown.items) {
            let (f, s) = (&full.row, &shown.row);
            assert_eq!(
                (&f.id, f.kind, &f.canonical_id, &f.n8n_workflow_id, &f.name),
                (&s.id, s.kind, &s.canonical_id, &s.n8n_workflow_id, &s.name)
            );
            assert_eq!(
                (&f.sort_key, &f.slug, f.status, &f.git_path),
                (&s.sort_key, &s.slug, s.status, &s.git_path)
            );
            assert_eq!(
                (&f.git_content_hash, &f.git_commit_sha, f.git_changed_at),
                (&s.git_content_hash, &s.git_commit_sha, s.git_changed_at)
            );
            assert_eq!(full.cells.len(), shown.cells.len(), "row {}", f.id);
            for (fc, sc) in full.cells.iter().zip(&shown.cells) {
                let (c, d) = (&fc.cell, &sc.cell);
                let text = |s: Option<projections::json_str::JsonStr>| s.map(|s| s.to_string());
                assert_eq!(
                    (&c.environment_id, &c.n8n_workflow_id, &c.name, c.status),
                    (
                        &d.environment_id().to_string(),
                        &d.n8n_workflow_id().to_string(),
                        &d.name().to_string(),
                        d.status
                    )
                );
                assert_eq!(
                    (&c.env_content_hash, &c.git_content_hash),
                    (&text(d.env_content_hash()), &text(d.git_content_hash()))
                );
                assert_eq!(
                    (c.env_changed_at, c.status_since),
                    (d.env_changed_at, d.status_since)
                );
                assert_eq!(
                    (&fc.effective_git_content_hash, fc.sync_state),
                    (&text(sc.effective_git_content_hash()), sc.sync_state)
                );
                compared += 1;
            }
        }
        match full.has_next_page {
            true => after = full.end_cursor,
            false => return compared,
        }
    }
}

/// A running projector vacuums its tables when autovacuum does not look after them
/// (decision 65): every rewritten read-model row leaves a dead row version behind,
/// and without a vacuum they stay for good. Autovacuum is switched off for the
/// tables here, so the test does not depend on the server's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_projector_vacuums_the_tables_it_rewrites_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let Store::Postgres(eventstore::PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    let tables: Vec<&'static str> = projections::all()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    for table in &tables {
        sqlx::raw_sql(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    // A canonical workflow renamed 120 times: every rename rewrites its matrix row
    // with a new sort key, which is indexed, so no update can stay on its page
    // (a "HOT" update, which PostgreSQL prunes without a vacuum).
    let domain = t.domain();
    let admin = admin("acme");
    domain
        .canonical(
            &admin,
            &id("c0"),
            CanonicalCommand::Create {
                canonical_id: id("c0"),
                name: "Workflow 0".into(),
                slug: None,
                git_path: None,
            },
        )
        .await
        .unwrap();
    for i in 1..=120 {
        domain
            .canonical(
                &admin,
                &id("c0"),
                CanonicalCommand::Rename {
                    name: format!("Workflow {i}"),
                },
            )
            .await
            .unwrap();
    }
    // One event per batch: each rewrites the rows it touches, as a live projector
    // following a log event by event does.
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions {
            batch_size: 1,
            ..ProjectorOptions::default()
        },
    )
    .spawn();
    wait_all(&handle, head(&t.store).await).await;
    // One read per look: the tables vacuumed so far, with their counts as that
    // vacuum left them (a second lookup once found none it had just seen).
    let vacuumed = || async {
        sqlx::query_as::<_, (String, i64, i64, bool)>(
            "SELECT relname::text, n_dead_tup, n_live_tup, last_analyze IS NOT NULL \
             FROM pg_stat_user_tables \
             WHERE relid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) AS t) \
               AND last_vacuum IS NOT NULL ORDER BY 1",
        )
        .bind(&tables)
        .fetch_all(pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let due = projections::runtime::upkeep_due(&t.store, &tables)
            .await
            .unwrap();
        let done = vacuumed().await;
        if due.is_empty() && !done.is_empty() {
            break done;
        }
        if std::time::Instant::now() >= deadline {
            let stats: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT relname::text, n_dead_tup, n_live_tup FROM pg_stat_user_tables ORDER BY 1",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            panic!("still due after 60 s: {due:?}; vacuumed: {done:?}; {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The rewritten rows' dead versions are gone, and the tables were analyzed in the
    // same pass.
    for (table, dead, live, analyzed) in dead {
        assert!(
            (dead as f64) <= 50.0 + 0.2 * live as f64,
            "{table}: {dead} dead rows of {live} after its vacuum"
        );
        assert!(analyzed, "{table} was vacuumed without being analyzed");
    }
    task.abort();
}

/// A running projector keeps its tables' planner statistics current itself
/// (decision 61): this server runs without autovacuum, and without statistics the
/// matrix's pages were read with sequential scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_projector_analyzes_the_tables_it_filled_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let Store::Postgres(eventstore::PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    let last_analyze = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relid = to_regclass('rm_audit')",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    workload(&t, 200).await;
    assert_eq!(
        last_analyze().await,
        None,
        "nothing analyzed rm_audit before"
    );
    let (handle, task) = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    wait_all(&handle, head(&t.store).await).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while last_analyze().await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "rm_audit was not analyzed within 30 s of being filled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The planner now knows the table's size.
    let tuples: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass('rm_audit')")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(tuples >= 200.0, "reltuples {tuples}");
    task.abort();
}

/// Decision 71: a matrix row's `cells` text is compressed with LZ4 where the server
/// has it (pglz otherwise), and a page reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_cells_are_compressed_with_lz4_postgres() {
    use projections::models::matrix::{shown_page, MatrixCell, RowCells};
    let t = TestStore::new(Kind::Postgres).await;
    let Store::Postgres(PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    let lz4 = sqlx::query("CREATE TEMP TABLE lz4_probe (x text COMPRESSION lz4)")
        .execute(pool)
        .await
        .is_ok();
    let at = chrono::Utc::now();
    let cells: Vec<MatrixCell> = (0..14)
        .map(|e| MatrixCell {
            id: format!("acme:env-{e:02}:n8n-{e}"),
            tenant: "acme".into(),
            row_id: "acme:wf".into(),
            environment_id: format!("env-{e:02}"),
            n8n_workflow_id: format!("n8n-{e}"),
            canonical_id: Some("wf".into()),
            name: "Order Sync".into(),
            status: aggregates::mapping::MappingStatus::Linked,
            env_content_hash: Some(format!("{e:x}").repeat(64)[..64].to_string()),
            git_content_hash: None,
            env_changed_at: Some(at),
            status_since: at,
            updated_at: at,
        })
        .collect();
    let text = serde_json::to_string(&RowCells(cells)).unwrap();
    assert!(
        text.len() > 3000,
        "large enough to be compressed: {}",
        text.len()
    );
    let now = eventstore::sql::fmt_time(at);
    sqlx::query(
        "INSERT INTO rm_matrix_rows (id, tenant, kind, canonical_id, name, sort_key, status, \
         git_content_hash, created_at, updated_at, cells) \
         VALUES ('acme:wf', 'acme', 'canonical', 'wf', 'Order Sync', 'order sync', 'active', \
         $1, $2, $2, $3)",
    )
    .bind("f".repeat(64))
    .bind(&now)
    .bind(&text)
    .execute(pool)
    .await
    .unwrap();
    let method: Option<String> =
        sqlx::query_scalar("SELECT pg_column_compression(cells) FROM rm_matrix_rows")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(method.as_deref(), Some(if lz4 { "lz4" } else { "pglz" }));
    let page = shown_page(&t.store, "acme", &MatrixFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].cells.len(), 14);
    assert_eq!(page.items[0].cells[13].cell.environment_id(), "env-13");
    assert_eq!(
        page.items[0].cells[0].effective_git_content_hash().unwrap(),
        "f".repeat(64)
    );
}

/// Every event of the log, read whole once nothing older can still appear (a
/// transaction of another test may hold PostgreSQL's horizon back a moment).
async fn read_whole<T: Send + 'static>(
    store: &Store,
    map: eventstore::RawMap<T>,
) -> Result<Vec<T>, eventstore::StoreError> {
    let count = event_count(store).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let whole = store
            .read_after_map(eventstore::LogCursor::START, 1_000_000, map)
            .await?;
        if whole.len() >= count || std::time::Instant::now() > deadline {
            return Ok(whole);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes an event row as another writer might: the text exactly as given.
async fn plant_row(store: &Store, header: (&str, &str, &str), payload: &str, metadata: &str) {
    let (aggregate_type, aggregate_id, event_type) = header;
    let sql = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
               event_version, payload, metadata) VALUES ($1, $2, 1, $3, '1.0', $4, $5)";
    match store {
        Store::Postgres(PgStore { pool, .. }) => {
            let sql = sql.replace("$4", "$4::json").replace("$5", "$5::json");
            sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(event_type)
                .bind(payload)
                .bind(metadata)
                .execute(pool)
                .await
                .map(|_| ())
        }
        Store::Sqlite(s) => sqlx::query(&sql.replace('$', "?"))
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(event_type)
            .bind(payload)
            .bind(metadata)
            .execute(&s.pool)
            .await
            .map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("planting {aggregate_id}: {e}"));
}

/// JSON text with every `e` inside a string (keys, the `type` tag, values) written
/// as the escape `\u0065`: a decoder can then borrow none of those strings.
fn escape_every_e(json: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        match c {
            'e' if in_string && !escaped => out.push_str("\\u0065"),
            _ => out.push(c),
        }
        escaped = in_string && c == '\\' && !escaped;
        if c == '"' && !escaped {
            in_string = !in_string;
        }
    }
    out
}

/// Decision 84: the projector decodes each row straight from its text
/// (`Envelope::from_raw`). That is the event the parsed `StoredEvent` makes
/// (`Envelope::new`): for every event of a workload over every aggregate, and for
/// rows written by hand with valid but unusual JSON (escapes everywhere, duplicate
/// keys, metadata values of other types, an unknown event, an id without tenant).
/// A row whose JSON is not what it must be is the same error through both.
async fn raw_decoding_is_the_parsed_decoding(kind: Kind) {
    use projections::event::{Decoded, Envelope};
    use serde_json::{json, Value};
    let t = TestStore::new(kind).await;
    workload(&t, 100).await;
    let written = read_whole(&t.store, |raw| raw.parse()).await.unwrap();
    assert_eq!(written.len(), event_count(&t.store).await);

    // One event of each aggregate type, rewritten in odd ways under new ids.
    let mut samples: BTreeMap<String, eventstore::StoredEvent> = BTreeMap::new();
    for event in &written {
        samples
            .entry(event.aggregate_type.clone())
            .or_insert_with(|| event.clone());
    }
    assert!(samples.len() >= 8, "types: {:?}", samples.keys());
    let mut planted = 0;
    for (aggregate_type, sample) in &samples {
        let mut plant = |payload: String, metadata: String| {
            planted += 1;
            let id = format!("acme:planted-{planted}");
            let ty = sample.event_type.clone();
            let aggregate_type = aggregate_type.clone();
            let store = t.store.clone();
            async move { plant_row(&store, (&aggregate_type, &id, &ty), &payload, &metadata).await }
        };
        let payload = serde_json::to_string(&sample.payload).unwrap();
        let metadata = serde_json::to_string(&sample.metadata).unwrap();
        // escapes in every key and string, and pretty-printed
        plant(escape_every_e(&payload), escape_every_e(&metadata)).await;
        let pretty = serde_json::to_string_pretty(&sample.payload).unwrap();
        plant(pretty, metadata.clone()).await;
        // metadata values of other types than the models read
        let mut odd = sample.metadata.clone();
        odd.insert("actor".into(), json!(42));
        odd.insert("actor_role".into(), json!({"x": [1, {"y": null}]}));
        odd.insert("reason".into(), Value::Null);
        odd.insert("correlation_id".into(), json!("c\u{e9}\"q\\"));
        odd.insert("causation_id".into(), json!(["a"]));
        odd.insert("admin_override".into(), json!("true"));
        odd.insert("extra".into(), json!({"deep": [[[]]]}));
        plant(payload.clone(), serde_json::to_string(&odd).unwrap()).await;
        // duplicate keys: the last one counts
        let mut rest = sample.metadata.clone();
        rest.remove("actor");
        rest.remove("admin_override");
        let rest = serde_json::to_string(&rest).unwrap();
        let duplicated = format!(
            "{{\"actor\":\"first\",\"admin_override\":false,\"actor\":\"second\",\
             \"admin_override\":true,{}",
            &rest[1..]
        );
        let tag_twice = format!("{{\"type\":\"nonsense\",{}", &payload[1..]);
        plant(tag_twice, duplicated).await;
        // JSON that is no event of this aggregate
        plant(
            json!({"type": "no_such_event"}).to_string(),
            metadata.clone(),
        )
        .await;
        // incident events keep their payload, with an override in it
        if let Value::Object(mut fields) = sample.payload.clone() {
            fields.insert("admin_override".into(), json!(true));
            plant(Value::Object(fields).to_string(), metadata.clone()).await;
        }
    }
    // an aggregate id without a tenant
    let (_, sample) = samples.iter().next().unwrap();
    plant_row(
        &t.store,
        (&sample.aggregate_type, "no tenant", &sample.event_type),
        &serde_json::to_string(&sample.payload).unwrap(),
        &serde_json::to_string(&sample.metadata).unwrap(),
    )
    .await;

    let parsed = read_whole(&t.store, |raw| raw.parse().map(Envelope::new))
        .await
        .unwrap();
    let raw = read_whole(&t.store, Envelope::from_raw).await.unwrap();
    assert_eq!(parsed.len(), written.len() + planted + 1);
    assert_eq!(raw.len(), parsed.len());
    for (a, b) in parsed.iter().zip(&raw) {
        assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "position {}",
            a.stored.position
        );
        assert_eq!(a.meta, b.meta);
        assert_eq!(a.payload(), b.payload());
    }
    // The planted rows decode as intended (the comparison above is not vacuous).
    let planted_rows: Vec<&Envelope> = raw[written.len()..].iter().collect();
    let undecodable = planted_rows
        .iter()
        .filter(|e| matches!(e.event, Decoded::Undecodable(_)))
        .count();
    // (a type no model folds, a reservation, decodes as `Other` whatever it holds)
    let folded = samples
        .values()
        .filter(|sample| !matches!(Envelope::new((*sample).clone()).event, Decoded::Other))
        .count();
    assert!(
        folded >= 6,
        "types folded: {folded} of {:?}",
        samples.keys()
    );
    assert_eq!(
        undecodable,
        folded + 1,
        "one unknown event per type folded, one bad id"
    );
    let odd = planted_rows
        .iter()
        .find(|e| e.meta.correlation_id.as_deref() == Some("c\u{e9}\"q\\"));
    let odd = odd.expect("the odd metadata");
    assert_eq!(
        (odd.meta.actor.as_deref(), odd.meta.admin_override),
        (None, false)
    );
    assert!(odd.meta.actor_role.is_none() && odd.meta.causation_id.is_none());
    assert!(planted_rows
        .iter()
        .any(|e| e.meta.actor.as_deref() == Some("second") && e.meta.admin_override));
    let escaped = &planted_rows[0];
    assert!(!matches!(
        escaped.event,
        Decoded::Undecodable(_) | Decoded::Other
    ));
    assert!(planted_rows
        .iter()
        .any(|e| e.payload().is_some_and(|p| p["admin_override"] == true)));

    // Not what it must be: the same error through both.
    let last = raw.last().unwrap().stored.position;
    let mut corruptions = vec!["UPDATE events SET metadata = '[1]' WHERE position = $1"];
    if matches!(kind, Kind::Sqlite) {
        // (PostgreSQL's json column refuses text that is not JSON)
        corruptions.push("UPDATE events SET payload = '{\"type\": ' WHERE position = $1");
    }
    for sql in corruptions {
        match &t.store {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query(sql).bind(last).execute(pool).await.map(|_| ())
            }
            Store::Sqlite(s) => sqlx::query(&sql.replace('$', "?"))
                .bind(last)
                .execute(&s.pool)
                .await
                .map(|_| ()),
        }
        .unwrap();
        let parsed = read_whole(&t.store, |raw| raw.parse().map(Envelope::new)).await;
        let raw = read_whole(&t.store, Envelope::from_raw).await;
        let (Err(a), Err(b)) = (parsed, raw) else {
            panic!("{sql}: must be an error");
        };
        assert_eq!(a.to_string(), b.to_string(), "{sql}");
        assert!(
            matches!(a, eventstore::StoreError::Corrupt { position, .. } if position == last),
            "{sql}: {a}"
        );
    }
}
