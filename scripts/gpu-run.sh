#!/usr/bin/env bash
# The GPU machine's side of scripts/gpu-visit.sh (run there, in the repository copy).
#
#   bash scripts/gpu-run.sh stage N      copy .gpu-visit/N into $OMNITOK_GPU_DIR (default
#                                        /tmp/omnitok-gpu), which outlives the call while the
#                                        machine stays warm
#   bash scripts/gpu-run.sh run [ARGS]   check and unpack what was staged, export the graphs
#                                        with the carried exporter (released imagenet_k600
#                                        architecture, random weights seed 7; f32 and f16),
#                                        run gpu_bench (CUDA, then a TensorRT attempt) and print
#                                        one table, also written to $OUT/gpu-table.md
#
# run's ARGS: --provider P (default cuda: CUDA, then TensorRT f16 at batch 8; cpu: the
# selftest), --preset NAME (default imagenet_k600), and gpu_bench's --size, --frames, --batch,
# --rounds, --warmup.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${OMNITOK_GPU_DIR:-/tmp/omnitok-gpu}"

stage() {
    local n="$1" src="$ROOT/.gpu-visit/$1"
    [[ -d "$src" ]] || {
        echo "gpu-run: $src is missing (carry '.gpu-visit/$n')" >&2
        exit 1
    }
    mkdir -p "$DIR/parts"
    cp "$src"/* "$DIR/parts/"
    echo "gpu-run: staged part $n: $(ls "$src" | tr '\n' ' ')"
}

run() {
    local provider=cuda preset=imagenet_k600 size=256 frames=17,1 batch=1,8,32 rounds=5 warmup=2
    while (($#)); do
        case "$1" in
        --provider) provider="$2" ;;
        --preset) preset="$2" ;;
        --size) size="$2" ;;
        --frames) frames="$2" ;;
        --batch) batch="$2" ;;
        --rounds) rounds="$2" ;;
        --warmup) warmup="$2" ;;
        *)
            echo "gpu-run: unknown argument $1" >&2
            exit 2
            ;;
        esac
        shift 2
    done
    local parts="$DIR/parts"
    [[ -f "$parts/SHA256SUMS" ]] || {
        echo "gpu-run: nothing staged in $parts (stage every .gpu-visit/N first)" >&2
        exit 1
    }
    local want have
    want=$(grep -c 'cuda.zst.part' "$parts/SHA256SUMS")
    have=$(ls "$parts"/cuda.zst.part.* 2>/dev/null | wc -l)
    if ((want != have)); then
        echo "gpu-run: $have of $want CUDA provider parts staged; stage the missing calls" >&2
        exit 1
    fi
    (cd "$parts" && grep -v 'libonnxruntime_providers_cuda.so$' SHA256SUMS | sha256sum -c --quiet -)
    # Unpack once: the tools first (they hold zstd), then the CUDA provider.
    mkdir -p "$DIR/x"
    if [[ ! -x "$DIR/x/bin/gpu_bench" ]]; then
        LD_LIBRARY_PATH="$parts" "$parts/zstd" -d -q -c "$parts/tools.tar.zst" | tar -C "$DIR/x" -xf -
    fi
    local lib="$DIR/x/lib"
    if [[ ! -f "$lib/libonnxruntime_providers_cuda.so" ]]; then
        cat "$parts"/cuda.zst.part.* | LD_LIBRARY_PATH="$parts" "$parts/zstd" -d -q --long=27 -o "$lib/libonnxruntime_providers_cuda.so"
        (cd "$lib" && grep 'libonnxruntime_providers_cuda.so$' "$parts/SHA256SUMS" | sha256sum -c --quiet -)
    fi
    ln -sf libonnxruntime.so.1.31.1 "$lib/libonnxruntime.so"
    # CUDA 13 and cuDNN 9 from the PyTorch environment (../shared/NOTES.md).
    local nv=""
    for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
        /opt/torch/.venv/lib/python3*/site-packages; do
        if [[ -d "$site/nvidia/cu13/lib" ]]; then
            nv="$site/nvidia/cu13/lib:$site/nvidia/cudnn/lib"
            break
        fi
    done
    if [[ -z "$nv" && "$provider" != cpu ]]; then
        echo "gpu-run: no nvidia/cu13/lib in the Python environment: the CUDA provider cannot load" >&2
    fi
    export LD_LIBRARY_PATH="$lib${nv:+:$nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export ORT_DYLIB_PATH="$lib/libonnxruntime.so"
    local models="$DIR/models/$preset"
    if [[ ! -f "$models/f16/decoder.onnx" ]]; then
        "$DIR/x/bin/omnitok-export" --preset "$preset" --random-init 7 --output "$models/f32" -q >/dev/null
        "$DIR/x/bin/omnitok-export" --preset "$preset" --random-init 7 --output "$models/f16" -q --precision f16 \
            >/dev/null
    fi
    local out="${OUT:-$DIR/out}"
    mkdir -p "$out"
    local bench=("$DIR/x/bin/gpu_bench" --f32 "$models/f32" --f16 "$models/f16" --size "$size" --frames "$frames"
        --batch "$batch" --rounds "$rounds" --warmup "$warmup")
    {
        echo "# gpu_bench, $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
        echo "# command: bash scripts/gpu-run.sh run --provider $provider --preset $preset --size $size --frames $frames --batch $batch --rounds $rounds --warmup $warmup"
        if [[ "$provider" == cuda ]]; then
            "${bench[@]}" --provider cuda --precisions f32,tf32,f16
            # TensorRT needs libnvinfer.so.10 (not on the machine); the row says why it did not
            # run. Where it runs, the second start reuses the engine and timing caches: its
            # "loading" line is the second-start time.
            for start in first second; do
                echo "# TensorRT, $start start (caches in $DIR/trt-cache)"
                "${bench[@]}" --provider tensorrt --precisions f16 --batch 8 --frames 17 \
                    --cache-dir "$DIR/trt-cache" 2>&1 | grep -E '^\| tensorrt|^\(loading' || true
            done
        else
            "${bench[@]}" --provider "$provider" --precisions f32,f16
        fi
    } 2>&1 | tee "$out/gpu-table.md"
}

case "${1:-}" in
stage) stage "${2:?stage N}" ;;
run)
    shift
    run "$@"
    ;;
*)
    echo "usage: bash scripts/gpu-run.sh stage N | run [ARGS]" >&2
    exit 2
    ;;
esac
