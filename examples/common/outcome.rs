//! What every benchmark shares about how a run ends: the `--smoke` sizes, the
//! checks that the workload produced what the benchmark measures, and the last line
//! of stdout.
//!
//! - [`args_with_smoke`]: with `--smoke` on the command line, the benchmark's tiny
//!   sizes are put before the arguments given (each benchmark's `Args` has
//!   `args_override_self`, so a size given on the command line still wins).
//! - [`require`]: a check that the workload produced what is measured (rows where rows
//!   were expected, samples in every phase, every event delivered, drift where drift
//!   was planted). A failed check is printed at once (`CHECK FAILED: …`) and kept.
//! - [`conclude`]: prints the report as the last line of stdout (with `problems` and
//!   `ok`; a run that stopped early prints `error` instead of figures), then exits
//!   non-zero with the problems on stderr when there is any.
//!
//! A missed target (a p99 over its limit) is a figure, reported in `targets`, not a
//! problem: the run still succeeds.
//!
//! Included by each benchmark with `#[path = "common/outcome.rs"] mod outcome;`.
#![allow(dead_code)]

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Mutex;

use serde_json::{json, Value};

static PROBLEMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps a problem unless `ok`: the workload did not produce what the benchmark
/// claims to measure. Returns `ok`.
pub fn require(ok: bool, what: impl FnOnce() -> String) -> bool {
    if !ok {
        let what = what();
        eprintln!("  CHECK FAILED: {what}");
        PROBLEMS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
    ok
}

/// Requires at least one sample (or row, event, …): `n` of `what`.
pub fn require_some(n: usize, what: &str) -> bool {
    require(n > 0, || format!("{what}: none (0)"))
}

/// Requires exactly `expected` of `what`.
pub fn require_eq<T: PartialEq + std::fmt::Display>(got: T, expected: T, what: &str) -> bool {
    let ok = got == expected;
    require(ok, || format!("{what}: {got}, expected {expected}"))
}

/// The problems kept so far.
pub fn problems() -> Vec<String> {
    PROBLEMS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The command line to parse: with `--smoke` among the arguments, `smoke` (the
/// benchmark's tiny sizes, `["--requests", "100", …]`) goes before them, so the
/// arguments given override it.
pub fn args_with_smoke(smoke: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.iter().skip(1).any(|a| a == "--smoke") {
        let at = 1.min(args.len());
        args.splice(at..at, smoke.iter().map(OsString::from));
    }
    args
}

/// Prints the run's report as the last line of stdout and returns the exit code:
/// failure when the run stopped with an error or any check failed.
/// The process's peak resident memory in MB (`VmHWM`), `None` where `/proc` has none.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

pub fn conclude(benchmark: &str, smoke: bool, report: anyhow::Result<Value>) -> ExitCode {
    let mut problems = problems();
    let mut report = match report {
        Ok(report) => report,
        Err(error) => {
            problems.push(format!("the run stopped: {error:#}"));
            json!({ "benchmark": benchmark, "error": format!("{error:#}") })
        }
    };
    if !report.is_object() {
        report = json!({ "benchmark": benchmark, "report": report });
    }
    report["smoke"] = json!(smoke);
    // the benchmark's whole process: the service, and the fakes and clients beside it
    report["peak_rss_mb"] = json!(peak_rss_mb());
    report["problems"] = json!(problems);
    report["ok"] = json!(problems.is_empty());
    println!("{report}");
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "bench_{benchmark} FAILED: the workload did not produce what the benchmark measures \
         ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in &problems {
        eprintln!("  - {problem}");
    }
    ExitCode::FAILURE
}
