//! Live rebuilds on both backends: `rebuild` run from another connection (as the CLI
//! runs it) while the service serves queries and takes commands. No answer is ever
//! emptier than the log, the swap is noticed without a new append, a second rebuild
//! is refused, a crashed one is taken over, and appends made during the rebuild all
//! reach the read models.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::environment::{EnvironmentCommand, SyncKind};
use aggregates::kernel::command::Role;
use aggregates::pipeline::{Pipeline, PipelineCommand, PipelineStage, StageGates};
use eventstore::{PgStore, Store};
use projections::rebuild::{rebuild_progress, RebuildOptions, RebuildProgress};
use projections::{Projector, ProjectorOptions};
use serde_json::{json, Value};
use workflowops::command::bus::CommandBus;
use workflowops::command::domain::Domain;

use crate::api::Api;
use crate::conformance::register;
use crate::read_models::{dump, empty_read_models, event_count, head, rows_of, workload};
use crate::support::{admin, both_backends, ctx, id, Kind, TestStore};

both_backends!(
    ready_reports_a_rebuild_in_progress,
    live_rebuild_never_serves_emptier_read_models,
    second_rebuild_is_refused_and_a_crashed_one_taken_over,
    appends_during_a_live_rebuild_all_reach_the_read_models
);

const WAIT: Duration = Duration::from_secs(30);
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Small batches, so that a rebuild of a few thousand events takes many steps (and
/// the clients many requests) instead of one.
const SMALL_BATCHES: i64 = 100;

/// What a client of one tenant sees in one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    environments: usize,
    pipelines: usize,
    audit: usize,
    matrix_rows: usize,
    matrix_cells: usize,
    incidents: usize,
}

impl Counts {
    fn at_least(&self, other: &Counts) -> bool {
        self.environments >= other.environments
            && self.pipelines >= other.pipelines
            && self.audit >= other.audit
            && self.matrix_rows >= other.matrix_rows
            && self.matrix_cells >= other.matrix_cells
            && self.incidents >= other.incidents
    }
}

const FIELDS: &str = "environments{ARGS} { id }
    pipelines(first: 100{MORE}) { nodes { id } }
    auditTrail(first: 200{MORE}) { nodes { position } }
    workflowMatrix(first: 100{MORE}) { nodes { name cells { mappingStatus } } }
    incidents(first: 100{MORE}) { nodes { id } }";

/// One request for every read model the test watches. `tag` makes the request body
/// unique, so the response cache never answers it: each answer is read from the
/// tables. With `min_position`, the answer waits for the read models to reach it.
async fn counts(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tag: u64,
    min_position: Option<i64>,
) -> Counts {
    let query = match min_position {
        None => format!(
            "{{ {} }} # {tag}",
            FIELDS.replace("{ARGS}", "").replace("{MORE}", "")
        ),
        Some(_) => format!(
            "query($p: Int) {{ {} }} # {tag}",
            FIELDS
                .replace("{ARGS}", "(minPosition: $p)")
                .replace("{MORE}", ", minPosition: $p")
        ),
    };
    let response = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": { "p": min_position } }))
        .send()
        .await
        .expect("POST /graphql");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    let data = &body["data"];
    let len = |v: &Value| v.as_array().map_or(0, Vec::len);
    let rows = data["workflowMatrix"]["nodes"].as_array().unwrap();
    Counts {
        environments: len(&data["environments"]),
        pipelines: len(&data["pipelines"]["nodes"]),
        audit: len(&data["auditTrail"]["nodes"]),
        matrix_rows: rows.len(),
        matrix_cells: rows
            .iter()
            .flat_map(|r| r["cells"].as_array().unwrap())
            .filter(|c| c["mappingStatus"] != "ABSENT")
            .count(),
        incidents: len(&data["incidents"]["nodes"]),
    }
}

