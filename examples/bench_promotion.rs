//! Promotion benchmark: a promotion of `--workflows` (200) realistic workflows from
//! dev to staging end to end through the real service over HTTP, against two fake
//! n8n servers on loopback and a real local Git repository (issue 14).
//!
//!   cargo run --release --example bench_promotion -- --backend sqlite
//!   cargo run --release --example bench_promotion -- --backend postgres
//!
//! The service, the fakes (the integration tests' `tests/it/fakes/n8n.rs`, as strict
//! as n8n 1.82) and the Git working copy are those of `bench_sync`
//! (`examples/common/e2e.rs`). Every round runs on a fresh tenant with fresh fakes:
//!
//! - **setup** (not timed): dev holds the workflows (`bench_sync`'s: 7–30 KB, four
//!   credentials; every tenth also calls the one before it through an
//!   `executeWorkflow` node; the last two are the error workflow and the
//!   sub-workflow the fixtures reference, so every workflow has references that are
//!   rewritten and ordered), Git holds
//!   them in `workflows/` with sidecars; staging is empty, with its own four
//!   credentials and a Git folder `staging/`. Dev is synced, staging synced and
//!   drift-checked, a pipeline dev → staging (no approval) and the four credential
//!   mappings are created.
//! - **1. promote**: `createPromotion` (every workflow is NEW) and `deployPromotion`
//!   now, until `deployment(id)` shows it ended. Checked: `SUCCESS`, every workflow
//!   `SUCCESS`, staging's n8n holds them all, the Git commit made. Target ≤ 5 s.
//! - **2. again**: the same workflows promoted again. Checked: every workflow
//!   `UNCHANGED` and not one write (a request other than GET) reached staging's n8n.
//!   Target ≤ 1 s.
//! - **3. rollback**: every workflow changed in dev (dev synced, not timed), then
//!   promoted; staging's n8n refuses the last write (400, as n8n refuses a body).
//!   Checked: the deployment `FAILED`, the promotion `ROLLED_BACK` with no
//!   inconsistency, every pushed workflow restored (`UPDATED`) and staging's n8n
//!   holding exactly what it held before. Target ≤ 5 s, judged on the whole
//!   deployment (the pushes and the rollback); the rollback alone is reported too.
//!
//! Times are client-side, from sending the first mutation to the read model showing
//! the deployment ended (polled every 10 ms). Where the time went comes from the
//! deployment's own events (`eventHistory`): when the gates, the pre-snapshot, the
//! first and last push, the verification, the post-snapshot, the Git commit, the
//! rollback and the end were recorded, after the request was sent. A round whose
//! checks fail fails the benchmark. Progress goes to stderr; the last line of
//! stdout is one JSON object with the medians over the rounds, their ranges, and
//! the targets.
//!
//! **Smoke** (`--smoke`): every phase and every check with 12 workflows in one round,
//! for CI in a debug build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when a check above fails, a promotion wrote fewer workflows to
//! staging than it promoted, or the deployment's history lacks a step the figures
//! are taken from (the pushes, the Git commit, the end; the rollback's start and end).
//! A missed target is reported in `targets`, not a failure.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{json, Value};

#[path = "common/bench_store.rs"]
mod bench_store;
#[path = "common/e2e.rs"]
mod e2e;
#[path = "../tests/it/fakes/n8n.rs"]
mod fake_n8n;
use axum::http::Method;
use e2e::*;
use fake_n8n::{FakeN8n, Fault};
#[path = "common/outcome.rs"]
mod outcome;
use outcome::{require, require_eq};

// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    /// sqlite or postgres
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Tiny sizes (every phase and check, a few seconds in a debug build); sizes given
    /// on the command line still win.
    #[arg(long)]
    smoke: bool,
    /// Workflows promoted.
    #[arg(long, default_value_t = 200)]
    workflows: usize,
    /// Rounds, each on a fresh tenant with fresh fakes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connection pool size (default: as the service, 16 on PostgreSQL and 4 on SQLite).
    #[arg(long)]
    pool: Option<u32>,
    /// Server to create the benchmark database on.
    #[arg(
        long,
        env = "WORKFLOWOPS_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
}

