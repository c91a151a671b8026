//! The schedulers (DOMAIN.md §6) against the real service, a fake n8n and a real
//! local Git repository: the drift job opens an incident and stores its snapshot,
//! the TTL job escalates the SLA one step at a time (once per step), retention
//! purges the snapshot of an incident closed long enough and appends
//! `payload_purged` while the log stays verifiable, and — on PostgreSQL — two
//! service instances on one database run each tick exactly once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eventstore::Store;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use workflowops::http::auth::Auth;
use workflowops::scheduler::{Intervals, Job, Scheduler, Tick};
use workflowops::Application;

use crate::api::{Api, SECRET, SECRET_KEY};
use crate::fakes::n8n::{sample_workflow, FakeN8n};
use crate::support::{both_backends, count_of_type, Kind};

const TENANT: &str = "acme";
const API_KEY: &str = "n8n_key_for_the_scheduler_tests_0123";

/// A repository whose `workflows/` folder holds `workflow` as exported to Git, and a
/// fake n8n running a hotfixed copy of it: drift, matched by name (no mapping yet).
async fn drifted(workflow: &Value) -> (FakeN8n, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
            .args(args)
            .current_dir(dir.path())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    let folder = dir.path().join("workflows");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("order-sync.json"),
        serde_json::to_vec_pretty(workflow).unwrap(),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "workflows"]);

    let n8n = FakeN8n::start(API_KEY).await;
    let mut hotfixed = workflow.clone();
    hotfixed["nodes"][0]["parameters"]["hotfix"] = json!("https://api-new.example.com");
    n8n.insert(hotfixed);
    (n8n, dir)
}

async fn register_production(api: &Api, admin: &str, n8n: &FakeN8n, repo: &Path) {
    api.ok(
        admin,
        "mutation($url: String!, $key: String!, $repo: String!) {
           registerEnvironment(id: \"production\", name: \"Production\", class: PRODUCTION,
             n8nBaseUrl: $url, n8nApiKey: $key,
             git: { provider: LOCAL, repository: $repo, branch: \"main\", folder: \"workflows\" }) { position } }",
        json!({ "url": n8n.base_url(), "key": API_KEY, "repo": repo.to_str().unwrap() }),
    )
    .await;
}

/// The schedulers of the service behind `api` (the same clock, store and read models).
fn scheduler(api: &Api) -> Scheduler {
    Scheduler::new(api.context.clone())
}

async fn ran(scheduler: &Scheduler, job: Job, slot: i64) -> workflowops::scheduler::RunReport {
    match scheduler.tick(job, slot).await.expect("tick") {
        Tick::Ran(report) => report,
        other => panic!("{job} slot {slot} did not run: {other:?}"),
    }
}

const INCIDENT: &str = "query($p: Int) { incidents(first: 10, minPosition: $p) { edges { node {
    id status severity slaState snapshotDigest snapshot payloadPurged } } } }";

