#!/usr/bin/env bash
# Store benchmark: N generated events (default 10,000,000) ingested into the SQLite store,
# then query and aggregation latency measured with the CLI, as a user runs them.
#
#   bench/store.sh [EVENTS]
#
# Reports ingest events/s, database size (total and per million events), filtered queries
# (one namespace, one hour, newest 100; one pod over all time) and group-by aggregations
# over every event, each the best of five runs of the whole `kollate` process.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
OUT=bench/out
DB="$OUT/store-$EVENTS.db"
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/kollate

if [ ! -s "$DB" ]; then
  cfg="$OUT/store-ingest.toml"
  cat > "$cfg" <<TOML
data_dir = "$OUT/data"
[sources.in]
type = "stdin"
[transforms.classify]
type = "classify"
inputs = ["in"]
[sinks.store]
type = "store"
inputs = ["classify"]
path = "$DB"
TOML
  start=$(date +%s.%N)
  "$BIN" generate --events "$EVENTS" --rate 200 --deployments 400 --core-only \
    | "$BIN" --log-level warn run --no-progress --config "$cfg" 2>&1 | tail -1
  end=$(date +%s.%N)
  echo "ingest: $EVENTS events in $(echo "$end - $start" | bc) s (generation included)"
fi
size=$(stat -c %s "$DB")
echo "database: $((size / 1048576)) MiB, $((size / 1048576 * 1000000 / EVENTS)) MiB per million events"

best() { # label command...
  local best=999999
  for _ in 1 2 3 4 5; do
    local t0 t1 ms
    t0=$(date +%s%N)
    "${@:2}" > /dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    [ "$ms" -lt "$best" ] && best=$ms
  done
  echo "$1: best of 5: $best ms"
}
# The middle hour of the generated day (events start at 2026-03-02T08:00:00Z, 200/s).
hours=$(( EVENTS / 200 / 3600 ))
mid=$(( 8 + hours / 2 ))
from=$(printf '2026-03-02T%02d:00:00Z' "$mid")
to=$(printf '2026-03-02T%02d:00:00Z' "$((mid + 1))")
best "query --namespace shop --since $from --until $to --limit 100" \
  "$BIN" query --db "$DB" --namespace shop --since "$from" --until "$to" --limit 100 -o jsonl
best "query --namespace shop --reason BackOff --since $from --until $to" \
  "$BIN" query --db "$DB" --namespace shop --reason BackOff --since "$from" --until "$to" --limit 100 -o jsonl
# One pod of that hour, looked up through the deferred name index (and the unmerged tail).
name=$("$BIN" query --db "$DB" --namespace shop --since "$from" --until "$to" --limit 1 -o jsonl \
  | sed -n 's/.*"object":{[^}]*"name":"\([^"]*\)".*/\1/p')
best "query --name $name (all time)" \
  "$BIN" query --db "$DB" --name "$name" --limit 100 -o jsonl
best "aggregate --group-by reason,namespace (all $EVENTS events)" \
  "$BIN" aggregate --db "$DB" --group-by reason,namespace --since 2026-03-01T00:00:00Z
best "aggregate --group-by namespace --window 1h (all events)" \
  "$BIN" aggregate --db "$DB" --group-by namespace --window 1h --since 2026-03-01T00:00:00Z
