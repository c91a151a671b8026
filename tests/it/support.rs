//! Test fixtures: fresh stores on both backends, and command contexts.

use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use eventstore::{PgStore, Store};
use workflowops::command::bus::{CommandBus, CommandContext};
use workflowops::command::domain::Domain;
use workflowops::reactors::{ReactorOptions, ReactorRuntime};

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn admin_url() -> String {
    std::env::var("WORKFLOWOPS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A migrated store that removes itself when dropped.
pub struct TestStore {
    pub store: Store,
    /// `DATABASE_URL` of the store, for running the binary against it.
    pub url: String,
    /// The domain [`TestStore::domain`] hands out, with the reactor runtime it
    /// started (as the service does: multi-aggregate steps finish on reactors).
    domain: std::sync::OnceLock<(Domain, Option<tokio::task::JoinHandle<()>>)>,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { database: String },
    Sqlite { _dir: tempfile::TempDir },
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl TestStore {
    pub async fn new(kind: Kind) -> TestStore {
        match kind {
            Kind::Sqlite => Self::sqlite().await,
            Kind::Postgres => Self::postgres().await,
        }
    }

    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url, 8).await.expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        TestStore {
            store,
            url,
            domain: Default::default(),
            cleanup: Cleanup::Sqlite { _dir: dir },
        }
    }

    pub async fn postgres() -> TestStore {
        let database = format!("wfo_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Store::connect(&admin_url(), 1)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (see README)");
        if let Store::Postgres(PgStore { pool, .. }) = &admin {
            sqlx::query(&format!("CREATE DATABASE {database}"))
                .execute(pool)
                .await
                .expect("create database");
        }
        admin.close().await;
        let url = database_url(&database);
        let store = Store::connect(&url, 20)
            .await
            .expect("connect test database");
        store.migrate().await.expect("migrate postgres");
        TestStore {
            store,
            url,
            domain: Default::default(),
            cleanup: Cleanup::Postgres { database },
        }
    }

    /// The domain over this store, with the service's reactors running (started on
    /// first use; every call shares them).
    pub fn domain(&self) -> Domain {
        self.domain
            .get_or_init(|| {
                let domain = Domain::new(CommandBus::new(self.store.clone()));
                let (_, task) =
                    ReactorRuntime::standard(&domain, ReactorOptions::default()).spawn();
                (domain, Some(task))
            })
            .0
            .clone()
    }

    /// Makes [`TestStore::domain`] hand out `domain`, whose reactors someone else runs
    /// (the service under test), instead of starting a second runtime.
    pub fn adopt_domain(&self, domain: Domain) {
        assert!(
            self.domain.set((domain, None)).is_ok(),
            "adopt the service's domain before anything uses TestStore::domain"
        );
    }

    /// A domain over this store with no reactors running: multi-aggregate steps stop
    /// after their first commit, as after a crash (or until a runtime is started).
    pub fn domain_without_reactors(&self) -> Domain {
        Domain::new(CommandBus::new(self.store.clone()))
    }

    pub fn bus(&self) -> CommandBus {
        CommandBus::new(self.store.clone())
    }
}

fn database_url(database: &str) -> String {
    eventstore::with_database(&admin_url(), database)
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some((_, Some(reactors))) = self.domain.get() {
            reactors.abort();
        }
        if let Cleanup::Postgres { database } = &self.cleanup {
            // Drop runs inside the test's runtime, which may be single-threaded and is
            // blocked here: use a thread with its own runtime, and do not touch the
            // test's pool (FORCE terminates its connections).
            let database = database.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(Store::Postgres(PgStore { pool, .. })) =
                        Store::connect(&admin_url(), 1).await
                    {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                        ))
                        .execute(&pool)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// How many events of `event_type` are stored (a direct count, not the gap-safe reader).
pub async fn count_of_type(store: &Store, event_type: &str) -> i64 {
    match store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
                .bind(event_type)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        Store::Sqlite(eventstore::SqliteStore { pool, .. }) => {
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = ?1")
                .bind(event_type)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub fn id(s: &str) -> LocalId {
    LocalId::parse(s).unwrap()
}

pub fn ctx(tenant_name: &str, role: Role) -> CommandContext {
    let who = match role {
        Role::Admin => "alice",
        Role::Developer => "dev",
        Role::Viewer => "viewer",
        Role::System => "system:test",
    };
    CommandContext::new(tenant(tenant_name), Actor::new(who, role))
}

pub fn admin(tenant_name: &str) -> CommandContext {
    ctx(tenant_name, Role::Admin)
}

/// The envelope a command of `role` in `tenant_name` commits under (for tests that
/// call the store's commit directly).
pub fn envelope(tenant_name: &str, role: Role) -> eventstore::Envelope {
    let ctx = ctx(tenant_name, role);
    eventstore::Envelope {
        tenant: ctx.tenant,
        actor: ctx.actor,
        correlation_id: ctx.correlation_id,
        causation_id: None,
        command: "test",
        reason: None,
        admin_override: false,
        at: chrono::Utc::now(),
    }
}

/// Runs a test body once per backend (SQLite, then PostgreSQL).
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Kind::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Kind::Postgres).await;
                }
            )+
        }
    };
}
pub(crate) use both_backends;

/// How long tests wait for a reactor's effect.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Aborts a background task when dropped (a test's reactor runtime).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
