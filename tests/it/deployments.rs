//! Deployments that run (issue 14), through the API against two fake n8n instances
//! (dev and staging, as strict as n8n 1.82) and a real local Git repository:
//!
//! - Scenario 2 of the walkthroughs: dev → staging with a credential mapping and a
//!   sub-workflow reference rewritten, approval by a second admin, a scheduled
//!   deployment started by the deployment scheduler, snapshots, the Git commit, and
//!   the first drift check after it (no drift);
//! - §12.4: workflow 2 of 3 fails and workflow 1 is restored exactly; the target is
//!   pinned until an admin unpins it;
//! - a hotfix landing during the promotion is not overwritten;
//! - a rollback through transient 503s, one that re-creates a deleted workflow, and
//!   one that cannot restore (failed, with the inconsistencies);
//! - two promotions to one target;
//! - restores of snapshots (back, to empty, forward with new ids) and a restore
//!   that fails and is rolled back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Value};

use crate::api::{code, Api};
use crate::fakes::n8n::{FakeN8n, Fault};
use crate::scenarios::{exported, pretty};
use crate::support::{both_backends, Kind};

const TENANT: &str = "acme";
const DEV_KEY: &str = "n8n_api_key_DEV_0123456789abcdef";
const STAGING_KEY: &str = "n8n_api_key_STAGING_0123456789ab";

pub const DEPLOYMENT: &str = "id status phase done total percent reason
    workflows { workflowId name status error attempts targetWorkflowId created deleted restored restoreError }
    gateResults { gate passed blocking message }
    preSnapshot { id kind digest workflowCount } postSnapshot { id kind digest workflowCount }
    verificationMismatches rollback { reason finished inconsistencies }
    gitCommit { commitSha files error } recoveryOptions { kind snapshotId }
    promotion { id status }";

