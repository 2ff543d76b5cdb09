#!/usr/bin/env bash
# The runs behind docs/PERFORMANCE.md. Each run's closing JSON line is appended to the file given
# (default bench-results.jsonl); `npm run bench:table -- FILE` turns them into the tables.
# About 10 minutes on 2 cores. Check that the machine is quiet first: figures taken under other
# load are inflated (each line records the load average).
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  echo "usage: npm run bench:all [FILE]   (appends each run's JSON line to FILE, default bench-results.jsonl)"
  exit 0
fi
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-bench-results.jsonl}")
npm run --silent build

run () {
  echo "== npm run bench -- $*"
  local log
  log=$(mktemp)
  npm run --silent bench -- --skip-build "$@" >"$log"
  cat "$log"
  tail -n 1 "$log" >>"$out"
  rm -f "$log"
}

run
run
run
run --mode redeliver
run --mode retry
run --size 10k
run --size 1m
run --size 1m --connections 1
run --size 10m --connections 4
run --replicas 2
run --pgbouncer --env DATABASE_PREPARED_STATEMENTS=false
run --socket /var/run/postgresql
run --env DATABASE_PREPARED_STATEMENTS=false
run --profile --skip-floor
run --dev-start --skip-floor --duration 5
echo "results in $out"
