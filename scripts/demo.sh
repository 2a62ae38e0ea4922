#!/usr/bin/env bash
# The main job: set up, export a model, tokenize a real sample video to a token file with
# omnitokenc and reconstruct it with omnitokparse ! omnitokdec, printing frames, tokens,
# bitrate, throughput and PSNR and writing out/demo/side_by_side.png.
#
#   scripts/demo.sh [--checkpoint FILE.ckpt] [--preset NAME] [--video bikes.mp4] [--frames N]
#
# Without --checkpoint it uses the released architecture (preset imagenet_k600) with seeded
# random weights, since released weights cannot be downloaded here: the pipeline, bitrate
# and speed are real, the reconstruction quality is not.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
CHECKPOINT="" PRESET="imagenet_k600" VIDEO="bikes.mp4" FRAMES=17
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) CHECKPOINT="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --video) VIDEO="$2"; shift 2 ;;
    --frames) FRAMES="$2"; shift 2 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

"$ROOT/scripts/setup.sh"
export XDG_CACHE_HOME="$ROOT/.deps/cache"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.deps/onnxruntime/libonnxruntime.so}"
cargo build --release --locked -p omnitok-export -p omnitok --example demo

MODEL="$ROOT/out/model"
if [ -n "$CHECKPOINT" ]; then
  ./target/release/omnitok-export --checkpoint "$CHECKPOINT" --output "$MODEL"
else
  echo "demo: no --checkpoint given: preset $PRESET with seeded random weights (reconstructions are not meaningful)"
  ./target/release/omnitok-export --preset "$PRESET" --random-init 0 --output "$MODEL"
fi
./target/release/examples/demo "$ROOT/.deps/videos/$VIDEO" "$MODEL" "$ROOT/out/demo" "$FRAMES"
