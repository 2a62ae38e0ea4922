#!/usr/bin/env bash
# Called by meson.build: builds the plugin and the exporter with cargo in release mode
# and copies the two artefacts into meson's output folder.
set -euo pipefail
SRC="$1" TARGET_DIR="$2" OUTDIR="$3"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --manifest-path "$SRC/Cargo.toml" --target-dir "$TARGET_DIR" \
  -p gst-plugin-omnitok -p omnitok-export
cp "$TARGET_DIR/release/libgstomnitok.so" "$OUTDIR/libgstomnitok.so"
cp "$TARGET_DIR/release/omnitok-export" "$OUTDIR/omnitok-export"
