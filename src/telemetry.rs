//! Logging set up in one place, with its sink as a parameter so tests can silence it.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs a global subscriber writing to `sink`; `RUST_LOG` overrides `default_filter`.
pub fn init<W>(default_filter: &str, sink: W)
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second init (tests) keeps the first subscriber.
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(false)
        .try_init();
}
