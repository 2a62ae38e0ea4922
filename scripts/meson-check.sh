#!/usr/bin/env bash
# Builds and installs through meson into a staging dir and checks that gst-inspect-1.0
# finds the installed plugin and that the installed exporter runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.deps/venv/bin"
BUILD="$ROOT/build/meson"
STAGE="$ROOT/build/stage"
rm -rf "$STAGE"
if [ ! -f "$BUILD/build.ninja" ]; then
  PATH="$VENV:$PATH" "$VENV/meson" setup "$BUILD" "$ROOT" --prefix=/usr/local --libdir=lib >/dev/null
fi
PATH="$VENV:$PATH" "$VENV/meson" compile -C "$BUILD"
PATH="$VENV:$PATH" "$VENV/meson" install -C "$BUILD" --destdir "$STAGE" >/dev/null
PLUGIN_DIR="$STAGE/usr/local/lib/gstreamer-1.0"
test -f "$PLUGIN_DIR/libgstomnitok.so" || { echo "meson-check: $PLUGIN_DIR/libgstomnitok.so not installed" >&2; exit 1; }
test -x "$STAGE/usr/local/bin/omnitok-export" || { echo "meson-check: omnitok-export not installed" >&2; exit 1; }
GST_PLUGIN_SYSTEM_PATH_1_0="" GST_PLUGIN_PATH="$PLUGIN_DIR" GST_REGISTRY="$STAGE/registry.bin" \
  gst-inspect-1.0 omnitok | grep -q "libgstomnitok.so" || { echo "meson-check: gst-inspect-1.0 does not find the installed plugin" >&2; exit 1; }
"$STAGE/usr/local/bin/omnitok-export" --list-presets | grep -q imagenet_k600
echo "meson-check: installed plugin and exporter OK ($STAGE)"