/// Clients of every tenant querying in a loop until stopped: the fewest of each
/// count any answer had, and how many answers there were.
struct Clients {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    fewest: Arc<Mutex<BTreeMap<&'static str, Counts>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(api: &Api) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let fewest: Arc<Mutex<BTreeMap<&'static str, Counts>>> = Default::default();
        let tasks = TENANTS
            .iter()
            .map(|&tenant| {
                let (stop, requests, fewest) = (stop.clone(), requests.clone(), fewest.clone());
                let (http, base) = (api.http.clone(), api.base.clone());
                let token = api.token(tenant, "viewer", "watcher");
                tokio::spawn(async move {
                    let mut tag = 0;
                    while !stop.load(Ordering::SeqCst) {
                        tag += 1;
                        let seen = counts(&http, &base, &token, tag, None).await;
                        requests.fetch_add(1, Ordering::SeqCst);
                        let mut fewest = fewest.lock().unwrap();
                        let entry = fewest.entry(tenant).or_insert(seen);
                        *entry = Counts {
                            environments: entry.environments.min(seen.environments),
                            pipelines: entry.pipelines.min(seen.pipelines),
                            audit: entry.audit.min(seen.audit),
                            matrix_rows: entry.matrix_rows.min(seen.matrix_rows),
                            matrix_cells: entry.matrix_cells.min(seen.matrix_cells),
                            incidents: entry.incidents.min(seen.incidents),
                        };
                    }
                })
            })
            .collect();
        Clients {
            stop,
            requests,
            fewest,
            tasks,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    async fn stop(self) -> BTreeMap<&'static str, Counts> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a client failed");
        }
        let fewest = self.fewest.lock().unwrap().clone();
        fewest
    }
}

async fn baseline(api: &Api) -> BTreeMap<&'static str, Counts> {
    let mut all = BTreeMap::new();
    for tenant in TENANTS {
        let token = api.token(tenant, "viewer", "watcher");
        all.insert(tenant, counts(&api.http, &api.base, &token, 0, None).await);
    }
    let total = |f: fn(&Counts) -> usize| all.values().map(f).sum::<usize>();
    for (what, n) in [
        ("environments", total(|c| c.environments)),
        ("pipelines", total(|c| c.pipelines)),
        ("audit entries", total(|c| c.audit)),
        ("matrix rows", total(|c| c.matrix_rows)),
        ("matrix cells", total(|c| c.matrix_cells)),
        ("incidents", total(|c| c.incidents)),
    ] {
        assert!(
            n > 0,
            "the workload left no {what}: the test would prove nothing"
        );
    }
    all
}

fn stage(source: &str, target: &str) -> PipelineStage {
    PipelineStage::new(source, target, StageGates::default())
}

async fn create_pipeline(bus: &CommandBus, tenant: &str, pipeline_id: &str) {
    bus.execute::<Pipeline, _>(
        &admin(tenant),
        &[&id(pipeline_id)],
        PipelineCommand::Create {
            name: format!("Pipeline {pipeline_id}"),
            description: None,
            stages: vec![stage("prod", "staging")],
        },
        false,
        &(),
    )
    .await
    .expect("create a pipeline");
}

/// A few thousand events through the command path: environments, canonical
/// workflows, mappings, incidents, promotions (the randomized workload of the read
/// model tests), more environments and pipelines.
async fn populate(t: &TestStore, ops_per_tenant: usize, syncs_per_tenant: usize) {
    workload(t, ops_per_tenant).await;
    let domain = t.domain();
    let bus = t.bus();
    let environments = ["prod", "staging", "development"];
    for tenant in TENANTS {
        for name in ["Staging", "Development"] {
            domain
                .environment(&admin(tenant), &id(&name.to_lowercase()), register(name))
                .await
                .unwrap();
        }
        for p in 0..10 {
            create_pipeline(&bus, tenant, &format!("p{p}")).await;
        }
        for i in 0..syncs_per_tenant {
            domain
                .environment(
                    &ctx(tenant, Role::Developer),
                    &id(environments[i % environments.len()]),
                    EnvironmentCommand::RecordSync {
                        kind: SyncKind::Environment,
                        workflows_seen: i as u32,
                    },
                )
                .await
                .unwrap();
        }
    }
}

/// Every read-model table, row by row (pipelines and drift policies included).
async fn dump_all(store: &Store) -> BTreeMap<&'static str, Vec<String>> {
    let mut all = dump(store).await;
    all.insert(
        "pipelines",
        rows_of::<projections::models::pipelines::PipelineRow>(store).await,
    );
    all.insert(
        "drift_policies",
        rows_of::<projections::models::policies::DriftPolicyRow>(store).await,
    );
    all
}

async fn wait_all(api: &Api, position: i64) {
    for name in projections::NAMES {
        api.projections
            .wait_for(name, position, WAIT)
            .await
            .unwrap();
    }
}

