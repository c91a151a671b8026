//! Environment and repository sync through the API, against a fake n8n on loopback
//! and a real local Git repository: discovery, auto-link through the hash registry,
//! idempotent re-syncs (zero events), changes, disappearance, upstream faults that
//! leave nothing half-written, and credentials that never come back out.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::api::{code, Api};
use crate::fakes::n8n::{sample_workflow, FakeN8n};
use crate::support::{both_backends, Kind};

const TENANT: &str = "acme";
const API_KEY: &str = "n8n_api_key_SECRET_1234567890";

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// A local repository whose `workflows/` folder holds `workflow` as `{slug}.json`
/// with its sidecar.
fn repository(workflow: &Value, slug: &str, canonical_id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let folder = dir.path().join("workflows");
    std::fs::create_dir_all(&folder).unwrap();
    // Git holds the workflow as exported: no instance fields
    let mut exported = workflow.clone();
    for key in ["id", "createdAt", "updatedAt", "versionId", "active"] {
        exported.as_object_mut().unwrap().remove(key);
    }
    std::fs::write(
        folder.join(format!("{slug}.json")),
        serde_json::to_vec_pretty(&exported).unwrap(),
    )
    .unwrap();
    std::fs::write(
        folder.join(format!("{slug}.wfo.json")),
        json!({ "canonical_id": canonical_id, "canonical_slug": slug, "tags": ["payments"] })
            .to_string(),
    )
    .unwrap();
    std::fs::write(folder.join("broken.json"), "{ not json").unwrap();
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "workflows"]);
    dir
}

/// Registers `production` with the fake n8n (and its key) and the local repository.
async fn register_production(api: &Api, admin: &str, n8n: &FakeN8n, repo: &Path) {
    register(api, admin, "production", "PRODUCTION", n8n, repo).await;
}

/// Registers environment `id` of `class` with the fake n8n and the local repository.
async fn register(api: &Api, admin: &str, id: &str, class: &str, n8n: &FakeN8n, repo: &Path) {
    let registered = api
        .gql(
            admin,
            "mutation($id: ID!, $class: EnvironmentClass!, $url: String!, $key: String!, $repo: String!) {
               registerEnvironment(id: $id, name: $id, class: $class,
                 n8nBaseUrl: $url, n8nApiKey: $key,
                 git: { provider: LOCAL, repository: $repo, branch: \"main\", folder: \"workflows\" }) { position } }",
            json!({ "id": id, "class": class, "url": n8n.base_url(), "key": API_KEY,
                    "repo": repo.to_str().unwrap() }),
        )
        .await;
    assert!(registered.get("errors").is_none(), "{registered}");
}

const SYNC_ENV: &str = "mutation { syncEnvironment(environmentId: \"production\") {
    position workflowsSeen discovered changed linked missing collisions rejected events } }";
const SYNC_REPO: &str = "mutation { syncRepository(environmentId: \"production\") {
    position commitSha filesSeen created renamed updated mappingsUpdated rejected events } }";

