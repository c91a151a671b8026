//! The data the benchmarks populate, the same in each: tenant `bench`, 10
//! environments × 1,000 canonical workflows (by default; [`set_size`], the
//! benchmarks' `--environments` and `--canonicals`), one mapping per (environment,
//! canonical workflow), about one cell in seven drifted from Git. Deterministic, so a
//! database populated by one benchmark at one size serves the others at that size.
//!
//! Also what the benchmarks of the service over HTTP share (`bench_api`,
//! `bench_console`): the population through the domain and the wait for the read
//! models ([`populate_and_settle`]), the service started in-process on loopback
//! ([`Service`]), and the figures' helpers.
//!
//! Included by each benchmark with `#[path = "common/matrix_data.rs"] mod matrix_data;`
//! (each uses a different part of it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::environment::{
    EnvironmentClass, EnvironmentCommand, GitProvider, GitTarget, SyncKind,
};
use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use aggregates::mapping::{MappingCommand, Observation};
use anyhow::Context;
use chrono::Utc;
use eventstore::{PgStore, Store};
use serde_json::{json, Value};
use workflowops::command::bus::CommandContext;
use workflowops::command::domain::Domain;
use workflowops::http::auth::Auth;
use workflowops::Application;

pub const TENANT: &str = "bench";
pub const DEFAULT_ENVIRONMENTS: usize = 10;
pub const DEFAULT_CANONICALS: usize = 1000;

// The command-line arguments every benchmark over this data takes (flattened into
// each one's own with `#[command(flatten)]`; a doc comment here would become their
// `--help`'s description).
#[derive(clap::Args, Debug)]
pub struct PopulationArgs {
    /// sqlite or postgres
    #[arg(long, default_value = "sqlite")]
    pub backend: String,
    /// Tiny sizes (every phase and check, a few seconds in a debug build); sizes given
    /// on the command line still win.
    #[arg(long)]
    pub smoke: bool,
    /// Environments of the population (matrix columns).
    #[arg(long, default_value_t = DEFAULT_ENVIRONMENTS)]
    pub environments: usize,
    /// Canonical workflows of the population (matrix rows).
    #[arg(long, default_value_t = DEFAULT_CANONICALS)]
    pub canonicals: usize,
}

impl PopulationArgs {
    /// [`set_size`] to the sizes asked for.
    pub fn set_size(&self) -> anyhow::Result<()> {
        set_size(self.environments, self.canonicals)
    }
}

static ENVIRONMENTS: AtomicUsize = AtomicUsize::new(DEFAULT_ENVIRONMENTS);
static CANONICALS: AtomicUsize = AtomicUsize::new(DEFAULT_CANONICALS);

/// The size of the data: `environments` × `canonicals` (set once, before anything
/// is populated or checked). At least [`FILTER_ENVIRONMENTS`] environments, so the
/// filtered page has its three columns.
pub fn set_size(environments: usize, canonicals: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (FILTER_ENVIRONMENTS..=99).contains(&environments) && (1..=99_999).contains(&canonicals),
        "--environments within {FILTER_ENVIRONMENTS}..=99 and --canonicals within 1..=99999"
    );
    ENVIRONMENTS.store(environments, Ordering::Relaxed);
    CANONICALS.store(canonicals, Ordering::Relaxed);
    Ok(())
}

/// Environments (matrix columns).
pub fn environments() -> usize {
    ENVIRONMENTS.load(Ordering::Relaxed)
}

/// Canonical workflows (matrix rows).
pub fn canonicals() -> usize {
    CANONICALS.load(Ordering::Relaxed)
}

/// Mappings (matrix cells): one per environment and canonical workflow.
pub fn mappings() -> usize {
    environments() * canonicals()
}
/// Environments and search term of the filtered matrix page.
pub const FILTER_ENVIRONMENTS: usize = 3;
pub const FILTER_SEARCH: &str = "sync";
/// Workflow names: `{family} {number}`; three families contain "sync".
pub const FAMILIES: [&str; 10] = [
    "Order sync",
    "Invoice export",
    "Lead router",
    "Slack alert",
    "Contact sync",
    "Inventory check",
    "Payment retry",
    "Ticket triage",
    "Stock sync",
    "Report digest",
];

