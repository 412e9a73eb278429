"""A stand-in for the ``tensorrt`` module: the part of TensorRT 10's Python API that
``vilau_rt.backends.tensorrt_backend`` calls, with each "engine" run by ONNX Runtime on the CPU.

It exercises the backend's own logic (profiles, static buffers, tensor addresses, the KV buffer
sets, the depth paths) where TensorRT cannot be installed. It tells nothing about TensorRT: no
parsing, no plugins, no engine. Buffers are read and written through their raw addresses, as
TensorRT would, so a wrong address or shape shows up as wrong numbers.
"""

from __future__ import annotations

import ctypes
import json
from typing import ClassVar

import numpy as np
import onnx

__version__ = "0.0-fake"


class DataType:
    FLOAT, HALF, BF16, INT32, INT64, BOOL, INT8, UINT8 = (
        "FLOAT", "HALF", "BF16", "INT32", "INT64", "BOOL", "INT8", "UINT8"
    )  # fmt: skip


_FROM_ONNX = {
    onnx.TensorProto.FLOAT: (DataType.FLOAT, np.float32),
    onnx.TensorProto.FLOAT16: (DataType.HALF, np.float16),
    onnx.TensorProto.INT32: (DataType.INT32, np.int32),
    onnx.TensorProto.INT64: (DataType.INT64, np.int64),
    onnx.TensorProto.BOOL: (DataType.BOOL, np.bool_),
}


class TensorIOMode:
    INPUT, OUTPUT = "INPUT", "OUTPUT"


class MemoryPoolType:
    WORKSPACE = "WORKSPACE"


class BuilderFlag:
    FP16, TF32 = "FP16", "TF32"


class Logger:
    WARNING = "WARNING"

    def __init__(self, level=None):
        self.level = level


class _Registry:
    loaded: ClassVar[list[str]] = []

    def load_library(self, path):
        self.loaded.append(path)
        return object()


_REGISTRY = _Registry()


def get_plugin_registry():
    return _REGISTRY


class Builder:
    built: ClassVar[list[str]] = []  # onnx paths, in build order

    def __init__(self, logger):
        pass

    def create_network(self, flags):
        assert flags == 0
        return {}

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        Builder.built.append(network["onnx"])
        shapes = config.profiles[0].shapes if config.profiles else {}
        return json.dumps({"onnx": network["onnx"], "profile": shapes}).encode()


class _Config:
    def __init__(self):
        self.profiles, self.flags, self.pool = [], {BuilderFlag.TF32}, None

    def set_memory_pool_limit(self, pool, size):
        self.pool = (pool, size)

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class OnnxParser:
    def __init__(self, network, logger):
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path):
        self.network["onnx"] = str(path)
        return True


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, plan):
        return _Engine(json.loads(bytes(plan)))


class _Engine:
    def __init__(self, plan):
        from vilau_rt.ops.onnxruntime import _import_extensions, session_options

        ort, _ = _import_extensions()
        self.session = ort.InferenceSession(plan["onnx"], session_options(1))
        self.profile = plan["profile"]
        graph = onnx.load(plan["onnx"], load_external_data=False).graph
        self.io = {}  # name -> (mode, trt dtype, numpy dtype, dims with names)
        for mode, values in (
            (TensorIOMode.INPUT, graph.input),
            (TensorIOMode.OUTPUT, graph.output),
        ):
            for v in values:
                t = v.type.tensor_type
                dims = [d.dim_param or d.dim_value for d in t.shape.dim]
                self.io[v.name] = (mode, *_FROM_ONNX[t.elem_type], dims)
        self.names = list(self.io)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.io[name][0]

    def get_tensor_dtype(self, name):
        return self.io[name][1]

    def get_tensor_shape(self, name):
        return [d if isinstance(d, int) else -1 for d in self.io[name][3]]

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return self.profile[name]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile.get(name, [shape, shape, shape])
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        """An output's shape from the symbolic dims of the ONNX file, bound by the inputs'."""
        env = {}
        for n, (mode, _, _, dims) in self.engine.io.items():
            if mode == TensorIOMode.INPUT and n in self.shapes:
                env.update({d: s for d, s in zip(dims, self.shapes[n]) if isinstance(d, str)})
        dims = self.engine.io[name][3]
        return [d if isinstance(d, int) else int(eval(d, {"__builtins__": {}}, env)) for d in dims]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def _array(self, name, shape):
        dtype = np.dtype(self.engine.io[name][2])
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def execute_async_v3(self, stream):
        io = self.engine.io
        feeds = {n: self._array(n, self.shapes[n]).copy() for n in io if io[n][0] == "INPUT"}
        outs = [n for n in io if io[n][0] == TensorIOMode.OUTPUT]
        for n, value in zip(outs, self.engine.session.run(outs, feeds)):
            np.copyto(self._array(n, tuple(self.get_tensor_shape(n))), value)
        return True
