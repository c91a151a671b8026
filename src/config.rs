//! Configuration, by flag or environment variable. Nothing is required: with no
//! configuration the service runs on a SQLite file in `./workflowops-data`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use eventstore::{Store, StoreError, SQLITE_FILE};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "workflowops",
    version,
    about = "Control plane for n8n workflows across environments"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(
        long,
        env = "WORKFLOWOPS_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// Directory for the embedded database and generated keys.
    #[arg(
        long,
        env = "WORKFLOWOPS_DATA_DIR",
        default_value = "./workflowops-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `postgres://…` switches to PostgreSQL; unset means SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Maximum database connections.
    #[arg(
        long,
        env = "WORKFLOWOPS_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub db_pool_size: u32,
    /// Events the projector reads and applies per batch (one transaction each).
    #[arg(
        long,
        env = "WORKFLOWOPS_PROJECTOR_BATCH",
        default_value_t = 1000,
        value_parser = clap::value_parser!(i64).range(1..=100_000),
        global = true
    )]
    pub projector_batch: i64,
    /// Secret that signs bearer tokens (at least 32 bytes). Unset: the file
    /// `jwt-secret` in the data directory, generated on first use.
    #[arg(
        long,
        env = "WORKFLOWOPS_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,
    /// Key that seals the environments' credentials (n8n API keys, Git tokens); at
    /// least 32 bytes. Default: `secret-key` in the data directory, generated on first
    /// use. Losing it makes the stored credentials unreadable.
    #[arg(
        long,
        env = "WORKFLOWOPS_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secret_key: Option<String>,
    /// The GitHub API root for GitHub repositories: GitHub Enterprise's
    /// `https://ghe.example.com/api/v3`. Unset: api.github.com.
    #[arg(long, env = "WORKFLOWOPS_GITHUB_API_URL", global = true)]
    pub github_api_url: Option<String>,
    /// How often every non-dev environment with Git is checked for drift
    /// (`30s`, `5m`, `1h`…; `off` disables).
    #[arg(
        long,
        env = "WORKFLOWOPS_DRIFT_CHECK_INTERVAL",
        default_value = "5m",
        global = true
    )]
    pub drift_check_interval: Interval,
    /// How often open incidents' SLA state is escalated (`off` disables).
    #[arg(
        long,
        env = "WORKFLOWOPS_SLA_INTERVAL",
        default_value = "1m",
        global = true
    )]
    pub sla_interval: Interval,
    /// How often closed incidents' snapshot payloads are purged by policy (`off`
    /// disables).
    #[arg(
        long,
        env = "WORKFLOWOPS_RETENTION_INTERVAL",
        default_value = "24h",
        global = true
    )]
    pub retention_interval: Interval,
    /// How often every active environment is synced from Git and n8n (default off).
    #[arg(
        long,
        env = "WORKFLOWOPS_SYNC_INTERVAL",
        default_value = "off",
        global = true
    )]
    pub sync_interval: Interval,
    /// How often due scheduled deployments are started, stale ones recovered and
    /// orphaned promotion slots freed (`off` disables).
    #[arg(
        long,
        env = "WORKFLOWOPS_DEPLOYMENT_INTERVAL",
        default_value = "10s",
        global = true
    )]
    pub deployment_interval: Interval,
    /// Publishes every event to NATS JetStream at this URL (`nats://host:4222`;
    /// several comma-separated). Unset: no NATS feed.
    #[arg(long, env = "WORKFLOWOPS_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// The JetStream stream the feed goes to (created when missing).
    #[arg(
        long,
        env = "WORKFLOWOPS_NATS_STREAM",
        default_value = "WORKFLOWOPS",
        global = true
    )]
    pub nats_stream: String,
    /// The first token of the feed's subjects
    /// (`{prefix}.{tenant}.{aggregate_type}.{event}`); the stream takes `{prefix}.>`.
    #[arg(
        long,
        env = "WORKFLOWOPS_NATS_SUBJECT_PREFIX",
        default_value = "workflowops",
        global = true
    )]
    pub nats_subject_prefix: String,
    /// Webhook delivery attempts: the delay before each (humantime, comma-separated;
    /// the first after the event). A delivery failing all of them disables its
    /// endpoint.
    #[arg(
        long,
        env = "WORKFLOWOPS_WEBHOOK_RETRY_SCHEDULE",
        default_value = "0s,5s,5m,30m,2h,5h,10h,10h",
        global = true
    )]
    pub webhook_retry_schedule: String,
    /// One webhook delivery attempt's limit.
    #[arg(
        long,
        env = "WORKFLOWOPS_WEBHOOK_TIMEOUT",
        default_value = "15s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub webhook_timeout: std::time::Duration,
    /// The service's address as people reach it (behind a proxy, say): the links in
    /// notifications start with it. Default: `http://` + the listen address.
    #[arg(long, env = "WORKFLOWOPS_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Lets webhooks target internal addresses (loopback, private, link-local): only
    /// on a network where every endpoint is trusted.
    #[arg(long, env = "WORKFLOWOPS_WEBHOOK_ALLOW_PRIVATE", global = true)]
    pub webhook_allow_private: bool,
    /// A deployment running longer than this is recovered: its target is restored
    /// from the pre-snapshot and it fails as stale.
    #[arg(
        long,
        env = "WORKFLOWOPS_DEPLOYMENT_STALE_AFTER",
        default_value = "1h",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub deployment_stale_after: std::time::Duration,
    /// The most a GraphQL request may take (`15s`, `1m`…): a query past it is
    /// cancelled and answered `DEADLINE_EXCEEDED`.
    #[arg(
        long,
        env = "WORKFLOWOPS_REQUEST_DEADLINE",
        default_value = "15s",
        value_parser = parse_deadline,
        global = true
    )]
    pub request_deadline: std::time::Duration,
    /// GraphQL requests one tenant may have in flight (more wait up to 1 s, then
    /// get `RATE_LIMITED`).
    #[arg(
        long,
        env = "WORKFLOWOPS_TENANT_CONCURRENCY",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        global = true
    )]
    pub tenant_concurrency: u32,
    /// Of those, requests with a field that walks or replays the event log
    /// (`verifyEventLog`, `eventHistory`, `aggregateAt`…).
    #[arg(
        long,
        env = "WORKFLOWOPS_TENANT_EXPENSIVE_CONCURRENCY",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1_000),
        global = true
    )]
    pub tenant_expensive_concurrency: u32,
    /// GraphQL requests the whole process may have in flight, all tenants together
    /// (more wait up to 1 s, then get 503 `OVERLOADED` with `Retry-After`).
    #[arg(
        long,
        env = "WORKFLOWOPS_MAX_IN_FLIGHT",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        global = true
    )]
    pub max_in_flight: u32,
    /// How often the log digest is sealed into an immutable row (`off` disables; the
    /// digest head is kept up to date either way, and `workflowops digest` seals on
    /// demand).
    #[arg(
        long,
        env = "WORKFLOWOPS_SEAL_INTERVAL",
        default_value = "1m",
        global = true
    )]
    pub seal_interval: Interval,
}