pub fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A well-formed content hash (64 lowercase hex) derived from `seed`.
pub fn hash(seed: u64) -> ContentHash {
    let text = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(seed),
        mix(seed ^ 1),
        mix(seed ^ 2),
        mix(seed ^ 3)
    );
    ContentHash::parse(&text).expect("64 hex characters")
}

pub fn id(s: impl Into<String>) -> LocalId {
    LocalId::parse(s).expect("valid local id")
}

pub fn env_id(e: usize) -> LocalId {
    id(format!("env-{e:02}"))
}

/// Canonical `c` as the ids and names write it: 4 digits, 5 from 10,000 canonical
/// workflows on (so names sort by number at every size, and a database populated
/// at up to 9,999 keeps its ids).
pub fn number(c: usize) -> String {
    if canonicals() > 9999 {
        format!("{c:05}")
    } else {
        format!("{c:04}")
    }
}

pub fn canonical_id(c: usize) -> LocalId {
    id(format!("wf-{}", number(c)))
}

pub fn canonical_name(c: usize) -> String {
    format!("{} {}", FAMILIES[c % FAMILIES.len()], number(c))
}

/// Mapping `m` is canonical `m % canonicals()` in environment `m / canonicals()`.
pub fn mapping_parts(m: usize) -> (usize, usize) {
    (m / canonicals(), m % canonicals())
}

pub fn n8n_id(e: usize, c: usize) -> LocalId {
    id(format!("n8n-{e:02}-{}", number(c)))
}

/// The Git version of canonical `c`.
pub fn git_hash(c: usize) -> ContentHash {
    hash(1_000_000 + c as u64)
}

/// Whether the cell (environment `e`, canonical `c`) differs from Git (~1 in 7).
pub fn drifted(e: usize, c: usize) -> bool {
    mix(((e as u64) << 32) | c as u64) % 7 == 0
}

/// The cells that differ from Git.
pub fn drifted_cells() -> usize {
    (0..environments())
        .flat_map(|e| (0..canonicals()).map(move |c| (e, c)))
        .filter(|&(e, c)| drifted(e, c))
        .count()
}

/// The canonical workflows of the filtered page: the name contains
/// [`FILTER_SEARCH`] and a cell of the first [`FILTER_ENVIRONMENTS`] environments
/// differs from Git.
pub fn filtered_canonicals() -> Vec<usize> {
    (0..canonicals())
        .filter(|&c| canonical_name(c).to_lowercase().contains(FILTER_SEARCH))
        .filter(|&c| (0..FILTER_ENVIRONMENTS).any(|e| drifted(e, c)))
        .collect()
}

/// What n8n shows of the cell: Git's hash unless drifted; `version` makes each
/// observation of a drifted cell a new hash.
pub fn observation(e: usize, c: usize, version: u64) -> Observation {
    let content_hash = if drifted(e, c) {
        hash(mix(((e * canonicals() + c) as u64) << 20 | version))
    } else {
        git_hash(c)
    };
    Observation {
        name: canonical_name(c),
        content_hash,
        n8n_updated_at: Some(Utc::now()),
    }
}

/// The first observation of cell (`e`, `c`): n8n holds Git's content, auto-linked
/// to canonical `c`. (An auto-link takes the observed hash as the cell's Git hash,
/// so a drifted cell is discovered in sync, then observed with its own content.)
pub fn discover_in_sync(e: usize, c: usize) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: env_id(e),
        n8n_workflow_id: n8n_id(e, c),
        observation: Observation {
            name: canonical_name(c),
            content_hash: git_hash(c),
            n8n_updated_at: Some(Utc::now()),
        },
        auto_link: Some(canonical_id(c)),
    }
}

pub fn observe(e: usize, c: usize, version: u64, auto_link: bool) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: env_id(e),
        n8n_workflow_id: n8n_id(e, c),
        observation: observation(e, c, version),
        auto_link: auto_link.then(|| canonical_id(c)),
    }
}

// ----------------------------------------------------------------------------------
// The population's commands

pub fn register(e: usize, name: String, class: EnvironmentClass) -> EnvironmentCommand {
    EnvironmentCommand::Register {
        name,
        class,
        n8n_base_url: format!("https://n8n-{e:02}.example.com"),
        git: Some(GitTarget {
            provider: GitProvider::Github,
            repository: "bench/flows".into(),
            branch: "main".into(),
            folder: format!("env-{e:02}"),
        }),
        n8n_secret_ref: Some(id(format!("secret-{e:02}"))),
        git_secret_ref: None,
    }
}

