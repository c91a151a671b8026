//! Whole scenarios through the API against the fake n8n and the fake GitHub (the
//! service reads GitHub through its `github_api_url`, pointed at the fake):
//!
//! - Scenario 1 of the walkthroughs (first-time setup of a staging environment with
//!   Git sync): Git → canonical workflows, n8n → mappings (auto-linked by hash, over
//!   several pages of n8n's listing), the drift check's counts, incident and status,
//!   the matrix of the final state, idempotent re-syncs, and no credential anywhere;
//! - bad input on sync: files that are not JSON or not workflows, bad and
//!   duplicate sidecars, workflows n8n would never produce: each reported with its
//!   cause while the rest of the sync proceeds and nothing recorded is lost;
//! - upstream faults (GitHub and n8n) on `syncRepository`, `syncEnvironment` and
//!   `checkDrift`: only the failure is recorded, the matrix is exactly as before,
//!   `UPSTREAM` with the right `retryable`, and the next call works.

use std::time::Duration;

use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use axum::http::Method;
use eventstore::{PgStore, SqliteStore, Store};
use serde_json::{json, Value};
use workflowops::command::bus::CommandContext;
use workflowops::connectors::{RetryPolicy, UpstreamError};
use workflowops::workflows::sync::SyncError;
use workflowops::AppContext;

use crate::api::{code, Api};
use crate::fakes::github::{self, FakeGitHub};
use crate::fakes::n8n::{self, sample_workflow, FakeN8n};
use crate::support::{both_backends, Kind};

const TENANT: &str = "acme";
const API_KEY: &str = "n8n_api_key_SCENARIO_0123456789";
const GH_TOKEN: &str = "ghp_scenarioTOKEN0123456789abcdef";
const ENV: &str = "staging";

const SYNC_ENV: &str = "mutation { syncEnvironment(environmentId: \"staging\") {
    position workflowsSeen discovered changed linked missing collisions rejected events } }";
const SYNC_REPO: &str = "mutation { syncRepository(environmentId: \"staging\") {
    position commitSha filesSeen created renamed updated mappingsUpdated rejected events } }";
const CHECK_DRIFT: &str = "mutation { checkDrift(environmentId: \"staging\") {
    position inSync withDrift notInGit
    drifted { workflowId n8nWorkflowId name matchedByName
              diff { nodesAdded nodesRemoved nodesModified connectionsChanged settingsChanged } }
    notInGitWorkflows
    incident { id status severity affectedWorkflows { workflowId name } }
    environment { driftStatus counts { inSync withDrift notInGit } activeIncident { id } } } }";
const MATRIX: &str = "query($p: Int) { workflowMatrix(first: 200, minPosition: $p) {
    pageInfo { hasNextPage }
    edges { node { canonicalId slug name untracked gitPath gitContentHash gitCommitSha
      cells { environmentId mappingStatus syncState n8nWorkflowId name envContentHash
              gitContentHash since envChangedAt } } } } }";
const ENVIRONMENT: &str = "query($p: Int) { environment(id: \"staging\", minPosition: $p) {
    driftStatus gitConfigured onboarded counts { inSync withDrift notInGit } linkedMappings
    activeIncident { id status severity } lastSyncAt lastRepositorySyncAt
    lastSyncError lastRepositorySyncError lastDriftCheckError } }";

// ---- fixtures ----

/// A workflow as Git holds it: exported from n8n, without the instance's fields.
pub(crate) fn exported(workflow: &Value) -> Value {
    let mut exported = workflow.clone();
    for key in [
        "id",
        "createdAt",
        "updatedAt",
        "versionId",
        "active",
        "isArchived",
        "triggerCount",
        "meta",
        "pinData",
        "tags",
        "staticData",
    ] {
        exported.as_object_mut().unwrap().remove(key);
    }
    exported
}

pub(crate) fn pretty(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap();
    bytes.push(b'\n');
    bytes
}

/// A sidecar as Scenario 1 shows it (with a field the service does not read).
fn sidecar(canonical_id: &str, slug: &str) -> Vec<u8> {
    pretty(&json!({
        "canonical_id": canonical_id,
        "canonical_slug": slug,
        "tags": ["staging"],
        "created_by": "admin@example.com",
    }))
}

/// Commits these files to the fake GitHub's `main`; returns the commit sha.
fn commit(github: &FakeGitHub, files: Vec<(&str, Vec<u8>)>, message: &str) -> String {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    github.put_files(&files, message)
}

