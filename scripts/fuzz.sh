#!/usr/bin/env bash
# Runs one coverage-guided fuzz target of fuzz/ for SECONDS on the stable toolchain.
#   scripts/fuzz.sh TARGET SECONDS      (targets: cargo fuzz list, run in fuzz/)
# Installs cargo-fuzz when it is missing. Builds without a sanitizer (`-s none`: the
# address sanitizer needs nightly) but with debug assertions, so overflows panic.
# Starts from the committed seeds (fuzz/seeds/TARGET) and keeps what it finds in
# fuzz/corpus/TARGET (ignored); a crashing input lands in fuzz/artifacts/TARGET/.
# A single allocation over 256 MiB or more than 1 GiB in use counts as a crash: the
# inputs are small, so a reader must not allocate beyond what their size justifies.
# Exits non-zero on a crash, a leak of the limits, or a timeout (5 s for one input).
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
if ! cargo fuzz list | grep -qx "$TARGET"; then
    echo "unknown fuzz target '$TARGET'; the targets are:" >&2
    cargo fuzz list >&2
    exit 2
fi
mkdir -p "corpus/$TARGET"
echo "== fuzzing $TARGET for $SECONDS_TO_RUN s"
cargo fuzz run --sanitizer none "$TARGET" "corpus/$TARGET" "seeds/$TARGET" -- \
    -max_total_time="$SECONDS_TO_RUN" -timeout=5 -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1