/// The database's tables as a rebuild by the plain runtime makes them: every read
/// model emptied and replayed from position 0 in place, with no shadow and no swap
/// (the service must be stopped).
async fn plain_replay(store: &Store) -> BTreeMap<&'static str, Vec<String>> {
    empty_read_models(store).await;
    let mut projector = Projector::new(
        store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    projector.catch_up().await.unwrap();
    dump_all(store).await
}

/// [`populate`]s, brings every read model up to date (as a service would have), and
/// returns their tables.
async fn populated(
    t: &TestStore,
    ops_per_tenant: usize,
    syncs_per_tenant: usize,
) -> BTreeMap<&'static str, Vec<String>> {
    populate(t, ops_per_tenant, syncs_per_tenant).await;
    let mut live = Projector::new(
        t.store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    );
    live.catch_up().await.unwrap();
    drop(live);
    dump_all(&t.store).await
}

/// PostgreSQL: the read models' indexes (name and definition), and per table whether
/// it is logged and whether it was analyzed (`reltuples` is -1 until then). Empty on SQLite.
type Layout = (Vec<(String, String)>, Vec<(String, bool, bool)>);

async fn layout(store: &Store) -> Layout {
    let Store::Postgres(PgStore { pool, .. }) = store else {
        return Layout::default();
    };
    let tables: Vec<String> = projections::all()
        .iter()
        .flat_map(|p| p.tables().iter().map(|t| t.to_string()))
        .collect();
    let indexes = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename = ANY($1) ORDER BY 1",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .unwrap();
    let persistence = sqlx::query_as(
        "SELECT c.relname::text, c.relpersistence = 'p', \
                c.reltuples >= 0 \
         FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace \
           AND c.relname = ANY($1) ORDER BY 1",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .unwrap();
    (indexes, persistence)
}

/// Where the rebuilds' shadows would be: PostgreSQL schemas, or SQLite files next to
/// the database.
async fn shadows(t: &TestStore) -> Vec<String> {
    match &t.store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'workflowops\\_rebuild\\_%'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Store::Sqlite(_) => {
            // the database file and its -wal and -shm files count once
            let path = t.url.trim_start_matches("sqlite://");
            let dir = std::path::Path::new(path).parent().unwrap();
            let mut files: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".rebuild-"))
                .map(|name| {
                    let base = ["-wal", "-shm", "-journal"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix));
                    base.unwrap_or(&name).to_string()
                })
                .collect();
            files.sort();
            files.dedup();
            files
        }
    }
}

