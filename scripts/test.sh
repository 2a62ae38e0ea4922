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
cargo test --workspace --locked 2>&1 | tee "$TMPDIR/cargo-test.log"
# cargo closes on the last doc-test binary's "0 passed": one closing line for the whole run.
TOTAL="$(awk '/^test result: /{p+=$4; f+=$6; s+=$8} END{printf "tests: %d passed, %d failed, %d skipped", p, f, s}' "$TMPDIR/cargo-test.log")"
echo "$TOTAL" | tee "$TMPDIR/cargo-test.total"
case "$TOTAL" in "tests: 0 passed"*) echo "cargo test ran no test" >&2; exit 1 ;; esac
echo "== gpu_bench on CPU (the GPU benchmark of scripts/gpu-visit.sh, small settings)"
B="$TMPDIR/gpu-bench-cpu"
rm -rf "$B"
cargo run -q --locked -p omnitok-export -- --preset tiny --random-init 9331 --output "$B/f32" -q >/dev/null
cargo run -q --locked -p omnitok-export -- --preset tiny --random-init 9331 --output "$B/f16" -q --precision f16 >/dev/null
cargo run -q --locked --example gpu_bench -- --provider cpu --f32 "$B/f32" --f16 "$B/f16" --precisions f32,tf32,f16 \
    --size 32 --frames 5,1 --batch 1,2 --rounds 2 --warmup 1 | tee "$B/table.md"
grep -q '^| cpu | f32 | 5 | 1 | .* | 100.00% | 0 / inf dB |$' "$B/table.md"
grep -q '^| cpu | f16 | 1 | 2 |' "$B/table.md"
if grep -q 'not run' "$B/table.md"; then exit 1; fi
echo "== meson build + install"
"$ROOT/scripts/meson-check.sh"
echo "== all tests passed"
cat "$TMPDIR/cargo-test.total"