async fn matrix(api: &Api, token: &str, position: Option<i64>) -> Vec<Value> {
    let data = api
        .ok(
            token,
            "query($p: Int) { workflowMatrix(minPosition: $p) { edges { node { canonicalId name untracked
               cells { environmentId mappingStatus syncState n8nWorkflowId } } } } }",
            json!({ "p": position }),
        )
        .await;
    data["workflowMatrix"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn sync_from_n8n_and_git(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;
    let payment = sample_workflow(1);
    let payment_id = n8n.insert(payment.clone());
    let untracked_id = n8n.insert(sample_workflow(2));
    let repo = repository(
        &n8n.workflow(&payment_id).unwrap(),
        "payment-gateway",
        "payment_gateway",
    );

    register_production(&api, &admin, &n8n, repo.path()).await;

    // Git first: the canonical workflow, with the sidecar's id; the broken file is reported
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    let report = &data["syncRepository"];
    assert_eq!(report["filesSeen"], 2, "{report}");
    assert_eq!(report["created"], 1);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].as_str().unwrap().contains("broken.json"),
        "{report}"
    );
    assert_eq!(report["commitSha"].as_str().unwrap().len(), 40);

    // then n8n: both workflows discovered, the payment gateway auto-linked by its hash
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    let report = &data["syncEnvironment"];
    assert_eq!(
        (
            report["workflowsSeen"].clone(),
            report["discovered"].clone(),
            report["linked"].clone()
        ),
        (json!(2), json!(2), json!(1)),
        "{report}"
    );
    let position = report["position"].as_i64();
    let rows = matrix(&api, &developer, position).await;
    let canonical = rows
        .iter()
        .find(|r| r["canonicalId"] == "payment_gateway")
        .unwrap();
    assert_eq!(canonical["cells"][0]["mappingStatus"], "LINKED");
    assert_eq!(canonical["cells"][0]["syncState"], "IN_SYNC");
    assert_eq!(canonical["cells"][0]["n8nWorkflowId"], payment_id);
    assert!(rows
        .iter()
        .any(|r| r["untracked"] == true && r["cells"][0]["n8nWorkflowId"] == untracked_id));

    // Git again: the auto-linked mapping learned its Git hash when it was linked
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert_eq!(data["syncRepository"]["mappingsUpdated"], 0, "{data}");
    assert_eq!(data["syncRepository"]["created"], 0);

    // nothing new: nothing appended, from either side
    let before = api.event_count().await;
    for query in [SYNC_ENV, SYNC_REPO] {
        let data = api.ok(&developer, query, json!({})).await;
        let report = data.as_object().unwrap().values().next().unwrap();
        assert_eq!(report["events"], 0, "{report}");
        assert_eq!(report["position"], Value::Null);
    }
    assert_eq!(api.event_count().await, before);

    // a hotfix in n8n: the cell drifts
    n8n.modify(&payment_id, |w| {
        w["nodes"][0]["parameters"]["hotfix"] = json!("https://api-new.example.com/charge");
        w["updatedAt"] = json!("2026-11-20T15:22:00.000Z");
    });
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["changed"], 1, "{data}");
    let rows = matrix(
        &api,
        &developer,
        data["syncEnvironment"]["position"].as_i64(),
    )
    .await;
    let canonical = rows
        .iter()
        .find(|r| r["canonicalId"] == "payment_gateway")
        .unwrap();
    assert_eq!(canonical["cells"][0]["syncState"], "DRIFT");

    // the drift check (Scenario 3): one drifted, one not in Git; an incident opens
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"production\") { position inSync withDrift notInGit
               drifted { workflowId n8nWorkflowId name matchedByName diff { nodesAdded nodesRemoved nodesModified connectionsChanged settingsChanged } }
               notInGitWorkflows incident { id status severity affectedWorkflows { workflowId } }
               environment { driftStatus counts { inSync withDrift notInGit } activeIncident { id } } } }",
            json!({}),
        )
        .await;
    let check = &data["checkDrift"];
    assert_eq!(
        (
            check["inSync"].clone(),
            check["withDrift"].clone(),
            check["notInGit"].clone()
        ),
        (json!(0), json!(1), json!(1)),
        "{check}"
    );
    let drifted = &check["drifted"][0];
    assert_eq!(drifted["workflowId"], "payment_gateway");
    assert_eq!(drifted["matchedByName"], false);
    assert_eq!(
        drifted["diff"]["nodesModified"].as_array().unwrap().len(),
        1,
        "{drifted}"
    );
    assert_eq!(check["notInGitWorkflows"], json!([untracked_id]));
    assert_eq!(check["incident"]["status"], "DETECTED");
    assert_eq!(check["incident"]["severity"], "LOW");
    assert_eq!(check["environment"]["driftStatus"], "DRIFT_INCIDENT_ACTIVE");
    assert_eq!(
        check["environment"]["counts"],
        json!({ "inSync": 0, "withDrift": 1, "notInGit": 1 })
    );
    let incident = check["incident"]["id"].clone();
    // checked again: the same incident is updated, not a second one opened
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"production\") { incident { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["checkDrift"]["incident"]["id"], incident);
    // n8n down: the check is recorded as failed (ERROR), the counts stay
    n8n.fail_next(100, 502);
    let error = api
        .err(
            &developer,
            "mutation { checkDrift(environmentId: \"production\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&error), "UPSTREAM", "{error}");
    n8n.clear_faults();
    let data = api
        .ok(
            &developer,
            "query($p: Int) { environment(id: \"production\", minPosition: $p) { driftStatus lastDriftCheckError counts { withDrift notInGit } } }",
            json!({ "p": api.store.store.last_position().await.unwrap() }),
        )
        .await;
    assert_eq!(data["environment"]["driftStatus"], "ERROR", "{data}");
    assert!(data["environment"]["lastDriftCheckError"]
        .as_str()
        .unwrap()
        .contains("n8n"));
    assert_eq!(
        data["environment"]["counts"],
        json!({ "withDrift": 1, "notInGit": 1 })
    );

    // a workflow deleted in n8n: missing
    n8n.remove(&untracked_id);
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["missing"], 1, "{data}");

    // n8n failing: UPSTREAM, retryable; the failure is shown on the environment and
    // nothing else is recorded
    let before = api.event_count().await;
    n8n.fail_next(100, 503);
    let error = api.err(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(code(&error), "UPSTREAM", "{error}");
    assert_eq!(error["extensions"]["retryable"], true);
    n8n.clear_faults();
    assert_eq!(
        api.event_count().await,
        before + 1,
        "only the failure is recorded"
    );
    let last = api.store.store.last_position().await.unwrap();
    let data = api
        .ok(
            &developer,
            "query($p: Int) { environment(id: \"production\", minPosition: $p) { lastSyncError } }",
            json!({ "p": last }),
        )
        .await;
    assert!(
        data["environment"]["lastSyncError"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{data}"
    );
    // the next sync that works clears it, even with nothing new to record
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    let position = data["syncEnvironment"]["position"].as_i64();
    assert!(
        position.is_some(),
        "clearing the failure is recorded: {data}"
    );
    let data = api
        .ok(
            &developer,
            "query($p: Int) { environment(id: \"production\", minPosition: $p) { lastSyncError } }",
            json!({ "p": position }),
        )
        .await;
    assert_eq!(data["environment"]["lastSyncError"], Value::Null);
    let before = api.event_count().await;
    // a wrong key: UPSTREAM, not retryable, and the key never appears
    api.ok(
        &admin,
        "mutation { updateEnvironment(id: \"production\", n8nApiKey: \"wrong-key-0000\") { position } }",
        json!({}),
    )
    .await;
    let error = api.err(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(code(&error), "UPSTREAM", "{error}");
    assert_eq!(error["extensions"]["retryable"], false);
    assert!(!error.to_string().contains("wrong-key"), "{error}");
    assert_eq!(
        api.event_count().await,
        before + 2,
        "the key change and the failed sync"
    );

    // viewers cannot sync
    let viewer = api.token(TENANT, "viewer", "v");
    let error = api.err(&viewer, SYNC_ENV, json!({})).await;
    assert_eq!(code(&error), "FORBIDDEN");

    // the credentials are in no event, no response
    let data = api
        .ok(
            &admin,
            "{ eventHistory(aggregateType: \"environment\", aggregateId: \"production\") { payload metadata } }",
            json!({}),
        )
        .await;
    let history = data.to_string();
    assert!(!history.contains(API_KEY) && !history.contains("wrong-key"));
    assert!(
        history.contains("n8n_secret_ref"),
        "events refer to the sealed secret"
    );
    api.stop().await;
}

/// Scenario 4: an untracked workflow is onboarded: a canonical workflow (its slug
/// suffixed, since Git already has one of that name), its JSON and sidecar committed
/// to Git in one commit, the mapping linked; the next syncs find nothing new.
async fn onboarding_commits_to_git_and_links(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;
    // Git knows a "Payment Gateway"; production runs another workflow of that name
    let mut in_git = sample_workflow(1);
    in_git["name"] = json!("Payment Gateway");
    let repo = repository(&in_git, "payment-gateway", "payment_gateway");
    let mut hotfixed = sample_workflow(2);
    hotfixed["name"] = json!("Payment Gateway");
    let n8n_id = n8n.insert(hotfixed);
    register_production(&api, &admin, &n8n, repo.path()).await;
    api.ok(&developer, SYNC_REPO, json!({})).await;
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(
        data["syncEnvironment"]["linked"], 0,
        "different content: not linked"
    );

    let onboard = "mutation($w: ID!) { onboardWorkflow(environmentId: \"production\", n8nWorkflowId: $w) {
        position canonicalId slug gitPath commitSha mapping { status canonicalId gitContentHash envContentHash } } }";
    let data = api.ok(&developer, onboard, json!({ "w": n8n_id })).await;
    let onboarded = &data["onboardWorkflow"];
    assert_eq!(
        onboarded["slug"], "payment-gateway-2",
        "a slug collision gets a suffix"
    );
    assert_eq!(onboarded["gitPath"], "workflows/payment-gateway-2.json");
    assert_eq!(onboarded["mapping"]["status"], "LINKED");
    assert_eq!(
        onboarded["mapping"]["canonicalId"],
        onboarded["canonicalId"]
    );
    assert_eq!(
        onboarded["mapping"]["gitContentHash"],
        onboarded["mapping"]["envContentHash"]
    );
    // in Git: one new commit with both files, the sidecar naming the canonical workflow
    let log = Command::new("git")
        .args(["log", "--format=%H %s", "-n", "1", "--name-only"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let log = String::from_utf8(log.stdout).unwrap();
    assert!(
        log.starts_with(onboarded["commitSha"].as_str().unwrap()),
        "{log}"
    );
    assert!(
        log.contains("Onboard Payment Gateway from production"),
        "{log}"
    );
    assert!(
        log.contains("workflows/payment-gateway-2.json")
            && log.contains("workflows/payment-gateway-2.wfo.json")
    );
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(repo.path().join("workflows/payment-gateway-2.wfo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["canonical_id"], onboarded["canonicalId"]);
    assert_eq!(sidecar["canonical_slug"], "payment-gateway-2");

    // nothing new for either sync, and the drift check finds it in sync
    let before = api.event_count().await;
    for query in [SYNC_REPO, SYNC_ENV] {
        let data = api.ok(&developer, query, json!({})).await;
        let report = data.as_object().unwrap().values().next().unwrap();
        assert_eq!(report["events"], 0, "{report}");
    }
    assert_eq!(api.event_count().await, before);
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"production\") { inSync withDrift notInGit } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["checkDrift"],
        json!({ "inSync": 1, "withDrift": 0, "notInGit": 0 })
    );

    // a linked workflow cannot be onboarded again
    let error = api.err(&developer, onboard, json!({ "w": n8n_id })).await;
    assert_eq!(code(&error), "VALIDATION", "{error}");
    api.stop().await;
}

const STATUS: &str = "query($p: Int) { environment(id: \"production\", minPosition: $p) {
    driftStatus onboarded lastSyncAt lastRepositorySyncAt counts { inSync withDrift notInGit } } }";

async fn status(api: &Api, token: &str, position: Option<i64>) -> Value {
    api.ok(token, STATUS, json!({ "p": position })).await["environment"].clone()
}

/// The first successful sync and drift check are recorded even when they find
/// nothing; until both happened the environment is `NEW`, never `IN_SYNC`.
async fn first_sync_and_check_are_recorded_and_no_status_is_claimed_before(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    let n8n = FakeN8n::start(API_KEY).await;
    let repo = repository(&sample_workflow(1), "payment-gateway", "payment_gateway");
    register_production(&api, &admin, &n8n, repo.path()).await;

    // an n8n with no workflows: the first sync says so with one event
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    let report = &data["syncEnvironment"];
    assert_eq!(
        (report["workflowsSeen"].clone(), report["events"].clone()),
        (json!(0), json!(1)),
        "{report}"
    );
    let env = status(&api, &developer, report["position"].as_i64()).await;
    assert!(env["lastSyncAt"].is_string(), "{env}");
    assert_eq!(
        env["driftStatus"], "NEW",
        "synced, never compared with Git: {env}"
    );
    assert_eq!(env["onboarded"], false);
    // again: nothing new, nothing appended
    let data = api.ok(&developer, SYNC_ENV, json!({})).await;
    assert_eq!(data["syncEnvironment"]["events"], 0, "{data}");

    // the repository's first sync is recorded; a second finds nothing
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    let position = data["syncRepository"]["position"].as_i64();
    assert!(status(&api, &developer, position).await["lastRepositorySyncAt"].is_string());
    let data = api.ok(&developer, SYNC_REPO, json!({})).await;
    assert_eq!(data["syncRepository"]["events"], 0, "{data}");

    // the first drift check is the baseline: an empty environment is then untracked
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"production\") { position } }",
            json!({}),
        )
        .await;
    let env = status(&api, &developer, data["checkDrift"]["position"].as_i64()).await;
    assert_eq!(
        (env["driftStatus"].clone(), env["onboarded"].clone()),
        (json!("UNTRACKED"), json!(true)),
        "{env}"
    );

    // A second environment with a workflow that is in Git: linked by the sync, but
    // not IN_SYNC before a drift check compared it.
    let n8n_staging = FakeN8n::start(API_KEY).await;
    n8n_staging.insert(sample_workflow(1));
    register(
        &api,
        &admin,
        "staging",
        "STAGING",
        &n8n_staging,
        repo.path(),
    )
    .await;
    let data = api
        .ok(
            &developer,
            "mutation { syncEnvironment(environmentId: \"staging\") { position linked } }",
            json!({}),
        )
        .await;
    assert_eq!(data["syncEnvironment"]["linked"], 1, "{data}");
    let query = "query($p: Int) { environment(id: \"staging\", minPosition: $p) { driftStatus
        knownCredentials { type id name } } }";
    let env = api
        .ok(
            &developer,
            query,
            json!({ "p": data["syncEnvironment"]["position"] }),
        )
        .await;
    assert_eq!(env["environment"]["driftStatus"], "NEW", "{env}");
    // the credentials its workflows reference are what it is known to hold
    assert_eq!(
        env["environment"]["knownCredentials"],
        json!([
            { "type": "httpHeaderAuth", "id": "12", "name": "Orders API" },
            { "type": "postgres", "id": "7", "name": "Orders DB" },
            { "type": "slackApi", "id": "3", "name": "Slack Bot" },
        ]),
        "{env}"
    );
    let data = api
        .ok(
            &developer,
            "mutation { checkDrift(environmentId: \"staging\") { position inSync } }",
            json!({}),
        )
        .await;
    assert_eq!(data["checkDrift"]["inSync"], 1, "{data}");
    let env = api
        .ok(
            &developer,
            query,
            json!({ "p": data["checkDrift"]["position"] }),
        )
        .await;
    assert_eq!(env["environment"]["driftStatus"], "IN_SYNC", "{env}");

    // a credential swapped in n8n: learned by the next sync (one event), then stable
    let staging_sync =
        "mutation { syncEnvironment(environmentId: \"staging\") { position events } }";
    let id = n8n_staging.workflows()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    n8n_staging.modify(&id, |w| {
        for node in w["nodes"].as_array_mut().unwrap() {
            if node["credentials"].get("slackApi").is_some() {
                node["credentials"]["slackApi"] = json!({ "id": "99", "name": "Slack Ops" });
            }
        }
    });
    let data = api.ok(&developer, staging_sync, json!({})).await;
    let env = api
        .ok(
            &developer,
            query,
            json!({ "p": data["syncEnvironment"]["position"] }),
        )
        .await;
    let known = env["environment"]["knownCredentials"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        known.contains(&json!({ "type": "slackApi", "id": "99", "name": "Slack Ops" })),
        "{env}"
    );
    assert!(!known.iter().any(|c| c["id"] == "3"), "{env}");
    let data = api.ok(&developer, staging_sync, json!({})).await;
    assert_eq!(data["syncEnvironment"]["events"], 0, "{data}");
}

both_backends!(
    sync_from_n8n_and_git,
    onboarding_commits_to_git_and_links,
    first_sync_and_check_are_recorded_and_no_status_is_claimed_before
);
