#!/usr/bin/env bash
# Regenerates the README's benchmark figures: builds the examples, runs each
# benchmark 3 times per backend, keeps the last line (the JSON) of each run, and
# writes the headline figures as median (min–max) into README.md between
# `<!-- figures:NAME:begin -->` and `<!-- figures:NAME:end -->`, one table per
# benchmark (kept, with every run's values, in docs/figures.json).
#
#   examples/figures.sh                         # everything: release build, 3 runs each
#   examples/figures.sh --bench bench_api,bench_console --backend postgres
#   examples/figures.sh --smoke                 # smoke sizes once, debug build, into a copy
#   examples/figures.sh --help
#
# Nothing else should run on the machine meanwhile. See examples/figures.py.
set -euo pipefail
exec python3 "$(dirname "$0")/figures.py" "$@"
