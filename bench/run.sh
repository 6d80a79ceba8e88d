#!/usr/bin/env bash
# Whole-process benchmark: kollate on 1,000,000 generated events, pinned to one core.
#
#   bench/run.sh [EVENTS]
#
# Reports, for each pipeline, the best of three runs: events/s and peak RSS
# (/usr/bin/time -v). Pipelines: file -> classify -> file;
# file -> classify -> aggregate -> file with a 24h window, so that the generated stream's
# hundreds of thousands of distinct keys keep the default max_groups (100,000) groups open;
# file -> classify -> correlate -> patterns -> file. Memory must not grow with input size:
# the 100k-event run is shown next to the 1M one; file -> classify -> store (SQLite).
# file -> classify -> wasm team-router plugin -> file next to the same routing done by a
# built-in transform (classify rules adding the labels): BENCH_PIPELINES="router plugin".
# BENCH_PIPELINES="correlate store" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
OUT=bench/out
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/kollate

gen() { # events file
  [ -s "$2" ] || "$BIN" generate --events "$1" --rate 200 --deployments 400 --core-only > "$2"
}
gen "$EVENTS" "$OUT/events-$EVENTS.jsonl"
gen 100000 "$OUT/events-100000.jsonl"

pipeline() { # name input plain|aggregate|correlate|store
  local cfg="$OUT/$1.toml"
  {
    echo "data_dir = \"$OUT/data\""
    echo "[sources.in]"; echo 'type = "file"'; echo "paths = [\"$2\"]"
    echo "[transforms.classify]"; echo 'type = "classify"'; echo 'inputs = ["in"]'
    local last=classify
    if [ "$3" = correlate ]; then
      # Incidents (100,000 tracked objects at most) and patterns/anomalies per key.
      echo "[transforms.correlate]"; echo 'type = "correlate"'; echo 'inputs = ["classify"]'; echo 'snapshot = false'
      echo "[transforms.patterns]"; echo 'type = "patterns"'; echo 'inputs = ["correlate"]'
      last=patterns
    fi
    if [ "$3" = aggregate ]; then
      # A day-long window keeps every group open: max_groups (100,000) are held at once.
      echo "[transforms.aggregate]"; echo 'type = "aggregate"'; echo 'inputs = ["classify"]'; echo 'window = "24h"'
      last=aggregate
    fi
    if [ "$3" = plugin ]; then
      # The team-router plugin (plugins/build.sh) with a namespace -> team map.
      echo "[transforms.route]"; echo 'type = "wasm"'; echo 'inputs = ["classify"]'
      echo 'path = "plugins/target/wasm/team_router.wasm"'
      echo "instances = ${PLUGIN_INSTANCES:-1}"
      echo "config = { teams = { $TEAMS }, oncall = { $ONCALL }, default_team = \"platform\" }"
      last=route
    fi
    if [ "$3" = router ]; then
      # The same labels from built-in classify rules (first match wins), builtin table off.
      echo "[transforms.route]"; echo 'type = "classify"'; echo 'inputs = ["classify"]'; echo 'builtin = false'
      for pair in $ROUTES; do
        local ns=${pair%%=*} team=${pair#*=}
        echo "[[transforms.route.rules]]"
        echo "when = { namespace = \"$ns\" }"
        echo "labels = { team = \"$team\", oncall = \"@$team-oncall\" }"
      done
      echo "[[transforms.route.rules]]"; echo 'labels = { team = "platform" }'
      last=route
    fi
    if [ "$3" = store ]; then
      rm -f "$OUT/$1.db" "$OUT/$1.db-wal" "$OUT/$1.db-shm"
      echo "[sinks.out]"; echo 'type = "store"'; echo "inputs = [\"$last\"]"; echo "path = \"$OUT/$1.db\""
    else
      echo "[sinks.out]"; echo 'type = "file"'; echo "inputs = [\"$last\"]"; echo "path = \"$OUT/$1.out.jsonl\""
    fi
  } > "$cfg"
  echo "$cfg"
}

measure() { # label config
  local best_rate=0 best_rss=0
  for _ in 1 2 3; do
    rm -f "$OUT"/*.out.jsonl "$OUT"/*.db "$OUT"/*.db-wal "$OUT"/*.db-shm
    local log
    log=$(taskset -c 0 /usr/bin/time -v "$BIN" --log-level warn run --no-progress --config "$2" 2>&1)
    local rate rss
    rate=$(echo "$log" | sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p')
    rss=$(echo "$log" | sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\)/\1/p')
    if [ "$rate" -gt "$best_rate" ]; then best_rate=$rate; best_rss=$rss; fi
  done
  printf '| %-44s | %10s | %8s MB |\n' "$1" "$best_rate" "$((best_rss / 1024))"
}

# Namespace -> team map for the router pipelines (the generator's namespaces).
ROUTES="shop=checkout payments=payments search=discovery auth=identity media=content"
TEAMS=$(for p in $ROUTES; do printf '%s = "%s", ' "${p%%=*}" "${p#*=}"; done | sed 's/, $//')
ONCALL=$(for p in $ROUTES; do printf '%s = "@%s-oncall", ' "${p#*=}" "${p#*=}"; done | sed 's/, $//')
case " ${BENCH_PIPELINES:-} " in *" plugin "*) plugins/build.sh --rust-only >/dev/null ;; esac

echo "| pipeline (one core, taskset -c 0) | events/s | peak RSS |"
echo "|---|---:|---:|"
for n in 100000 "$EVENTS"; do
  for mode in ${BENCH_PIPELINES:-plain aggregate correlate}; do
    case $mode in
      plain) label="file -> classify -> file ($n)" ;;
      aggregate) label="file -> classify -> aggregate -> file ($n)" ;;
      correlate) label="file -> classify -> correlate -> patterns -> file ($n)" ;;
      store) label="file -> classify -> store ($n)" ;;
      plugin) label="file -> classify -> wasm team-router -> file ($n)" ;;
      router) label="file -> classify -> built-in router -> file ($n)" ;;
    esac
    measure "$label" "$(pipeline "$mode-$n" "$OUT/events-$n.jsonl" "$mode")"
  done
done
