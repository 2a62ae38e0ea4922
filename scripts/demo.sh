#!/usr/bin/env bash
# The main job: set up, build, export a model, tokenize a real sample video to a token file
# with omnitokenc and reconstruct it with omnitokparse ! omnitokdec, printing frames, tokens,
# bitrate, throughput and PSNR and writing out/demo/side_by_side.png.
#
#   scripts/demo.sh [--checkpoint FILE.ckpt] [--preset NAME] [--video bikes.mp4] [--frames N] [--precision f32|int8]
#
# --precision int8 also exports int8 graphs (omnitok-export --precision int8) to out/model-int8/
# and runs the job with them too, printing their speed and PSNR next to float32's.
#
# Without --checkpoint it uses the released architecture (preset imagenet_k600) with seeded
# random weights, since released weights cannot be downloaded here: the pipeline, bitrate
# and speed are real, the reconstruction quality is not.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
CHECKPOINT="" PRESET="imagenet_k600" VIDEO="bikes.mp4" FRAMES=17 PRECISION=f32
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) CHECKPOINT="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --video) VIDEO="$2"; shift 2 ;;
    --frames) FRAMES="$2"; shift 2 ;;
    --precision) PRECISION="$2"; shift 2 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$PRECISION" in
  f32|int8) ;;
  *) echo "demo.sh: unknown precision '$PRECISION' (expected f32 or int8)" >&2; exit 2 ;;
esac

"$ROOT/scripts/setup.sh"
# Everything this script runs: the exporter, the plugin (for the README's pipelines) and the demo.
cargo build --release --locked -p omnitok-export -p gst-plugin-omnitok
cargo build --release --locked -p omnitok --example demo
for f in target/release/omnitok-export target/release/libgstomnitok.so target/release/examples/demo; do
  [ -f "$f" ] || { echo "demo.sh: the build did not produce $f" >&2; exit 1; }
done
# The plugin alone in a folder of its own, for GST_PLUGIN_PATH (scripts/env.sh).
install -D -m 644 target/release/libgstomnitok.so target/gstreamer-1.0/libgstomnitok.so
source "$ROOT/scripts/env.sh"

MODEL="$ROOT/out/model"
if [ -n "$CHECKPOINT" ]; then
  SOURCE=(--checkpoint "$CHECKPOINT")
else
  echo "demo: no --checkpoint given: preset $PRESET with seeded random weights (reconstructions are not meaningful)"
  SOURCE=(--preset "$PRESET" --random-init 0)
fi
omnitok-export "${SOURCE[@]}" --output "$MODEL"
INT8=()
if [ "$PRECISION" = int8 ]; then
  omnitok-export "${SOURCE[@]}" --output "$ROOT/out/model-int8" --precision int8
  INT8=("$ROOT/out/model-int8")
fi
./target/release/examples/demo "$ROOT/.deps/videos/$VIDEO" "$MODEL" "$ROOT/out/demo" "$FRAMES" "${INT8[@]}"

echo
echo "The README's pipelines, on these outputs (plugin: target/gstreamer-1.0/libgstomnitok.so,"
echo "models: out/model/encoder.onnx and decoder.onnx, sample videos: .deps/videos/; this run's"
echo "token file: out/demo/${VIDEO%.*}.omnitok), run from $ROOT:"
grep -E '^(source scripts/env.sh|gst-launch-1.0 )' README.md | sed 's/^/  /'
echo "  gst-launch-1.0 filesrc location=out/demo/${VIDEO%.*}.omnitok ! omnitokparse ! omnitokdec model-file=out/model/decoder.onnx ! videoconvert ! autovideosink"
