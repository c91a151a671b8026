//! Test fixtures: fresh stores on both backends, and command contexts.

use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use eventstore::{PgStore, Store};
use workflowops::command::bus::{CommandBus, CommandContext};
use workflowops::command::domain::Domain;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("WORKFLOWOPS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A migrated store that removes itself when dropped.
pub struct TestStore {
    pub store: Store,
    /// `DATABASE_URL` of the store, for running the binary against it.
    pub url: String,
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
            cleanup: Cleanup::Postgres { database },
        }
    }

    pub fn domain(&self) -> Domain {
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