/// Why a duration option does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("{0} (a duration such as 30s, 5m or 1h, or `off`)")]
    Interval(humantime::DurationError),
    #[error("an interval is at least 100ms (or `off`)")]
    IntervalTooShort,
    #[error(transparent)]
    Deadline(humantime::DurationError),
    #[error("a request deadline is between 100ms and 1h")]
    DeadlineOutOfRange,
}

fn parse_deadline(text: &str) -> Result<std::time::Duration, DurationError> {
    let duration = humantime::parse_duration(text).map_err(DurationError::Deadline)?;
    if duration < std::time::Duration::from_millis(100)
        || duration > std::time::Duration::from_secs(3600)
    {
        return Err(DurationError::DeadlineOutOfRange);
    }
    Ok(duration)
}

/// A scheduler interval: a duration (`90s`, `5m`, `1h 30m`, `500ms`) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Option<std::time::Duration>);

impl std::str::FromStr for Interval {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(Interval(None));
        }
        let every = humantime::parse_duration(s).map_err(DurationError::Interval)?;
        if every < std::time::Duration::from_millis(100) {
            return Err(DurationError::IntervalTooShort);
        }
        Ok(Interval(Some(every)))
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP service (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Walk every aggregate's hash chain and recompute the log digest against every
    /// seal and the digest head; exits 1 and names the first broken event or seal if
    /// the log was altered, 2 if it could not check.
    Verify {
        /// A digest printed by `workflowops digest` (HEX@POSITION), kept outside the
        /// database: also proves the log up to its position is the one it was taken
        /// from.
        #[arg(long, value_name = "HEX@POSITION")]
        digest: Option<String>,
    },
    /// Seal the log digest now and print it (JSON); keep the `HEX@POSITION` it prints
    /// outside the database for `verify --digest`.
    Digest,
    /// Replay read models from position 0 into shadow tables and swap them in with
    /// one transaction (all of them, or the named one); queries see the old ones
    /// until then. Prints a JSON report. A running service picks the swap up by itself.
    Rebuild {
        /// One of: workflow_matrix, environment_status, incidents, promotions,
        /// deployments, pipelines, drift_policies, credential_mappings, snapshots,
        /// webhooks, audit_trail.
        projection: Option<String>,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` is this output.
    Schema,
    /// Print a bearer token signed with the service's secret.
    Token {
        #[arg(long)]
        tenant: String,
        /// viewer, developer or admin.
        #[arg(long)]
        role: String,
        /// Who the token stands for (shown in the audit trail).
        #[arg(long)]
        sub: String,
        /// Validity in hours (with --signin-url: of the session the link opens).
        #[arg(long, default_value_t = 24 * 30)]
        ttl_hours: u64,
        /// Print a one-time console sign-in link instead (usable once, within ten
        /// minutes), under --public-url.
        #[arg(long)]
        signin_url: bool,
    },
}

impl Config {
    /// Where users reach the service: --public-url, else the listen address.
    pub fn public_base_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// How webhooks are delivered.
    pub fn webhooks(&self) -> anyhow::Result<crate::integrations::webhooks::WebhookSettings> {
        use crate::integrations::webhooks::{parse_schedule, ssrf::Allow, WebhookSettings};
        Ok(WebhookSettings {
            schedule: parse_schedule(&self.webhook_retry_schedule)
                .map_err(|e| anyhow::anyhow!("--webhook-retry-schedule: {e}"))?,
            timeout: self.webhook_timeout,
            public_url: self.public_base_url(),
            allow: Allow {
                private: self.webhook_allow_private,
                loopback: false,
            },
        })
    }

    /// The NATS feed's settings (`None` without `--nats-url`).
    pub fn nats(&self) -> Option<crate::integrations::nats::NatsSettings> {
        self.nats_url
            .as_ref()
            .map(|url| crate::integrations::nats::NatsSettings {
                url: url.clone(),
                stream: self.nats_stream.clone(),
                subject_prefix: self.nats_subject_prefix.clone(),
            })
    }

    /// The admission limits of GraphQL requests.
    pub fn limits(&self) -> crate::http::admission::Limits {
        crate::http::admission::Limits {
            per_tenant: self.tenant_concurrency as usize,
            per_tenant_expensive: self.tenant_expensive_concurrency as usize,
            deadline: self.request_deadline,
            in_flight: self.max_in_flight as usize,
            ..Default::default()
        }
    }

    /// The schedulers' intervals.
    pub fn intervals(&self) -> crate::scheduler::Intervals {
        crate::scheduler::Intervals {
            drift_check: self.drift_check_interval.0,
            sla: self.sla_interval.0,
            retention: self.retention_interval.0,
            environment_sync: self.sync_interval.0,
            deployments: self.deployment_interval.0,
        }
    }

    /// The token signer, with the secret from the environment or the data directory
    /// (generated there on first use).
    /// The key that seals stored credentials.
    pub fn secret_key(&self) -> anyhow::Result<Vec<u8>> {
        let (key, _) = crate::http::auth::load_key(
            self.secret_key.as_deref(),
            "WORKFLOWOPS_SECRET_KEY",
            &self.data_dir,
            "secret-key",
        )?;
        Ok(key)
    }

    pub fn auth(
        &self,
    ) -> anyhow::Result<(crate::http::auth::Auth, crate::http::auth::SecretSource)> {
        let (secret, source) =
            crate::http::auth::load_secret(self.jwt_secret.as_deref(), &self.data_dir)?;
        Ok((crate::http::auth::Auth::new(&secret), source))
    }

    /// Opens the configured store (SQLite in the data directory by default).
    pub async fn open_store(&self) -> Result<Store, StoreError> {
        match self
            .database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => Store::connect(url, self.db_pool_size).await,
            None => {
                std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                    StoreError::Config(format!(
                        "cannot create data directory {}: {e}",
                        self.data_dir.display()
                    ))
                })?;
                Store::open_sqlite(&self.data_dir.join(SQLITE_FILE)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Interval;

    /// `rebuild --help` names every read model there is.
    #[test]
    fn rebuild_help_names_every_projection() {
        use clap::CommandFactory;
        let command = super::Cli::command();
        let help = command
            .find_subcommand("rebuild")
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "projection"))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for name in projections::NAMES {
            assert!(help.contains(name), "{name} missing from: {help}");
        }
    }

    #[test]
    fn intervals_parse_durations_and_off() {
        let parse = |s: &str| s.parse::<Interval>();
        assert_eq!(parse("5m"), Ok(Interval(Some(Duration::from_secs(300)))));
        assert_eq!(
            parse("1h 30m"),
            Ok(Interval(Some(Duration::from_secs(5400))))
        );
        assert_eq!(
            parse("250ms"),
            Ok(Interval(Some(Duration::from_millis(250))))
        );
        assert_eq!(parse("off"), Ok(Interval(None)));
        assert_eq!(parse("OFF"), Ok(Interval(None)));
        assert_eq!(parse("0"), Ok(Interval(None)));
        assert_eq!(parse("10ms"), Err(super::DurationError::IntervalTooShort));
        assert!(parse("often").unwrap_err().to_string().contains("30s"));
    }

    #[test]
    fn default_intervals_follow_the_domain() {
        use clap::Parser;
        let cli = super::Cli::parse_from(["workflowops", "serve"]);
        assert_eq!(
            cli.config.intervals(),
            crate::scheduler::Intervals::default()
        );
        assert_eq!(
            cli.config.seal_interval,
            Interval(Some(Duration::from_secs(60)))
        );
        let cli = super::Cli::parse_from(["workflowops", "serve", "--seal-interval", "off"]);
        assert_eq!(cli.config.seal_interval, Interval(None));
    }
}
