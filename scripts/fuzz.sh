#!/usr/bin/env bash
# Runs one coverage-guided fuzz target of fuzz/ for SECONDS on the stable toolchain.
#   scripts/fuzz.sh TARGET SECONDS      (targets: cargo fuzz list, run in fuzz/)
# Installs cargo-fuzz when it is missing. Builds without a sanitizer (`-s none`: the
# address sanitizer needs nightly) but with debug assertions, so overflows panic.
# Starts from the committed seeds (fuzz/seeds/TARGET) and keeps what it finds in
# fuzz/corpus/TARGET (ignored); a crashing input lands in fuzz/artifacts/TARGET/.
# A single allocation beyond what the input's size justifies (fuzz/src/lib.rs: 160 MiB
# plus 64 bytes per input byte), more than 1 GiB in use, a panic, an overflow or an
# input taking over 5 s counts as a crash. Exits non-zero on a crash.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
TARGET=$1
SECONDS_TO_RUN=$2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$ROOT/fuzz"
if ! cargo fuzz list | grep -x "$TARGET" >/dev/null; then
    echo "unknown fuzz target '$TARGET'; the targets are:" >&2
    cargo fuzz list >&2
    exit 2
fi
mkdir -p "corpus/$TARGET"
echo "== fuzzing $TARGET for $SECONDS_TO_RUN s"
cargo fuzz run --sanitizer none "$TARGET" "corpus/$TARGET" "seeds/$TARGET" -- \
    -max_total_time="$SECONDS_TO_RUN" -timeout=5 -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1
