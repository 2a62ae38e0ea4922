#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), formatting, lints, unit and integration
# tests (parity against ../shared/golden, element and pipeline tests), and the meson
# build/install check. Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

"$ROOT/scripts/setup.sh" --test

# Nothing outside the checkout's ignored folders: ONNX Runtime's cache, temporary files.
export XDG_CACHE_HOME="$ROOT/.deps/cache"
export OMNITOK_PYTHON="$ROOT/.deps/venv/bin/python"
export OMNITOK_GOLDEN_DIR="${OMNITOK_GOLDEN_DIR:-$ROOT/../shared/golden}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.deps/onnxruntime/libonnxruntime.so}"
export TMPDIR="$ROOT/.deps/tmp"
mkdir -p "$XDG_CACHE_HOME" "$TMPDIR"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p omnitok-export --features fuzzing --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== meson build + install"
"$ROOT/scripts/meson-check.sh"
echo "== all tests passed"