/// `--smoke`: the sizes put before the arguments given.
const SMOKE: &[&str] = &["--workflows", "12", "--rounds", "1"];

const PROMOTE_TARGET_MS: f64 = 5000.0;
const AGAIN_TARGET_MS: f64 = 1000.0;
const ROLLBACK_TARGET_MS: f64 = 5000.0;

/// The credentials the fixtures use (type, dev name), and what staging calls them.
const CREDENTIALS: [(&str, &str, &str); 4] = [
    ("postgres", "Orders DB", "Orders DB (staging)"),
    ("smtp", "Mailgun SMTP", "Mailgun SMTP (staging)"),
    ("httpHeaderAuth", "Orders API", "Orders API (staging)"),
    ("slackApi", "Slack Bot", "Slack Bot (staging)"),
];

const CREATE: &str =
    "mutation($id: ID!, $ids: [ID!]) { createPromotion(id: $id, pipelineId: \"main\",
    sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\", workflowIds: $ids) {
    promotion { status workflows { canonicalId } } } }";
const DEPLOY: &str =
    "mutation($id: ID!) { deployPromotion(promotionId: $id) { deployment { id } } }";
const DEPLOYMENT: &str = "query($id: ID!) { deployment(id: $id) { status phase done total reason
    workflows { name status restored error } rollback { finished inconsistencies }
    gitCommit { commitSha files error } promotion { status } } }";
const HISTORY: &str =
    "query($id: ID!) { eventHistory(aggregateType: \"deployment\", aggregateId: $id) {
    eventType payload recordedAt } }";

/// Workflow `n` of dev: `bench_sync`'s, every tenth also calling workflow `n - 1`.
fn dev_workflow(n: usize) -> Value {
    let mut workflow = workflow(n);
    if n % 10 == 9 {
        let called = format!("wf{:014}", n - 1);
        workflow["nodes"]
            .as_array_mut()
            .expect("nodes")
            .push(json!({
                "id": format!("{n:08x}-call-4000-8000-000000000000"),
                "name": "Call previous",
                "type": "n8n-nodes-base.executeWorkflow",
                "typeVersion": 1.1,
                "position": [0, 2000],
                "parameters": { "workflowId": { "__rl": true, "value": called, "mode": "list",
                                                "cachedResultUrl": format!("/workflow/{called}") } }
            }));
    }
    workflow
}

/// The workflows the fixtures reference by id (`settings.errorWorkflow`, an
/// `executeWorkflow` node): dev has them and they are promoted with the rest.
const REFERENCED: [(&str, &str); 2] = [
    ("Ef3Gh5Ij7Kl9Mn1O", "Error Handler"),
    ("Qm7Vt2Lk9PzR4sWx", "Handle Unpaid Order"),
];

/// Dev's `n` workflows: `dev_workflow(0..n - 2)`, then the two referenced ones.
fn dev_workflows(n: usize) -> Vec<Value> {
    let mut workflows: Vec<Value> = (0..n - REFERENCED.len()).map(dev_workflow).collect();
    for (i, (id, name)) in REFERENCED.iter().enumerate() {
        let mut helper = workflow(n - REFERENCED.len() + i);
        helper["id"] = json!(id);
        helper["name"] = json!(name);
        workflows.push(helper);
    }
    workflows
}

/// One promotion's deployment, from the first mutation to the read model showing it
/// ended.
struct Timed {
    total: Duration,
    deployment_id: String,
    deployment: Value,
    /// Milliseconds after the request was sent at which each step was recorded.
    steps: Value,
}