/// Waits until deployment `id` has ended (not pending, scheduled or running) and
/// returns it as `deployment(id)` shows it.
pub async fn ended(api: &Api, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = api
            .ok(
                token,
                &format!("query($id: ID!) {{ deployment(id: $id) {{ {DEPLOYMENT} }} }}"),
                json!({ "id": id }),
            )
            .await;
        let deployment = &data["deployment"];
        let status = deployment["status"].as_str().unwrap_or("");
        let promotion = deployment["promotion"]["status"].as_str().unwrap_or("");
        if matches!(status, "SUCCESS" | "FAILED" | "CANCELLED") && promotion != "RUNNING" {
            return deployment.clone();
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} did not end: {deployment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `environment(id: "staging") { pinned runningDeploymentId }` once staging is pinned
/// (or after [`WAIT`](crate::support::WAIT)): the environments read model applies the
/// pin in its own transaction, possibly after the deployment's read model showed the
/// deployment ended.
async fn pinned_staging(api: &Api, token: &str) -> Value {
    let deadline = Instant::now() + crate::support::WAIT;
    loop {
        let data = api
            .ok(
                token,
                "{ environment(id: \"staging\") { pinned runningDeploymentId } }",
                json!({}),
            )
            .await;
        // The pin and the end of the running deployment are separate events: wait
        // for the read model to show both.
        let settled = !data["environment"]["pinned"].is_null()
            && data["environment"]["runningDeploymentId"].is_null();
        if settled || Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn schedule() -> Value {
    json!({ "id": "n-trigger", "name": "Every hour", "type": "n8n-nodes-base.scheduleTrigger",
            "typeVersion": 1.2, "position": [0, 0],
            "parameters": { "rule": { "interval": [{ "field": "hours" }] } } })
}

fn step(name: &str, url: &str) -> Value {
    json!({ "id": format!("n-{name}"), "name": name, "type": "n8n-nodes-base.httpRequest",
            "typeVersion": 4.2, "position": [200, 0], "parameters": { "url": url } })
}

fn workflow(name: &str, nodes: Vec<Value>) -> Value {
    json!({ "name": name, "nodes": nodes, "connections": {},
            "settings": { "executionOrder": "v1", "callerPolicy": "workflowsFromSameOwner" } })
}

/// Dev, staging and the repository of Scenario 2.
pub struct Setup {
    pub api: Api,
    pub admin: String,
    pub approver: String,
    pub dev: FakeN8n,
    pub staging: FakeN8n,
    pub repo: tempfile::TempDir,
    /// dev n8n ids of the workflows: "a" (a sub-workflow), "b" (calls a, posts to
    /// Slack), "c".
    pub dev_ids: Vec<String>,
    /// staging's Slack credential
    pub staging_slack: String,
}

impl Setup {
    /// Dev runs three workflows that its Git folder holds (with sidecars); staging
    /// is empty, synced and drift-checked; a pipeline dev → staging requires an
    /// approval and activates the workflows it creates.
    pub async fn new(kind: Kind) -> Setup {
        let api = Api::start(kind).await;
        let admin = api.token(TENANT, "admin", "admin-1");
        let approver = api.token(TENANT, "admin", "admin-2");
        let dev = FakeN8n::start(DEV_KEY).await;
        let staging = FakeN8n::start(STAGING_KEY).await;
        let dev_slack = dev.add_credential("Slack Bot", "slackApi");
        let staging_slack = staging.add_credential("Slack Production", "slackApi");

        let a = dev.insert(workflow(
            "Enrich Order",
            vec![schedule(), step("Lookup", "https://crm.example.com/lookup")],
        ));
        let mut notify = json!({ "id": "n-notify", "name": "Notify", "type": "n8n-nodes-base.slack",
            "typeVersion": 2.2, "position": [400, 0], "parameters": { "text": "order done" },
            "credentials": { "slackApi": { "id": dev_slack, "name": "Slack Bot" } } });
        notify["parameters"]["channel"] = json!("#orders");
        let call = json!({ "id": "n-call", "name": "Enrich", "type": "n8n-nodes-base.executeWorkflow",
            "typeVersion": 1.1, "position": [200, 0],
            "parameters": { "workflowId": { "__rl": true, "value": a, "mode": "list",
                                            "cachedResultUrl": format!("/workflow/{a}") } } });
        let b = dev.insert(workflow("Order Sync", vec![schedule(), call, notify]));
        let c = dev.insert(workflow(
            "Daily Report",
            vec![schedule(), step("Report", "https://reports.example.com")],
        ));

        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        for folder in ["dev", "staging"] {
            std::fs::create_dir_all(repo.path().join(folder)).unwrap();
        }
        std::fs::write(repo.path().join("staging/README.md"), "staging\n").unwrap();
        for (id, slug, canonical) in [
            (&a, "enrich-order", "wf-a"),
            (&b, "order-sync", "wf-b"),
            (&c, "daily-report", "wf-c"),
        ] {
            let held = dev.workflow(id).unwrap();
            std::fs::write(
                repo.path().join(format!("dev/{slug}.json")),
                pretty(&exported(&held)),
            )
            .unwrap();
            std::fs::write(
                repo.path().join(format!("dev/{slug}.wfo.json")),
                pretty(&json!({ "canonical_id": canonical, "canonical_slug": slug })),
            )
            .unwrap();
        }
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "dev workflows"]);

        for (env, class, n8n, key) in [
            ("dev", "DEV", &dev, DEV_KEY),
            ("staging", "STAGING", &staging, STAGING_KEY),
        ] {
            api.ok(
                &admin,
                "mutation($id: ID!, $class: EnvironmentClass!, $url: String!, $key: String!, $repo: String!) {
                   registerEnvironment(id: $id, name: $id, class: $class, n8nBaseUrl: $url, n8nApiKey: $key,
                     git: { provider: LOCAL, repository: $repo, branch: \"main\", folder: $id }) { position } }",
                json!({ "id": env, "class": class, "url": n8n.base_url(), "key": key,
                        "repo": repo.path().to_str().unwrap() }),
            )
            .await;
        }
        api.ok(
            &admin,
            "mutation { syncRepository(environmentId: \"dev\") { position } }",
            json!({}),
        )
        .await;
        let synced = api
            .ok(
                &admin,
                "mutation { syncEnvironment(environmentId: \"dev\") { position linked } }",
                json!({}),
            )
            .await;
        assert_eq!(synced["syncEnvironment"]["linked"], 3, "{synced}");
        api.ok(
            &admin,
            "mutation { syncEnvironment(environmentId: \"staging\") { position } }",
            json!({}),
        )
        .await;
        api.ok(
            &admin,
            "mutation { checkDrift(environmentId: \"staging\") { position } }",
            json!({}),
        )
        .await;
        api.ok(
            &admin,
            "mutation { createPipeline(id: \"main\", name: \"Main\", stages: [
               { sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\",
                 gates: { requireApproval: true, activateNewWorkflows: true } } ]) { position } }",
            json!({}),
        )
        .await;
        api.ok(
            &admin,
            "mutation($id: String!) { setCredentialMapping(sourceEnvironmentId: \"dev\",
               targetEnvironmentId: \"staging\", type: \"slackApi\", sourceName: \"Slack Bot\",
               targetId: $id, targetName: \"Slack Production\") { position } }",
            json!({ "id": staging_slack }),
        )
        .await;
        Setup {
            api,
            admin,
            approver,
            dev,
            staging,
            repo,
            dev_ids: vec![a, b, c],
            staging_slack,
        }
    }

    /// Creates promotion `id` of every changed workflow and has the second admin
    /// approve it.
    pub async fn approved(&self, id: &str) {
        let created = self
            .api
            .ok(
                &self.admin,
                "mutation($id: ID!) { createPromotion(id: $id, pipelineId: \"main\",
                   sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\") {
                   promotion { status workflows { canonicalId } } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            created["createPromotion"]["promotion"]["status"], "PENDING_APPROVAL",
            "{created}"
        );
        self.api
            .ok(
                &self.approver,
                "mutation($id: ID!) { approvePromotion(id: $id) { position } }",
                json!({ "id": id }),
            )
            .await;
    }

    /// Deploys promotion `id` now; returns the deployment once it has ended.
    pub async fn deploy_now(&self, id: &str) -> Value {
        let deployed = self
            .api
            .ok(
                &self.admin,
                "mutation($id: ID!) { deployPromotion(promotionId: $id) { deployment { id status } } }",
                json!({ "id": id }),
            )
            .await;
        let deployment = deployed["deployPromotion"]["deployment"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        ended(&self.api, &self.admin, &deployment).await
    }

    /// The staging workflow named `name`.
    pub fn staging_named(&self, name: &str) -> Value {
        self.staging
            .workflows()
            .into_iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("staging has no {name}"))
    }

    /// Staging's n8n refuses the next update of workflow `name` as n8n refuses a
    /// body it cannot take (400, with its message).
    pub fn refuse_next_update(&self, name: &str) {
        let id = self.staging_named(name)["id"].as_str().unwrap().to_string();
        self.staging.fault_next_on(
            Method::PUT,
            &format!("/workflows/{id}"),
            1,
            Fault::Status {
                status: 400,
                message: "request/body/nodes/1 must have required property 'type'".into(),
            },
        );
    }

    /// Promotes everything to staging, hotfixes Daily Report there and checks
    /// staging's drift: the incident it opens (its id).
    pub async fn drift_incident_on_staging(&self) -> String {
        self.approved("p1").await;
        assert_eq!(self.deploy_now("p1").await["status"], "SUCCESS");
        let report = self.staging_named("Daily Report")["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.staging.modify(&report, |w| {
            w["nodes"][1]["parameters"]["url"] = json!("https://reports.example.com/hotfix");
        });
        let checked = self
            .api
            .ok(
                &self.admin,
                "mutation { checkDrift(environmentId: \"staging\") { incident { id } } }",
                json!({}),
            )
            .await;
        checked["checkDrift"]["incident"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an incident: {checked}"))
            .to_string()
    }

    /// Changes workflow `index` in dev (a new URL) and syncs dev.
    pub async fn change_in_dev(&self, index: usize, url: &str) {
        self.dev.modify(&self.dev_ids[index], |w| {
            let nodes = w["nodes"].as_array_mut().unwrap();
            let last = nodes.len() - 1;
            nodes[last]["parameters"]["url"] = json!(url);
            nodes[last]["parameters"]["text"] = json!(url);
        });
        self.api
            .ok(
                &self.admin,
                "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
                json!({}),
            )
            .await;
    }
}

async fn scenario_two(kind: Kind) {
    let s = Setup::new(kind).await;
    let api = &s.api;
    s.approved("p1").await;
    // scheduled a moment ahead: the deployment scheduler starts it when due
    let due_at = chrono::Utc::now() + chrono::Duration::milliseconds(3000);
    let at = due_at.to_rfc3339();
    let scheduled = api
        .ok(
            &s.admin,
            "mutation($at: DateTime!) { deployPromotion(promotionId: \"p1\", scheduledFor: $at) {
               deployment { id status phase total } } }",
            json!({ "at": at }),
        )
        .await;
    assert_eq!(
        scheduled["deployPromotion"]["deployment"],
        json!({ "id": "p1.1", "status": "SCHEDULED", "phase": "WAITING", "total": 3 })
    );
    let scheduler = workflowops::scheduler::Scheduler::new(api.context.clone());
    let early = scheduler
        .run(workflowops::scheduler::Job::Deployments)
        .await
        .unwrap();
    // (under load the run may end after the deployment is due: then acting is right)
    if chrono::Utc::now() < due_at {
        assert_eq!(early.acted, 0, "not due yet: {early:?}");
    }
    let wait = (due_at - chrono::Utc::now()).num_milliseconds().max(0) as u64 + 100;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let due = scheduler
        .run(workflowops::scheduler::Job::Deployments)
        .await
        .unwrap();
    assert_eq!(
        early.acted + due.acted,
        1,
        "started once: {early:?} {due:?}"
    );
    let deployment = ended(api, &s.admin, "p1.1").await;
    assert_eq!(deployment["status"], "SUCCESS", "{deployment}");
    assert_eq!(deployment["phase"], "DONE");
    assert_eq!(deployment["percent"], 100);
    assert_eq!(deployment["promotion"]["status"], "COMPLETED");
    let gates = deployment["gateResults"].as_array().unwrap();
    for gate in [
        "credentials_exist",
        "sub_workflows_resolved",
        "source_unchanged",
    ] {
        let result = gates.iter().find(|g| g["gate"] == gate).unwrap();
        assert_eq!(result["passed"], true, "{gate}: {deployment}");
    }
    for w in deployment["workflows"].as_array().unwrap() {
        assert_eq!(w["status"], "SUCCESS", "{w}");
        assert_eq!(w["created"], true, "{w}");
        assert!(w["attempts"].as_i64().unwrap() >= 1, "{w}");
    }
    assert_eq!(deployment["preSnapshot"]["kind"], "PRE");
    assert_eq!(deployment["postSnapshot"]["workflowCount"], 3);
    assert_eq!(deployment["verificationMismatches"], json!([]));
    let sha = deployment["gitCommit"]["commitSha"].as_str().unwrap();
    assert_eq!(sha, git(s.repo.path(), &["rev-parse", "HEAD"]));
    assert_eq!(deployment["recoveryOptions"], json!([]));

    // rewritten for staging: the mapped credential, the sub-workflow's staging id;
    // created active (the stage says so); nothing of 1.x's refused settings sent
    let enrich = s.staging_named("Enrich Order");
    let sync = s.staging_named("Order Sync");
    let notify = sync["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "Notify")
        .unwrap();
    assert_eq!(
        notify["credentials"]["slackApi"],
        json!({ "id": s.staging_slack, "name": "Slack Production" })
    );
    let call = sync["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "Enrich")
        .unwrap();
    assert_eq!(call["parameters"]["workflowId"]["value"], enrich["id"]);
    assert_eq!(
        call["parameters"]["workflowId"]["cachedResultUrl"],
        json!(format!("/workflow/{}", enrich["id"].as_str().unwrap()))
    );
    assert_eq!(sync["active"], true);
    assert!(sync["settings"].get("callerPolicy").is_none(), "{sync}");
    // the referenced workflow went first
    let creates = s.staging.requests_to(Method::POST, "/workflows");
    assert_eq!(
        creates.len(),
        3 + 3,
        "3 creates, 3 activations: {creates:?}"
    );

    // snapshots: listed for staging, content verified against the digest
    let data = api
        .ok(
            &s.admin,
            "{ snapshots(environmentId: \"staging\") { nodes { id kind digest deploymentId promotionId
                 workflows { canonicalId name n8nWorkflowId active contentHash } } } }",
            json!({}),
        )
        .await;
    let snapshots = data["snapshots"]["nodes"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2, "{data}");
    let post = snapshots.iter().find(|s| s["kind"] == "POST").unwrap();
    assert_eq!(post["id"], "p1.1.post");
    assert_eq!(post["workflows"].as_array().unwrap().len(), 3);
    let pre = snapshots.iter().find(|s| s["kind"] == "PRE").unwrap();
    assert!(pre["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["n8nWorkflowId"].is_null()));

    // the commit holds the workflows and their sidecars; the first drift check of
    // staging after the promotion finds it in sync
    let files = git(s.repo.path(), &["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.contains("staging/order-sync.json"), "{files}");
    assert!(files.contains("staging/order-sync.wfo.json"), "{files}");
    let checked = api
        .ok(
            &s.admin,
            "mutation { checkDrift(environmentId: \"staging\") { inSync withDrift notInGit
               environment { driftStatus } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        checked["checkDrift"],
        json!({ "inSync": 3, "withDrift": 0, "notInGit": 0,
                "environment": { "driftStatus": "IN_SYNC" } }),
        "{checked}"
    );
    // Promoting again writes nothing: what the target holds is what the rewritten
    // source would write (the comparison sees the rewritten references as changes).
    s.staging.clear_requests();
    let created = api
        .ok(
            &s.admin,
            "mutation { createPromotion(id: \"p2\", pipelineId: \"main\", sourceEnvironmentId: \"dev\",
               targetEnvironmentId: \"staging\", workflowIds: [\"wf-a\", \"wf-b\", \"wf-c\"]) {
               promotion { status } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        created["createPromotion"]["promotion"]["status"],
        "PENDING_APPROVAL"
    );
    api.ok(
        &s.approver,
        "mutation { approvePromotion(id: \"p2\") { position } }",
        json!({}),
    )
    .await;
    let again = s.deploy_now("p2").await;
    assert_eq!(again["status"], "SUCCESS", "{again}");
    for w in again["workflows"].as_array().unwrap() {
        assert_eq!(w["status"], "UNCHANGED", "{w}");
        assert_eq!(w["attempts"], 0, "{w}");
    }
    let writes = s
        .staging
        .requests()
        .into_iter()
        .filter(|r| r.method != Method::GET)
        .count();
    assert_eq!(writes, 0, "no write to n8n: {:?}", s.staging.requests());
    s.api.stop().await;
}

/// §12.4: the second of three changed workflows fails; the first is restored
/// exactly, the target is pinned, and unpinning is an admin's event.
async fn second_of_three_fails_and_the_first_is_restored(kind: Kind) {
    let s = Setup::new(kind).await;
    s.approved("p1").await;
    assert_eq!(s.deploy_now("p1").await["status"], "SUCCESS");
    let before: Vec<Value> = s.staging.workflows();

    for (i, url) in [
        (0, "https://crm.example.com/v2"),
        (1, "https://slack.example.com/v2"),
        (2, "https://reports.example.com/v2"),
    ] {
        s.change_in_dev(i, url).await;
    }
    s.approved("p2").await;
    // push order: a, then b, then c (b references a); b's update is refused
    s.refuse_next_update("Order Sync");
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(
        deployment["promotion"]["status"], "ROLLED_BACK",
        "{deployment}"
    );
    assert_eq!(
        deployment["rollback"]["inconsistencies"],
        json!([]),
        "{deployment}"
    );
    let workflows = deployment["workflows"].as_array().unwrap();
    let by_name = |name: &str| workflows.iter().find(|w| w["name"] == name).unwrap();
    assert_eq!(by_name("Enrich Order")["status"], "SUCCESS");
    assert_eq!(by_name("Enrich Order")["restored"], "UPDATED");
    assert_eq!(by_name("Order Sync")["status"], "FAILED");
    assert!(
        by_name("Order Sync")["error"]
            .as_str()
            .unwrap()
            .contains("must have required property"),
        "n8n's message is shown: {deployment}"
    );
    // c is pushed before or after b (by id): restored if it was pushed
    let report = by_name("Daily Report");
    assert!(
        report["status"] == "PENDING" || report["restored"] == "UPDATED",
        "{report}"
    );
    // restored exactly: staging holds what it held before the promotion
    let after = s.staging.workflows();
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old["id"], new["id"]);
        assert_eq!(old["nodes"], new["nodes"], "{}", old["name"]);
        assert_eq!(old["active"], new["active"], "{}", old["name"]);
    }
    let kinds: Vec<&str> = deployment["recoveryOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["RETRY_AS_NEW_PROMOTION", "UNPIN_ENVIRONMENT"]);

    // pinned: a scheduled deployment waits; an admin unpins
    let data = pinned_staging(&s.api, &s.admin).await;
    assert!(
        data["environment"]["pinned"]
            .as_str()
            .unwrap()
            .contains("p2.1"),
        "{data}"
    );
    assert_eq!(data["environment"]["runningDeploymentId"], Value::Null);
    let developer = s.api.token(TENANT, "developer", "dev-1");
    let refused = s
        .api
        .err(
            &developer,
            "mutation { unpinEnvironment(id: \"staging\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN");
    let unpinned = s
        .api
        .ok(
            &s.admin,
            "mutation { unpinEnvironment(id: \"staging\", reason: \"fixed the node\") {
               environment { pinned } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        unpinned["unpinEnvironment"]["environment"]["pinned"],
        Value::Null
    );
    s.api.stop().await;
}

/// A service killed with SIGKILL in the middle of the pushes: the next start finds
/// the deployment running with a pre-snapshot, restores the target from it (also
/// deleting the workflow whose create was in flight) and fails the deployment with
/// the reason. Nothing stays `running`, nothing half-promoted without a record.
async fn a_deployment_killed_mid_push_is_rolled_back_on_restart(kind: Kind) {
    let mut s = Setup::new(kind).await;
    s.approved("p1").await;
    s.api.shutdown().await;

    // the service as a process of its own, on the same database and secrets
    let port = crate::cli::free_port();
    let data = tempfile::tempdir().unwrap();
    let child = crate::cli::workflowops()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &s.api.store.url)
        .env("WORKFLOWOPS_DATA_DIR", data.path())
        .env(
            "WORKFLOWOPS_JWT_SECRET",
            std::str::from_utf8(crate::api::SECRET).unwrap(),
        )
        .env(
            "WORKFLOWOPS_SECRET_KEY",
            std::str::from_utf8(crate::api::SECRET_KEY).unwrap(),
        )
        .env("WORKFLOWOPS_DRIFT_CHECK_INTERVAL", "off")
        .env("WORKFLOWOPS_SLA_INTERVAL", "off")
        .env("WORKFLOWOPS_RETENTION_INTERVAL", "off")
        .env("WORKFLOWOPS_DEPLOYMENT_INTERVAL", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut service = crate::cli::Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{base}/health"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the service did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // creates answer normally, except the second, which n8n carries out but
    // answers only much later: the process dies waiting for it
    for fault in [
        Fault::Slow(Duration::ZERO),
        Fault::Slow(Duration::from_secs(60)),
    ] {
        s.staging
            .fault_next_on(Method::POST, "/api/v1/workflows", 1, fault);
    }
    let creates = |n8n: &FakeN8n| {
        n8n.requests_to(Method::POST, "/workflows")
            .iter()
            .filter(|r| !r.path.ends_with("/activate"))
            .count()
    };
    let deployed: Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(&s.admin)
        .json(&json!({ "query": "mutation { deployPromotion(promotionId: \"p1\") { deployment { id status } } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        deployed["data"]["deployPromotion"]["deployment"]["id"], "p1.1",
        "{deployed}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while creates(&s.staging) < 2 {
        assert!(Instant::now() < deadline, "the second create never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.0.kill().unwrap(); // SIGKILL
    let _ = service.0.wait();
    assert_eq!(s.staging.len(), 2, "two workflows created before the kill");
    s.staging.clear_faults();

    s.api.restart().await;
    let deployment = ended(&s.api, &s.admin, "p1.1").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert!(
        deployment["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{deployment}"
    );
    assert_eq!(
        deployment["rollback"]["inconsistencies"],
        json!([]),
        "{deployment}"
    );
    assert_eq!(deployment["promotion"]["status"], "ROLLED_BACK");
    assert_eq!(
        s.staging.len(),
        0,
        "staging is as the pre-snapshot holds it: {:?}",
        s.staging.workflows()
    );
    s.api.stop().await;
}

/// One running promotion per target: a second deployed now is refused with
/// `CONFLICT` naming the first; a second scheduled one waits for the sweep after
/// the first has ended.
async fn two_promotions_to_one_target(kind: Kind) {
    let s = Setup::new(kind).await;
    let api = &s.api;
    s.approved("p1").await;
    s.approved("p2").await;
    // the first create is slow: p1 holds the target meanwhile
    s.staging.fault_next_on(
        Method::POST,
        "/api/v1/workflows",
        1,
        Fault::Slow(Duration::from_secs(2)),
    );
    api.ok(
        &s.admin,
        "mutation { deployPromotion(promotionId: \"p1\") { position } }",
        json!({}),
    )
    .await;
    let refused = api
        .err(
            &s.admin,
            "mutation { deployPromotion(promotionId: \"p2\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("p1"),
        "names the holder: {refused}"
    );
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(200)).to_rfc3339();
    api.ok(
        &s.admin,
        "mutation($at: DateTime!) { deployPromotion(promotionId: \"p2\", scheduledFor: $at) { position } }",
        json!({ "at": at }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scheduler = workflowops::scheduler::Scheduler::new(api.context.clone());
    let busy = scheduler
        .run(workflowops::scheduler::Job::Deployments)
        .await
        .unwrap();
    assert_eq!(busy.acted, 0, "p1 still runs: {busy:?}");
    assert_eq!(ended(api, &s.admin, "p1.1").await["status"], "SUCCESS");
    let free = scheduler
        .run(workflowops::scheduler::Job::Deployments)
        .await
        .unwrap();
    assert_eq!(free.acted, 1, "{free:?}");
    let second = ended(api, &s.admin, "p2.1").await;
    assert_eq!(second["status"], "SUCCESS", "{second}");
    // p1 had put them there already
    for w in second["workflows"].as_array().unwrap() {
        assert_eq!(w["status"], "UNCHANGED", "{w}");
    }
    s.api.stop().await;
}

/// Three service processes on one PostgreSQL database: each deployment runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_more_instances_run_each_deployment_once() {
    let s = Setup::new(Kind::Postgres).await;
    let mut others = vec![];
    for _ in 0..2 {
        let store = eventstore::Store::connect(&s.api.store.url, 8)
            .await
            .unwrap();
        let mut app = workflowops::Application::with_store(
            store,
            "127.0.0.1:0".parse().unwrap(),
            s.api.auth.clone(),
        )
        .await
        .unwrap();
        app.set_secret_key(crate::api::SECRET_KEY);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        others.push((stop, server));
    }
    s.approved("p1").await;
    let deployment = s.deploy_now("p1").await;
    assert_eq!(deployment["status"], "SUCCESS", "{deployment}");
    let creates = s
        .staging
        .requests_to(Method::POST, "/workflows")
        .iter()
        .filter(|r| !r.path.ends_with("/activate"))
        .count();
    assert_eq!(creates, 3, "each workflow created once");
    assert_eq!(s.staging.len(), 3);
    for (stop, server) in others {
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
    s.api.stop().await;
}

/// A deployment running longer than the stale limit: the sweep asks for its
/// recovery, the runner stops pushing, rolls the target back and fails it as stale.
async fn a_stale_deployment_is_rolled_back_and_failed(kind: Kind) {
    let s = Setup::new(kind).await;
    s.approved("p1").await;
    // the first create takes a while: the deployment is still running meanwhile
    s.staging.fault_next_on(
        Method::POST,
        "/api/v1/workflows",
        1,
        Fault::Slow(Duration::from_secs(2)),
    );
    s.api
        .ok(
            &s.admin,
            "mutation { deployPromotion(promotionId: \"p1\") { position } }",
            json!({}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.staging.requests_to(Method::POST, "/workflows").is_empty() {
        assert!(Instant::now() < deadline, "the push never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut context = s.api.context.clone();
    context.deployment_stale_after = Duration::ZERO;
    let swept = workflowops::scheduler::Scheduler::new(context)
        .run(workflowops::scheduler::Job::Deployments)
        .await
        .unwrap();
    assert_eq!(swept.acted, 1, "{swept:?}");
    let deployment = ended(&s.api, &s.admin, "p1.1").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert!(
        deployment["reason"].as_str().unwrap().contains("stale"),
        "{deployment}"
    );
    assert_eq!(
        deployment["promotion"]["status"], "ROLLED_BACK",
        "{deployment}"
    );
    assert_eq!(deployment["rollback"]["inconsistencies"], json!([]));
    assert_eq!(s.staging.len(), 0, "{:?}", s.staging.workflows());
    s.api.stop().await;
}

/// Promotes everything once, then changes all three in dev and approves `p2`; the
/// staging ids by name.
async fn promoted_then_changed(kind: Kind) -> (Setup, Vec<Value>) {
    let s = Setup::new(kind).await;
    s.approved("p1").await;
    assert_eq!(s.deploy_now("p1").await["status"], "SUCCESS");
    let before = s.staging.workflows();
    for (i, url) in [
        (0, "https://crm.example.com/v3"),
        (1, "https://slack.example.com/v3"),
        (2, "https://reports.example.com/v3"),
    ] {
        s.change_in_dev(i, url).await;
    }
    s.approved("p2").await;
    (s, before)
}

/// The deployment's entry for the workflow named `name`.
fn workflow_named(deployment: &Value, name: &str) -> Value {
    deployment["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {deployment}"))
        .clone()
}

fn id_of(s: &Setup, name: &str) -> String {
    s.staging_named(name)["id"].as_str().unwrap().to_string()
}

/// Staging holds exactly `before` (same ids unless re-created, same nodes and
/// activation).
fn holds_exactly(s: &Setup, before: &[Value]) {
    let after = s.staging.workflows();
    assert_eq!(after.len(), before.len(), "{after:?}");
    for old in before {
        let new = s.staging_named(old["name"].as_str().unwrap());
        assert_eq!(old["nodes"], new["nodes"], "{}", old["name"]);
        assert_eq!(old["active"], new["active"], "{}", old["name"]);
    }
}

/// A hotfix lands in staging during the promotion: the workflow it changed is not
/// overwritten (it fails), what was pushed before is restored, the hotfix stays.
async fn a_hotfix_during_the_promotion_is_not_overwritten(kind: Kind) {
    let (s, before) = promoted_then_changed(kind).await;
    let (enrich, sync) = (id_of(&s, "Enrich Order"), id_of(&s, "Order Sync"));
    // while Enrich Order (pushed first) is written, someone edits Order Sync
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{enrich}"),
        1,
        Fault::EditFirst {
            workflow_id: sync.clone(),
            name: "Order Sync (hotfix)".into(),
        },
    );
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    let failed = workflow_named(&deployment, "Order Sync");
    assert_eq!(failed["status"], "FAILED", "{deployment}");
    assert!(
        failed["error"].as_str().unwrap().contains("hotfix"),
        "{failed}"
    );
    assert_eq!(
        deployment["promotion"]["status"], "ROLLED_BACK",
        "{deployment}"
    );
    // Enrich Order is back; Order Sync was never written by the promotion
    let enrich_now = s.staging.workflow(&enrich).unwrap();
    let enrich_before = before.iter().find(|w| w["id"] == enrich.as_str()).unwrap();
    assert_eq!(enrich_now["nodes"], enrich_before["nodes"]);
    let writes_to_sync = s
        .staging
        .requests_to(Method::PUT, &format!("/workflows/{sync}"))
        .len();
    assert_eq!(
        writes_to_sync, 0,
        "the hotfixed workflow was not overwritten"
    );
    assert_eq!(
        s.staging.workflow(&sync).unwrap()["name"],
        "Order Sync (hotfix)"
    );
    s.api.stop().await;
}

/// The rollback meets 503s (retried, with their attempts counted), a workflow that
/// was deleted meanwhile (re-created from the pre-snapshot), and restores staging.
async fn rollback_through_503s_recreates_a_deleted_workflow(kind: Kind) {
    let (s, before) = promoted_then_changed(kind).await;
    let (enrich, sync) = (id_of(&s, "Enrich Order"), id_of(&s, "Order Sync"));
    // Order Sync's re-read deletes Enrich Order (already pushed), its write fails
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{sync}"),
        1,
        Fault::Slow(Duration::ZERO),
    ); // the pre-snapshot's read
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{sync}"),
        1,
        Fault::DeleteFirst {
            workflow_id: enrich.clone(),
        },
    );
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{sync}"),
        1,
        Fault::Status {
            status: 400,
            message: "request/body/settings must NOT have additional properties".into(),
        },
    );
    // Enrich Order's reads: the pre-snapshot's, the one before its write, then the
    // rollback's, which meets two 503s (retried) before n8n answers 404
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{enrich}"),
        2,
        Fault::Slow(Duration::ZERO),
    );
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{enrich}"),
        2,
        Fault::Status {
            status: 503,
            message: "Service Unavailable".into(),
        },
    );
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(
        deployment["promotion"]["status"], "ROLLED_BACK",
        "{deployment}"
    );
    let restored = workflow_named(&deployment, "Enrich Order");
    assert_eq!(restored["restored"], "RECREATED", "{deployment}");
    let unavailable = s
        .staging
        .requests_to(Method::GET, &format!("/workflows/{enrich}"))
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert_eq!(unavailable, 2, "the 503s were met and retried");
    holds_exactly(&s, &before);
    s.api.stop().await;
}

/// n8n refuses the restore for good: the promotion is `failed` and the event
/// lists the workflow left inconsistent and why.
async fn a_rollback_that_cannot_restore_fails_with_the_inconsistencies(kind: Kind) {
    let (s, _) = promoted_then_changed(kind).await;
    let (enrich, sync) = (id_of(&s, "Enrich Order"), id_of(&s, "Order Sync"));
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{sync}"),
        1,
        Fault::Status {
            status: 400,
            message: "bad node".into(),
        },
    );
    // Enrich Order's write succeeds; writing it back fails every attempt
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{enrich}"),
        1,
        Fault::Slow(Duration::ZERO),
    );
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{enrich}"),
        10,
        Fault::Status {
            status: 500,
            message: "Internal Server Error".into(),
        },
    );
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(deployment["promotion"]["status"], "FAILED", "{deployment}");
    let inconsistencies = deployment["rollback"]["inconsistencies"]
        .as_array()
        .unwrap();
    assert_eq!(inconsistencies.len(), 1, "{deployment}");
    assert!(
        inconsistencies[0]
            .as_str()
            .unwrap()
            .starts_with("Enrich Order:"),
        "{deployment}"
    );
    let promotion = s
        .api
        .ok(&s.admin, "{ promotion(id: \"p2\") { status } }", json!({}))
        .await;
    assert_eq!(promotion["promotion"]["status"], "FAILED");
    let kinds: Vec<&str> = deployment["recoveryOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"RESTORE_SNAPSHOT"), "{deployment}");
    s.api.stop().await;
}

const RESTORE: &str = "mutation($id: ID!, $e: ID!, $s: ID!) {
    restoreSnapshot(id: $id, environmentId: $e, snapshotId: $s) {
      position promotion { id status sourceEnvironmentId targetEnvironmentId sourceSnapshotId
        workflows { canonicalId } gateResults { gate passed } }
      deployment { id } } }";

/// Restores snapshot `snapshot` of staging as promotion `id`, approved by the
/// second admin and deployed now; the deployment once it has ended.
async fn restored(s: &Setup, id: &str, snapshot: &str) -> Value {
    let data = s
        .api
        .ok(
            &s.admin,
            RESTORE,
            json!({ "id": id, "e": "staging", "s": snapshot }),
        )
        .await;
    let promotion = &data["restoreSnapshot"]["promotion"];
    assert_eq!(promotion["status"], "PENDING_APPROVAL", "{data}");
    assert_eq!(promotion["sourceEnvironmentId"], "staging");
    assert_eq!(promotion["targetEnvironmentId"], "staging");
    assert_eq!(promotion["sourceSnapshotId"], snapshot);
    assert_eq!(
        data["restoreSnapshot"]["deployment"],
        Value::Null,
        "the stage asks for an approval first: {data}"
    );
    s.api
        .ok(
            &s.approver,
            "mutation($id: ID!) { approvePromotion(id: $id) { position } }",
            json!({ "id": id }),
        )
        .await;
    s.deploy_now(id).await
}

fn statuses(deployment: &Value) -> Vec<(String, String, bool)> {
    deployment["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["status"].as_str().unwrap().to_string(),
                w["deleted"] == true,
            )
        })
        .collect()
}

