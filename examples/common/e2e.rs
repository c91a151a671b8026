//! What the end-to-end benchmarks share (`bench_sync`, `bench_promotion`): the
//! realistic workflows, the local Git repository that holds them, the service
//! started in-process on loopback and its GraphQL client, and the figures' helpers.
//! Included with `#[path]` next to the fake n8n (`mod fake_n8n`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventstore::Store;
use serde_json::{json, Value};
use workflowops::http::auth::Auth;
use workflowops::Application;

use crate::bench_store::BenchStore;
use crate::fake_n8n::{sample_workflow, FakeN8n};

/// The signing secret of the benchmark's service.
pub const SECRET: &[u8] = b"bench-sync-secret-0123456789abcdef-0123456789";
pub const API_KEY: &str = "n8n_api_key_bench_0123456789";
pub const FOLDER: &str = "workflows";
/// Top-level fields of an n8n workflow that Git does not hold (as exported).
pub const INSTANCE_FIELDS: [&str; 7] = [
    "id",
    "createdAt",
    "updatedAt",
    "versionId",
    "active",
    "isArchived",
    "triggerCount",
];

pub const SYNC_ENV: &str = "mutation($e: ID!) { syncEnvironment(environmentId: $e) {
    position workflowsSeen discovered changed linked missing collisions rejected events
    environment { lastSyncAt linkedMappings } } }";
pub const SYNC_REPO: &str = "mutation($e: ID!) { syncRepository(environmentId: $e) {
    position commitSha filesSeen created renamed updated mappingsUpdated rejected events
    environment { lastRepositorySyncAt } } }";
pub const CHECK_DRIFT: &str = "mutation($e: ID!) { checkDrift(environmentId: $e) {
    position inSync withDrift notInGit
    drifted { workflowId n8nWorkflowId name matchedByName diff { nodesAdded nodesRemoved nodesModified connectionsChanged settingsChanged } }
    notInGitWorkflows incident { id status severity }
    environment { driftStatus counts { inSync withDrift notInGit } } } }";