async fn promote(client: &Client, id: &str, ids: Option<&[String]>) -> anyhow::Result<Timed> {
    let sent = Utc::now();
    let started = Instant::now();
    let (_, created) = client
        .gql(CREATE, json!({ "id": id, "ids": ids }))
        .await
        .with_context(|| format!("createPromotion({id})"))?;
    let status = &created["createPromotion"]["promotion"]["status"];
    anyhow::ensure!(status == "APPROVED", "promotion {id} is {status}");
    let (_, deployed) = client
        .gql(DEPLOY, json!({ "id": id }))
        .await
        .with_context(|| format!("deployPromotion({id})"))?;
    let deployment_id = deployed["deployPromotion"]["deployment"]["id"]
        .as_str()
        .context("a deployment id")?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    let deployment = loop {
        let (_, data) = client
            .gql(DEPLOYMENT, json!({ "id": deployment_id }))
            .await?;
        let deployment = data["deployment"].clone();
        let ended = matches!(
            deployment["status"].as_str(),
            Some("SUCCESS" | "FAILED" | "CANCELLED")
        ) && deployment["promotion"]["status"] != "RUNNING";
        if ended {
            break deployment;
        }
        anyhow::ensure!(Instant::now() < deadline, "{deployment_id} did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let total = started.elapsed();
    let steps = steps(client, &deployment_id, sent).await?;
    Ok(Timed {
        total,
        deployment_id,
        deployment,
        steps,
    })
}

/// When each step of deployment `id` was recorded, in ms after `sent`.
async fn steps(client: &Client, id: &str, sent: DateTime<Utc>) -> anyhow::Result<Value> {
    let (_, data) = client.gql(HISTORY, json!({ "id": id })).await?;
    let mut steps = serde_json::Map::new();
    for event in data["eventHistory"].as_array().context("events")? {
        let at: DateTime<Utc> = event["recordedAt"]
            .as_str()
            .context("recordedAt")?
            .parse()?;
        let ms = round1((at - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        let name = match event["eventType"].as_str().unwrap_or("") {
            "deployment.snapshot_taken" => match event["payload"]["kind"].as_str() {
                Some("post") => "post_snapshot",
                _ => "pre_snapshot",
            },
            "deployment.workflow_result_recorded" => {
                if !steps.contains_key("first_push") {
                    steps.insert("first_push".into(), json!(ms));
                }
                "last_push"
            }
            "deployment.workflow_restored" => {
                if !steps.contains_key("first_restore") {
                    steps.insert("first_restore".into(), json!(ms));
                }
                "last_restore"
            }
            "deployment.started" => "started",
            "deployment.gates_checked" => "gates",
            "deployment.verified" => "verified",
            "deployment.git_committed" => "git_commit",
            "deployment.rollback_started" => "rollback_started",
            "deployment.rollback_finished" => "rollback_finished",
            "deployment.finished" => "finished",
            _ => continue,
        };
        steps.insert(name.into(), json!(ms));
    }
    Ok(Value::Object(steps))
}

fn statuses(deployment: &Value, field: &str) -> Vec<String> {
    deployment["workflows"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| w[field].as_str().unwrap_or("null").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn all(deployment: &Value, field: &str, value: &str) -> bool {
    statuses(deployment, field).iter().all(|s| s == value)
}

/// A request that changes something in n8n.
fn writes(n8n: &FakeN8n) -> usize {
    n8n.requests()
        .iter()
        .filter(|r| r.method != Method::GET)
        .count()
}

async fn round(service: &Service, args: &Args, r: usize) -> anyhow::Result<Value> {
    let n = args.workflows;
    let tenant = format!("bench-promotion-{r}");
    let client = service.client(&tenant)?;
    let temp = tempfile::tempdir()?;

    // setup
    let dev = fake_n8n(&dev_workflows(n), 250).await;
    let staging = FakeN8n::start(API_KEY).await;
    let mut staging_credentials = vec![];
    for (kind, _, name) in CREDENTIALS {
        staging_credentials.push(staging.add_credential(name, kind));
    }
    let repo = temp.path().join("repository");
    std::fs::create_dir_all(repo.join("staging"))?;
    std::fs::write(repo.join("staging/README.md"), "staging\n")?;
    repository(&repo, &dev.workflows())?;
    client.register("dev", "DEV", &dev, &repo, FOLDER).await?;
    client
        .register("staging", "STAGING", &staging, &repo, "staging")
        .await?;
    client.sync_repository("dev").await?;
    let (_, synced) = client.sync_environment("dev").await?;
    anyhow::ensure!(
        synced["linked"] == n,
        "dev's workflows are not all linked: {synced}"
    );
    client.sync_environment("staging").await?;
    client.check_drift("staging").await?;
    client
        .gql(
            "mutation { createPipeline(id: \"main\", name: \"Main\", stages: [
               { sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\",
                 gates: { requireApproval: false } } ]) { position } }",
            json!({}),
        )
        .await?;
    for ((kind, source, target), id) in CREDENTIALS.iter().zip(&staging_credentials) {
        client
            .gql(
                "mutation($type: String!, $source: String!, $id: String!, $name: String!) {
                   setCredentialMapping(sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\",
                   type: $type, sourceName: $source, targetId: $id, targetName: $name) { position } }",
                json!({ "type": kind, "source": source, "id": id, "name": target }),
            )
            .await?;
    }

    // 1. promote
    eprintln!("round {r}: 1. promote {n}");
    let first = promote(&client, "p1", None).await?;
    let d = &first.deployment;
    anyhow::ensure!(
        d["status"] == "SUCCESS" && all(d, "status", "SUCCESS") && statuses(d, "status").len() == n,
        "the first promotion did not push every workflow: {d}"
    );
    anyhow::ensure!(
        staging.len() == n,
        "staging holds {} workflows",
        staging.len()
    );
    anyhow::ensure!(
        d["gitCommit"]["commitSha"].is_string() && d["gitCommit"]["files"] == 2 * n,
        "no Git commit of every workflow: {}",
        d["gitCommit"]
    );
    let creates = writes(&staging);
    require(creates >= n, || {
        format!("round {r}: the first promotion of {n} workflows wrote {creates} times to staging")
    });
    require_steps(
        r,
        "promote",
        &first.steps,
        &["first_push", "last_push", "git_commit", "finished"],
    );
    let held = staging.workflows();

    // 2. again
    eprintln!("round {r}: 2. again");
    let canonical: Vec<String> = (0..n).map(canonical_id).collect();
    staging.clear_requests();
    let again = promote(&client, "p2", Some(&canonical)).await?;
    let d = &again.deployment;
    anyhow::ensure!(
        d["status"] == "SUCCESS" && all(d, "status", "UNCHANGED"),
        "promoting again changed something: {d}"
    );
    let again_writes = writes(&staging);
    anyhow::ensure!(
        again_writes == 0,
        "promoting again wrote {again_writes} times to n8n"
    );
    require_steps(r, "again", &again.steps, &["finished"]);

    // 3. rollback
    eprintln!("round {r}: 3. rollback after a failure at the last of {n}");
    for w in dev.workflows() {
        let id = w["id"].as_str().context("an id")?.to_string();
        dev.modify(&id, |w| {
            w["nodes"][0]["parameters"]["benchRound"] = json!(r);
        });
    }
    client.sync_environment("dev").await?;
    staging.clear_requests();
    staging.fault_next_for(Method::PUT, n - 1, Fault::Slow(Duration::ZERO));
    staging.fault_next_for(
        Method::PUT,
        1,
        Fault::Status {
            status: 400,
            message: "request/body must NOT have additional properties".into(),
        },
    );
    let rollback = promote(&client, "p3", None).await?;
    staging.clear_faults();
    let d = &rollback.deployment;
    let restored = statuses(d, "restored")
        .iter()
        .filter(|s| *s == "UPDATED")
        .count();
    anyhow::ensure!(
        d["status"] == "FAILED"
            && d["promotion"]["status"] == "ROLLED_BACK"
            && d["rollback"]["inconsistencies"] == json!([])
            && restored == n - 1,
        "the rollback did not restore the {} pushed: {d}",
        n - 1
    );
    let now = staging.workflows();
    anyhow::ensure!(
        now.len() == held.len()
            && held.iter().all(|old| now
                .iter()
                .any(|w| w["id"] == old["id"] && w["nodes"] == old["nodes"])),
        "staging does not hold what it held before the failed promotion"
    );
    require_steps(
        r,
        "rollback",
        &rollback.steps,
        &[
            "first_push",
            "last_push",
            "rollback_started",
            "first_restore",
            "rollback_finished",
            "finished",
        ],
    );
    let rollback_alone = match (
        rollback.steps["rollback_started"].as_f64(),
        rollback.steps["finished"].as_f64(),
    ) {
        (Some(start), Some(end)) => round1(end - start),
        _ => anyhow::bail!("no rollback in {}", rollback.steps),
    };
    eprintln!(
        "round {r}: promote {:.0} ms, again {:.0} ms, rollback {:.0} ms ({rollback_alone:.0} ms restoring)",
        ms(first.total),
        ms(again.total),
        ms(rollback.total)
    );
    Ok(json!({
        "tenant": tenant,
        "promote_ms": ms(first.total),
        "promote_writes": creates,
        "promote_steps": first.steps,
        "promote_deployment": first.deployment_id,
        "again_ms": ms(again.total),
        "again_writes": again_writes,
        "again_steps": again.steps,
        "rollback_ms": ms(rollback.total),
        "rollback_alone_ms": rollback_alone,
        "rollback_writes": writes(&staging),
        "rollback_steps": rollback.steps,
    }))
}

/// Requires the steps the figures are taken from in a deployment's history.
fn require_steps(r: usize, what: &str, steps: &Value, names: &[&str]) {
    for name in names {
        require(steps[name].is_number(), || {
            format!("round {r}: {what}: no {name} in the deployment's history ({steps})")
        });
    }
}

fn range(rounds: &[Value], field: &str) -> Value {
    let samples: Vec<f64> = rounds.iter().filter_map(|r| r[field].as_f64()).collect();
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    json!({ "median": median(&samples), "min": min, "max": max(&samples) })
}

async fn run(args: &Args, service: &Service) -> anyhow::Result<Value> {
    let mut rounds = vec![];
    for r in 1..=args.rounds {
        rounds.push(round(service, args, r).await?);
    }
    require_eq(rounds.len(), args.rounds, "rounds");
    let promote = range(&rounds, "promote_ms");
    let again = range(&rounds, "again_ms");
    let rollback = range(&rounds, "rollback_ms");
    let again_writes: i64 = rounds
        .iter()
        .map(|r| r["again_writes"].as_i64().unwrap_or(-1))
        .sum();
    let target = |value: &Value, target: f64| {
        let median = value["median"].as_f64().unwrap_or(f64::INFINITY);
        json!({ "target": target, "value": median, "met": median <= target })
    };
    let mut again_target = target(&again, AGAIN_TARGET_MS);
    again_target["writes"] = json!(again_writes);
    again_target["met"] = json!(again_target["met"] == true && again_writes == 0);
    Ok(json!({
        "benchmark": "promotion",
        "backend": args.backend,
        "workflows": args.workflows,
        "rounds": rounds,
        "promote_ms": promote,
        "again_ms": again,
        "rollback_ms": rollback,
        "rollback_alone_ms": range(&rounds, "rollback_alone_ms"),
        "targets": {
            "promote_ms": target(&promote, PROMOTE_TARGET_MS),
            "again_ms": again_target,
            "rollback_ms": target(&rollback, ROLLBACK_TARGET_MS),
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args).await;
    outcome::conclude("promotion", args.smoke, report)
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.workflows > REFERENCED.len() && args.rounds > 0,
        "--workflows at least 3, --rounds positive"
    );
    let bench = Bench::start(&args.backend, args.pool, &args.pg_url, |_| {}).await?;
    let report = run(args, &bench.service).await;
    bench.finish(report).await
}
