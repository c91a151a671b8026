//! The data the benchmarks populate, the same in each: tenant `bench`, 10
//! environments × 1,000 canonical workflows, one mapping per (environment, canonical
//! workflow), about one cell in seven drifted from Git. Deterministic, so a database
//! populated by one benchmark serves the others.
//!
//! Included by each benchmark with `#[path = "common/matrix_data.rs"] mod matrix_data;`
//! (each uses a different part of it).
#![allow(dead_code)]

use aggregates::content::ContentHash;
use aggregates::kernel::ids::LocalId;
use aggregates::mapping::{MappingCommand, Observation};
use chrono::Utc;

pub const TENANT: &str = "bench";
pub const ENVIRONMENTS: usize = 10;
pub const CANONICALS: usize = 1000;
pub const MAPPINGS: usize = ENVIRONMENTS * CANONICALS;
/// Environments and search term of the filtered matrix page.
pub const FILTER_ENVIRONMENTS: usize = 3;
pub const FILTER_SEARCH: &str = "sync";
/// Workflow names: `{family} {number}`; three families contain "sync".
pub const FAMILIES: [&str; 10] = [
    "Order sync",
    "Invoice export",
    "Lead router",
    "Slack alert",
    "Contact sync",
    "Inventory check",
    "Payment retry",
    "Ticket triage",
    "Stock sync",
    "Report digest",
];

pub fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A well-formed content hash (64 lowercase hex) derived from `seed`.
pub fn hash(seed: u64) -> ContentHash {
    let text = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(seed),
        mix(seed ^ 1),
        mix(seed ^ 2),
        mix(seed ^ 3)
    );
    ContentHash::parse(&text).expect("64 hex characters")
}

pub fn id(s: impl Into<String>) -> LocalId {
    LocalId::parse(s).expect("valid local id")
}

pub fn env_id(e: usize) -> LocalId {
    id(format!("env-{e:02}"))
}

pub fn canonical_id(c: usize) -> LocalId {
    id(format!("wf-{c:04}"))
}

pub fn canonical_name(c: usize) -> String {
    format!("{} {c:04}", FAMILIES[c % FAMILIES.len()])
}

/// Mapping `m` is canonical `m % CANONICALS` in environment `m / CANONICALS`.
pub fn mapping_parts(m: usize) -> (usize, usize) {
    (m / CANONICALS, m % CANONICALS)
}

pub fn n8n_id(e: usize, c: usize) -> LocalId {
    id(format!("n8n-{e:02}-{c:04}"))
}

/// The Git version of canonical `c`.
pub fn git_hash(c: usize) -> ContentHash {
    hash(1_000_000 + c as u64)
}

/// Whether the cell (environment `e`, canonical `c`) differs from Git (~1 in 7).
pub fn drifted(e: usize, c: usize) -> bool {
    mix(((e as u64) << 32) | c as u64) % 7 == 0
}

/// What n8n shows of the cell: Git's hash unless drifted; `version` makes each
/// observation of a drifted cell a new hash.
pub fn observation(e: usize, c: usize, version: u64) -> Observation {
    let content_hash = if drifted(e, c) {
        hash(mix(((e * CANONICALS + c) as u64) << 20 | version))
    } else {
        git_hash(c)
    };
    Observation {
        name: canonical_name(c),
        content_hash,
        n8n_updated_at: Some(Utc::now()),
    }
}

pub fn observe(e: usize, c: usize, version: u64, auto_link: bool) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: env_id(e),
        n8n_workflow_id: n8n_id(e, c),
        observation: observation(e, c, version),
        auto_link: auto_link.then(|| canonical_id(c)),
    }
}