/// The service serves; a separate connection (as the CLI) rebuilds every read model,
/// then one of them, while clients of three tenants query in a loop. No answer has
/// fewer environments, pipelines, audit entries, matrix rows or cells, or incidents
/// than before; the tables come out equal; `minPosition` at the head answers with
/// complete data; and the service notices each swap without any new append.
async fn live_rebuild_never_serves_emptier_read_models(kind: Kind) {
    let api = Api::start(kind).await;
    populate(&api.store, 700, 500).await;
    let events = event_count(&api.store.store).await;
    let last = head(&api.store.store).await;
    assert!(events > 2000, "a few thousand events ({events})");
    wait_all(&api, last).await;
    let before = baseline(&api).await;
    let tables_before = dump_all(&api.store.store).await;
    let layout_before = layout(&api.store.store).await;
    let version_before = api
        .projections
        .read_version()
        .expect("every projection runs here");
    let generations = |api: &Api| -> BTreeMap<String, i64> {
        api.projections
            .status()
            .into_iter()
            .map(|s| (s.name, s.generation))
            .collect()
    };
    assert!(generations(&api).values().all(|g| *g == 0));

    let elsewhere = Store::connect(&api.store.url, 8).await.unwrap();
    let clients = Clients::start(&api);
    let options = RebuildOptions {
        batch_size: SMALL_BATCHES,
        ..RebuildOptions::default()
    };
    let requests_before = clients.requests();
    let all = workflowops::read_side::rebuild_with(&elsewhere, &[], options.clone())
        .await
        .expect("rebuild every read model");
    let one = workflowops::read_side::rebuild_with(
        &elsewhere,
        &[projections::models::environments::NAME.to_string()],
        options,
    )
    .await
    .expect("rebuild one read model");
    let during = clients.requests() - requests_before;
    let fewest = clients.stop().await;

    assert!(
        during >= 20,
        "the clients asked only {during} times during the rebuilds"
    );
    for tenant in TENANTS {
        assert!(
            fewest[tenant].at_least(&before[tenant]),
            "{tenant}: an answer during the rebuild had less than the log: {:?} < {:?}",
            fewest[tenant],
            before[tenant]
        );
    }
    assert_eq!(all.events as usize, events, "{all:?}");
    assert_eq!(one.events as usize, events, "{one:?}");
    assert_eq!(all.projections.len(), projections::NAMES.len());
    assert_eq!(
        all.rows_copied, 0,
        "the rebuilt read models equal the live ones"
    );
    let tables: usize = projections::all().iter().map(|p| p.tables().len()).sum();
    match kind {
        // every table moved into place, with the migrations' index names and
        // definitions, logged (a crash keeps it), and with planner statistics
        Kind::Postgres => {
            assert_eq!(all.tables_moved as usize, tables, "{all:?}");
            assert_eq!(one.tables_moved, 2, "{one:?}");
            let after = layout(&api.store.store).await;
            assert_eq!(after.0, layout_before.0, "the same indexes, by name");
            assert!(
                after.1.iter().all(|(_, logged, _)| *logged),
                "{:?}",
                after.1
            );
            assert!(
                after.1.iter().all(|(_, _, analyzed)| *analyzed),
                "{:?}",
                after.1
            );
        }
        Kind::Sqlite => assert_eq!(all.tables_moved, 0, "{all:?}"),
    }
    assert_eq!(
        dump_all(&api.store.store).await,
        tables_before,
        "the rebuild reproduced the live tables"
    );

    // The service notices both swaps without any append: its status shows the new
    // generation (and the stored checkpoint), its read version moves.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = generations(&api);
        let expected = |name: &str| {
            if name == projections::models::environments::NAME {
                2
            } else {
                1
            }
        };
        if status.iter().all(|(name, g)| *g == expected(name)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not notice the swaps: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = projections::runtime::stored_checkpoints(&api.store.store)
        .await
        .unwrap();
    for status in api.projections.status() {
        assert_eq!(status.checkpoint, stored[&status.name].0, "{}", status.name);
    }
    assert_ne!(api.projections.read_version(), Some(version_before));
    assert_eq!(
        event_count(&api.store.store).await,
        events,
        "no append was needed"
    );

    for tenant in TENANTS {
        let token = api.token(tenant, "viewer", "watcher");
        let at_head = counts(&api.http, &api.base, &token, 1, Some(last)).await;
        assert_eq!(at_head, before[tenant], "{tenant}: minPosition at the head");
    }
    assert!(rebuild_progress(&api.store.store).await.unwrap().is_empty());
    assert!(
        shadows(&api.store).await.is_empty(),
        "the shadows were dropped"
    );
    elsewhere.close().await;
    api.stop().await;
}

/// Blocks a rebuild after its first batch until released, and tells when it got
/// there.
fn pause_after_first_batch() -> (
    RebuildOptions,
    tokio::sync::mpsc::Receiver<Vec<RebuildProgress>>,
    Arc<tokio::sync::Semaphore>,
) {
    let (reached, at) = tokio::sync::mpsc::channel(1);
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let first = Arc::new(AtomicBool::new(true));
    let options = RebuildOptions {
        batch_size: SMALL_BATCHES,
        on_progress: Some(Arc::new(move |progress| {
            let reached = reached.clone();
            let gate = gate.clone();
            let first = first.swap(false, Ordering::SeqCst);
            Box::pin(async move {
                if first && reached.send(progress).await.is_ok() {
                    let _ = gate.acquire().await.map(|permit| permit.forget());
                }
            })
        })),
    };
    (options, at, release)
}

/// A second rebuild of a projection being rebuilt is refused with a clear error;
/// a rebuild that crashed (its progress rows and shadow left behind) does not block
/// the next one once its heartbeat is stale, and its shadow goes.
async fn second_rebuild_is_refused_and_a_crashed_one_taken_over(kind: Kind) {
    let t = TestStore::new(kind).await;
    let tables = populated(&t, 150, 100).await;
    let events = event_count(&t.store).await;
    assert!(tables["audit"].len() == events && events > 500, "{events}");

    // One rebuild, paused after its first batch.
    let (options, mut reached, release) = pause_after_first_batch();
    let store = t.store.clone();
    let first =
        tokio::spawn(
            async move { workflowops::read_side::rebuild_with(&store, &[], options).await },
        );
    let progress = reached.recv().await.expect("the rebuild replays");
    assert_eq!(progress.len(), projections::NAMES.len());
    let recorded = rebuild_progress(&t.store).await.unwrap();
    assert_eq!(recorded.len(), projections::NAMES.len(), "{recorded:?}");
    for p in &recorded {
        assert!(!p.stale, "{p:?}");
        assert!(p.position > 0 && p.position < p.target, "{p:?}");
        assert!(
            p.target >= events as i64 && p.events == SMALL_BATCHES,
            "{p:?}"
        );
    }
    assert_eq!(shadows(&t).await.len(), 1);

    let second = workflowops::read_side::rebuild(
        &t.store,
        &[projections::models::incidents::NAME.to_string()],
    )
    .await
    .expect_err("a second rebuild of the same projection is refused");
    let message = format!("{second:#}");
    assert!(
        message.contains("a rebuild of incidents is already running since"),
        "{message}"
    );
    release.add_permits(1);
    let report = first.await.unwrap().expect("the first rebuild completes");
    assert_eq!(report.events as usize, events);
    assert!(rebuild_progress(&t.store).await.unwrap().is_empty());
    assert!(shadows(&t).await.is_empty());
    assert_eq!(dump_all(&t.store).await, tables);

    // A rebuild that crashes mid-way: its task is gone, its rows and shadow stay.
    let (options, mut reached, _never) = pause_after_first_batch();
    let store = t.store.clone();
    let crashed = tokio::spawn(async move {
        workflowops::read_side::rebuild_with(
            &store,
            &[projections::models::matrix::NAME.to_string()],
            options,
        )
        .await
    });
    reached.recv().await.expect("the rebuild replays");
    crashed.abort();
    let _ = crashed.await;
    let left = shadows(&t).await;
    assert_eq!(left.len(), 1, "the crash left its shadow");
    assert_eq!(rebuild_progress(&t.store).await.unwrap().len(), 1);
    // Still fresh: refused (the crash cannot be told from a slow rebuild yet).
    let refused = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .expect_err("a fresh heartbeat blocks");
    assert!(format!("{refused:#}").contains("a rebuild of workflow_matrix is already running"));
    // Its heartbeat goes stale: taken over.
    let backdate = "UPDATE projection_rebuilds SET updated_at = '2000-01-01T00:00:00.000000Z'";
    match &t.store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query(backdate).execute(pool).await.unwrap();
        }
        Store::Sqlite(s) => {
            sqlx::query(backdate).execute(&s.pool).await.unwrap();
        }
    }
    let stale = rebuild_progress(&t.store).await.unwrap();
    assert!(stale.len() == 1 && stale[0].stale, "{stale:?}");
    let report = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .expect("a stale rebuild is taken over");
    assert_eq!(report.events as usize, events);
    assert!(rebuild_progress(&t.store).await.unwrap().is_empty());
    assert!(
        shadows(&t).await.is_empty(),
        "the crashed shadow was dropped"
    );
    assert_eq!(dump_all(&t.store).await, tables);
}