pub const REGISTER: &str = "mutation($id: ID!, $name: String!, $class: EnvironmentClass!, $url: String!, $key: String!, $repo: String!, $folder: String!) {
    registerEnvironment(id: $id, name: $name, class: $class, n8nBaseUrl: $url, n8nApiKey: $key,
      git: { provider: LOCAL, repository: $repo, branch: \"main\", folder: $folder }) { position } }";
// ----------------------------------------------------------------------------------
// Workflows and the Git repository

/// Workflow `n` as n8n's API returns it: `sample_workflow(n)` with its nodes and
/// connections repeated 1, 1, 2 or 4 times (renamed, moved on the canvas).
pub fn workflow(n: usize) -> Value {
    let mut workflow = sample_workflow(n);
    let copies = [1, 1, 2, 4][n % 4];
    let nodes = workflow["nodes"].as_array().cloned().unwrap_or_default();
    let connections = workflow["connections"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for copy in 1..copies {
        let rename = |name: &str| format!("{name} ({})", copy + 1);
        for node in &nodes {
            let mut node = node.clone();
            node["name"] = json!(rename(node["name"].as_str().unwrap_or("Node")));
            node["id"] = json!(format!("{n:08x}-{copy:04x}-4000-8000-000000000000"));
            let x = node["position"][0].as_i64().unwrap_or(0);
            let y = node["position"][1].as_i64().unwrap_or(0);
            node["position"] = json!([x, y + 400 * copy as i64]);
            if let Some(path) = node["parameters"]["path"].as_str() {
                node["parameters"]["path"] = json!(format!("{path}-{}", copy + 1));
            }
            if node.get("webhookId").is_some() {
                node["webhookId"] = json!(format!("{n:08x}-{copy:04x}-4000-9000-000000000000"));
            }
            workflow["nodes"].as_array_mut().expect("nodes").push(node);
        }
        for (source, outputs) in &connections {
            let mut outputs = outputs.clone();
            for kind in outputs
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                for branch in kind.as_array_mut().into_iter().flatten() {
                    for target in branch.as_array_mut().into_iter().flatten() {
                        if let Some(name) = target["node"].as_str() {
                            target["node"] = json!(rename(name));
                        }
                    }
                }
            }
            workflow["connections"][rename(source)] = outputs;
        }
    }
    workflow
}

pub fn slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

pub fn canonical_id(n: usize) -> String {
    format!("wf-{n:04}")
}

pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .context("running git")?;
    anyhow::ensure!(status.success(), "git {args:?} failed");
    Ok(())
}

/// A local working copy on `main` whose `workflows/` folder holds every workflow as
/// exported, with its sidecar.
pub fn repository(dir: &Path, workflows: &[Value]) -> anyhow::Result<()> {
    git(dir, &["init", "-q", "-b", "main"])?;
    let folder = dir.join(FOLDER);
    std::fs::create_dir_all(&folder)?;
    for (n, workflow) in workflows.iter().enumerate() {
        let mut exported = workflow.clone();
        let object = exported.as_object_mut().expect("an object");
        for field in INSTANCE_FIELDS {
            object.remove(field);
        }
        let slug = slug(workflow["name"].as_str().expect("a name"));
        let mut bytes = serde_json::to_vec_pretty(&exported)?;
        bytes.push(b'\n');
        std::fs::write(folder.join(format!("{slug}.json")), bytes)?;
        let sidecar = json!({
            "canonical_id": canonical_id(n),
            "canonical_slug": slug,
            "tags": ["bench"],
        });
        std::fs::write(
            folder.join(format!("{slug}.wfo.json")),
            serde_json::to_vec_pretty(&sidecar)?,
        )?;
    }
    git(dir, &["add", "."])?;
    git(dir, &["commit", "-q", "-m", "workflows"])?;
    Ok(())
}

/// A fake n8n holding `workflows` (listing order = `n`), paging at `page_size`.
pub async fn fake_n8n(workflows: &[Value], page_size: usize) -> FakeN8n {
    let n8n = FakeN8n::start(API_KEY).await;
    n8n.set_page_size_cap(page_size);
    n8n.insert_many(workflows.iter().cloned());
    n8n
}

// ----------------------------------------------------------------------------------
// Figures

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn ms(d: Duration) -> f64 {
    round1(d.as_secs_f64() * 1000.0)
}

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => round1((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(0.0, f64::max)
}

// ----------------------------------------------------------------------------------
// The service and its client

/// A benchmark's service on a fresh database: on `backend` (PostgreSQL: created on
/// `pg_url`'s server and dropped by [`Bench::finish`]; SQLite: a temporary file),
/// migrated, with the service started on it and configured by `configure`.
pub struct Bench {
    pub service: Service,
    store: BenchStore,
    _temp: tempfile::TempDir,
}

impl Bench {
    pub async fn start(
        backend: &str,
        pool: Option<u32>,
        pg_url: &str,
        configure: impl FnOnce(&mut Application),
    ) -> anyhow::Result<Bench> {
        let temp = tempfile::tempdir()?;
        let bench = BenchStore::open(backend, None, pool, pg_url, temp.path()).await?;
        let started = async {
            bench.store.migrate().await?;
            Service::start_with(bench.store.clone(), configure).await
        }
        .await;
        match started {
            Ok(service) => {
                eprintln!("service on {}", service.base);
                Ok(Bench {
                    service,
                    store: bench,
                    _temp: temp,
                })
            }
            Err(error) => {
                bench.finish().await;
                Err(error)
            }
        }
    }

    /// Stops the service and drops the database, whatever `report` is; returns it.
    pub async fn finish(self, report: anyhow::Result<Value>) -> anyhow::Result<Value> {
        self.service.stop().await;
        self.store.finish().await;
        report
    }
}

pub struct Service {
    pub base: String,
    pub auth: Auth,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Service {
    pub async fn start(store: Store) -> anyhow::Result<Service> {
        Self::start_with(store, |_| {}).await
    }

    /// Like [`Service::start`], with the application configured by `configure`
    /// before it runs.
    pub async fn start_with(
        store: Store,
        configure: impl FnOnce(&mut Application),
    ) -> anyhow::Result<Service> {
        let auth = Auth::new(SECRET);
        let mut app =
            Application::with_store(store.clone(), "127.0.0.1:0".parse()?, auth.clone()).await?;
        configure(&mut app);
        let addr = app.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Service {
            base: format!("http://{addr}"),
            auth,
            store,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// A GraphQL client with an admin token of `tenant`.
    pub fn client(&self, tenant: &str) -> anyhow::Result<Client> {
        let token = self.auth.mint(
            tenant,
            "admin",
            "bench-admin",
            Duration::from_secs(24 * 3600),
        )?;
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()?,
            url: format!("{}/graphql", self.base),
            token,
        })
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("the service stopped with an error: {e}"),
                Ok(Err(e)) => eprintln!("the service task failed: {e}"),
                Err(_) => eprintln!("the service did not stop within 10 s"),
            }
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Client {
    /// Runs one operation that must succeed; returns its time (sending the request to
    /// having read the whole body) and its `data`.
    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<(Duration, Value)> {
        let started = Instant::now();
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let elapsed = started.elapsed();
        let body: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("HTTP {status}: not JSON"))?;
        if let Some(errors) = body.get("errors") {
            anyhow::bail!("HTTP {status}: {errors}");
        }
        anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
        Ok((elapsed, body["data"].clone()))
    }

    /// Registers environment `id` on `n8n`, with Git at `repo`'s `folder`.
    pub async fn register(
        &self,
        id: &str,
        class: &str,
        n8n: &FakeN8n,
        repo: &Path,
        folder: &str,
    ) -> anyhow::Result<()> {
        self.gql(
            REGISTER,
            json!({
                "id": id,
                "name": format!("Environment {id}"),
                "class": class,
                "url": n8n.base_url(),
                "key": API_KEY,
                "repo": repo.to_str().context("a UTF-8 path")?,
                "folder": folder,
            }),
        )
        .await
        .with_context(|| format!("registering {id}"))?;
        Ok(())
    }

    pub async fn sync_environment(&self, environment: &str) -> anyhow::Result<(Duration, Value)> {
        let (elapsed, data) = self
            .gql(SYNC_ENV, json!({ "e": environment }))
            .await
            .with_context(|| format!("syncEnvironment({environment})"))?;
        Ok((elapsed, data["syncEnvironment"].clone()))
    }

    pub async fn sync_repository(&self, environment: &str) -> anyhow::Result<(Duration, Value)> {
        let (elapsed, data) = self
            .gql(SYNC_REPO, json!({ "e": environment }))
            .await
            .with_context(|| format!("syncRepository({environment})"))?;
        Ok((elapsed, data["syncRepository"].clone()))
    }

    pub async fn check_drift(&self, environment: &str) -> anyhow::Result<(Duration, Value)> {
        let (elapsed, data) = self
            .gql(CHECK_DRIFT, json!({ "e": environment }))
            .await
            .with_context(|| format!("checkDrift({environment})"))?;
        Ok((elapsed, data["checkDrift"].clone()))
    }
}
