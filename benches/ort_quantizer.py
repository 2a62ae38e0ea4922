"""omnitok's int8 graphs against ONNX Runtime's own dynamic quantizer, side by side.

Exports the released config (imagenet_k600, seeded random weights) in float32 and with
`--precision int8`, runs `onnxruntime.quantization.quantize_dynamic` (MatMul weights, int8,
per tensor: what a user of ONNX Runtime would do first; the codebook distances excluded) on
the float32 graphs, and times the
three on one 17x256x256 clip, encode and decode, interleaved round by round: median, min and
max, and the share of tokens equal to float32's.

    .deps/venv/bin/python benches/ort_quantizer.py [ROUNDS]

(after `scripts/setup.sh --test`, which makes the venv with onnx and onnxruntime, and a
release build of omnitok-export).
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "target" / "release" / "omnitok-export"


def export(out: Path, *extra: str) -> None:
    subprocess.run(
        [str(EXPORT), "--preset", "imagenet_k600", "--random-init", "7", "--output", str(out), "-q", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def summary(ts: list) -> str:
    return f"median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f})"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not EXPORT.exists():
        sys.exit(f"{EXPORT} is missing: cargo build --release -p omnitok-export")
    with tempfile.TemporaryDirectory(dir=ROOT / ".deps") as tmp:
        tmp = Path(tmp)
        export(tmp / "f32")
        export(tmp / "int8", "--precision", "int8")
        (tmp / "ort").mkdir()
        for g in ["encoder", "decoder"]:
            quantize_dynamic(
                tmp / "f32" / f"{g}.onnx",
                tmp / "ort" / f"{g}.onnx",
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                per_channel=False,
                # the codebook distances stay float, as in omnitok's int8 graphs (quantized
                # per tensor, the squared-norm row of their weight would swamp the rest)
                nodes_to_exclude=["codebook/MatMul"],
                # our graphs use com.microsoft operators, which its shape inference skips
                extra_options={"DefaultTensorType": 1},
            )
        names = ["f32", "int8", "ort"]
        label = {"f32": "omnitok f32", "int8": "omnitok int8", "ort": "ORT quantize_dynamic"}
        enc = {n: session(tmp / n / "encoder.onnx") for n in names}
        dec = {n: session(tmp / n / "decoder.onnx") for n in names}
        # the clip of benches/ort_cpu.rs
        f, h, w, c = np.meshgrid(np.arange(17), np.arange(256), np.arange(256), np.arange(3), indexing="ij")
        frames = ((f * 7 + h + 2 * w + 40 * c) % 256).astype(np.uint8)[None]
        te = {n: [] for n in names}
        td = {n: [] for n in names}
        tokens = {}
        for r in range(rounds + 1):
            for n in names:
                t = time.perf_counter()
                tok = enc[n].run(None, {"frames": frames})[0]
                e = time.perf_counter() - t
                t = time.perf_counter()
                dec[n].run(None, {"tokens": tok})
                d = time.perf_counter() - t
                tokens[n] = tok
                if r > 0:
                    te[n].append(e)
                    td[n].append(d)
        print(
            f"ONNX Runtime {ort.__version__} CPU, 2 threads, 1 clip of 17x256x256, released config, "
            f"{rounds} timed rounds after 1 warm-up, variants interleaved:"
        )
        for n in names:
            agree = (tokens[n] == tokens["f32"]).mean() * 100
            print(f"  {label[n]:<22} encode {summary(te[n])}  decode {summary(td[n])}  tokens equal to f32's {agree:.1f}%")


if __name__ == "__main__":
    main()