/// The slug of a workflow name: lowercase words joined by `-`.
fn slugify(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

fn name_of(workflow: &Value) -> String {
    workflow["name"].as_str().unwrap().to_string()
}

/// Registers `staging`: n8n at the fake (with its key), Git in the fake GitHub's
/// repository (with its token), folder `folder`.
async fn register_staging(api: &Api, admin: &str, n8n: &FakeN8n, github: &FakeGitHub) -> Value {
    api.ok(
        admin,
        "mutation($url: String!, $key: String!, $token: String!, $repo: String!) {
           registerEnvironment(id: \"staging\", name: \"Staging\", class: STAGING,
             n8nBaseUrl: $url, n8nApiKey: $key, gitToken: $token,
             git: { provider: GITHUB, repository: $repo, branch: \"main\", folder: \"staging\" }) {
             position environment { id class driftStatus gitConfigured onboarded } } }",
        json!({
            "url": n8n.base_url(),
            "key": API_KEY,
            "token": GH_TOKEN,
            "repo": github.repository(),
        }),
    )
    .await
}

/// The whole matrix, once the read model has applied everything so far.
async fn matrix(api: &Api, token: &str) -> Value {
    let last = api.store.store.last_position().await.unwrap();
    let data = api.ok(token, MATRIX, json!({ "p": last })).await;
    assert_eq!(data["workflowMatrix"]["pageInfo"]["hasNextPage"], false);
    data["workflowMatrix"].clone()
}

fn rows(matrix: &Value) -> Vec<Value> {
    matrix["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// The row of a canonical workflow.
fn canonical_row(matrix: &Value, canonical_id: &str) -> Value {
    rows(matrix)
        .into_iter()
        .find(|r| r["canonicalId"] == canonical_id)
        .unwrap_or_else(|| panic!("no row {canonical_id} in {matrix}"))
}

/// The staging cell of the row holding n8n workflow `n8n_id`.
fn cell_of(matrix: &Value, n8n_id: &str) -> (Value, Value) {
    for row in rows(matrix) {
        for cell in row["cells"].as_array().unwrap() {
            if cell["environmentId"] == ENV && cell["n8nWorkflowId"] == n8n_id {
                return (row.clone(), cell.clone());
            }
        }
    }
    panic!("no cell for {n8n_id} in {matrix}")
}

/// The environment, once its read model has applied everything so far.
async fn environment(api: &Api, token: &str) -> Value {
    let last = api.store.store.last_position().await.unwrap();
    let data = api.ok(token, ENVIRONMENT, json!({ "p": last })).await;
    data["environment"].clone()
}

/// `(event type, payload and metadata)` of every stored event after `position`, in
/// position order: straight from the table (the gap-safe reader holds back events
/// while any other transaction is open on PostgreSQL).
async fn events_after(api: &Api, position: i64) -> Vec<(String, String)> {
    let sql = "SELECT event_type, CAST(payload AS text) || ' ' || CAST(metadata AS text) \
               FROM events WHERE position > ";
    match &api.store.store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query_as(&format!("{sql} $1 ORDER BY position"))
                .bind(position)
                .fetch_all(pool)
                .await
                .unwrap()
        }
        Store::Sqlite(SqliteStore { pool, .. }) => {
            sqlx::query_as(&format!("{sql} ?1 ORDER BY position"))
                .bind(position)
                .fetch_all(pool)
                .await
                .unwrap()
        }
    }
}

/// The types of the events appended after `position`, in log order.
async fn event_types_after(api: &Api, position: i64) -> Vec<String> {
    events_after(api, position)
        .await
        .into_iter()
        .map(|(event_type, _)| event_type)
        .collect()
}

/// Every stored event, payload and metadata, as one string.
async fn whole_log(api: &Api) -> String {
    let events = events_after(api, 0).await;
    assert!(!events.is_empty());
    events
        .into_iter()
        .map(|(event_type, text)| format!("{event_type} {text}\n"))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

/// The error of an operation that must fail with `UPSTREAM` (and no data).
async fn upstream(api: &Api, token: &str, query: &str, retryable: bool) -> Value {
    let body = api.gql(token, query, json!({})).await;
    let error = body["errors"][0].clone();
    assert_eq!(code(&error), "UPSTREAM", "{body}");
    assert_eq!(
        error["extensions"]["retryable"], retryable,
        "retryable should be {retryable}: {error}"
    );
    assert_eq!(body["data"], Value::Null, "{body}");
    error
}

/// A drift check that cannot read n8n or Git: `UPSTREAM` (with `retryable`), only
/// `environment.drift_check_failed` appended, the status `ERROR` and the last counts
/// kept. Returns the error and the environment.
async fn failed_drift_check(api: &Api, token: &str, retryable: bool) -> (Value, Value) {
    let before = baseline(api, token).await;
    let counts = environment(api, token).await["counts"].clone();
    assert!(
        counts["inSync"].is_number(),
        "an earlier check left counts: {counts}"
    );
    let error = upstream(api, token, CHECK_DRIFT, retryable).await;
    assert_only_appended(api, token, &before, &["environment.drift_check_failed"]).await;
    let env = environment(api, token).await;
    assert_eq!(env["driftStatus"], "ERROR", "{env}");
    assert_eq!(env["counts"], counts, "the last counts stay");
    (error, env)
}

/// What the store and the matrix looked like at some point.
struct Baseline {
    position: i64,
    events: i64,
    matrix: Value,
}

async fn baseline(api: &Api, token: &str) -> Baseline {
    let matrix = matrix(api, token).await;
    Baseline {
        position: api.store.store.last_position().await.unwrap(),
        events: api.event_count().await,
        matrix,
    }
}

/// Since `before`: exactly the events `expected` (by type, in order) were appended,
/// and the matrix (canonical workflows, mappings, hashes, times) is as it was.
async fn assert_only_appended(api: &Api, token: &str, before: &Baseline, expected: &[&str]) {
    let appended = event_types_after(api, before.position).await;
    assert_eq!(appended, expected, "events appended");
    assert_eq!(
        api.event_count().await,
        before.events + expected.len() as i64
    );
    assert_eq!(
        matrix(api, token).await,
        before.matrix,
        "the matrix is exactly as before"
    );
}

// ---- 1. Scenario 1 ----

/// Scenario 1: an admin registers a staging environment (n8n + a GitHub repository),
/// then the first syncs discover what both hold and the drift check reports it.
async fn first_time_setup_with_github_sync(kind: Kind) {
    let github = FakeGitHub::start(GH_TOKEN).await;
    let api = Api::start_with_github(kind, Some(github.base_url())).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;
    // two workflows per page: the service's listing (limit=250) has to follow cursors
    n8n.set_page_size_cap(2);
    let mut responses: Vec<String> = Vec::new();

    // n8n runs 4 workflows as Git has them, 2 changed since they were committed,
    // and 3 that were never committed
    let identical: Vec<String> = (10..14).map(|n| n8n.insert(sample_workflow(n))).collect();
    let modified: Vec<String> = (20..22).map(|n| n8n.insert(sample_workflow(n))).collect();
    let not_in_git: Vec<String> = (30..33).map(|n| n8n.insert(sample_workflow(n))).collect();

    // Git's `staging/` folder: those 6 as committed (each with its sidecar but the
    // first, whose canonical id is then its slug) and one staging does not run
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut canonical_of: Vec<(String, String, String)> = Vec::new(); // (n8n id, canonical id, slug)
    for (i, id) in identical.iter().chain(&modified).enumerate() {
        let workflow = n8n.workflow(id).unwrap();
        let slug = slugify(&name_of(&workflow));
        let canonical_id = if i == 0 {
            slug.clone()
        } else {
            format!("canon-uuid-{i:03}")
        };
        files.push((format!("staging/{slug}.json"), pretty(&exported(&workflow))));
        if i != 0 {
            files.push((
                format!("staging/{slug}.wfo.json"),
                sidecar(&canonical_id, &slug),
            ));
        }
        canonical_of.push((id.clone(), canonical_id, slug));
    }
    let git_only = sample_workflow(40);
    let git_only_slug = slugify(&name_of(&git_only));
    files.push((
        format!("staging/{git_only_slug}.json"),
        pretty(&exported(&git_only)),
    ));
    files.push((
        format!("staging/{git_only_slug}.wfo.json"),
        sidecar("canon-uuid-040", &git_only_slug),
    ));
    let files = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    let head = commit(&github, files, "Add the staging workflows");

    // the two hotfixes made in staging's n8n after the commit
    let hotfixed_node = n8n.workflow(&modified[0]).unwrap()["nodes"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    n8n.modify(&modified[0], |w| {
        w["nodes"][1]["parameters"]["hotfix"] = json!("https://api-new.example.com");
    });
    n8n.modify(&modified[1], |w| {
        w["nodes"].as_array_mut().unwrap().push(json!({
            "id": "5f0c6a4e-0000-4000-8000-000000000001",
            "name": "Audit Log",
            "type": "n8n-nodes-base.noOp",
            "typeVersion": 1,
            "position": [1200, 300],
            "parameters": {},
        }));
    });

    // the admin registers the environment: not onboarded yet, so NEW
    let data = register_staging(&api, &admin, &n8n, &github).await;
    responses.push(data.to_string());
    let environment_created = &data["registerEnvironment"]["environment"];
    assert_eq!(environment_created["driftStatus"], "NEW", "{data}");
    assert_eq!(environment_created["gitConfigured"], true);
    assert_eq!(environment_created["onboarded"], false);

    // Git → canonical workflows: 7 files, 7 canonical workflows, ids from the sidecars
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    responses.push(data.to_string());
    let report = &data["syncRepository"];
    assert_eq!(report["commitSha"], head, "{report}");
    assert_eq!(report["filesSeen"], 7, "{report}");
    assert_eq!(report["created"], 7, "{report}");
    assert_eq!(report["rejected"], json!([]), "{report}");
    assert_eq!(report["mappingsUpdated"], 0, "{report}");
    let m = matrix(&api, &developer).await;
    assert_eq!(rows(&m).len(), 7, "{m}");
    for (_, canonical_id, slug) in &canonical_of {
        let row = canonical_row(&m, canonical_id);
        assert_eq!(row["slug"], slug.as_str(), "{row}");
        assert_eq!(row["gitPath"], format!("staging/{slug}.json"), "{row}");
        assert_eq!(row["gitCommitSha"], head, "{row}");
        assert_eq!(row["untracked"], false);
        assert_eq!(row["cells"][0]["mappingStatus"], "ABSENT", "{row}");
    }
    canonical_row(&m, "canon-uuid-040");

    // n8n → mappings: 9 workflows over 5 pages; the 4 whose hash Git has are linked
    n8n.clear_requests();
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    responses.push(data.to_string());
    let report = &data["syncEnvironment"];
    assert_eq!(report["workflowsSeen"], 9, "{report}");
    assert_eq!(report["discovered"], 9, "{report}");
    assert_eq!(report["linked"], 4, "{report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["changed"], 0, "{report}");
    assert_eq!(report["collisions"], json!([]), "{report}");
    assert_eq!(report["rejected"], json!([]), "{report}");
    let listings: Vec<n8n::Request> = n8n
        .requests_to(Method::GET, "/workflows")
        .into_iter()
        .filter(|r| r.path == "/api/v1/workflows")
        .collect();
    assert_eq!(listings.len(), 5, "9 workflows, 2 per page: {listings:?}");
    assert!(listings.iter().all(|r| r.authorized && r.status == 200));
    assert!(listings
        .iter()
        .all(|r| r.param("limit").as_deref() == Some("250")));
    assert_eq!(
        listings
            .iter()
            .filter(|r| r.param("cursor").is_some())
            .count(),
        4,
        "every page after the first is asked for by its cursor"
    );

    // Git again: the 4 auto-linked mappings learned their Git hash when linked
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    responses.push(data.to_string());
    let report = &data["syncRepository"];
    assert_eq!(report["mappingsUpdated"], 0, "{report}");
    assert_eq!(
        (report["created"].clone(), report["updated"].clone()),
        (json!(0), json!(0)),
        "{report}"
    );

    // the matrix: linked and in sync where n8n has Git's content; untracked otherwise
    let m = matrix(&api, &developer).await;
    responses.push(m.to_string());
    for (n8n_id, canonical_id, _) in &canonical_of[..4] {
        let (row, cell) = cell_of(&m, n8n_id);
        assert_eq!(row["canonicalId"], canonical_id.as_str(), "{row}");
        assert_eq!(cell["mappingStatus"], "LINKED", "{cell}");
        assert_eq!(cell["syncState"], "IN_SYNC", "{cell}");
        assert_eq!(cell["envContentHash"], row["gitContentHash"], "{row}");
        assert_eq!(cell["gitContentHash"], row["gitContentHash"], "{row}");
    }
    for n8n_id in modified.iter().chain(&not_in_git) {
        let (row, cell) = cell_of(&m, n8n_id);
        assert_eq!(row["untracked"], true, "{row}");
        assert_eq!(row["canonicalId"], Value::Null, "{row}");
        assert_eq!(cell["mappingStatus"], "UNTRACKED", "{cell}");
    }
    // the canonical workflows of the hotfixed ones and the Git-only one: nothing
    // linked in staging
    for canonical_id in canonical_of[4..]
        .iter()
        .map(|(_, c, _)| c.as_str())
        .chain(["canon-uuid-040"])
    {
        let row = canonical_row(&m, canonical_id);
        assert_eq!(row["cells"][0]["mappingStatus"], "ABSENT", "{row}");
    }
    let all = rows(&m);
    assert_eq!(all.len(), 7 + 5, "7 canonical rows and 5 untracked: {m}");
    assert_eq!(all.iter().filter(|r| r["untracked"] == true).count(), 5);
    let linked = all
        .iter()
        .filter(|r| r["cells"][0]["mappingStatus"] == "LINKED")
        .count();
    assert_eq!(linked, 4);

    // nothing new on either side: nothing appended
    let before = api.event_count().await;
    for query in [SYNC_REPO, SYNC_ENV] {
        let data = api.ok(&developer, query, json!({})).await;
        let report = data.as_object().unwrap().values().next().unwrap();
        assert_eq!(report["events"], 0, "{report}");
        assert_eq!(report["position"], Value::Null, "{report}");
    }
    assert_eq!(api.event_count().await, before);

    // the drift check: 4 in sync, the 2 hotfixes drifted (matched to Git by name:
    // they have no link), 3 not in Git; 2 affected workflows make a MEDIUM incident
    let data = api.ok(&developer, CHECK_DRIFT, json!({})).await;
    responses.push(data.to_string());
    let check = &data["checkDrift"];
    assert_eq!(
        (
            check["inSync"].clone(),
            check["withDrift"].clone(),
            check["notInGit"].clone()
        ),
        (json!(4), json!(2), json!(3)),
        "{check}"
    );
    let drifted = check["drifted"].as_array().unwrap();
    assert_eq!(drifted.len(), 2, "{check}");
    for (n8n_id, diff) in [
        (
            &modified[0],
            json!({ "nodesAdded": [], "nodesRemoved": [], "nodesModified": [hotfixed_node],
                    "connectionsChanged": false, "settingsChanged": false }),
        ),
        (
            &modified[1],
            json!({ "nodesAdded": ["Audit Log"], "nodesRemoved": [], "nodesModified": [],
                    "connectionsChanged": false, "settingsChanged": false }),
        ),
    ] {
        let entry = drifted
            .iter()
            .find(|d| d["n8nWorkflowId"] == n8n_id.as_str())
            .unwrap_or_else(|| panic!("{n8n_id} not drifted: {check}"));
        assert_eq!(entry["matchedByName"], true, "{entry}");
        assert_eq!(entry["workflowId"], n8n_id.as_str(), "{entry}");
        assert_eq!(entry["diff"], diff, "{entry}");
    }
    assert_eq!(
        sorted(strings(&check["notInGitWorkflows"])),
        sorted(not_in_git.clone())
    );
    let incident = &check["incident"];
    assert_eq!(incident["status"], "DETECTED", "{check}");
    assert_eq!(
        incident["severity"], "MEDIUM",
        "2 affected workflows: {check}"
    );
    let affected: Vec<String> = incident["affectedWorkflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["workflowId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted(affected), sorted(modified.clone()));
    assert_eq!(
        check["environment"]["driftStatus"], "DRIFT_INCIDENT_ACTIVE",
        "{check}"
    );
    assert_eq!(
        check["environment"]["counts"],
        json!({ "inSync": 4, "withDrift": 2, "notInGit": 3 })
    );
    assert_eq!(check["environment"]["activeIncident"]["id"], incident["id"]);

    // the environment as the scenario ends: onboarded, synced, one open incident
    let env = environment(&api, &developer).await;
    responses.push(env.to_string());
    assert_eq!(env["driftStatus"], "DRIFT_INCIDENT_ACTIVE", "{env}");
    assert_eq!(env["onboarded"], true);
    assert_eq!(env["linkedMappings"], 4, "{env}");
    assert_eq!(env["activeIncident"]["severity"], "MEDIUM");
    assert!(env["lastSyncAt"].is_string() && env["lastRepositorySyncAt"].is_string());
    assert_eq!(
        (
            env["lastSyncError"].clone(),
            env["lastRepositorySyncError"].clone(),
            env["lastDriftCheckError"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    let data = api
        .ok(
            &developer,
            "{ incidents(environmentId: \"staging\") { edges { node { id severity status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["incidents"]["edges"].as_array().unwrap().len(),
        1,
        "one incident: {data}"
    );

    // syncing again after the check: still nothing new
    let before = api.event_count().await;
    for query in [SYNC_ENV, SYNC_REPO] {
        let data = api.ok(&developer, query, json!({})).await;
        let report = data.as_object().unwrap().values().next().unwrap();
        assert_eq!(report["events"], 0, "{report}");
    }
    assert_eq!(api.event_count().await, before);

    // the GitHub token was used (every request carried it) and is nowhere: not in
    // an event, the audit trail, nor a response; nor is the n8n key
    let requests = github.requests();
    assert!(!requests.is_empty() && requests.iter().all(|r| r.authorized));
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "a sync only reads Git"
    );
    let log = whole_log(&api).await;
    assert!(
        log.contains("git_secret_ref"),
        "events refer to the sealed token"
    );
    let audit = api
        .ok(
            &admin,
            "{ auditTrail(first: 200) { edges { node { actor eventType aggregateId reason } } } }",
            json!({}),
        )
        .await;
    let history = api
        .ok(
            &admin,
            "{ eventHistory(aggregateType: \"environment\", aggregateId: \"staging\") { payload metadata } }",
            json!({}),
        )
        .await;
    responses.push(audit.to_string());
    responses.push(history.to_string());
    for text in responses.iter().chain([&log]) {
        assert!(!text.contains(GH_TOKEN), "the GitHub token leaked: {text}");
        assert!(!text.contains(API_KEY), "the n8n key leaked: {text}");
    }
    api.stop().await;
}

// ---- 2. bad input ----

/// Files Git should not hold and workflows n8n would never produce: each reported
/// with its cause; everything else proceeds and nothing already recorded is lost.
async fn bad_input_is_reported_and_the_rest_proceeds(kind: Kind) {
    let github = FakeGitHub::start(GH_TOKEN).await;
    let api = Api::start_with_github(kind, Some(github.base_url())).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;

    // a clean start: alpha and beta in Git and n8n (linked), gamma only in n8n
    let alpha = n8n.insert(sample_workflow(1));
    let beta = n8n.insert(sample_workflow(2));
    let gamma = n8n.insert(sample_workflow(3));
    let alpha_git = pretty(&exported(&n8n.workflow(&alpha).unwrap()));
    let beta_git = pretty(&exported(&n8n.workflow(&beta).unwrap()));
    commit(
        &github,
        vec![
            ("staging/alpha.json", alpha_git),
            ("staging/alpha.wfo.json", sidecar("alpha-id", "alpha")),
            ("staging/beta.json", beta_git),
            ("staging/beta.wfo.json", sidecar("beta-id", "beta")),
        ],
        "alpha and beta",
    );
    register_staging(&api, &admin, &n8n, &github).await;
    api.ok(&developer, SYNC_REPO, json!({})).await;
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["linked"], 2, "{data}");
    api.ok(&developer, SYNC_REPO, json!({})).await;
    let clean = matrix(&api, &developer).await;
    for id in [&alpha, &beta] {
        assert_eq!(cell_of(&clean, id).1["syncState"], "IN_SYNC", "{clean}");
    }

    // (a) + (b): one commit of bad files next to one good new workflow
    let zeta = exported(&sample_workflow(6));
    let mut copy = exported(&sample_workflow(7));
    copy["name"] = json!("Copy of alpha");
    let bad_commit = commit(
        &github,
        vec![
            // a file that was good is now not JSON
            (
                "staging/beta.json",
                b"{ \"name\": \"Beta\", \"nodes\": [ ".to_vec(),
            ),
            // JSON, but not a workflow
            (
                "staging/notes.json",
                b"{\"title\": \"release notes\"}".to_vec(),
            ),
            // a workflow whose sidecar is not JSON
            ("staging/delta.json", pretty(&exported(&sample_workflow(4)))),
            ("staging/delta.wfo.json", b"canonical_id: delta".to_vec()),
            // a sidecar without its canonical id
            ("staging/eta.json", pretty(&exported(&sample_workflow(8)))),
            (
                "staging/eta.wfo.json",
                b"{\"canonical_slug\": \"eta\"}".to_vec(),
            ),
            // a sidecar naming an id no canonical workflow can have
            (
                "staging/epsilon.json",
                pretty(&exported(&sample_workflow(5))),
            ),
            (
                "staging/epsilon.wfo.json",
                sidecar("epsilon id!", "epsilon"),
            ),
            // a copied sidecar: alpha's canonical id again (before alpha by path)
            ("staging/aaa-copy.json", pretty(&copy)),
            ("staging/aaa-copy.wfo.json", sidecar("alpha-id", "aaa-copy")),
            // and one good new workflow
            ("staging/zeta.json", pretty(&zeta)),
            ("staging/zeta.wfo.json", sidecar("zeta-id", "zeta")),
        ],
        "bad files",
    );
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    let report = &data["syncRepository"];
    assert_eq!(report["commitSha"], bad_commit);
    assert_eq!(report["filesSeen"], 8, "{report}");
    assert_eq!(report["created"], 1, "only zeta: {report}");
    assert_eq!(report["renamed"], 0, "{report}");
    assert_eq!(report["updated"], 0, "{report}");
    assert_eq!(report["mappingsUpdated"], 0, "{report}");
    let rejected = strings(&report["rejected"]);
    assert_eq!(rejected.len(), 6, "{report}");
    for (file, cause) in [
        ("staging/beta.json", "not JSON"),
        ("staging/notes.json", "not a workflow"),
        ("staging/delta.wfo.json", "not a sidecar"),
        ("staging/eta.wfo.json", "canonical_id"),
        ("staging/epsilon.json", "invalid canonical id"),
        (
            "staging/aaa-copy.json",
            "canonical id alpha-id is already held by staging/alpha.json",
        ),
    ] {
        assert!(
            rejected
                .iter()
                .any(|r| r.starts_with(&format!("{file}:")) && r.contains(cause)),
            "{file} should be rejected for {cause:?}: {rejected:?}"
        );
    }
    // nothing recorded is lost: alpha and beta as before, zeta added, and a bad
    // input is not a failed sync
    let m = matrix(&api, &developer).await;
    for id in ["alpha-id", "beta-id"] {
        assert_eq!(canonical_row(&m, id), canonical_row(&clean, id));
    }
    assert_eq!(canonical_row(&m, "zeta-id")["gitPath"], "staging/zeta.json");
    assert_eq!(rows(&m).len(), rows(&clean).len() + 1, "{m}");
    let env = environment(&api, &developer).await;
    assert_eq!(env["lastRepositorySyncError"], Value::Null, "{env}");
    // and the next sync of the same files finds nothing new (a duplicate canonical
    // id does not move alpha back and forth between two files)
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert_eq!(data["syncRepository"]["events"], 0, "{data}");
    assert_eq!(strings(&data["syncRepository"]["rejected"]).len(), 6);

    // (c) workflows n8n would never produce, next to one good change
    let before = baseline(&api, &developer).await;
    n8n.modify(&alpha, |w| {
        w.as_object_mut().unwrap().remove("nodes");
    });
    n8n.modify(&beta, |w| {
        w.as_object_mut().unwrap().remove("name");
    });
    n8n.modify(&gamma, |w| {
        w["nodes"] = json!("Schedule Trigger, Send Email")
    });
    let mut duplicated = sample_workflow(9);
    let first = duplicated["nodes"][0].clone();
    duplicated["nodes"].as_array_mut().unwrap().push(first);
    let duplicated = n8n.insert(duplicated);
    let no_id = n8n.insert(sample_workflow(10));
    n8n.modify(&no_id, |w| {
        w.as_object_mut().unwrap().remove("id");
    });
    let mut bad_id = sample_workflow(11);
    bad_id["id"] = json!("wf 11/../x");
    n8n.insert(bad_id);
    let good = n8n.insert(sample_workflow(12));
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    let report = &data["syncEnvironment"];
    assert_eq!(report["workflowsSeen"], 7, "{report}");
    assert_eq!(report["discovered"], 1, "only the good one: {report}");
    assert_eq!(report["changed"], 0, "{report}");
    assert_eq!(
        report["missing"], 0,
        "workflows n8n still lists are not missing: {report}"
    );
    let rejected = strings(&report["rejected"]);
    assert_eq!(rejected.len(), 6, "{report}");
    let causes = [
        format!("workflow {alpha} cannot be hashed: workflow field `nodes` is invalid: is missing"),
        format!("workflow {beta} has no name"),
        format!("workflow {gamma} cannot be hashed: workflow field `nodes` is invalid: must be an array"),
        format!("workflow {duplicated} cannot be hashed: workflow has more than one node named"),
        "a workflow without an id".to_string(),
        "workflow id \"wf 11/../x\" is not a valid id".to_string(),
    ];
    for cause in &causes {
        assert!(
            rejected.iter().any(|r| r.starts_with(cause.as_str())),
            "{cause:?} should be reported: {rejected:?}"
        );
    }
    // what was recorded of alpha, beta and gamma stays; the good one is added
    let m = matrix(&api, &developer).await;
    for id in [&alpha, &beta, &gamma] {
        assert_eq!(cell_of(&m, id), cell_of(&before.matrix, id), "{id}");
    }
    assert_eq!(cell_of(&m, &good).1["mappingStatus"], "UNTRACKED");
    assert_eq!(rows(&m).len(), rows(&before.matrix).len() + 1);
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["events"], 0, "{data}");
    // the drift check leaves the same six out, with the same causes, and compares
    // the rest (the good one is not in Git)
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"staging\") { notInGitWorkflows rejected } }",
            json!({}),
        )
        .await;
    let check = &data["checkDrift"];
    let rejected = strings(&check["rejected"]);
    for cause in &causes {
        assert!(
            rejected.iter().any(|r| r.starts_with(cause.as_str())),
            "{cause:?} should be reported by the drift check: {rejected:?}"
        );
    }
    assert!(
        strings(&check["notInGitWorkflows"]).contains(&good),
        "{check}"
    );

    // a page n8n would never send (an entry that is not a workflow object): the
    // whole answer is refused, recorded as a failed sync, and nothing else changes
    let before = baseline(&api, &developer).await;
    n8n.fault_next(
        1,
        n8n::Fault::Raw {
            status: 200,
            body: json!({ "data": ["wf-1", 42], "nextCursor": null }).to_string(),
        },
    );
    let error = upstream(&api, &developer, SYNC_ENV, false).await;
    assert!(
        error["message"].as_str().unwrap().contains("not an object"),
        "{error}"
    );
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;
    let env = environment(&api, &developer).await;
    assert!(
        env["lastSyncError"]
            .as_str()
            .is_some_and(|e| e.contains("unexpected answer")),
        "{env}"
    );
    // n8n sends workflows again: the sync works and clears the failure
    n8n.clear_faults();
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["missing"], 0, "{data}");
    let env = environment(&api, &developer).await;
    assert_eq!(env["lastSyncError"], Value::Null, "{env}");
    api.stop().await;
}

// ---- 3. faults ----

/// A staging environment on the fakes with two linked workflows and one untracked,
/// synced both ways and checked once.
async fn synced_staging(kind: Kind) -> (Api, FakeN8n, FakeGitHub, String, String) {
    let github = FakeGitHub::start(GH_TOKEN).await;
    let api = Api::start_with_github(kind, Some(github.base_url())).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;
    let one = n8n.insert(sample_workflow(1));
    let two = n8n.insert(sample_workflow(2));
    n8n.insert(sample_workflow(3));
    commit(
        &github,
        vec![
            (
                "staging/one.json",
                pretty(&exported(&n8n.workflow(&one).unwrap())),
            ),
            ("staging/one.wfo.json", sidecar("one-id", "one")),
            (
                "staging/two.json",
                pretty(&exported(&n8n.workflow(&two).unwrap())),
            ),
            ("staging/two.wfo.json", sidecar("two-id", "two")),
        ],
        "two workflows",
    );
    register_staging(&api, &admin, &n8n, &github).await;
    api.ok(&developer, SYNC_REPO, json!({})).await;
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["linked"], 2, "{data}");
    api.ok(&developer, SYNC_REPO, json!({})).await;
    let data = api.ok(&developer, CHECK_DRIFT, json!({})).await;
    assert_eq!(
        (
            data["checkDrift"]["inSync"].clone(),
            data["checkDrift"]["notInGit"].clone()
        ),
        (json!(2), json!(1)),
        "{data}"
    );
    (api, n8n, github, admin, developer)
}

/// GitHub failing under `syncRepository` and `checkDrift`: only the failure is
/// recorded, `UPSTREAM` says whether to retry, and the next call works; a 429 with
/// a short `Retry-After` is waited out and retried.
async fn github_faults_leave_nothing_half_written(kind: Kind) {
    let (api, _n8n, github, admin, developer) = synced_staging(kind).await;

    // 429 with Retry-After: 1: waited out, retried, and the sync goes through (with
    // nothing new to record)
    let before = baseline(&api, &developer).await;
    github.clear_requests();
    github.fail_next(1, github::Fault::TooManyRequests { retry_after: 1 });
    let started = std::time::Instant::now();
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(data["syncRepository"]["filesSeen"], 2, "{data}");
    assert_eq!(data["syncRepository"]["events"], 0, "{data}");
    let requests = github.requests();
    assert_eq!(
        requests[0].path, requests[1].path,
        "the same call twice: {requests:?}"
    );
    assert_only_appended(&api, &developer, &before, &[]).await;

    // a 429 asking for longer than the policy waits: fails at once, retryable
    let before = baseline(&api, &developer).await;
    github.fail_next(1, github::Fault::TooManyRequests { retry_after: 600 });
    let error = upstream(&api, &developer, SYNC_REPO, true).await;
    assert!(
        error["message"].as_str().unwrap().contains("rate limiting"),
        "{error}"
    );
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;

    // 500 on every attempt: retryable; recorded on the environment
    let before = baseline(&api, &developer).await;
    github.fail_next(4, github::Fault::Status(500));
    upstream(&api, &developer, SYNC_REPO, true).await;
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;
    let env = environment(&api, &developer).await;
    assert!(
        env["lastRepositorySyncError"]
            .as_str()
            .is_some_and(|e| e.contains("github failed (500)")),
        "{env}"
    );

    // a truncated answer: not retryable
    let before = baseline(&api, &developer).await;
    github.fail_next(1, github::Fault::Malformed);
    upstream(&api, &developer, SYNC_REPO, false).await;
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;

    // GitHub answers again: the sync works and clears the failure
    github.clear_requests();
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert_eq!(data["syncRepository"]["rejected"], json!([]), "{data}");
    assert!(data["syncRepository"]["position"].is_i64(), "{data}");
    let env = environment(&api, &developer).await;
    assert_eq!(env["lastRepositorySyncError"], Value::Null, "{env}");

    // "Bad credentials" (a revoked token): not retryable; the token is not shown
    let revoked = "ghp_revokedTOKEN_99999999";
    let update_token =
        "mutation($t: String!) { updateEnvironment(id: \"staging\", gitToken: $t) { position } }";
    api.ok(&admin, update_token, json!({ "t": revoked })).await;
    let before = baseline(&api, &developer).await;
    let error = upstream(&api, &developer, SYNC_REPO, false).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("github refused the credentials (401)"),
        "{error}"
    );
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;
    let (_, env) = failed_drift_check(&api, &developer, false).await;
    let texts = format!("{error} {env} {}", whole_log(&api).await);
    assert!(!texts.contains(revoked) && !texts.contains(GH_TOKEN));
    api.ok(&admin, update_token, json!({ "t": GH_TOKEN })).await;

    // a repository that does not exist (or the token cannot see): 404, not retryable
    let set_repository = "mutation($r: String!) { updateEnvironment(id: \"staging\",
        git: { provider: GITHUB, repository: $r, branch: \"main\", folder: \"staging\" }) { position } }";
    api.ok(&admin, set_repository, json!({ "r": "acme/no-such-repo" }))
        .await;
    let before = baseline(&api, &developer).await;
    let error = upstream(&api, &developer, SYNC_REPO, false).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("repository acme/no-such-repo or its branch main not found"),
        "{error}"
    );
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;
    api.ok(&admin, set_repository, json!({ "r": github.repository() }))
        .await;

    // the drift check with GitHub failing (n8n fine): recorded as failed, retryable
    github.fail_next(4, github::Fault::Status(502));
    let (_, env) = failed_drift_check(&api, &developer, true).await;
    assert!(env["lastDriftCheckError"]
        .as_str()
        .is_some_and(|e| e.contains("github failed (502)")));

    // everything answers again: both syncs and the check work
    github.clear_requests();
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert_eq!(data["syncRepository"]["filesSeen"], 2, "{data}");
    api.ok(&developer, SYNC_ENV, json!({})).await;
    let data = api.ok(&developer, CHECK_DRIFT, json!({})).await;
    assert_eq!(
        data["checkDrift"]["environment"]["driftStatus"], "DRIFT_DETECTED",
        "one workflow not in Git, no drifted one: {data}"
    );
    let env = environment(&api, &developer).await;
    assert_eq!(
        (
            env["lastSyncError"].clone(),
            env["lastRepositorySyncError"].clone(),
            env["lastDriftCheckError"].clone()
        ),
        (Value::Null, Value::Null, Value::Null),
        "{env}"
    );
    api.stop().await;
}

