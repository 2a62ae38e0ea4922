#!/usr/bin/env bash
# Prepares one visit to the GPU machine (an H200 with CUDA 13 and PyTorch's CUDA wheels, no
# GStreamer, no Rust, no network) and checks it here on CPU.
#
#   scripts/gpu-visit.sh pack       build and pack .gpu-visit/1 .. .gpu-visit/N
#   scripts/gpu-visit.sh selftest   pack, then play the visit here: stage every part into a
#                                   scratch "device" folder and run the runner with
#                                   --provider cpu on small settings (all but the GPU itself)
#
# What travels (the device tool carries at most 64 MiB per call, working tree included): the
# release gpu_bench and omnitok-export binaries, the shared libraries gpu_bench links that
# the device lacks (GStreamer core, GLib: no plugin is loaded), onnxruntime-gpu 1.31.1's
# libonnxruntime and its CUDA / shared / TensorRT providers (the CUDA provider, 284 MB, as
# zstd parts under 47 MB), and a zstd binary with its libraries. The graphs are exported
# there by the carried exporter. The visit is N calls in a row (the machine stays warm for
# 30 s between them); pack prints them. Each stage call copies its folder to
# /tmp/omnitok-gpu on the device, the last one runs scripts/gpu-run.sh and prints one table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

WHEEL_NAME=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7
PART_BYTES=47000000
# What one call may carry beside the working tree (64 MiB less a margin for the tree).
CALL_BYTES=$((60 * 1024 * 1024))
DL="$ROOT/.deps/gpu"
OUTDIR="$ROOT/.gpu-visit"

