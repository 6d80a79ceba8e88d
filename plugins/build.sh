#!/usr/bin/env bash
# Builds the SDK's plugins (Rust) and the Python example into plugins/target/wasm/*.wasm.
#
# Rust: with the standard target when rustup has it (`rustup target add wasm32-wasip2`),
# otherwise offline with Debian's Rust and its std sources (build-std for
# wasm32-unknown-unknown, linked into a component by wasm-component-ld); the Debian
# packages are installed when missing and we are root. Python: componentize-py in
# .venv-plugins at the repository root (installed when missing).
#
# Usage: plugins/build.sh [--rust-only]
set -euo pipefail
cd "$(dirname "$0")"
out=target/wasm
mkdir -p "$out"
# Where cargo puts what it builds (CARGO_TARGET_DIR is read relative to this folder, as cargo does).
cargo_target=${CARGO_TARGET_DIR:-target}

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    cargo build --release --target wasm32-wasip2 --quiet
    built=$cargo_target/wasm32-wasip2/release
else
    linker=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
    wasm_ld=/usr/lib/llvm-22/bin/wasm-ld
    if [ ! -x /usr/bin/rustc ] || [ ! -x "$linker" ] || [ ! -x "$wasm_ld" ]; then
        echo "plugins/build.sh: no wasm32-wasip2 target; installing Debian's Rust with std sources" >&2
        if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
        pkgs="rustc-web cargo-web rust-web-src rust-web-llvm lld-22"
        $SUDO apt-get install -y $pkgs >/dev/null \
            || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y $pkgs >/dev/null; }
    fi
    # Debian's cargo and rustc (rustup's shadow them on PATH), nightly features for build-std.
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasm-ld-path=$wasm_ld" \
        /usr/bin/cargo build --release --quiet --target wasm32-unknown-unknown \
        -Zbuild-std=std,panic_abort
    built=$cargo_target/wasm32-unknown-unknown/release
fi
for wasm in "$built"/*.wasm; do
    cp -p "$wasm" "$out/"
done

[ "${1:-}" = "--rust-only" ] && exit 0
venv=../.venv-plugins
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "componentize-py==0.25.*"
fi
py_out="$out/priority_py.wasm"
if [ ! -f "$py_out" ] || [ -n "$(find priority-py ../wit -newer "$py_out" -name '*.py' -o -newer "$py_out" -name '*.wit')" ]; then
    "$venv/bin/componentize-py" -d ../wit -w plugin componentize -p priority-py app -o "$py_out" >/dev/null
fi
ls "$out"
