use std::process::ExitCode;

/// The command path allocates many small JSON values; mimalloc measured 10–15 %
/// faster than the system allocator on the command benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use clap::Parser;
use workflowops::auth::SecretSource;
use workflowops::config::{Cli, Command};
use workflowops::{telemetry, Application};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info", std::io::stderr);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The tenant of the admin token printed on first start.
const FIRST_TENANT: &str = "default";

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let (auth, source) = cli.config.auth()?;
            if let SecretSource::Generated(path) = &source {
                // A newcomer's first start: one admin token to begin with.
                let token = auth.mint(
                    FIRST_TENANT,
                    "admin",
                    "admin",
                    Duration::from_secs(30 * 24 * 3600),
                )?;
                println!(
                    "Generated the token signing secret in {}.\n\
                     Admin token for tenant \"{FIRST_TENANT}\" (valid 30 days; more with `workflowops token`):\n{token}",
                    path.display()
                );
            }
            let app = Application::build(&cli.config, auth).await?;
            tracing::info!(
                addr = %app.local_addr()?,
                database = app.store().backend().as_str(),
                "workflowops listening"
            );
            app.run_until_stopped(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = cli.config.open_store().await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend().as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild { projection } => {
            let store = cli.config.open_store().await?;
            store.migrate().await?;
            let names: Vec<String> = projection.into_iter().collect();
            let report = workflowops::read_side::rebuild(&store, &names).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            tenant,
            role,
            sub,
            ttl_hours,
        } => {
            let (auth, _) = cli.config.auth()?;
            let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
            println!("{}", auth.mint(&tenant, &role, &sub, ttl)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print!("{}", workflowops::graphql::sdl());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let store = cli.config.open_store().await?;
            store.migrate().await?;
            let report = store.verify().await?;
            println!("{}", serde_json::to_string(&report)?);
            if let Some(position) = report.first_broken_position {
                eprintln!(
                    "event log verification FAILED: first broken event at position {position}"
                );
                return Ok(ExitCode::from(1));
            }
            eprintln!(
                "event log verified: {} events, every chain intact",
                report.checked_events
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