/// The incidents, once the read model has applied everything in the log.
async fn incidents(api: &Api, token: &str) -> Vec<Value> {
    let last = api.store.store.last_position().await.unwrap();
    let data = api.ok(token, INCIDENT, json!({ "p": last })).await;
    data["incidents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn jobs_check_drift_escalate_and_purge(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "alice");
    let workflow = sample_workflow(7);
    let (n8n, repo) = drifted(&workflow).await;
    register_production(&api, &admin, &n8n, repo.path()).await;
    let jobs = scheduler(&api);

    // the drift job: one environment checked, an incident opened with its snapshot
    let report = ran(&jobs, Job::DriftCheck, 1).await;
    assert_eq!((report.visited, report.acted, report.failed), (1, 1, 0));
    // the same slot again: another process (or this one) already ran it
    assert_eq!(
        jobs.tick(Job::DriftCheck, 1).await.unwrap(),
        Tick::AlreadyRun
    );
    let open = incidents(&api, &admin).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let incident = &open[0];
    assert_eq!(
        (incident["status"].clone(), incident["severity"].clone()),
        (json!("DETECTED"), json!("LOW"))
    );
    let snapshot = &incident["snapshot"];
    assert_eq!(snapshot["with_drift"], 1, "{snapshot}");
    assert_eq!(snapshot["drifted"][0]["name"], workflow["name"]);
    assert_eq!(
        snapshot["drifted"][0]["diff"]["nodes_modified"],
        json!([workflow["nodes"][0]["name"]])
    );
    // the digest in the log is the SHA-256 of the stored payload
    let digest = incident["snapshotDigest"].as_str().unwrap().to_string();
    let stored = workflowops::storage::payloads::Payloads::new(api.store.store.clone())
        .get(TENANT, &digest)
        .await
        .unwrap()
        .expect("the payload is stored");
    assert_eq!(hex::encode(Sha256::digest(stored.as_bytes())), digest);
    // every event of the run carries its correlation id and the job as actor
    let trail = api
        .ok(
            &admin,
            "query($p: Int) { auditTrail(first: 100, minPosition: $p) {
               edges { node { eventType actor correlationId } } } }",
            json!({ "p": api.store.store.last_position().await.unwrap() }),
        )
        .await;
    let of_run: Vec<&Value> = trail["auditTrail"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["correlationId"] == report.correlation_id.as_str())
        .collect();
    assert!(of_run.len() >= 2, "drift check and detection: {trail}");
    assert!(
        of_run
            .iter()
            .all(|n| n["actor"].as_str().unwrap().starts_with("system:")),
        "{of_run:?}"
    );
    assert!(of_run
        .iter()
        .any(|n| n["eventType"] == "environment.drift_checked"));

    // the TTL job: nothing is due at first (LOW: 168 h)
    let report = ran(&jobs, Job::Sla, 1).await;
    assert_eq!((report.visited, report.acted), (0, 0));
    let clock = api.domain.bus().clock().clone();
    // 50 h in: past 25 % — escalated, one event
    clock.advance(chrono::Duration::hours(50));
    let report = ran(&jobs, Job::Sla, 2).await;
    assert_eq!((report.visited, report.acted, report.failed), (1, 1, 0));
    assert_eq!(incidents(&api, &admin).await[0]["slaState"], "ESCALATED");
    assert_eq!(
        count_of_type(&api.store.store, "incident.sla_escalated").await,
        1
    );
    // evaluated again at the same time: no step is taken twice
    let report = ran(&jobs, Job::Sla, 3).await;
    assert_eq!(report.acted, 0);
    // 170 h in: past 100 % — the two remaining steps, in order
    clock.advance(chrono::Duration::hours(120));
    ran(&jobs, Job::Sla, 4).await;
    assert_eq!(incidents(&api, &admin).await[0]["slaState"], "EXPIRED");
    assert_eq!(
        count_of_type(&api.store.store, "incident.sla_escalated").await,
        3
    );
    assert_eq!(ran(&jobs, Job::Sla, 5).await.visited, 0);

    // retention: nothing before the policy's 90 days after closing
    let id = incident["id"].as_str().unwrap();
    api.ok(
        &admin,
        "mutation($id: ID!) { closeIncident(id: $id, reason: \"reverted in n8n\",
           resolutionType: REVERT) { position } }",
        json!({ "id": id }),
    )
    .await;
    let report = ran(&jobs, Job::Retention, 1).await;
    assert_eq!((report.visited, report.payloads_deleted), (0, 0));
    assert!(incidents(&api, &admin).await[0]["snapshot"].is_object());
    clock.advance(chrono::Duration::days(91));
    let report = ran(&jobs, Job::Retention, 2).await;
    assert_eq!(
        (report.visited, report.acted, report.payloads_deleted),
        (1, 1, 1)
    );
    let purged = &incidents(&api, &admin).await[0];
    assert_eq!(purged["payloadPurged"], true);
    assert_eq!(purged["snapshot"], Value::Null);
    assert_eq!(
        purged["snapshotDigest"],
        digest.as_str(),
        "the digest stays"
    );
    assert_eq!(
        count_of_type(&api.store.store, "incident.payload_purged").await,
        1
    );
    // purged once: the next run finds nothing
    let report = ran(&jobs, Job::Retention, 3).await;
    assert_eq!((report.visited, report.payloads_deleted), (0, 0));
    // the log was never edited: every chain still verifies
    let verified = api
        .ok(&admin, "query { verifyEventLog { ok } }", json!({}))
        .await;
    assert_eq!(verified["verifyEventLog"]["ok"], true);
    api.stop().await;
}