/// n8n failing under `syncEnvironment` and `checkDrift`: a malformed answer is
/// recorded and not retryable; a 429 with `Retry-After` is retried and succeeds.
async fn n8n_faults_leave_nothing_half_written(kind: Kind) {
    let (api, n8n, _github, _admin, developer) = synced_staging(kind).await;

    // 429, Retry-After: 1: the listing is retried and the sync goes through
    let before = baseline(&api, &developer).await;
    n8n.clear_requests();
    n8n.rate_limit_next(1, 1);
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["workflowsSeen"], 3, "{data}");
    assert_eq!(data["syncEnvironment"]["events"], 0, "{data}");
    let statuses: Vec<u16> = n8n.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = n8n.requests()[1].at - n8n.requests()[0].at;
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert_only_appended(&api, &developer, &before, &[]).await;

    // the same under a drift check
    n8n.rate_limit_next(1, 1);
    let data = api.ok(&developer, CHECK_DRIFT, json!({})).await;
    assert_eq!(data["checkDrift"]["inSync"], 2, "{data}");

    // a truncated JSON answer: not retried (it is not transient), recorded
    let before = baseline(&api, &developer).await;
    n8n.clear_requests();
    n8n.malformed_next(1);
    let error = upstream(&api, &developer, SYNC_ENV, false).await;
    assert!(
        error["message"].as_str().unwrap().contains("invalid JSON"),
        "{error}"
    );
    assert_eq!(n8n.request_count(), 1, "not retried");
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;

    n8n.malformed_next(1);
    failed_drift_check(&api, &developer, false).await;

    // n8n answers again
    n8n.clear_faults();
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert!(
        data["syncEnvironment"]["position"].is_i64(),
        "clears the failure"
    );
    let data = api.ok(&developer, CHECK_DRIFT, json!({})).await;
    assert_eq!(
        data["checkDrift"]["environment"]["driftStatus"],
        "DRIFT_DETECTED"
    );
    let env = environment(&api, &developer).await;
    assert_eq!(env["lastSyncError"], Value::Null, "{env}");
    api.stop().await;
}

