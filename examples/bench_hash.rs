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

use std::time::Instant;

use aggregates::content::{content_hash, content_hash_bytes};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Megabytes of JSON to hash per measurement.
    #[arg(long, default_value_t = 300)]
    megabytes: usize,
}

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

fn main() {
    let args = Args::parse();
    // a mix of sizes: 1, 4, 16 and 64 copies of the fixture's nodes
    let corpus: Vec<Vec<u8>> = (0..64)
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
    for (raw, value) in corpus.iter().zip(&parsed) {
        let a = content_hash_bytes(raw).expect("hashable");
        let b = content_hash(value).expect("hashable");
        assert_eq!(a, b, "both paths agree");
    }

    let started = Instant::now();
    let mut checksum = 0u8;
    for _ in 0..rounds {
        for raw in &corpus {
            checksum ^= content_hash_bytes(raw)
                .expect("hashable")
                .as_str()
                .as_bytes()[0];
        }
    }
    let raw_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for _ in 0..rounds {
        for value in &parsed {
            checksum ^= content_hash(value).expect("hashable").as_str().as_bytes()[0];
        }
    }
    let value_seconds = started.elapsed().as_secs_f64();

    // The library-only alternative to the fast path: serde_json parses a `Value`,
    // then the same normalise-and-hash (issue 13: the tokenizer stays only while
    // this cannot reach 250 MB/s).
    let started = Instant::now();
    for _ in 0..rounds {
        for raw in &corpus {
            let value: Value = serde_json::from_slice(raw).expect("JSON");
            checksum ^= content_hash(&value).expect("hashable").as_str().as_bytes()[0];
        }
    }
    let via_value_seconds = started.elapsed().as_secs_f64();

    let megabytes = (corpus_bytes * rounds) as f64 / 1_000_000.0;
    let raw_mbs = megabytes / raw_seconds;
    let value_mbs = megabytes / value_seconds;
    let via_value_mbs = megabytes / via_value_seconds;
    eprintln!(
        "raw JSON → hash: {raw_mbs:.0} MB/s; parsed Value → hash: {value_mbs:.0} MB/s; \
         raw JSON → serde_json Value → hash: {via_value_mbs:.0} MB/s"
    );
    println!(
        "{}",
        json!({
            "benchmark": "hash",
            "threads": 1,
            "workflows": corpus.len(),
            "average_workflow_kb": (corpus_bytes as f64 / corpus.len() as f64 / 1000.0 * 10.0).round() / 10.0,
            "megabytes": megabytes.round(),
            "raw_json_mb_per_s": raw_mbs.round(),
            "parsed_value_mb_per_s": value_mbs.round(),
            "raw_json_via_value_mb_per_s": via_value_mbs.round(),
            "target_mb_per_s": 200,
            "met": raw_mbs >= 200.0,
            "checksum": checksum,
        })
    );
}
