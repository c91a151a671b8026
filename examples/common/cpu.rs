//! CPU time spent while a measured section runs: the whole machine's (every
//! process: the database server included) and this process's (the service and the
//! benchmark's own clients), from Linux's `/proc`. A rate moves with latency, the
//! scheduler and the disk's flushes; the CPU a unit of work costs moves much less,
//! so two builds are compared by it when their rates are within noise.
//!
//! Included with `#[path = "common/cpu.rs"] mod cpu;`. Elsewhere than on Linux
//! [`CpuMeter::per_unit`] gives `null`.

use serde_json::{json, Value};

/// `/proc` counts in clock ticks of 1/100 s (`USER_HZ` on every Linux platform
/// Rust targets).
const TICK_US: f64 = 10_000.0;

/// The CPU times at the start of a section.
pub struct CpuMeter {
    start: Option<(u64, u64, u64)>,
}

/// (machine busy, machine steal, this process), in ticks.
fn read() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let busy = cpu
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| ![3, 4, 7].contains(i))
        .map(|(_, v)| v)
        .sum();
    let steal = *cpu.get(7)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = own.get(own.rfind(')')? + 2..)?.split_whitespace().collect();
    let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((busy, steal, process))
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter { start: read() }
    }

    /// CPU µs per unit of work (`units` done since the start): `machine` (every
    /// process), `this_process`, `elsewhere` (the rest: the database server, mostly),
    /// and the hypervisor's `steal_pct` of the machine over the section (a run with
    /// steal is not comparable).
    pub fn per_unit(&self, units: usize) -> Value {
        let (Some((busy0, steal0, own0)), Some((busy1, steal1, own1))) = (self.start, read())
        else {
            return Value::Null;
        };
        if units == 0 {
            return Value::Null;
        }
        let per = |ticks: u64| (ticks as f64 * TICK_US / units as f64).round();
        let busy = busy1.saturating_sub(busy0);
        let steal = steal1.saturating_sub(steal0);
        let own = own1.saturating_sub(own0);
        json!({
            "machine": per(busy),
            "this_process": per(own),
            "elsewhere": per(busy.saturating_sub(own)),
            "steal_pct": ((steal as f64 * 1000.0 / (busy + steal).max(1) as f64).round() / 10.0),
        })
    }
}
