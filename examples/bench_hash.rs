//! Normalise-and-hash throughput on one core (issue 5: ≥ 200 MB/s), over realistic
//! n8n workflow JSON as n8n's API returns it.
//!
//!   cargo run --release --example bench_hash
//!   cargo run --release --example bench_hash -- --megabytes 500
//!
//! The corpus: the two fixtures of `aggregates/testdata`, each repeated with its nodes
//! renamed and their parameters varied so every workflow is distinct, at sizes from a
//! few KB to a few hundred KB (the number of nodes grows). Measured on one thread:
//! `content_hash_bytes` (raw JSON → hash: what a sync does with each workflow),
//! `content_hash` on an already parsed `serde_json::Value`, and serde_json's parse
//! into a `Value` followed by `content_hash` (the library-only alternative to the
//! fast path's own tokenizer). The last line is JSON.
//!
//! **Smoke** (`--smoke`): 8 workflows and 1 MB per measurement, for CI in a debug
//! build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when a workflow hashes differently on the two paths, the three
//! measurements did not hash the same content (a checksum of every hash each
//! computed), or a measurement hashed nothing.

use std::time::Instant;

use aggregates::content::{content_hash, content_hash_bytes};
use clap::Parser;
use serde_json::{json, Value};

#[path = "common/outcome.rs"]
mod outcome;
use outcome::require;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    /// Tiny sizes (a few seconds in a debug build); sizes given on the command line
    /// still win.
    #[arg(long)]
    smoke: bool,
    /// Megabytes of JSON to hash per measurement (at least the corpus once).
    #[arg(long, default_value_t = 300)]
    megabytes: usize,
    /// Workflows in the corpus (sizes cycle through 1, 4, 16 and 64 copies of a
    /// fixture's nodes).
    #[arg(long, default_value_t = 64)]
    workflows: usize,
}

/// `--smoke`: the sizes put before the arguments given.
const SMOKE: &[&str] = &["--megabytes", "1", "--workflows", "8"];

const FIXTURES: [&str; 2] = [
    include_str!("../aggregates/testdata/daily_report.json"),
    include_str!("../aggregates/testdata/order_sync.json"),
];

/// Workflow `n`: a fixture with its nodes repeated `copies` times, renamed and
/// varied, as n8n's API returns it (ids, timestamps, positions included).
fn workflow(n: usize, copies: usize) -> Vec<u8> {
    let base: Value = serde_json::from_str(FIXTURES[n % FIXTURES.len()]).expect("fixture");
    let nodes = base["nodes"].as_array().cloned().unwrap_or_default();
    let mut all = Vec::with_capacity(nodes.len() * copies);
    for copy in 0..copies {
        for node in &nodes {
            let mut node = node.clone();
            let name = format!("{} {copy}", node["name"].as_str().unwrap_or("Node"));
            node["name"] = json!(name);
            node["id"] = json!(format!("{n:08x}-{copy:04x}-4000-8000-000000000000"));
            node["position"] = json!([copy * 220, n % 500]);
            node["parameters"]["note"] = json!(format!("workflow {n} copy {copy}"));
            all.push(node);
        }
    }
    let mut workflow = base;
    workflow["id"] = json!(format!("wf{n:014}"));
    workflow["name"] = json!(format!("Workflow {n}"));
    workflow["nodes"] = Value::Array(all);
    workflow["updatedAt"] = json!("2026-11-20T15:22:00.000Z");
    serde_json::to_vec(&workflow).expect("serializable")
}

fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args);
    outcome::conclude("hash", args.smoke, report)
}

/// What the checksums add up of a hash: its first 64 bits.
fn head64(hash: aggregates::content::ContentHash) -> u64 {
    u64::from_str_radix(&hash.as_str()[..16], 16).unwrap_or(0)
}

fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.workflows > 0, "--workflows must be positive");
    // a mix of sizes: 1, 4, 16 and 64 copies of the fixture's nodes
    let corpus: Vec<Vec<u8>> = (0..args.workflows)
        .map(|n| workflow(n, [1, 4, 16, 64][n % 4]))
        .collect();
    let corpus_bytes: usize = corpus.iter().map(Vec::len).sum();
    let parsed: Vec<Value> = corpus
        .iter()
        .map(|w| serde_json::from_slice(w).expect("JSON"))
        .collect();
    let target = args.megabytes * 1_000_000;
    let rounds = target.div_ceil(corpus_bytes).max(1);
    eprintln!(
        "corpus: {} workflows, {:.1} KB on average; {rounds} rounds",
        corpus.len(),
        corpus_bytes as f64 / corpus.len() as f64 / 1000.0
    );

    // warm-up, and every workflow must hash the same both ways
    let mut distinct = std::collections::HashSet::new();
    for (n, (raw, value)) in corpus.iter().zip(&parsed).enumerate() {
        let a = content_hash_bytes(raw)?;
        let b = content_hash(value)?;
        require(a == b, || {
            format!("workflow {n}: {a} from the raw JSON, {b} from the parsed value")
        });
        distinct.insert(a);
    }
    require(distinct.len() == corpus.len(), || {
        format!(
            "{} distinct hashes for {} workflows: the corpus repeats itself",
            distinct.len(),
            corpus.len()
        )
    });

    // Each measurement folds every hash it computes into a checksum (and counts
    // them): the three must have hashed the same content.
    let (mut raw_sum, mut raw_hashes) = (0u64, 0usize);
    let started = Instant::now();
    for _ in 0..rounds {
        for raw in &corpus {
            raw_sum = raw_sum.wrapping_add(head64(content_hash_bytes(raw)?));
            raw_hashes += 1;
        }
    }
    let raw_seconds = started.elapsed().as_secs_f64();

    let (mut value_sum, mut value_hashes) = (0u64, 0usize);
    let started = Instant::now();
    for _ in 0..rounds {
        for value in &parsed {
            value_sum = value_sum.wrapping_add(head64(content_hash(value)?));
            value_hashes += 1;
        }
    }
    let value_seconds = started.elapsed().as_secs_f64();

    // The library-only alternative to the fast path: serde_json parses a `Value`,
    // then the same normalise-and-hash (issue 13: the tokenizer stays only while
    // this cannot reach 250 MB/s).
    let (mut via_sum, mut via_hashes) = (0u64, 0usize);
    let started = Instant::now();
    for _ in 0..rounds {
        for raw in &corpus {
            let value: Value = serde_json::from_slice(raw)?;
            via_sum = via_sum.wrapping_add(head64(content_hash(&value)?));
            via_hashes += 1;
        }
    }
    let via_value_seconds = started.elapsed().as_secs_f64();
    let expected_hashes = rounds * corpus.len();
    for (name, sum, hashes) in [
        ("parsed Value → hash", value_sum, value_hashes),
        ("raw JSON → serde_json Value → hash", via_sum, via_hashes),
    ] {
        require(sum == raw_sum && hashes == raw_hashes, || {
            format!(
                "{name}: {hashes} hashes, checksum {sum:#x}; raw JSON → hash: {raw_hashes} \
                 hashes, checksum {raw_sum:#x}"
            )
        });
    }
    require(raw_hashes == expected_hashes && raw_hashes > 0, || {
        format!("raw JSON → hash: {raw_hashes} hashes, expected {expected_hashes}")
    });

    let megabytes = (corpus_bytes * rounds) as f64 / 1_000_000.0;
    let raw_mbs = megabytes / raw_seconds;
    let value_mbs = megabytes / value_seconds;
    let via_value_mbs = megabytes / via_value_seconds;
    eprintln!(
        "raw JSON → hash: {raw_mbs:.0} MB/s; parsed Value → hash: {value_mbs:.0} MB/s; \
         raw JSON → serde_json Value → hash: {via_value_mbs:.0} MB/s"
    );
    Ok(json!({
        "benchmark": "hash",
        "threads": 1,
        "workflows": corpus.len(),
        "average_workflow_kb": (corpus_bytes as f64 / corpus.len() as f64 / 1000.0 * 10.0).round() / 10.0,
        "megabytes": (megabytes * 10.0).round() / 10.0,
        "rounds": rounds,
        "hashes": raw_hashes,
        "raw_json_mb_per_s": raw_mbs.round(),
        "parsed_value_mb_per_s": value_mbs.round(),
        "raw_json_via_value_mb_per_s": via_value_mbs.round(),
        "target_mb_per_s": 200,
        "met": raw_mbs >= 200.0,
        "checksum": raw_sum,
    }))
}