/// A policy with `enforceSla: false` keeps its incidents on track.
async fn sla_job_honours_enforce_sla(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "alice");
    let (n8n, repo) = drifted(&sample_workflow(3)).await;
    register_production(&api, &admin, &n8n, repo.path()).await;
    api.ok(
        &admin,
        "mutation { setDriftPolicy(policy: { enforceSla: false }) { position } }",
        json!({}),
    )
    .await;
    let jobs = scheduler(&api);
    ran(&jobs, Job::DriftCheck, 1).await;
    api.domain
        .bus()
        .clock()
        .advance(chrono::Duration::hours(200));
    let report = ran(&jobs, Job::Sla, 1).await;
    assert_eq!((report.visited, report.acted), (1, 0));
    assert_eq!(incidents(&api, &admin).await[0]["slaState"], "ON_TRACK");
    assert_eq!(
        count_of_type(&api.store.store, "incident.sla_escalated").await,
        0
    );
    api.stop().await;
}

/// The periodic sync links what Git and n8n agree on and, run again, appends
/// nothing; with a revoked n8n key both jobs record the failure on the environment,
/// count it, and lose nothing.
async fn sync_job_and_upstream_failures(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "alice");
    let workflow = sample_workflow(11);
    let (n8n, repo) = drifted(&workflow).await;
    // n8n runs exactly what Git holds: in sync once linked
    let id = n8n.workflows()[0]["id"].as_str().unwrap().to_string();
    n8n.modify(&id, |w| w["nodes"] = workflow["nodes"].clone());
    register_production(&api, &admin, &n8n, repo.path()).await;
    let jobs = scheduler(&api);

    let report = ran(&jobs, Job::EnvironmentSync, 1).await;
    assert_eq!((report.visited, report.acted, report.failed), (1, 1, 0));
    let last = api.store.store.last_position().await.unwrap();
    let data = api
        .ok(
            &admin,
            "query($p: Int) { workflowMatrix(minPosition: $p) { edges { node {
               canonicalId cells { mappingStatus syncState } } } } }",
            json!({ "p": last }),
        )
        .await;
    let rows = data["workflowMatrix"]["edges"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{data}");
    assert_eq!(
        rows[0]["node"]["cells"][0],
        json!({ "mappingStatus": "LINKED", "syncState": "IN_SYNC" })
    );
    let events = api.event_count().await;
    let report = ran(&jobs, Job::EnvironmentSync, 2).await;
    assert_eq!(report.failed, 0);
    assert_eq!(
        api.event_count().await,
        events,
        "nothing new, nothing appended"
    );

    // the key is revoked in n8n's place: both jobs fail on this environment
    api.ok(
        &admin,
        "mutation { updateEnvironment(id: \"production\", n8nApiKey: \"revoked-key-0000\") { position } }",
        json!({}),
    )
    .await;
    let before = api.event_count().await;
    let report = ran(&jobs, Job::DriftCheck, 1).await;
    assert_eq!((report.visited, report.acted, report.failed), (1, 0, 1));
    let report = ran(&jobs, Job::EnvironmentSync, 3).await;
    assert_eq!((report.visited, report.acted, report.failed), (1, 0, 1));
    // one failure event each, nothing else
    assert_eq!(api.event_count().await, before + 2);
    assert_eq!(
        count_of_type(&api.store.store, "environment.drift_check_failed").await,
        1
    );
    assert_eq!(
        count_of_type(&api.store.store, "environment.sync_failed").await,
        1
    );
    let last = api.store.store.last_position().await.unwrap();
    let data = api
        .ok(
            &admin,
            "query($p: Int) { environment(id: \"production\", minPosition: $p) {
               driftStatus lastDriftCheckError lastSyncError } }",
            json!({ "p": last }),
        )
        .await;
    let environment = &data["environment"];
    assert_eq!(environment["driftStatus"], "ERROR", "{environment}");
    for field in ["lastDriftCheckError", "lastSyncError"] {
        let cause = environment[field].as_str().unwrap();
        assert!(
            cause.contains("401") || cause.to_lowercase().contains("unauthorized"),
            "{cause}"
        );
        assert!(
            !cause.contains("revoked-key"),
            "no secret in the cause: {cause}"
        );
    }
    api.stop().await;
}