pack() {
    mkdir -p "$DL"
    local wheel="$DL/$WHEEL_NAME"
    if [[ ! -f "$wheel" ]]; then
        "$ROOT/.deps/venv/bin/python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 -d "$DL" onnxruntime-gpu==1.31.1
    fi
    echo "$WHEEL_SHA256  $wheel" | sha256sum -c --quiet - || {
        echo "gpu-visit: $wheel does not have the pinned sha256 $WHEEL_SHA256" >&2
        exit 1
    }
    echo "== building release gpu_bench and omnitok-export"
    cargo build --release --locked --example gpu_bench -p omnitok
    cargo build --release --locked -p omnitok-export --bin omnitok-export

    local stage="$DL/stage"
    rm -rf "$stage" "$OUTDIR"
    mkdir -p "$stage/lib" "$stage/bin" "$stage/zstd" "$OUTDIR"
    (cd "$stage" && unzip -q -o "$wheel" 'onnxruntime/capi/lib*.so*')
    local capi="$stage/onnxruntime/capi"
    # The CUDA provider compresses to about 186 MB at zstd -19 (two minutes here): kept
    # between packs, keyed by the wheel's checksum.
    local cuda_zst="$DL/cuda-provider-$WHEEL_SHA256.zst"
    if [[ ! -f "$cuda_zst" ]]; then
        echo "== compressing the CUDA provider (zstd -19, about two minutes)"
        zstd -19 --long=27 -T0 -q -f "$capi/libonnxruntime_providers_cuda.so" -o "$cuda_zst.tmp"
        mv "$cuda_zst.tmp" "$cuda_zst"
    fi
    # Tools: the binaries, ONNX Runtime's small libraries, GStreamer's and zstd's dependencies.
    cp target/release/examples/gpu_bench target/release/omnitok-export "$stage/bin/"
    cp "$capi/libonnxruntime.so.1.31.1" "$capi/libonnxruntime_providers_shared.so" \
        "$capi/libonnxruntime_providers_tensorrt.so" "$stage/lib/"
    # Shared libraries a binary links, less glibc's own (the device has a newer glibc).
    libs_of() {
        ldd "$1" | awk '$3 ~ /^\// {print $3}' |
            grep -v -E '/(libc|libm|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so' | sort -u
    }
    for d in $(libs_of target/release/examples/gpu_bench); do cp -L "$d" "$stage/lib/"; done
    # zstd itself travels uncompressed, with its libraries, to unpack the rest.
    cp "$(command -v zstd)" "$stage/zstd/zstd"
    for d in $(libs_of "$(command -v zstd)"); do cp -L "$d" "$stage/zstd/"; done
    tar -C "$stage" -cf - bin lib | zstd -19 -T0 -q -o "$stage/tools.tar.zst"

    local parts=()
    split -b "$PART_BYTES" -d -a 2 "$cuda_zst" "$stage/cuda.zst.part."
    for p in "$stage"/cuda.zst.part.*; do parts+=("$p"); done
    # One folder per call: a part each, the tools (and the runner's checksums) with the last
    # part that leaves room for them.
    local tools_bytes n=0
    tools_bytes=$(($(stat -c %s "$stage/tools.tar.zst") + $(du -cb "$stage/zstd" | tail -1 | cut -f1)))
    local placed_tools=0
    for p in "${parts[@]}"; do
        n=$((n + 1))
        mkdir -p "$OUTDIR/$n"
        cp "$p" "$OUTDIR/$n/"
    done
    for ((i = n; i >= 1; i--)); do
        local sz
        sz=$(du -cb "$OUTDIR/$i" | tail -1 | cut -f1)
        if ((sz + tools_bytes < CALL_BYTES)); then
            cp "$stage/tools.tar.zst" "$stage"/zstd/* "$OUTDIR/$i/"
            placed_tools=$i
            break
        fi
    done
    if ((placed_tools == 0)); then
        n=$((n + 1))
        mkdir -p "$OUTDIR/$n"
        cp "$stage/tools.tar.zst" "$stage"/zstd/* "$OUTDIR/$n/"
    fi
    (cd "$stage" && sha256sum cuda.zst.part.* tools.tar.zst) >"$OUTDIR/$n/SHA256SUMS"
    sha256sum "$capi/libonnxruntime_providers_cuda.so" | awk '{print $1"  libonnxruntime_providers_cuda.so"}' \
        >>"$OUTDIR/$n/SHA256SUMS"
    echo "$n" >"$OUTDIR/$n/CALLS"
    echo "== packed $n calls:"
    for ((i = 1; i <= n; i++)); do
        local sz
        sz=$(du -cb "$OUTDIR/$i" | tail -1 | cut -f1)
        if ((i < n)); then
            echo "  run(command='bash scripts/gpu-run.sh stage $i', carry=['.gpu-visit/$i'])   # $((sz / 1048576)) MiB"
        else
            echo "  run(command='bash scripts/gpu-run.sh stage $i && bash scripts/gpu-run.sh run', carry=['.gpu-visit/$i'], timeout_s=540)   # $((sz / 1048576)) MiB"
        fi
    done
}

selftest() {
    pack
    local n dev
    n=$(ls -d "$OUTDIR"/*/ | wc -l)
    dev="$ROOT/.deps/tmp/gpu-visit-selftest"
    rm -rf "$dev"
    mkdir -p "$dev/out"
    echo "== playing the visit here (provider cpu, tiny preset)"
    for ((i = 1; i <= n; i++)); do
        OMNITOK_GPU_DIR="$dev/device" bash "$ROOT/scripts/gpu-run.sh" stage "$i"
    done
    OMNITOK_GPU_DIR="$dev/device" OUT="$dev/out" bash "$ROOT/scripts/gpu-run.sh" run \
        --provider cpu --preset tiny --size 32 --frames 5,1 --batch 1,2 --rounds 2 --warmup 1
    grep -q '| cpu | f16 | 5 | 2 |' "$dev/out/gpu-table.md" || {
        echo "gpu-visit selftest: the table lacks the f16 row" >&2
        exit 1
    }
    # The CUDA branch too: here it has no GPU, so every row must say why it did not run.
    OMNITOK_GPU_DIR="$dev/device" OUT="$dev/out-cuda" bash "$ROOT/scripts/gpu-run.sh" run \
        --preset tiny --size 32 --frames 5,1 --batch 1,2 --rounds 1 --warmup 0
    for p in 'cuda | f32' 'cuda | tf32' 'cuda | f16' 'tensorrt | f16'; do
        grep -q "^| $p | - | - | not run: " "$dev/out-cuda/gpu-table.md" || {
            echo "gpu-visit selftest: no '$p' row saying why it did not run" >&2
            exit 1
        }
    done
    echo "== gpu-visit selftest passed"
}

case "${1:-}" in
pack) pack ;;
selftest) selftest ;;
*)
    echo "usage: scripts/gpu-visit.sh pack|selftest" >&2
    exit 2
    ;;
esac
