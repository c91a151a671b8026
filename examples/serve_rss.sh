#!/usr/bin/env bash
# `serve`'s resident memory at scale (issue 17, item 6: ≤ 300 MB at 10,000 canonical
# workflows × 10 environments), on PostgreSQL, measured on the real binary:
#
#   1. `bench_api` populates a database with the matrix data (examples/common/
#      matrix_data.rs) and keeps it;
#   2. a fresh database gets only that log's events (`pg_dump --data-only -t events`);
#   3. `workflowops serve` starts on it and projects the whole log from zero;
#   4. CLIENTS concurrent clients (curl) page the matrix with API.md's fields for
#      SECONDS, every request's text unique so that each one executes.
#
# Reports the service's peak resident memory (VmHWM) after the projection and at the
# end. Fails (non-zero exit, after the JSON) when the projection does not reach one
# cell per (canonical workflow, environment), no request was answered, or any answer
# was not HTTP 200 with 50 rows. The last line of stdout is one JSON object.
#
#   cargo build --release --examples --bin workflowops
#   examples/serve_rss.sh                      # 10,000 canonical workflows, 30 s, 16 clients
#   examples/serve_rss.sh --canonicals 1000
#   examples/serve_rss.sh --smoke              # 60 canonical workflows, 2 s, 4 clients
#
# BIN_DIR: where `workflowops` and `examples/bench_api` are (default target/release;
# CI passes its debug build). WORKFLOWOPS_BENCH_PG_URL: the server (default
# postgres://postgres@127.0.0.1:5432/postgres). Needs psql, pg_dump, curl and awk.
set -euo pipefail

canonicals=10000 seconds=30 clients=16 smoke=false
sized=false
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=true ;;
    --canonicals) canonicals=$2; sized=true; shift ;;
    --seconds) seconds=$2; shift ;;
    --clients) clients=$2; shift ;;
    --backend) [ "$2" = postgres ] || { echo "serve_rss measures PostgreSQL only" >&2; exit 2; }; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if $smoke; then
  $sized || canonicals=60
  seconds=2 clients=4
fi

bin=${BIN_DIR:-target/release}
server=${WORKFLOWOPS_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${server%/*}
source_db=wfo_serve_rss_src_$$
db=wfo_serve_rss_$$
data=$(mktemp -d)
port=$((20000 + $$ % 20000))
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    -c "DROP DATABASE IF EXISTS $source_db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT
sql() { psql "$base/$1" -Atqc "$2"; }
elapsed() { awk -v now="$(date +%s.%N)" -v t0="$started" 'BEGIN { printf "%d", now - t0 }'; }
hwm_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$serve_pid/status"; }
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$serve_pid/status"; }

echo "== populating $canonicals canonical workflows × 10 environments (bench_api)" >&2
"$bin/examples/bench_api" --backend postgres --canonicals "$canonicals" \
  --database "$source_db" --skip-matrix --skip-mutations --skip-delivery >/dev/null
psql "$server" -qc "CREATE DATABASE $db"
export DATABASE_URL=$base/$db WORKFLOWOPS_DATA_DIR=$data
export WORKFLOWOPS_JWT_SECRET=serve-rss-secret-0123456789abcdef-0123456789
"$bin/workflowops" migrate >&2
pg_dump "$base/$source_db" --data-only -t events | psql "$base/$db" -q >/dev/null
events=$(sql "$db" "SELECT COUNT(*) FROM events")
expected_cells=$((canonicals * 10))

echo "== serve projects $events events from zero" >&2
WORKFLOWOPS_LISTEN=127.0.0.1:$port WORKFLOWOPS_DRIFT_CHECK_INTERVAL=off \
  WORKFLOWOPS_SEAL_INTERVAL=off WORKFLOWOPS_SLA_INTERVAL=off \
  "$bin/workflowops" serve >"$data/serve.log" 2>&1 &
serve_pid=$!
token=$("$bin/workflowops" token --tenant bench --role viewer --sub rss@bench)
started=$(date +%s.%N)
cells=0
while [ "$cells" -lt "$expected_cells" ]; do
  kill -0 "$serve_pid" 2>/dev/null || { cat "$data/serve.log" >&2; echo "serve exited" >&2; exit 1; }
  if [ "$(elapsed)" -gt 900 ]; then break; fi
  sleep 0.5
  cells=$(sql "$db" "SELECT COUNT(*) FROM rm_matrix_cells" 2>/dev/null || echo 0)
done
projection_seconds=$(awk -v now="$(date +%s.%N)" -v t0="$started" 'BEGIN { printf "%.2f", now - t0 }')
projection_mb=$(hwm_mb)

echo "== $clients clients page the matrix for $seconds s, every request executed" >&2
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.2; done
end=$(($(date +%s) + seconds))
for c in $(seq 1 "$clients"); do
  (
    n=0
    while [ "$(date +%s)" -lt "$end" ]; do
      n=$((n + 1))
      body=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $token" \
        -H 'content-type: application/json' \
        --data "{\"query\":\"query M${c}x${n} { workflowMatrix(first: 50) { edges { node { canonicalId slug name cells { environmentId mappingStatus syncState n8nWorkflowId envContentHash gitContentHash since } } } } }\"}" \
        "http://127.0.0.1:$port/graphql")
      rows=$(grep -o '"canonicalId"' <<<"$body" | wc -l)
      echo "$(tail -1 <<<"$body") $rows"
    done
  ) >"$data/client_$c.log" &
done
wait $(jobs -p | grep -vx "$serve_pid")
requests=$(cat "$data"/client_*.log | wc -l)
expected_rows=$((canonicals < 50 ? canonicals : 50))
bad=$(cat "$data"/client_*.log | grep -cvx "200 $expected_rows" || true)
peak_mb=$(hwm_mb)
end_mb=$(rss_mb)

problems=()
[ "$cells" -ge "$expected_cells" ] || problems+=("projection reached $cells of $expected_cells cells")
[ "$requests" -gt 0 ] || problems+=("no request was answered")
[ "$bad" -eq 0 ] || problems+=("$bad of $requests answers were not HTTP 200 with $expected_rows rows")
ok=true
[ ${#problems[@]} -eq 0 ] || ok=false
printf '{"benchmark":"serve_rss","backend":"postgres","smoke":%s,"canonicals":%s,"environments":10,"events":%s,"cells":%s,"projection_seconds":%.2f,"peak_rss_mb_after_projection":%s,"clients":%s,"seconds":%s,"requests":%s,"bad_answers":%s,"peak_rss_mb":%s,"rss_mb_at_end":%s,"ok":%s,"problems":[%s]}\n' \
  "$smoke" "$canonicals" "$events" "$cells" "$projection_seconds" "$projection_mb" "$clients" \
  "$seconds" "$requests" "$bad" "$peak_mb" "$end_mb" "$ok" \
  "$([ ${#problems[@]} -eq 0 ] || printf '"%s",' "${problems[@]}" | sed 's/,$//')"
if ! $ok; then
  printf '%s\n' "${problems[@]}" >&2
  exit 1
fi
