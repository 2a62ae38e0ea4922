#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets: a few tiny, synthetic files of
each format (no model weights). Needs only the Python standard library: the torch
globals are stand-ins with the same module and name, so `pickle` writes what
`torch.save` would. Run from anywhere: python3 fuzz/seeds/make_seeds.py"""

import argparse
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))


def stand_in(module, name):
    """A function pickle names as `module.name`."""
    mod = sys.modules.get(module)
    if mod is None:
        mod = types.ModuleType(module)
        sys.modules[module] = mod
    f = types.FunctionType((lambda *a: None).__code__, {}, name)
    f.__module__, f.__qualname__ = module, name
    setattr(mod, name, f)
    return f


def stand_in_class(module, name):
    mod = sys.modules.get(module) or types.ModuleType(module)
    sys.modules[module] = mod
    cls = type(name, (), {})
    cls.__module__, cls.__qualname__ = module, name
    setattr(mod, name, cls)
    return cls


rebuild_tensor_v2 = stand_in("torch._utils", "_rebuild_tensor_v2")
rebuild_parameter = stand_in("torch._utils", "_rebuild_parameter")
FloatStorage = stand_in_class("torch", "FloatStorage")
HalfStorage = stand_in_class("torch", "HalfStorage")
LongStorage = stand_in_class("torch", "LongStorage")
AttributeDict = stand_in_class("pytorch_lightning.utilities.parsing", "AttributeDict")


class Storage:
    def __init__(self, cls, key, numel):
        self.pid = ("storage", cls, key, "cpu", numel)


class Tensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())
        self.parameter = parameter

    def __reduce__(self):
        if self.parameter:
            inner = Tensor(*self.args[:4])
            return (rebuild_parameter, (inner, True, OrderedDict()))
        return (rebuild_tensor_v2, self.args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def dumps(obj, protocol=2):
    buf = io.BytesIO()
    Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def lightning(protocol=2):
    s0 = Storage(FloatStorage, "0", 6)
    s1 = Storage(LongStorage, "1", 4)
    state = OrderedDict()
    state["encoder.norm.weight"] = Tensor(s0, 0, [3], [1], parameter=True)
    state["encoder.proj.weight"] = Tensor(s0, 0, [2, 3], [3, 1])
    state["encoder.proj.t"] = Tensor(s0, 1, [2, 2], [1, 3])
    state["encoder.index"] = Tensor(s1, 0, [2, 2], [2, 1])
    state["codebook.N"] = Tensor(s1, 3, [1], [1])
    # pickled as Lightning saves it: NEWOBJ of argparse.Namespace, BUILD with its dict
    args = argparse.Namespace(
        embedding_dim=32, heads=2, spatial_pos="rope", casual_in_peg=True, ff_mult=4.0,
        enc_block="ttww", lr=None, resolution=[64, 64], tags=("a", 1), big=2**70,
    )
    return {
        "epoch": 3,
        "global_step": 100,
        "state_dict": state,
        "hyper_parameters": {"args": args, "extra": {1, 2}, "raw": b"\x00\x01"},
        "pytorch-lightning_version": "1.9.0",
    }


def storages(little=True):
    fmt = "<" if little else ">"
    return {
        "data/0": struct.pack(fmt + "6f", 1.0, -2.0, 0.5, 3.25, -0.125, 7.0),
        "data/1": struct.pack(fmt + "4q", 0, 1, 2, -3),
    }


def torch_zip(obj, little=True, name="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", dumps(obj))
        z.writestr(f"{name}/byteorder", "little" if little else "big")
        for k, v in storages(little).items():
            z.writestr(f"{name}/{k}", v)
        z.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def pb_varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def pb_len(number, payload):
    return pb_varint(number << 3 | 2) + pb_varint(len(payload)) + payload


def pb_int(number, value):
    return pb_varint(number << 3) + pb_varint(value)


def onnx_model(nodes, inits, cpu=b"x86-vnni"):
    """A minimal serialized ONNX ModelProto: nodes (name, op, domain, inputs) and
    initializers (name, data_type, raw bytes), with omnitok.int8_cpu metadata."""
    graph = b""
    for name, op, domain, inputs in nodes:
        n = b"".join(pb_len(1, i.encode()) for i in inputs) + pb_len(2, b"y")
        graph += pb_len(1, n + pb_len(3, name.encode()) + pb_len(4, op.encode()) + pb_len(7, domain.encode()))
    for name, data_type, raw in inits:
        t = pb_int(1, len(raw)) + pb_int(2, data_type) + pb_len(8, name.encode()) + pb_len(9, raw)
        graph += pb_len(5, t)
    meta = pb_len(1, b"omnitok.int8_cpu") + pb_len(2, cpu)
    return pb_int(1, 10) + pb_len(7, graph) + pb_len(14, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=HERE)
    out = ap.parse_args().out
    bare = OrderedDict((k, v) for k, v in lightning()["state_dict"].items())
    seeds = {
        "pickle/lightning_p2.pkl": dumps(lightning(), 2),
        "pickle/lightning_p4.pkl": dumps(lightning(4), 4),
        "pickle/state_dict_p2.pkl": dumps(bare, 2),
        "pickle/hyper_only_p1.pkl": pickle.dumps({"hyper_parameters": {"a": [1, 2.5, "x", None, True]}}, 1),
        "torch_zip/lightning.ckpt": torch_zip(lightning()),
        "torch_zip/big_endian.ckpt": torch_zip(bare, little=False, name="weights"),
        "safetensors/mixed.safetensors": safetensors(
            {
                "encoder.w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                "encoder.h": ("F16", [3], struct.pack("<3e", 1, -2, 0.5)),
                "encoder.i": ("I64", [1, 2], struct.pack("<2q", 7, -1)),
            },
            {"format": "pt"},
        ),
        "safetensors/other.safetensors": safetensors(
            {
                "b": ("BF16", [2], b"\x80\x3f\x00\x40"),
                "empty": ("F32", [0, 4], b""),
                "codebook.N": ("F64", [1], struct.pack("<d", 2.0)),
                "mask": ("BOOL", [3], b"\x01\x00\x01"),
                "u": ("U8", [2], b"\x05\xff"),
                "k": ("I32", [1], struct.pack("<i", -9)),
            }
        ),
        "unsigned_weights/two_matmuls.bin": onnx_model(
            [
                ("mm", "MatMulIntegerToFloat", "com.microsoft", ["xq", "w", "xs", "ws", "xz", "wz", "b"]),
                ("dq", "DynamicQuantizeMatMul", "com.microsoft", ["x", "w2", "ws", "wz"]),
                ("add", "Add", "", ["y", "other"]),
            ],
            [
                ("w", 3, bytes([0x80, 0xFF, 0x00, 0x01, 0x7F, 0x10])),
                ("w2", 3, bytes([0x05, 0xFB])),
                ("wz", 3, b"\x00"),
                ("other", 3, b"\x09"),
                ("xz", 2, b"\x80"),
            ],
        ),
        "unsigned_weights/no_zero_point.bin": onnx_model(
            [("mm", "MatMulInteger", "", ["a", "w"])],
            [("w", 3, b"\x01\x02")],
            cpu=b"any",
        ),
    }
    for rel, data in seeds.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{rel}: {len(data)} bytes")


if __name__ == "__main__":
    main()