/// Answers slower than the connectors' timeout, on every attempt: the sync (run in
/// process with a short policy: the service's is 10 s × 4 attempts) fails with a
/// retryable timeout and records only that; the next one works.
async fn slow_upstreams_time_out_and_leave_nothing_half_written(kind: Kind) {
    let (api, n8n, github, _admin, developer) = synced_staging(kind).await;
    let services = AppContext {
        retry: RetryPolicy {
            timeout: Duration::from_millis(300),
            attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
        github_api_url: Some(github.base_url()),
        ..api.context.clone()
    };
    let ctx = CommandContext::new(
        TenantId::parse(TENANT).unwrap(),
        Actor::new("dev-1", Role::Developer),
    );
    let staging = LocalId::parse(ENV).unwrap();
    let timed_out = |result: Result<(), SyncError>, service: &str| match result {
        Err(SyncError::Upstream(error @ UpstreamError::Timeout { .. })) => {
            assert!(error.retryable());
            assert!(error.to_string().starts_with(service), "{error}");
        }
        other => panic!("expected a timeout of {service}, got {other:?}"),
    };

    let before = baseline(&api, &developer).await;
    n8n.slow_next(2, Duration::from_millis(1500));
    let result = workflowops::workflows::sync::sync_environment(&services, &ctx, &staging).await;
    timed_out(result.map(drop), "n8n");
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;

    let before = baseline(&api, &developer).await;
    github.fail_next(2, github::Fault::Slow(Duration::from_millis(1500)));
    let result = workflowops::workflows::sync::sync_repository(&services, &ctx, &staging).await;
    timed_out(result.map(drop), "github");
    assert_only_appended(&api, &developer, &before, &["environment.sync_failed"]).await;

    let before = baseline(&api, &developer).await;
    n8n.slow_next(2, Duration::from_millis(1500));
    let result = workflowops::workflows::drift::check_drift(&services, &ctx, &staging).await;
    timed_out(result.map(drop), "n8n");
    assert_only_appended(
        &api,
        &developer,
        &before,
        &["environment.drift_check_failed"],
    )
    .await;
    let env = environment(&api, &developer).await;
    assert!(
        env["lastSyncError"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer within")),
        "{env}"
    );
    assert_eq!(env["driftStatus"], "ERROR", "{env}");

    // an answer slower than usual but within the timeout is just waited for
    n8n.slow_next(1, Duration::from_millis(100));
    let report = workflowops::workflows::sync::sync_environment(&services, &ctx, &staging)
        .await
        .unwrap();
    assert_eq!(report.workflows_seen, 3);
    assert_eq!(report.rejected, Vec::<String>::new());
    let report = workflowops::workflows::sync::sync_repository(&services, &ctx, &staging)
        .await
        .unwrap();
    assert_eq!(report.files_seen, 2);
    let report = workflowops::workflows::drift::check_drift(&services, &ctx, &staging)
        .await
        .unwrap();
    assert_eq!((report.in_sync, report.not_in_git), (2, 1));
    let env = environment(&api, &developer).await;
    assert_eq!(
        (
            env["lastSyncError"].clone(),
            env["lastRepositorySyncError"].clone()
        ),
        (Value::Null, Value::Null),
        "{env}"
    );
    assert_eq!(env["driftStatus"], "DRIFT_DETECTED", "{env}");
    api.stop().await;
}

/// An n8n nobody answers at (a closed port): each operation that needs it answers
/// `UPSTREAM` (retryable) with the cause, records it on the environment, and appends
/// nothing else.
async fn unreachable_n8n_is_reported_on_the_environment(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    // a port that was just free: nothing listens there
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    api.ok(
        &admin,
        "mutation($url: String!) { registerEnvironment(id: \"dev\", name: \"Dev\", class: DEV,
           n8nBaseUrl: $url, n8nApiKey: \"a-key-for-nobody\") { position } }",
        json!({ "url": format!("http://{closed}") }),
    )
    .await;
    let before = baseline(&api, &admin).await;
    let error = upstream(
        &api,
        &admin,
        "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
        true,
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{error}");
    assert!(!message.contains("a-key-for-nobody"), "{error}");
    assert_only_appended(&api, &admin, &before, &["environment.sync_failed"]).await;
    let last = api.store.store.last_position().await.unwrap();
    let data = api
        .ok(
            &admin,
            "query($p: Int) { environment(id: \"dev\", minPosition: $p) { lastSyncError } }",
            json!({ "p": last }),
        )
        .await;
    let cause = data["environment"]["lastSyncError"].as_str().unwrap();
    assert!(cause.contains("unreachable"), "{cause}");
    api.stop().await;
}

both_backends!(
    unreachable_n8n_is_reported_on_the_environment,
    first_time_setup_with_github_sync,
    bad_input_is_reported_and_the_rest_proceeds,
    github_faults_leave_nothing_half_written,
    n8n_faults_leave_nothing_half_written,
    slow_upstreams_time_out_and_leave_nothing_half_written,
);
