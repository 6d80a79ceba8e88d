#!/usr/bin/env bash
# Delivery benchmarks: kollate pinned to core 0, the peers to core 1.
#
#   bench/delivery.sh [EVENTS]          (default 500000)
#
# Pipelines, each the best of three runs (events/s end to end: the run ends once every
# event is acknowledged; peak RSS from /usr/bin/time -v):
#   file -> kafka (acks=all, idempotent, lz4 and uncompressed) into a local tansu broker
#   (4 partitions);
#   file -> otlp (gRPC, gzip and uncompressed) into tests/peers/otlp_receiver.py (counting
#   only);
#   file -> disk buffer -> file, next to file -> file (what the buffer's write+read costs).
# BENCH_PIPELINES="kafka otlp disk" runs a subset. Peers come from tests/peers/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-500000}
OUT=bench/out
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/kollate
tests/peers/setup.sh
VENV=${KOLLATE_PEERS_VENV:-.venv-peers}
INPUT="$OUT/events-$EVENTS.jsonl"
[ -s "$INPUT" ] || "$BIN" generate --events "$EVENTS" --rate 200 --deployments 400 --core-only > "$INPUT"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

measure() { # label config
  local best_rate=0 best_rss=0
  for _ in 1 2 3; do
    rm -rf "$OUT/delivery-data" "$OUT"/delivery.out.jsonl
    local log rate rss
    log=$(taskset -c 0 /usr/bin/time -v "$BIN" --log-level warn run --no-progress --config "$2" 2>&1)
    rate=$(echo "$log" | sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p')
    rss=$(echo "$log" | sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\)/\1/p')
    if [ "${rate:-0}" -gt "$best_rate" ]; then best_rate=$rate; best_rss=$rss; fi
  done
  printf '| %-52s | %10s | %8s MB |\n' "$1" "$best_rate" "$((best_rss / 1024))"
}

config() { # name sink-lines...
  local cfg="$OUT/delivery-$1.toml"; shift
  {
    echo "data_dir = \"$OUT/delivery-data\""
    echo "[sources.in]"; echo 'type = "file"'; echo "paths = [\"$INPUT\"]"
    echo "[sinks.out]"; echo 'inputs = ["in"]'
    printf '%s\n' "$@"
  } > "$cfg"
  echo "$cfg"
}

echo "| pipeline ($EVENTS events; kollate on core 0, peer on core 1) | events/s | peak RSS |"
echo "|---|---:|---:|"
for mode in ${BENCH_PIPELINES:-kafka otlp disk}; do
  case $mode in
    kafka)
      port=$(free_port)
      env -u OTEL_EXPORTER_OTLP_ENDPOINT taskset -c 1 "$VENV/bin/tansu" broker \
        --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >/dev/null 2>&1 &
      PIDS+=($!)
      sleep 0.5
      "$VENV/bin/tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions 4 bench >/dev/null 2>&1 || true
      measure "file -> kafka (acks=all, idempotent, lz4)" "$(config kafka 'type = "kafka"' \
        "bootstrap_servers = \"127.0.0.1:$port\"" 'topic = "bench"' 'compression = "lz4"')"
      measure "file -> kafka (acks=all, idempotent, uncompressed)" "$(config kafka-plain \
        'type = "kafka"' "bootstrap_servers = \"127.0.0.1:$port\"" 'topic = "bench"')"
      ;;
    otlp)
      port=$(free_port)
      taskset -c 1 "$VENV/bin/python" tests/peers/otlp_receiver.py --grpc-port "$port" --http-port 0 &
      PIDS+=($!)
      sleep 1.5
      measure "file -> otlp (gRPC, gzip, 1000 per request)" "$(config otlp 'type = "otlp"' \
        "endpoint = \"http://127.0.0.1:$port\"")"
      measure "file -> otlp (gRPC, no compression)" "$(config otlp-plain 'type = "otlp"' \
        "endpoint = \"http://127.0.0.1:$port\"" 'compression = "none"')"
      ;;
    disk)
      measure "file -> file (no buffer)" "$(config plain 'type = "file"' \
        "path = \"$OUT/delivery.out.jsonl\"")"
      measure "file -> disk buffer -> file" "$(config disk 'type = "file"' \
        "path = \"$OUT/delivery.out.jsonl\"" 'buffer = { type = "disk", max_size = "1GiB" }')"
      ;;
  esac
done