both_backends!(
    retention_decides_from_the_log_not_a_read_model,
    jobs_check_drift_escalate_and_purge,
    sla_job_honours_enforce_sla,
    sync_job_and_upstream_failures
);

/// A second service process on the database of `api`, with these schedulers.
async fn instance(
    api: &Api,
    intervals: Intervals,
) -> (
    Scheduler,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let store = Store::connect(&api.store.url, 8).await.unwrap();
    let mut app = Application::with_store(store, "127.0.0.1:0".parse().unwrap(), Auth::new(SECRET))
        .await
        .unwrap();
    app.set_secret_key(SECRET_KEY);
    app.set_scheduler_intervals(intervals);
    let scheduler = app.scheduler();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (scheduler, stop, server)
}

/// Two service processes on one PostgreSQL database, both ticking the drift job every
/// 300 ms at the same slot boundaries: each tick runs once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_run_each_tick_once() {
    let api = Api::start(Kind::Postgres).await;
    let admin = api.token(TENANT, "admin", "alice");
    let (n8n, repo) = drifted(&sample_workflow(5)).await;
    // the processes share the secret key, so each can read the stored n8n key
    register_production(&api, &admin, &n8n, repo.path()).await;
    n8n.clear_requests();
    let intervals = Intervals {
        drift_check: Some(Duration::from_millis(300)),
        ..Intervals::off()
    };
    let (a, stop_a, server_a) = instance(&api, intervals).await;
    let (b, stop_b, server_b) = instance(&api, intervals).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for stop in [stop_a, stop_b] {
        let _ = stop.send(());
    }
    for server in [server_a, server_b] {
        server.await.unwrap().unwrap();
    }

    let Store::Postgres(pg) = &api.store.store else {
        unreachable!()
    };
    let ticks: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT slot, instance, outcome FROM scheduler_ticks WHERE job = 'drift_check' ORDER BY slot",
    )
    .fetch_all(&pg.pool)
    .await
    .unwrap();
    let counts = |s: &Scheduler| {
        let c = s.counts(Job::DriftCheck);
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        (
            load(&c.ran),
            load(&c.busy) + load(&c.already_run),
            load(&c.errors),
        )
    };
    let ((ran_a, skipped_a, errors_a), (ran_b, skipped_b, errors_b)) = (counts(&a), counts(&b));
    assert_eq!((errors_a, errors_b), (0, 0));
    // both tried (nearly) every slot; between them, each slot ran once
    assert!(ticks.len() >= 6, "{ticks:?}");
    assert!(ran_a + skipped_a >= 6 && ran_b + skipped_b >= 6);
    assert_eq!(ran_a + ran_b, ticks.len() as u64);
    assert!(skipped_a + skipped_b >= 6, "they did contend");
    for (slot, instance, outcome) in &ticks {
        assert!(
            instance == a.instance() || instance == b.instance(),
            "{instance}"
        );
        assert!(
            outcome
                .as_deref()
                .is_some_and(|o| o.contains("\"failed\":0")),
            "slot {slot}: {outcome:?}"
        );
    }
    // … and did its work once: one recorded check and one read of n8n per tick
    assert_eq!(
        count_of_type(&api.store.store, "environment.drift_checked").await,
        ticks.len() as i64
    );
    let lists = n8n
        .requests()
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.path == "/api/v1/workflows")
        .count();
    assert_eq!(lists, ticks.len());
    api.stop().await;
}