/// `restoreSnapshot` through the promotion machinery: back to before the last
/// promotion (updated back, Git in sync after it), back to before the first one
/// (the three deleted), and forward to a post-snapshot (re-created with new ids,
/// active as the snapshot holds them, the sub-workflow reference following the
/// re-created workflow's new id). Bad input is refused and records nothing.
async fn restoring_snapshots_undoes_and_redoes_promotions(kind: Kind) {
    let (s, before) = promoted_then_changed(kind).await;
    let api = &s.api;
    assert_eq!(s.deploy_now("p2").await["status"], "SUCCESS");
    let promoted = s.staging.workflows();

    // bad input first: another environment's id, an unknown snapshot, a developer
    let refused = [
        (&s.admin, "dev", "p2.1.pre", "VALIDATION"),
        (&s.admin, "staging", "p9.1.pre", "NOT_FOUND"),
        (&s.admin, "nowhere", "p2.1.pre", "NOT_FOUND"),
    ];
    for (token, environment, snapshot, expected) in refused {
        let body = api
            .gql(
                token,
                RESTORE,
                json!({ "id": "r0", "e": environment, "s": snapshot }),
            )
            .await;
        assert_eq!(code(&body["errors"][0]), expected, "{body}");
    }
    let developer = api.token(TENANT, "developer", "dev-1");
    let body = api
        .gql(
            &developer,
            RESTORE,
            json!({ "id": "r0", "e": "staging", "s": "p2.1.pre" }),
        )
        .await;
    assert_eq!(code(&body["errors"][0]), "FORBIDDEN", "{body}");
    let none = api
        .ok(&s.admin, "{ promotion(id: \"r0\") { id } }", json!({}))
        .await;
    assert_eq!(none["promotion"], Value::Null, "nothing recorded: {none}");

    // back to before p2: every workflow updated back, exactly
    s.staging.clear_requests();
    let back = restored(&s, "r1", "p2.1.pre").await;
    assert_eq!(back["status"], "SUCCESS", "{back}");
    assert_eq!(back["promotion"]["status"], "COMPLETED", "{back}");
    for (name, status, deleted) in statuses(&back) {
        assert_eq!(
            (status.as_str(), deleted),
            ("SUCCESS", false),
            "{name}: {back}"
        );
    }
    let gates = back["gateResults"].as_array().unwrap();
    assert!(gates.iter().all(|g| g["passed"] == true), "{back}");
    holds_exactly(&s, &before);
    for old in &before {
        assert_eq!(
            s.staging_named(old["name"].as_str().unwrap())["id"],
            old["id"]
        );
    }
    assert_eq!(
        s.staging.requests_to(Method::POST, "/workflows").len(),
        0,
        "nothing created or re-activated"
    );
    // committed to staging's folder: the next drift check finds it in sync
    let message = git(s.repo.path(), &["log", "-1", "--format=%s"]);
    assert!(
        message.starts_with("Restore 3 workflow(s) from snapshot p2.1.pre"),
        "{message}"
    );
    let checked = api
        .ok(
            &s.admin,
            "mutation { checkDrift(environmentId: \"staging\") { inSync withDrift } }",
            json!({}),
        )
        .await;
    assert_eq!(
        checked["checkDrift"],
        json!({ "inSync": 3, "withDrift": 0 })
    );

    // back to before p1: staging had none of them, so all three are deleted
    let emptied = restored(&s, "r2", "p1.1.pre").await;
    assert_eq!(emptied["status"], "SUCCESS", "{emptied}");
    for (name, status, deleted) in statuses(&emptied) {
        assert_eq!(
            (status.as_str(), deleted),
            ("SUCCESS", true),
            "{name}: {emptied}"
        );
    }
    assert_eq!(s.staging.len(), 0, "{:?}", s.staging.workflows());
    // and from staging's folder: nothing left for a drift check to miss
    assert_eq!(emptied["gitCommit"]["files"], 6, "{emptied}");
    let left = git(s.repo.path(), &["ls-files", "staging"]);
    assert_eq!(left, "staging/README.md");
    let checked = api
        .ok(
            &s.admin,
            "mutation { checkDrift(environmentId: \"staging\") { inSync withDrift notInGit
               environment { driftStatus } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        checked["checkDrift"],
        json!({ "inSync": 0, "withDrift": 0, "notInGit": 0,
                "environment": { "driftStatus": "UNTRACKED" } }),
        "{checked}"
    );

    // forward to after p2: re-created, active, the reference rewritten to the new id
    let again = restored(&s, "r3", "p2.1.post").await;
    assert_eq!(again["status"], "SUCCESS", "{again}");
    let enrich = s.staging_named("Enrich Order");
    let old_enrich = promoted
        .iter()
        .find(|w| w["name"] == "Enrich Order")
        .unwrap();
    assert_ne!(enrich["id"], old_enrich["id"], "re-created: a new id");
    // exactly what p2 left, but for the reference to Enrich Order's new id
    let (old_id, new_id) = (
        old_enrich["id"].as_str().unwrap(),
        enrich["id"].as_str().unwrap(),
    );
    let expected: Vec<Value> = promoted
        .iter()
        .map(|w| serde_json::from_str(&w.to_string().replace(old_id, new_id)).unwrap())
        .collect();
    holds_exactly(&s, &expected);
    let sync = s.staging_named("Order Sync");
    let call = sync["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "Enrich")
        .unwrap();
    assert_eq!(call["parameters"]["workflowId"]["value"], enrich["id"]);
    assert!(s.staging.workflows().iter().all(|w| w["active"] == true));
    s.api.stop().await;
}

/// A restore on a stage without approval is deployed at once; one whose write
/// fails is rolled back like any promotion: what it deleted is re-created, the
/// target is pinned.
async fn a_failing_restore_is_rolled_back(kind: Kind) {
    let s = Setup::new(kind).await;
    s.approved("p1").await;
    assert_eq!(s.deploy_now("p1").await["status"], "SUCCESS");
    let before = s.staging.workflows();
    // restoring p1.1.pre deletes the three; the last delete fails for good
    let last = s
        .api
        .ok(
            &s.admin,
            "{ snapshot(id: \"p1.1.pre\") { workflows { name } } }",
            json!({}),
        )
        .await["snapshot"]["workflows"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let last_id = id_of(&s, &last);
    s.staging.fault_next_on(
        Method::DELETE,
        &format!("/workflows/{last_id}"),
        10,
        Fault::Status {
            status: 400,
            message: "cannot delete".into(),
        },
    );
    // no approval on the stage any more: the restore is deployed at once
    s.api
        .ok(
            &s.admin,
            "mutation { updatePipeline(id: \"main\", stages: [
               { sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\",
                 gates: { requireApproval: false, activateNewWorkflows: true } } ]) { position } }",
            json!({}),
        )
        .await;
    let data = s
        .api
        .ok(
            &s.admin,
            RESTORE,
            json!({ "id": "r1", "e": "staging", "s": "p1.1.pre" }),
        )
        .await;
    let started = data["restoreSnapshot"]["deployment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("deployed at once: {data}"));
    assert_eq!(started, "r1.1");
    let deployment = ended(&s.api, &s.admin, started).await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(
        deployment["promotion"]["status"], "ROLLED_BACK",
        "{deployment}"
    );
    let recreated = deployment["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["restored"] == "RECREATED")
        .count();
    assert_eq!(recreated, 2, "{deployment}");
    holds_exactly(&s, &before);
    let pinned = pinned_staging(&s.api, &s.admin).await;
    assert!(pinned["environment"]["pinned"].is_string(), "{pinned}");
    s.api.stop().await;
}

/// A workflow that is its own error workflow (n8n lets one handle its own errors)
/// cannot be created with its reference rewritten: it is created first, inactive,
/// and written again with its new id once it has one, then activated.
async fn a_workflow_that_is_its_own_error_workflow_is_promoted(kind: Kind) {
    let s = Setup::new(kind).await;
    let report = s.dev_ids[2].clone();
    s.dev.modify(&report, |w| {
        w["settings"]["errorWorkflow"] = json!(report.clone());
    });
    s.api
        .ok(
            &s.admin,
            "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
            json!({}),
        )
        .await;
    s.approved("p1").await;
    let deployment = s.deploy_now("p1").await;
    assert_eq!(deployment["status"], "SUCCESS", "{deployment}");
    assert_eq!(deployment["verificationMismatches"], json!([]));
    let promoted = s.staging_named("Daily Report");
    assert_eq!(promoted["settings"]["errorWorkflow"], promoted["id"]);
    assert_eq!(promoted["active"], true);
    let id = promoted["id"].as_str().unwrap();
    assert_eq!(
        s.staging
            .requests_to(Method::PUT, &format!("/workflows/{id}"))
            .len(),
        1,
        "written once more, with its own id"
    );
    let recorded = workflow_named(&deployment, "Daily Report");
    assert_eq!(recorded["targetWorkflowId"], id);
    assert_eq!(recorded["created"], true);
    s.api.stop().await;
}

/// n8n goes away (its proxy answers 502) as the rollback starts: the rollback
/// retries, then ends `failed` with what it could not restore, and the target is
/// pinned. Once n8n is back, restoring the pre-snapshot brings staging back.
async fn n8n_going_away_during_the_rollback_is_recorded_then_restored(kind: Kind) {
    let (s, before) = promoted_then_changed(kind).await;
    let (enrich, sync) = (id_of(&s, "Enrich Order"), id_of(&s, "Order Sync"));
    s.staging.fault_next_on(
        Method::PUT,
        &format!("/workflows/{sync}"),
        1,
        Fault::Status {
            status: 400,
            message: "bad node".into(),
        },
    );
    // Enrich Order's reads: the pre-snapshot's and the one before its write; the
    // rollback's finds n8n gone
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{enrich}"),
        2,
        Fault::Slow(Duration::ZERO),
    );
    s.staging.fault_next_on(
        Method::GET,
        &format!("/workflows/{enrich}"),
        1,
        Fault::GoAway,
    );
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(deployment["promotion"]["status"], "FAILED", "{deployment}");
    let inconsistencies = deployment["rollback"]["inconsistencies"]
        .as_array()
        .unwrap();
    assert!(
        inconsistencies
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("Enrich Order:")),
        "{deployment}"
    );
    let gone = s
        .staging
        .requests()
        .iter()
        .filter(|r| r.status == 502)
        .count();
    // Which read meets the 502 first depends on how many reads of Enrich Order came
    // before it (a runner that retries a step under load reads it again), so only
    // that n8n was met gone is certain here; the connector's retries of a 502 are
    // tested with the connector.
    assert!(gone >= 1, "n8n was met gone: {gone}");
    let pinned = pinned_staging(&s.api, &s.admin).await;
    assert!(pinned["environment"]["pinned"].is_string(), "{pinned}");

    s.staging.come_back();
    let restored = restored(&s, "r1", "p2.1.pre").await;
    assert_eq!(restored["status"], "SUCCESS", "{restored}");
    holds_exactly(&s, &before);
    s.api.stop().await;
}

both_backends!(
    a_stale_deployment_is_rolled_back_and_failed,
    scenario_two,
    second_of_three_fails_and_the_first_is_restored,
    a_deployment_killed_mid_push_is_rolled_back_on_restart,
    two_promotions_to_one_target,
    a_hotfix_during_the_promotion_is_not_overwritten,
    rollback_through_503s_recreates_a_deleted_workflow,
    a_rollback_that_cannot_restore_fails_with_the_inconsistencies,
    restoring_snapshots_undoes_and_redoes_promotions,
    a_failing_restore_is_rolled_back,
    a_workflow_that_is_its_own_error_workflow_is_promoted,
    n8n_going_away_during_the_rollback_is_recorded_then_restored,
);
