#!/usr/bin/env bash
# Builds and installs through meson into a staging dir, then uses the installed plugin and
# exporter in a cleared environment (no ORT_DYLIB_PATH, no LD_LIBRARY_PATH, HOME and all
# files in a temporary folder outside the checkout): gst-inspect-1.0 finds the plugin, the
# installed exporter writes a model, and a real encode and decode run on a sample video with
# the ONNX Runtime installed beside the plugin. Without that copy the same encode must fail.
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
fail() { echo "meson-check: $*" >&2; exit 1; }
test -f "$PLUGIN_DIR/libgstomnitok.so" || fail "$PLUGIN_DIR/libgstomnitok.so not installed"
ls "$PLUGIN_DIR"/omnitok/libonnxruntime.so.* >/dev/null 2>&1 || fail "ONNX Runtime not installed into $PLUGIN_DIR/omnitok/"
test -x "$STAGE/usr/local/bin/omnitok-export" || fail "omnitok-export not installed"
if strings "$PLUGIN_DIR/libgstomnitok.so" | grep -q -F "$ROOT/.deps"; then
  fail "the installed plugin has a path of the build tree compiled in"
fi

# A cleared environment: nothing of the checkout, no ONNX Runtime hints.
SCRATCH="$(mktemp -d /tmp/omnitok-meson-check.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
cp "$ROOT/.deps/videos/carphone_pristine.mp4" "$SCRATCH/in.mp4"
clean() {
  env -i HOME="$SCRATCH" PATH=/usr/bin:/bin GST_PLUGIN_PATH="$PLUGIN_DIR" GST_REGISTRY="$SCRATCH/registry.bin" "$@"
}
clean gst-inspect-1.0 omnitokenc >"$SCRATCH/inspect.txt" 2>&1 || { cat "$SCRATCH/inspect.txt" >&2; fail "gst-inspect-1.0 omnitokenc failed"; }
grep -q "$PLUGIN_DIR/libgstomnitok.so" "$SCRATCH/inspect.txt" || fail "gst-inspect-1.0 does not use the installed plugin"
clean "$STAGE/usr/local/bin/omnitok-export" --preset tiny --random-init 0 --output "$SCRATCH/model" -q
encode() {
  clean gst-launch-1.0 -q filesrc location="$SCRATCH/in.mp4" ! decodebin ! videoconvert ! \
    omnitokenc model-file="$SCRATCH/model/encoder.onnx" ! filesink location="$SCRATCH/in.omnitok"
}
encode >"$SCRATCH/encode.txt" 2>&1 || { cat "$SCRATCH/encode.txt" >&2; fail "encoding with the installed plugin failed"; }
[ "$(head -c 7 "$SCRATCH/in.omnitok")" = "OMNITOK" ] || fail "the installed plugin wrote no token stream"
clean gst-launch-1.0 -q filesrc location="$SCRATCH/in.omnitok" ! omnitokparse ! \
  omnitokdec model-file="$SCRATCH/model/decoder.onnx" ! videoconvert ! fakesink >"$SCRATCH/decode.txt" 2>&1 \
  || { cat "$SCRATCH/decode.txt" >&2; fail "decoding with the installed plugin failed"; }
# Negative control: without the private copy the installed plugin finds no ONNX Runtime.
mkdir "$SCRATCH/hidden" && mv "$PLUGIN_DIR"/omnitok/libonnxruntime.so.* "$SCRATCH/hidden/"
if encode >"$SCRATCH/encode-without.txt" 2>&1; then
  fail "encoding succeeded without the private ONNX Runtime: the check proves nothing"
fi
grep -q "no usable ONNX Runtime" "$SCRATCH/encode-without.txt" || { cat "$SCRATCH/encode-without.txt" >&2; fail "unexpected error without ONNX Runtime"; }
mv "$SCRATCH"/hidden/* "$PLUGIN_DIR/omnitok/"
echo "meson-check: installed plugin ($PLUGIN_DIR) encoded and decoded carphone_pristine.mp4 in a cleared environment with its private ONNX Runtime; exporter OK"