/// While another session holds a job's advisory lock, a tick of that job is `Busy`
/// and claims nothing; a tick cancelled mid-run (its future dropped) gives the lock
/// up with its session, so the job is not blocked for every process afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_skips_and_a_cancelled_tick_releases_it() {
    let api = Api::start(Kind::Postgres).await;
    let admin = api.token(TENANT, "admin", "alice");
    let (n8n, repo) = drifted(&sample_workflow(2)).await;
    register_production(&api, &admin, &n8n, repo.path()).await;
    let jobs = scheduler(&api);
    let Store::Postgres(pg) = &api.store.store else {
        unreachable!()
    };
    let mut other = pg.pool.acquire().await.unwrap();
    let lock = "SELECT pg_try_advisory_lock(hashtextextended('workflowops.scheduler.sla', 0))";
    let held: bool = sqlx::query_scalar(lock)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(held);
    assert_eq!(jobs.tick(Job::Sla, 1).await.unwrap(), Tick::Busy);
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(matches!(
        jobs.tick(Job::Sla, 1).await.unwrap(),
        Tick::Ran(_)
    ));

    // a drift check stuck on a slow n8n, cancelled while it holds the lock
    n8n.slow_next(1, Duration::from_secs(3));
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), jobs.tick(Job::DriftCheck, 1)).await;
    assert!(cancelled.is_err(), "the tick was still running");
    // the session that held the lock is closed: another process gets the lock
    let elsewhere = Scheduler::new(workflowops::AppContext {
        store: Store::connect(&api.store.url, 4).await.unwrap(),
        ..api.context.clone()
    });
    let mut ran = None;
    for _ in 0..50 {
        match elsewhere.tick(Job::DriftCheck, 2).await.unwrap() {
            Tick::Busy => tokio::time::sleep(Duration::from_millis(100)).await,
            other => {
                ran = Some(other);
                break;
            }
        }
    }
    assert!(matches!(ran, Some(Tick::Ran(_))), "{ran:?}");
    api.stop().await;
}

/// Retention never deletes evidence because a read model is empty: with the
/// incidents table emptied (as a rebuild may leave it for a moment), the payload of
/// an open incident survives, and a closed one past its retention is still purged.
async fn retention_decides_from_the_log_not_a_read_model(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "alice");
    let (n8n, repo) = drifted(&sample_workflow(7)).await;
    register_production(&api, &admin, &n8n, repo.path()).await;
    let jobs = scheduler(&api);
    assert_eq!(ran(&jobs, Job::DriftCheck, 1).await.acted, 1);
    let incident = incidents(&api, &admin).await[0].clone();
    let digest = incident["snapshotDigest"].as_str().unwrap().to_string();
    let payloads = workflowops::storage::payloads::Payloads::new(api.store.store.clone());
    let empty_read_model = || async {
        let mut sql = eventstore::sql::Sql::new(eventstore::sql::Dialect::of(&api.store.store));
        sql.push("DELETE FROM rm_incidents");
        sql.execute(&api.store.store).await.unwrap();
    };

    // open, past the grace for unreferenced payloads, read model gone: kept
    let clock = api.domain.bus().clock().clone();
    clock.advance(chrono::Duration::days(2));
    empty_read_model().await;
    let report = ran(&jobs, Job::Retention, 1).await;
    assert_eq!((report.visited, report.payloads_deleted), (0, 0));
    assert!(payloads.get(TENANT, &digest).await.unwrap().is_some());

    // closed 91 days ago, read model gone again: purged from what the log says
    api.ok(
        &admin,
        "mutation($id: ID!) { closeIncident(id: $id, reason: \"reverted in n8n\",
           resolutionType: REVERT) { position } }",
        json!({ "id": incident["id"] }),
    )
    .await;
    clock.advance(chrono::Duration::days(91));
    empty_read_model().await;
    let report = ran(&jobs, Job::Retention, 2).await;
    assert_eq!(
        (report.visited, report.acted, report.payloads_deleted),
        (1, 1, 1)
    );
    assert!(payloads.get(TENANT, &digest).await.unwrap().is_none());
    assert_eq!(
        count_of_type(&api.store.store, "incident.payload_purged").await,
        1
    );
    api.stop().await;
}