/// A writer appends through the service while every read model is rebuilt from a
/// separate connection. The swap waits for or catches up with what the service
/// applied meanwhile; afterwards the live read models hold every event, equal to a
/// plain replay of the whole log, and no answer during the rebuild had less than
/// before it.
async fn appends_during_a_live_rebuild_all_reach_the_read_models(kind: Kind) {
    let mut api = Api::start(kind).await;
    populate(&api.store, 300, 200).await;
    wait_all(&api, head(&api.store.store).await).await;
    let before = baseline(&api).await;

    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = {
        let (domain, bus): (Domain, CommandBus) = (api.domain.clone(), api.store.bus());
        let (stop, appended) = (stop.clone(), appended.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let tenant = TENANTS[i % TENANTS.len()];
                domain
                    .environment(&admin(tenant), &id(&format!("w{i}")), register("Written"))
                    .await
                    .unwrap();
                create_pipeline(&bus, tenant, &format!("w{i}")).await;
                domain
                    .environment(
                        &ctx(tenant, Role::Developer),
                        &id("prod"),
                        EnvironmentCommand::RecordSync {
                            kind: SyncKind::Environment,
                            workflows_seen: i as u32,
                        },
                    )
                    .await
                    .unwrap();
                appended.fetch_add(3, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let clients = Clients::start(&api);
    let elsewhere = Store::connect(&api.store.url, 8).await.unwrap();
    let at_start = appended.load(Ordering::SeqCst);
    let report = workflowops::read_side::rebuild_with(
        &elsewhere,
        &[],
        RebuildOptions {
            batch_size: SMALL_BATCHES,
            ..RebuildOptions::default()
        },
    )
    .await
    .expect("rebuild while appends go on");
    let during = appended.load(Ordering::SeqCst) - at_start;
    // Some more after the swap, on top of the swapped-in tables.
    let after_swap = appended.load(Ordering::SeqCst);
    while appended.load(Ordering::SeqCst) < after_swap + 15 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the writer never failed");
    let fewest = clients.stop().await;
    assert!(during > 0, "appends went on during the rebuild");
    assert!(report.events > 0, "{report:?}");
    for tenant in TENANTS {
        assert!(
            fewest[tenant].at_least(&before[tenant]),
            "{tenant}: an answer during the rebuild had less than before: {:?} < {:?}",
            fewest[tenant],
            before[tenant]
        );
    }

    let last = head(&api.store.store).await;
    wait_all(&api, last).await;
    let token = api.token("acme", "viewer", "watcher");
    let at_head = counts(&api.http, &api.base, &token, 2, Some(last)).await;
    assert!(
        at_head.environments > before["acme"].environments,
        "{at_head:?}"
    );
    api.shutdown().await;
    let live = dump_all(&api.store.store).await;
    let events = event_count(&api.store.store).await;
    assert_eq!(live["audit"].len(), events, "one audit row per event");
    assert_eq!(
        live,
        plain_replay(&api.store.store).await,
        "live = a plain replay of the log"
    );
    elsewhere.close().await;
}

/// `GET /ready` lists a rebuild in progress with its progress, and stays 200: the
/// service still serves the complete old read models.
async fn ready_reports_a_rebuild_in_progress(kind: Kind) {
    let api = Api::start(kind).await;
    populate(&api.store, 150, 100).await;
    wait_all(&api, head(&api.store.store).await).await;
    let ready = || async {
        let response = api
            .http
            .get(format!("{}/ready", api.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rebuilding"], serde_json::json!([]), "{body}");

    let (options, mut reached, release) = pause_after_first_batch();
    let store = api.store.store.clone();
    let rebuild = tokio::spawn(async move {
        workflowops::read_side::rebuild_with(
            &store,
            &[projections::models::audit::NAME.to_string()],
            options,
        )
        .await
    });
    reached.recv().await.expect("the rebuild replays");
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    let rebuilding = body["rebuilding"].as_array().unwrap();
    assert_eq!(rebuilding.len(), 1, "{body}");
    let entry = &rebuilding[0];
    assert_eq!(
        entry["projection"],
        projections::models::audit::NAME,
        "{body}"
    );
    let progress = entry["progress"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 1.0, "{body}");
    assert!(entry["position"].as_i64().unwrap() < entry["target"].as_i64().unwrap());
    assert_eq!(entry["stale"], false);
    release.add_permits(1);
    rebuild.await.unwrap().expect("the rebuild completes");
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rebuilding"], serde_json::json!([]), "{body}");
    api.stop().await;
}

/// PostgreSQL moves the rebuilt tables into place: a live read-model table that
/// something depends on (here a view) cannot be moved without breaking it, so the
/// rebuild refuses before replaying anything, names the table, leaves no shadow, and
/// the live tables (and the view) are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_table_something_depends_on_is_refused_postgres() {
    let t = TestStore::new(Kind::Postgres).await;
    let tables = populated(&t, 30, 10).await;
    let Store::Postgres(PgStore { pool, .. }) = &t.store else {
        unreachable!()
    };
    sqlx::query("CREATE VIEW audit_actors AS SELECT DISTINCT actor FROM rm_audit")
        .execute(pool)
        .await
        .unwrap();

    let error = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .expect_err("a table with a view on it cannot be moved");
    let message = format!("{error:#}");
    assert!(message.contains("rm_audit"), "{message}");
    assert!(message.contains("view"), "{message}");
    assert!(shadows(&t).await.is_empty(), "{:?}", shadows(&t).await);
    assert_eq!(
        dump_all(&t.store).await,
        tables,
        "the live tables untouched"
    );
    let actors: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_actors")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(actors > 0, "the view still works");

    // Without the view the same rebuild goes through.
    sqlx::query("DROP VIEW audit_actors")
        .execute(pool)
        .await
        .unwrap();
    let report = workflowops::read_side::rebuild(&t.store, &[])
        .await
        .unwrap();
    assert!(report.tables_moved > 0, "{report:?}");
    assert_eq!(dump_all(&t.store).await, tables);
}
