#!/usr/bin/env python3
"""Regenerates the README's benchmark figures (run it as examples/figures.sh).

Builds the examples (release; debug with --smoke), runs each selected benchmark
--runs times per backend (and per variant: bench_commands runs with 1 and with 16
clients), keeps each run's last stdout line (the benchmark's JSON; stdout and stderr
of every run are kept in --out), and then

- records the headline figures of every run in docs/figures.json (per benchmark,
  backend and variant, with the date, commit and machine), replacing what was there
  for the benchmarks and backends that ran;
- writes one table per benchmark into README.md between
  `<!-- figures:NAME:begin -->` and `<!-- figures:NAME:end -->`: each figure as the
  median of the runs with their range (min–max), a column per backend.

A run that fails (non-zero exit: its workload did not produce what it measures, see
the README) stops the script before anything is written.

--smoke runs the smoke sizes once with the debug build (what CI runs) and writes into
copies in --out (README.md, figures.json), or prints the tables with --print: a quick
test of the whole chain, not figures.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per benchmark: a title, whether it takes --backend, its variants (name, extra
# arguments, label), and its headline rows (label, JSON path, digits, target). A
# label's "{v}" is the variant's label. Digits: how many decimals (None: an integer
# with thousands separators).
BENCHES = {
    "bench_commands": {
        "backends": True,
        "variants": [("c1", ["--clients", "1"], "C = 1"),
                     ("c16", ["--clients", "16", "--compare-pgbench"], "C = 16")],
        "rows": [
            ("{v}: commands/s", "commands_per_sec", None, "report"),
            ("{v}: p50 ms", "p50_ms", 2, ""),
            ("{v}: p99 ms", "p99_ms", 2, ""),
            ("{v}: appends per group commit", "mean_group", 2, ""),
            ("{v}: pgbench, one command's SQL shape, tx/s", "pgbench_tps", None, ""),
            ("{v}: commands/s ÷ pgbench's", "vs_pgbench", 2, "≥ 1.5 (C = 16)"),
        ],
    },
    "bench_projections": {
        "backends": True,
        "rows": [
            ("events in the log", "population.events", None, ""),
            ("population, events/s", "population.events_per_sec", None, "report"),
            ("rebuild, events/s", "rebuild.events_per_sec", None, "≥ 50,000"),
            ("matrix first page p50 ms", "matrix.first_page.p50_ms", 1, ""),
            ("matrix first page p99 ms", "matrix.first_page.p99_ms", 1, "≤ 20 (PostgreSQL)"),
            ("matrix deep page p99 ms", "matrix.deep_page.p99_ms", 1, ""),
            ("matrix filtered page p99 ms", "matrix.filtered_page.p99_ms", 1, ""),
            ("… first page p99 ms after VACUUM ANALYZE", "matrix.after_vacuum_analyze.first_page.p99_ms", 1, ""),
            ("lag p50 ms at 1,000 commands/s", "lag.p50_ms", 1, ""),
            ("lag p99 ms", "lag.p99_ms", 1, "≤ 100"),
            ("… the commands themselves, p50 ms", "lag.command.p50_ms", 1, ""),
        ],
    },
    "bench_api": {
        "backends": True,
        "rows": [
            ("matrix first page p50 ms", "matrix.first_page.p50_ms", 1, ""),
            ("matrix first page p99 ms", "matrix.first_page.p99_ms", 1, "≤ 15"),
            ("matrix first page requests/s", "matrix.first_page.requests_per_sec", None, ""),
            ("… every request executed: p50 ms", "matrix.first_page_uncached.p50_ms", 1, ""),
            ("… every request executed: p99 ms", "matrix.first_page_uncached.p99_ms", 1, "≤ 30"),
            ("… every request executed: requests/s", "matrix.first_page_uncached.requests_per_sec", None, ""),
            ("matrix deep page p99 ms", "matrix.deep_page.p99_ms", 1, ""),
            ("matrix filtered page p99 ms", "matrix.filtered_page.p99_ms", 1, ""),
            ("incident transitions/s", "mutations.transitions_per_sec", None, "≥ 1,500"),
            ("… mutation p50 ms", "mutations.all_mutations.p50_ms", 1, ""),
            ("… mutation p99 ms", "mutations.all_mutations.p99_ms", 1, "≤ 20"),
            ("… without the read-back, transitions/s", "mutations.no_read_back.transitions_per_sec", None, ""),
            ("… the same commands through the bus, /s", "mutations.bus.transitions_per_sec", None, ""),
            ("… without the read-back ÷ the bus", "mutations.no_read_back_vs_bus", 2, "≥ 0.6"),
            ("delivery p50 ms, WebSocket", "delivery.websocket.p50_ms", 1, ""),
            ("delivery p99 ms, WebSocket", "delivery.websocket.p99_ms", 1, "≤ 25"),
            ("delivery p50 ms, SSE", "delivery.sse.p50_ms", 1, ""),
            ("delivery p99 ms, SSE", "delivery.sse.p99_ms", 1, "≤ 25"),
            ("peak resident MB (service, client and fakes)", "peak_rss_mb", None, ""),
        ],
    },
    "bench_hash": {
        "backends": False,
        "column": "one thread",
        "rows": [
            ("raw JSON → hash, MB/s", "raw_json_mb_per_s", None, "≥ 200"),
            ("parsed `Value` → hash, MB/s", "parsed_value_mb_per_s", None, ""),
            ("serde_json `Value`, then hash, MB/s", "raw_json_via_value_mb_per_s", None, ""),
            ("average workflow, KB", "average_workflow_kb", 1, ""),
        ],
    },
    "bench_sync": {
        "backends": True,
        "rows": [
            ("first `syncEnvironment` ms (median of the rounds)", "first_sync_ms.median", None, "≤ 1,200"),
            ("… in the matrix, ms", "first_sync_matrix_visible_ms.median", None, ""),
            ("unchanged `syncEnvironment` ms (median of every repeat)", "unchanged_sync_ms.median", None, ""),
            ("… against the listing alone in the same run", "targets.unchanged_sync_vs_listing.value", 2, "≤ 1.2×"),
            ("… against the pages' bytes alone (no parsing)", "targets.unchanged_sync_vs_listing.vs_fetch", 2, ""),
            ("… its slowest, ms", "unchanged_sync_ms.max", None, ""),
            ("first `syncRepository` ms", "repository_sync_ms.median", None, "≤ 1,500"),
            ("`checkDrift` on every environment, one after the other, ms", "drift.sequential.total_ms", None, "report"),
            ("… all at once, ms", "drift.concurrent.total_ms", None, "≤ 2,000"),
            ("breakdown: listing from the fake n8n (N8nClient, parsed), ms", "breakdown.n8n_list_ms", None, ""),
            ("breakdown: the listing's pages as bytes, ms", "breakdown.n8n_fetch_ms", None, ""),
            ("breakdown: hashing the listing, ms", "breakdown.hash_ms", None, ""),
            ("peak resident MB (service, client and fakes)", "peak_rss_mb", None, ""),
        ],
    },
    "bench_promotion": {
        "backends": True,
        "rows": [
            ("promote, all new, ms (median of the rounds)", "promote_ms.median", None, "≤ 5,000"),
            ("the same again, 0 writes, ms", "again_ms.median", None, "≤ 1,000"),
            ("all changed, the last refused, rolled back, ms", "rollback_ms.median", None, "≤ 5,000"),
            ("… of which the rollback, ms", "rollback_alone_ms.median", None, "report"),
        ],
    },
    "bench_console": {
        "backends": True,
        "rows": [
            ("first page p50 ms", "first_page.p50_ms", 1, ""),
            ("first page p99 ms", "first_page.p99_ms", 1, "≤ 30"),
            ("first page requests/s", "first_page.requests_per_sec", None, ""),
            ("drift-only page p50 ms", "drift_page.p50_ms", 1, ""),
            ("drift-only page p99 ms", "drift_page.p99_ms", 1, ""),
            ("second page p50 ms", "second_page.p50_ms", 1, ""),
            ("second page p99 ms", "second_page.p99_ms", 1, ""),
            ("requests over 30 ms, first / drift-only / second page", None, None, ""),
        ],
        "over": ["first_page.over_target", "drift_page.over_target", "second_page.over_target"],
    },
    "probe_cost": {
        # examples/probe_cost.py against `workflowops serve` on a fresh SQLite data
        # directory (see probe() below)
        "backends": False,
        "column": "SQLite",
        "rows": [
            ("20 levels of doubling fragments refused, ms", "doubling_20_ms", 1, ""),
            ("30 levels refused, ms", "doubling_30_ms", 1, ""),
            ("1,000 aliases refused, ms", "aliases_1000_ms", 1, ""),
            ("a light query alone, p50 ms", "light_alone_p50_ms", 2, ""),
            ("… under the 30-level attack, p50 ms", "light_under_attack_p50_ms", 2, ""),
            ("… under the attack, max ms", "light_under_attack_max_ms", 1, ""),
        ],
    },
    "bench_integrations": {
        "backends": True,
        "rows": [
            ("append → webhook received, p50 ms", "webhook_latency_ms.p50", 1, ""),
            ("append → webhook received, p99 ms", "webhook_latency_ms.p99", 1, "≤ 100"),
            ("… routing (event → queued), p50 ms", "webhook_queued_ms.p50", 1, ""),
            ("… sending (queued → delivered), p50 ms", "webhook_queued_to_delivered_ms.p50", 1, ""),
            ("deliveries/s to all endpoints", "throughput.deliveries_per_sec", None, "report"),
            ("append → JetStream stored, p99 ms", "nats_latency_ms.p99", 1, "≤ 100"),
        ],
    },
}
BACKENDS = ["sqlite", "postgres"]
BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def get(report, path):
    value = report
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def headline(name, report):
    """The values a benchmark's table shows, from one run's JSON."""
    spec = BENCHES[name]
    paths = [path for _, path, _, _ in spec["rows"] if path] + spec.get("over", [])
    return {path: get(report, path) for path in paths}


def number(x, digits):
    if digits is None:
        return f"{round(x):,}"
    return f"{x:,.{digits}f}"


def cell(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    median = statistics.median(values)
    if len(values) == 1:
        return number(median, digits)
    lo, hi = min(values), max(values)
    return f"{number(median, digits)} ({number(lo, digits)}–{number(hi, digits)})"


def table(name, recorded):
    """The Markdown block of one benchmark from docs/figures.json's entry."""
    spec = BENCHES[name]
    entry = recorded.get(name, {})
    columns = [b for b in (BACKENDS if spec["backends"] else ["-"]) if b in entry]
    if not columns:
        return f"_No figures yet: run `examples/figures.sh --bench {name}`._"
    variants = spec.get("variants", [("default", [], "")])
    lines = []
    notes = sorted({
        f"on {v['date']} at {v['commit']}, {v['runs']} run{'s' if v['runs'] != 1 else ''} "
        f"each{', ' + v['machine'] if v.get('machine') else ''}"
        for b in columns for v in entry[b].values()
    })
    smoke = any(v["smoke"] for b in columns for v in entry[b].values())
    lines.append(
        f"Generated by `examples/figures.sh` {'; '.join(notes)}: median (min–max) of the runs."
        + (" **Smoke sizes: not figures.**" if smoke else "")
    )
    lines.append("")
    names = [BACKEND_NAMES.get(b) or spec.get("column", "value") for b in columns]
    lines.append("| | " + " | ".join(names) + " | target |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for variant, _, label in variants:
        for row_label, path, digits, target in spec["rows"]:
            text = row_label.replace("{v}", label)
            cells = []
            for b in columns:
                runs = entry[b].get(variant, {}).get("values", [])
                if path is None:  # the over-target counts, side by side
                    parts = [cell([r.get(p) for r in runs], None) for p in spec["over"]]
                    cells.append(" / ".join(parts))
                else:
                    cells.append(cell([r.get(path) for r in runs], digits))
            lines.append(f"| {text} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def write_blocks(readme, recorded, names):
    with open(readme) as f:
        text = f.read()
    for name in names:
        begin, end = f"<!-- figures:{name}:begin -->", f"<!-- figures:{name}:end -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            sys.exit(f"{readme}: needs exactly one {begin} … {end}")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{table(name, recorded)}\n{end}{tail}"
    with open(readme, "w") as f:
        f.write(text)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores" + (f", {model}" if model else "")


def probe(binary, smoke, stdout, stderr):
    """Runs examples/probe_cost.py against `binary serve` on a fresh SQLite data
    directory and a free loopback port; returns the probe's exit code."""
    import socket
    import tempfile
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, WORKFLOWOPS_DATA_DIR=data, WORKFLOWOPS_LISTEN=f"127.0.0.1:{port}",
                   WORKFLOWOPS_JWT_SECRET="figures-probe-secret-0123456789abcdef-0123",
                   RUST_LOG="warn")
        env.pop("DATABASE_URL", None)
        serve = subprocess.Popen([binary, "serve"], env=env, stdout=stderr, stderr=stderr)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or serve.poll() is not None:
                    print("the service did not come up", file=stderr)
                    return 1
                time.sleep(0.2)
            token = subprocess.run([binary, "token", "--tenant", "acme", "--role", "viewer",
                                    "--sub", "probe"], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip()
            command = [sys.executable, os.path.join(ROOT, "examples", "probe_cost.py"), base, token]
            return subprocess.run(command + (["--smoke"] if smoke else []), cwd=ROOT,
                                  stdout=stdout, stderr=stderr).returncode
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main():
    parser = argparse.ArgumentParser(
        prog="examples/figures.sh", description=__doc__,
        epilog="benchmarks: " + ", ".join(BENCHES) + " (probe_cost: examples/probe_cost.py "
        "against `workflowops serve` on SQLite)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="smoke sizes, once, debug build; writes into copies in --out")
    parser.add_argument("--runs", type=int, help="runs per benchmark, backend and variant (3; 1 with --smoke)")
    parser.add_argument("--bench", default=",".join(BENCHES),
                        help="comma-separated benchmarks (default: all)")
    parser.add_argument("--backend", default=",".join(BACKENDS),
                        help="comma-separated backends (default: sqlite,postgres)")
    parser.add_argument("--profile", choices=["release", "debug"],
                        help="build to run (release; debug with --smoke)")
    parser.add_argument("--no-build", action="store_true", help="run the binaries as built")
    parser.add_argument("--out", help="where runs' output goes (default target/figures/<time>)")
    parser.add_argument("--readme", help="README to write (default README.md; a copy in --out with --smoke)")
    parser.add_argument("--figures", help="figures file (default docs/figures.json; a copy in --out with --smoke)")
    parser.add_argument("--print", action="store_true", help="print the tables instead of writing them")
    parser.add_argument("extra", nargs="*", help="after --: arguments for every benchmark run")
    args = parser.parse_args()

    names = [n.strip() for n in args.bench.split(",") if n.strip()]
    names = [f"bench_{n}" if f"bench_{n}" in BENCHES else n for n in names]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if any(b not in BACKENDS for b in backends):
        sys.exit(f"backends are {', '.join(BACKENDS)}")
    runs = args.runs or (1 if args.smoke else 3)
    profile = args.profile or ("debug" if args.smoke else "release")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(target, "figures", stamp + ("-smoke" if args.smoke else ""))
    os.makedirs(out, exist_ok=True)
    readme = args.readme or (os.path.join(out, "README.md") if args.smoke else os.path.join(ROOT, "README.md"))
    figures = args.figures or (os.path.join(out, "figures.json") if args.smoke
                               else os.path.join(ROOT, "docs", "figures.json"))
    if args.smoke:
        if not args.readme and not args.print:
            shutil.copyfile(os.path.join(ROOT, "README.md"), readme)
        if not args.figures and os.path.exists(os.path.join(ROOT, "docs", "figures.json")):
            shutil.copyfile(os.path.join(ROOT, "docs", "figures.json"), figures)

    if not args.no_build:
        command = ["cargo", "build", "--examples", "--bins"] + (
            ["--release"] if profile == "release" else [])
        print("$ " + " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, cwd=ROOT, check=True)

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # its own outputs (README.md, docs/figures.json) do not count as changes
    if git("status", "--porcelain", "--untracked-files=no", "--", ".",
           ":!README.md", ":!docs/figures.json"):
        commit += " (with uncommitted changes)"
    today = datetime.date.today().isoformat()
    results = {}
    started = time.monotonic()
    for name in names:
        spec = BENCHES[name]
        for variant, variant_args, _ in spec.get("variants", [("default", [], "")]):
            for backend in (backends if spec["backends"] else ["-"]):
                values = []
                for run in range(1, runs + 1):
                    command = [os.path.join(target, profile, "examples", name)]
                    if spec["backends"]:
                        command += ["--backend", backend]
                    if args.smoke:
                        command.append("--smoke")
                    # pgbench is PostgreSQL's peer only
                    command += [a for a in variant_args
                                if a != "--compare-pgbench" or backend == "postgres"] + args.extra
                    stem = os.path.join(out, f"{name}.{variant}.{backend}.{run}")
                    print(f"== {' '.join(command[1:]) or '(defaults)'}: {name} run {run}/{runs} "
                          f"({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)
                    t = time.monotonic()
                    with open(stem + ".out", "w") as stdout, open(stem + ".err", "w") as stderr:
                        if name == "probe_cost":
                            code = probe(os.path.join(target, profile, "workflowops"), args.smoke,
                                         stdout, stderr)
                        else:
                            code = subprocess.run(command, cwd=ROOT, stdout=stdout,
                                                  stderr=stderr).returncode
                    with open(stem + ".out") as f:
                        lines = f.read().strip().splitlines()
                    last = lines[-1] if lines else ""
                    with open(stem + ".json", "w") as f:
                        f.write(last + "\n")
                    try:
                        report = json.loads(last)
                    except ValueError:
                        report = None
                    if code != 0 or not isinstance(report, dict) or report.get("ok") is False:
                        with open(stem + ".err") as f:
                            tail = f.read().strip().splitlines()[-15:]
                        print("\n".join(tail), file=sys.stderr)
                        sys.exit(f"{name} ({backend}, {variant}) run {run} failed (exit {code}); "
                                 f"output in {stem}.out/.err; nothing written")
                    print(f"   {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
                    values.append(headline(name, report))
                results.setdefault(name, {}).setdefault(backend, {})[variant] = {
                    "date": today, "commit": commit, "runs": runs, "smoke": args.smoke,
                    "machine": machine(), "arguments": variant_args + args.extra,
                    "values": values,
                }
    print(f"all runs in {time.monotonic() - started:.0f} s; output in {out}", file=sys.stderr)

    recorded = {}
    if os.path.exists(figures):
        with open(figures) as f:
            recorded = json.load(f)
    for name, by_backend in results.items():
        for backend, by_variant in by_backend.items():
            recorded.setdefault(name, {})[backend] = by_variant
    if args.print:
        for name in names:
            print(f"<!-- figures:{name}:begin -->\n{table(name, recorded)}\n<!-- figures:{name}:end -->\n")
        return
    os.makedirs(os.path.dirname(figures), exist_ok=True)
    with open(figures, "w") as f:
        json.dump(recorded, f, indent=1, sort_keys=True)
        f.write("\n")
    write_blocks(readme, recorded, names)
    print(f"wrote {readme} and {figures}", file=sys.stderr)


if __name__ == "__main__":
    main()
