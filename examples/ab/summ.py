#!/usr/bin/env python3
"""Medians and ranges of A/B runs kept by run.sh.

    examples/ab/summ.py NAME key.path [key.path ...]

Reads $OUT/NAME.{base,main}.*.json (OUT defaults to /tmp/ab); a key path walks the
benchmark's JSON (`mutations.transitions_per_sec`, `lag.p99_ms`, …).
"""
import glob
import json
import os
import statistics
import sys

out = os.environ.get("OUT", "/tmp/ab")
name = sys.argv[1]
for key in sys.argv[2:]:
    row = []
    for side in ("base", "main"):
        values = []
        for path in sorted(glob.glob(f"{out}/{name}.{side}.*.json")):
            try:
                d = json.load(open(path))
            except (OSError, ValueError):
                continue
            for k in key.split("."):
                d = d.get(k) if isinstance(d, dict) else None
            if isinstance(d, (int, float)) and not isinstance(d, bool):
                values.append(d)
        if values:
            row.append(f"{side} {statistics.median(values):.4g} "
                       f"({min(values):.4g}–{max(values):.4g}, n={len(values)})")
        else:
            row.append(f"{side} -")
    print(f"{key}: " + " | ".join(row))
