//! The binary and the HTTP service: defaults, health, readiness, bad configuration.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workflowops::Application;

use crate::support::TestStore;

pub(crate) fn workflowops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workflowops"));
    for var in [
        "DATABASE_URL",
        "WORKFLOWOPS_LISTEN",
        "WORKFLOWOPS_DATA_DIR",
        "WORKFLOWOPS_DB_POOL_SIZE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

pub(crate) struct Killed(pub(crate) Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get_json(url: &str) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test]
async fn serve_with_no_configuration_runs_on_sqlite_in_the_data_dir() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = workflowops()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(answer) = get_json(&format!("http://127.0.0.1:{port}/health")).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "service did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health, (200, serde_json::json!({"status": "ok"})));
    let (status, ready) = get_json(&format!("http://127.0.0.1:{port}/ready"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(ready["database"], "sqlite");
    assert!(cwd
        .path()
        .join("workflowops-data")
        .join("workflowops.db")
        .exists());
}

#[tokio::test]
async fn app_on_port_zero_answers_health_ready_and_unknown_routes() {
    let t = TestStore::postgres().await;
    let auth = workflowops::http::auth::Auth::new(&[7u8; 32]);
    let app = Application::with_store(t.store.clone(), "127.0.0.1:0".parse().unwrap(), auth)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let (status, ready) = get_json(&format!("http://{addr}/ready")).await.unwrap();
    assert_eq!(
        (status, ready["database"].as_str()),
        (200, Some("postgres"))
    );
    let (status, body) = get_json(&format!("http://{addr}/nope")).await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    // the database going away makes the service not ready, without crashing it
    t.store.close().await;
    let (status, body) = get_json(&format!("http://{addr}/ready")).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, _) = get_json(&format!("http://{addr}/health")).await.unwrap();
    assert_eq!(status, 200);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Runs `serve` in `dir` until it answers `/health`, then stops it; returns stdout.
async fn serve_once(dir: &std::path::Path) -> String {
    let port = free_port();
    let child = workflowops()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut service = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("http://127.0.0.1:{port}/health"))
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "service did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.0.kill().unwrap();
    let _ = service.0.wait();
    let mut out = String::new();
    if let Some(mut stdout) = service.0.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    }
    out
}

fn data_dir_auth(dir: &std::path::Path) -> workflowops::http::auth::Auth {
    let (secret, source) = workflowops::http::auth::load_secret(None, dir).unwrap();
    assert!(matches!(
        source,
        workflowops::http::auth::SecretSource::File(_)
    ));
    workflowops::http::auth::Auth::new(&secret)
}

#[tokio::test]
async fn first_start_generates_the_secret_and_prints_one_admin_token() {
    let cwd = tempfile::tempdir().unwrap();
    let first = serve_once(cwd.path()).await;
    let token = first
        .lines()
        .last()
        .expect("a token on the last line")
        .trim()
        .to_string();
    assert!(first.contains("Admin token"), "{first}");
    let data_dir = cwd.path().join("workflowops-data");
    let who = data_dir_auth(&data_dir).verify(&token).unwrap();
    assert_eq!(
        (who.tenant.as_str(), who.role),
        ("default", aggregates::kernel::command::Role::Admin)
    );
    // Later starts keep the secret and print no token.
    let second = serve_once(cwd.path()).await;
    assert!(!second.contains("Admin token"), "{second}");
    assert_eq!(data_dir_auth(&data_dir).verify(&token).unwrap(), who);
}

#[tokio::test]
async fn token_command_mints_tokens_the_service_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = workflowops()
        .args(["token", "--tenant", "acme", "--role", "developer"])
        .args(["--sub", "dev@acme", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let who = data_dir_auth(dir.path()).verify(token.trim()).unwrap();
    assert_eq!(who.subject, "dev@acme");
    assert_eq!(who.tenant.as_str(), "acme");
    assert_eq!(who.role, aggregates::kernel::command::Role::Developer);

    for (tenant, role, expected) in [
        ("acme", "system", "role must be viewer, developer or admin"),
        ("ACME!", "admin", "invalid tenant"),
    ] {
        let out = workflowops()
            .args(["token", "--tenant", tenant, "--role", role])
            .args(["--sub", "x", "--data-dir", data_dir])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn token_command_prints_a_one_time_sign_in_link() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = workflowops()
        .args([
            "token", "--tenant", "acme", "--role", "viewer", "--sub", "vi@acme",
        ])
        .args(["--signin-url", "--public-url", "https://ops.example.com/"])
        .args(["--ttl-hours", "8", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap();
    let ticket = link
        .trim()
        .strip_prefix("https://ops.example.com/signin?ticket=")
        .unwrap_or_else(|| panic!("a sign-in link: {link}"));
    let auth = data_dir_auth(dir.path());
    let redeemed = auth.verify_ticket(ticket).unwrap();
    assert_eq!(redeemed.principal.subject, "vi@acme");
    assert_eq!(redeemed.session_ttl, Duration::from_secs(8 * 3600));
    assert!(redeemed.expires <= chrono::Utc::now().timestamp() + 600);
    // a ticket is not a bearer token
    assert!(auth.verify(ticket).is_err());
}

#[tokio::test]
async fn migrate_is_idempotent_and_bad_urls_fail_cleanly() {
    let t = TestStore::postgres().await;
    for _ in 0..2 {
        let out = workflowops()
            .arg("migrate")
            .env("DATABASE_URL", &t.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("postgres"));
    }
    let out = workflowops()
        .args([
            "migrate",
            "--database-url",
            "mysql://root:hunter2@localhost/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn rebuild_replays_the_log_and_refuses_unknown_projections() {
    let t = TestStore::sqlite().await;
    let domain = t.domain();
    domain
        .environment(
            &crate::support::admin("acme"),
            &crate::support::id("prod"),
            crate::conformance::register("Production"),
        )
        .await
        .unwrap();
    let out = workflowops()
        .args(["rebuild", "environment_status"])
        .env("DATABASE_URL", &t.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 1);
    assert_eq!(report["projections"][0], "environment_status");
    let env = projections::models::environments::environment(&t.store, "acme", "prod")
        .await
        .unwrap()
        .expect("rebuilt from the log");
    assert_eq!(env.name, "Production");

    let out = workflowops()
        .args(["rebuild", "nonsense"])
        .env("DATABASE_URL", &t.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown projection"), "{stderr}");
}
