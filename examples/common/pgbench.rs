//! pgbench running one command's SQL shape against a benchmark's own database: the
//! peer a command benchmark is compared with, side by side in the same run.
//!
//! The shape is what the bus does for one command without group commit, in
//! PostgreSQL's extended protocol with prepared statements (`-M prepared`, as sqlx
//! does): read the aggregate's events as postgres-es does (an incident the benchmark
//! wrote, up to a random sequence from 0 to 4: on average the 2 events a command of
//! a five-step lifecycle loads), then one autocommit `INSERT` of one event of the
//! same size, to a new stream. Payload and metadata are a real event's, bound as
//! parameters (`-D`). Two threads (`-j 2`), one connection per client.

use std::process::Command;

use anyhow::Context;

pub struct Pgbench {
    pub tps: f64,
    pub transactions: u64,
    pub seconds: u64,
    pub failed: u64,
}

/// Runs pgbench for `seconds` with `clients` connections on `url`'s database.
/// `incidents` are `(tenant:incident ids)` whose events the reads go to.
pub async fn run(
    store: &eventstore::Store,
    url: &str,
    clients: usize,
    seconds: u64,
    incidents: usize,
) -> anyhow::Result<Pgbench> {
    let eventstore::Store::Postgres(pg) = store else {
        anyhow::bail!("pgbench compares against PostgreSQL only");
    };
    let (aggregate_type, event_type, event_version, payload, metadata): (
        String,
        String,
        String,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT aggregate_type, event_type, event_version, payload::text, metadata::text FROM events \
         WHERE event_type = 'incident.acknowledged' ORDER BY position LIMIT 1",
    )
    .fetch_optional(&pg.pool)
    .await?
    .context("the benchmark wrote no incident.acknowledged event to copy")?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("command.sql");
    // `:name` is a pgbench variable; the SQL has no other colon. `n` names the new
    // aggregate: drawn from 9e18 values, as 1..2e9 made a duplicate key (which aborts
    // pgbench) about one run in six.
    std::fs::write(
        &script,
        format!(
            "\\set c random(0, {last_client})\n\
             \\set i random(0, {last_incident})\n\
             \\set s random(0, 4)\n\
             \\set n random(1, 9000000000000000000)\n\
             SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events WHERE aggregate_type = :aggregate_type \
             AND aggregate_id = 'bench' || chr(58) || 'c' || :c || '-i' || :i AND sequence <= :s \
             ORDER BY sequence;\n\
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
             VALUES (:aggregate_type, 'pgbench' || chr(58) || :client_id || '-' || :n, 1, :event_type, :event_version, \
             :payload, :metadata, now());\n",
            last_client = clients.max(1) - 1,
            last_incident = (incidents / clients.max(1)).max(1) - 1,
        ),
    )?;
    let parsed = url::Url::parse(url)?;
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg("-D")
        .arg(format!("aggregate_type={aggregate_type}"))
        .arg("-D")
        .arg(format!("event_type={event_type}"))
        .arg("-D")
        .arg(format!("event_version={event_version}"))
        .arg("-D")
        .arg(format!("payload={payload}"))
        .arg("-D")
        .arg(format!("metadata={metadata}"))
        .arg("-h")
        .arg(parsed.host_str().unwrap_or("127.0.0.1"))
        .arg("-p")
        .arg(parsed.port().unwrap_or(5432).to_string())
        .arg("-U")
        .arg(if parsed.username().is_empty() {
            "postgres"
        } else {
            parsed.username()
        })
        .arg(parsed.path().trim_start_matches('/'));
    // the transport the store's connections use (decision 70 skips TLS to this
    // machine unless asked for; libpq alone would take it): side by side on equal terms
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pg.pool)
        .await?;
    command.env("PGSSLMODE", if tls { "require" } else { "disable" });
    if let Some(password) = parsed.password() {
        command.env("PGPASSWORD", password);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("could not run pgbench (Debian: apt-get install postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        anyhow::bail!("pgbench failed ({}): {stderr}\n{stdout}", output.status);
    }
    let number = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let tps = number("tps = ").context(format!("no tps in pgbench's output: {stdout}"))?;
    let transactions = number("number of transactions actually processed: ")
        .map(|n| n as u64)
        .unwrap_or_default();
    let failed = number("number of failed transactions: ")
        .map(|n| n as u64)
        .unwrap_or_default();
    // What pgbench inserted is not the benchmark's: remove it before verifying.
    sqlx::query("DELETE FROM events WHERE aggregate_id LIKE 'pgbench:%'")
        .execute(&pg.pool)
        .await?;
    Ok(Pgbench {
        tps,
        transactions,
        seconds,
        failed,
    })
}