pub fn ctx(tenant: &str, role: Role) -> CommandContext {
    let who = match role {
        Role::Admin => "alice",
        Role::Developer => "dev",
        Role::Viewer => "viewer",
        Role::System => "system:bench",
    };
    CommandContext::new(
        TenantId::parse(tenant).expect("valid tenant"),
        Actor::new(who, role),
    )
}

// ----------------------------------------------------------------------------------
// Figures

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50/p90/p99/max of samples in milliseconds (may be negative: clock differences).
pub fn latency(mut samples: Vec<f64>) -> Value {
    samples.sort_unstable_by(f64::total_cmp);
    json!({
        "n": samples.len(),
        "p50_ms": round3(percentile(&samples, 50.0)),
        "p90_ms": round3(percentile(&samples, 90.0)),
        "p99_ms": round3(percentile(&samples, 99.0)),
        "max_ms": round3(percentile(&samples, 100.0)),
    })
}

/// Failures counted by code.
#[derive(Default, Debug)]
pub struct Failures(pub HashMap<String, usize>);

impl Failures {
    pub fn add(&mut self, code: impl Into<String>, detail: &str) {
        let n = self.total();
        if n < 5 {
            eprintln!("  failure: {detail}");
        }
        *self.0.entry(code.into()).or_default() += 1;
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    pub fn merge(&mut self, other: Failures) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    pub fn json(&self) -> Value {
        json!(self.0)
    }
}

/// Prints `label: n/total (rate/s)` to stderr every 5 s until dropped.
pub struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    pub fn start(label: &'static str, counter: Arc<AtomicUsize>, total: usize) -> Progress {
        let started = Instant::now();
        Progress(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = counter.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {n}/{total} ({:.0}/s, {:.0} s)",
                    n as f64 / started.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ----------------------------------------------------------------------------------
// The service

pub struct Service {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub auth: Auth,
    pub domain: Domain,
    pub projections: projections::ProjectorHandle,
    pub store: Store,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Service {
    pub async fn start(store: Store, secret: &[u8]) -> anyhow::Result<Service> {
        let auth = Auth::new(secret);
        let app =
            Application::with_store(store.clone(), "127.0.0.1:0".parse()?, auth.clone()).await?;
        let addr = app.local_addr()?;
        let domain = app.domain().clone();
        let projections = app.projections().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Service {
            base: format!("http://{addr}"),
            addr,
            auth,
            domain,
            projections,
            store,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn token(&self, tenant: &str, role: &str, sub: &str) -> anyhow::Result<String> {
        Ok(self
            .auth
            .mint(tenant, role, sub, Duration::from_secs(24 * 3600))?)
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

// ----------------------------------------------------------------------------------
// Population

pub async fn populate(domain: &Domain, clients: usize) -> anyhow::Result<Value> {
    let started = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    let commands = Arc::new(AtomicUsize::new(0));
    let record = {
        let (errors, commands) = (errors.clone(), commands.clone());
        move |what: &str, result: Result<(), workflowops::command::bus::CommandError>| {
            commands.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("  {what} failed: {e}");
                }
            }
        }
    };
    for e in 0..environments() {
        let class = if e < 2 {
            EnvironmentClass::Production
        } else {
            EnvironmentClass::Staging
        };
        let r = domain
            .environment(
                &ctx(TENANT, Role::Admin),
                &env_id(e),
                register(e, format!("Environment {e:02}"), class),
            )
            .await;
        record("environment.register", r.map(|_| ()));
        let sync = EnvironmentCommand::RecordSync {
            kind: SyncKind::Environment,
            workflows_seen: canonicals() as u32,
        };
        let r = domain
            .environment(&ctx(TENANT, Role::Developer), &env_id(e), sync)
            .await;
        record("environment.record_sync", r.map(|_| ()));
    }

    let done = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start("canonical workflows", done.clone(), canonicals());
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (domain, done, record) = (domain.clone(), done.clone(), record.clone());
            tokio::spawn(async move {
                for c in (client..canonicals()).step_by(clients) {
                    let create = CanonicalCommand::Create {
                        canonical_id: canonical_id(c),
                        name: canonical_name(c),
                        slug: None,
                        git_path: None,
                    };
                    let r = domain
                        .canonical(&ctx(TENANT, Role::Developer), &canonical_id(c), create)
                        .await;
                    record("canonical.create", r.map(|_| ()));
                    let version = CanonicalCommand::RecordGitVersion {
                        git_content_hash: git_hash(c),
                        commit_sha: format!("{:016x}{:016x}{:08x}", mix(c as u64), mix(7), c),
                        git_path: format!("workflows/wf-{}.json", number(c)),
                    };
                    let r = domain
                        .canonical(&ctx(TENANT, Role::Developer), &canonical_id(c), version)
                        .await;
                    record("canonical.record_git_version", r.map(|_| ()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    drop(progress);

    let done = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start("mappings", done.clone(), mappings());
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (domain, done, record) = (domain.clone(), done.clone(), record.clone());
            tokio::spawn(async move {
                for m in (client..mappings()).step_by(clients) {
                    let (e, c) = mapping_parts(m);
                    // Discovered holding Git's content and auto-linked (the cell
                    // takes the content as its Git hash, as a sync does when the
                    // hash matched); a drifted cell is then changed in n8n.
                    let r = domain
                        .mapping(
                            &ctx(TENANT, Role::Developer),
                            &env_id(e),
                            &n8n_id(e, c),
                            discover_in_sync(e, c),
                        )
                        .await;
                    record("mapping.observe (discover)", r.map(|_| ()));
                    if drifted(e, c) {
                        let r = domain
                            .mapping(
                                &ctx(TENANT, Role::Developer),
                                &env_id(e),
                                &n8n_id(e, c),
                                observe(e, c, 0, false),
                            )
                            .await;
                        record("mapping.observe (drift)", r.map(|_| ()));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    drop(progress);
    Ok(json!({
        "commands": commands.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "clients": clients,
        "seconds": round3(started.elapsed().as_secs_f64()),
    }))
}

pub async fn count_events(store: &Store) -> anyhow::Result<i64> {
    let sql = "SELECT count(*) FROM events";
    Ok(match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        Store::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.pool).await?,
    })
}

/// Populates the log through the domain (unless it holds events already: population
/// skipped), then waits until every projection and reactor has handled it. Returns
/// the population's figures.
pub async fn populate_and_settle(service: &Service, clients: usize) -> anyhow::Result<Value> {
    let store = &service.store;
    let existing = count_events(store).await?;
    let mut population = if existing > 0 {
        eprintln!("reusing a populated log: {existing} events (population skipped)");
        json!({ "reused": true })
    } else {
        eprintln!(
            "populating: {} environments, {} canonical workflows, {} mappings ({clients} clients)",
            environments(),
            canonicals(),
            mappings()
        );
        let p = populate(&service.domain, clients).await?;
        eprintln!(
            "  {} commands in {} s ({} errors)",
            p["commands"], p["seconds"], p["errors"]
        );
        crate::outcome::require(p["errors"] == 0, || {
            format!(
                "population: {} of {} commands failed",
                p["errors"], p["commands"]
            )
        });
        p
    };
    // Every committed event, once the log's readers can see them all.
    let head = crate::bench_store::settle_log(store, Duration::from_secs(600)).await?;
    // Measured on a settled service: every projection and reactor has handled the
    // population (a catch-up still running would take CPU from what is measured).
    eprintln!("waiting for the projections and reactors to reach position {head}");
    let t = Instant::now();
    for name in projections::NAMES {
        service
            .projections
            .wait_for(name, head, Duration::from_secs(600))
            .await
            .with_context(|| format!("projection {name} catching up"))?;
        eprintln!("  {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    service
        .domain
        .reactors()
        .wait_for(head, Duration::from_secs(600))
        .await
        .context("reactors catching up")?;
    eprintln!("  caught up in {:.1} s", t.elapsed().as_secs_f64());
    population["environments"] = json!(environments());
    population["canonical_workflows"] = json!(canonicals());
    population["mappings"] = json!(mappings());
    population["events"] = json!(count_events(store).await?);
    Ok(population)
}
