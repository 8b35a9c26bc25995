"""Fake `tensorrt` builder modules, one per release family, built from the API surface NVIDIA documents for it
(present AND absent: what a version lacks is missing here too, so touching it raises AttributeError as it would).

    8.6   weak typing: EXPLICIT_BATCH needed for ONNX; BuilderFlag.FP16/INT8/OBEY_PRECISION_CONSTRAINTS; IInt8
          calibrators, IBuilderConfig.int8_calibrator / set_calibration_profile; no STRONGLY_TYPED
    10.3  EXPLICIT_BATCH deprecated (ignored); STRONGLY_TYPED; precision flags still there but rejected on a strongly
          typed network; calibrators deprecated (10.1) but present
    11.4  strongly typed only (STRONGLY_TYPED deprecated and ignored); no FP16/INT8/BF16/FP8/OBEY/PREFER flags, no
          calibrators, no int8_calibrator / calibration profile / platform_has_fast_* (migration guide 10.x -> 11.x)

The builder records what it was asked (trt.calls) and "builds" by returning bytes, failing like TensorRT does for
requests the version refuses. The parser refuses what onnx-tensorrt's parser of that family refuses
(edgekd.export.trt_contract: its operator table, Q/DQ rules and strong typing), so a test fails where the real
parser would.
"""

from __future__ import annotations

import importlib.machinery
import types

from edgekd.export.trt_contract import tensorrt_refusals

# ops TensorRT's DLA cannot run (the fake's answer to IBuilderConfig.can_run_on_DLA)
NOT_ON_DLA = {"ReduceL2", "Div", "Expand", "Shape", "Clip", "Cast", "Flatten", "Gemm", "MatMul", "Constant"}


def make_fake_trt(version: str = "10.3.0", dla_cores: int | None = None,
                  dla_ops: set[str] | None = None) -> types.ModuleType:
    import onnx

    major = int(version.split(".")[0])
    # DLA cores a build machine reports (NVIDIA "Working with DLA", TensorRT 11.4.1 docs): 2 (Orin) on 8.x and
    # 10.0-10.7 and from 11.4.1 (AGX Orin, JetPack 7.2.2+); 0 on 10.8-10.x and 11.0-11.4.0, which have no DLA
    v = tuple(int(x) for x in (version.split(".") + ["0", "0"])[:3])
    dla_cores = dla_cores if dla_cores is not None else 0 if (10, 8, 0) <= v < (11, 4, 1) else 2
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.calls = {"flags_set": []}
    trt.float32, trt.float16, trt.int8 = "float32", "float16", "int8"
    ns = types.SimpleNamespace
    creation = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10:
        creation["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = ns(**creation)
    builder_flags = ["GPU_FALLBACK", "REFIT", "TF32", "SPARSE_WEIGHTS"]
    if major < 11:
        builder_flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"]
    if major == 10:
        builder_flags += ["BF16", "FP8"]
    trt.BuilderFlag = ns(**{f: f for f in builder_flags})
    trt.MemoryPoolType = ns(WORKSPACE="WORKSPACE")
    trt.DeviceType = ns(GPU="GPU", DLA="DLA")
    trt.LayerType = ns(QUANTIZE="QUANTIZE", DEQUANTIZE="DEQUANTIZE", OTHER="OTHER")
    onnx_types = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT8: "int8"}

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Tensor:
        def __init__(self, name, dtype="float32"):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, node, types_by_name):
            self.name, self.op_type = node.name, node.op_type
            self.type = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE"}.get(node.op_type, "OTHER")
            self.outputs = [Tensor(o, types_by_name.get(o, "float32")) for o in node.output]
            self._precision = None

        num_outputs = property(lambda self: len(self.outputs))

        def get_output(self, i):
            return self.outputs[i]

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value):
            if trt.calls.get("strongly_typed"):
                raise RuntimeError("setting layer precision is not allowed on a strongly typed network")
            self._precision = value

    class Network:
        def __init__(self, flags):
            trt.calls["network_flags"] = flags
            trt.calls["strongly_typed"] = major >= 11 or (major == 10 and bool(flags & (1 << 1)))
            self.flags, self.inputs, self.layers = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors, self.errors = network, 0, []

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            if major < 10 and not self.network.flags & 1:
                self.errors, self.num_errors = ["ONNX networks need the EXPLICIT_BATCH flag"], 1
                return False
            model = onnx.load(path, load_external_data=False)
            refusals = tensorrt_refusals(model, "8.6" if major < 10 else f"{major}.x",
                                         strongly_typed=trt.calls["strongly_typed"])
            if refusals:  # what the real parser refuses (edgekd.export.trt_contract, from onnx-tensorrt's sources)
                self.errors, self.num_errors = [str(r) for r in refusals], len(refusals)
                return False
            model = onnx.shape_inference.infer_shapes(model)
            graph = model.graph
            types_by_name = {v.name: onnx_types.get(v.type.tensor_type.elem_type, "float32")
                             for v in [*graph.value_info, *graph.output, *graph.input]}
            for init in graph.initializer:
                types_by_name[init.name] = onnx_types.get(init.data_type, "float32")
            self.network.inputs = [Tensor(i.name) for i in graph.input]
            self.network.layers = [Layer(n, types_by_name) for n in graph.node]
            trt.calls["parsed"] = path
            return True

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            self.shapes = (name, tuple(mn), tuple(opt), tuple(mx))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"|tactics"

    class IBuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.pool = set(), [], {}
            self.default_device_type, self.DLA_core = "GPU", -1

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def set_flag(self, flag):
            trt.calls["flags_set"].append(flag)
            self.flags.add(flag)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def can_run_on_DLA(self, layer):
            return layer.op_type in dla_ops if dla_ops is not None else layer.op_type not in NOT_ON_DLA

        def create_timing_cache(self, data):
            trt.calls.setdefault("timing_cache_in", []).append(bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    if major >= 11:  # like the pybind class: a removed attribute cannot be set either
        def _no_removed(self, name, value):
            if name in ("int8_calibrator", "calibration_profile"):
                raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
            object.__setattr__(self, name, value)

        IBuilderConfig.__setattr__ = _no_removed
    else:  # removed in 11.x
        IBuilderConfig.int8_calibrator = None

        def set_calibration_profile(self, p):
            self.calibration_profile = p

        IBuilderConfig.set_calibration_profile = set_calibration_profile

    class Builder:
        num_DLA_cores = dla_cores
        max_DLA_batch_size = 32

        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network(flags)

        def create_optimization_profile(self):
            return Profile()

        def create_builder_config(self):
            return IBuilderConfig()

        def build_serialized_network(self, network, config):
            trt.calls["config"] = config
            precision_flags = {"FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS"}
            if trt.calls["strongly_typed"] and config.flags & precision_flags:
                return None  # TensorRT 10: "precision flags are not allowed with a strongly typed network"
            cal = getattr(config, "int8_calibrator", None)
            if cal is not None:  # what TensorRT does: read the cache, else pull batches and write the cache
                cached = cal.read_calibration_cache()
                trt.calls["calib_cache_read"] = cached
                if cached is None:
                    batches = 0
                    while cal.get_batch([network.get_input(0).name]) is not None:
                        batches += 1
                    trt.calls["calib_batches"] = batches
                    cal.write_calibration_cache(b"TRT-8601-EntropyCalibration2\n")
            return b"serialized-engine"

    if major < 11:
        Builder.platform_has_fast_fp16 = True
        Builder.platform_has_fast_int8 = True

    names = [Logger, OnnxParser, Builder, IBuilderConfig]
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                trt.calls["calibrator_base"] = "entropy"

        class IInt8MinMaxCalibrator:
            def __init__(self):
                trt.calls["calibrator_base"] = "minmax"

        names += [IInt8EntropyCalibrator2, IInt8MinMaxCalibrator]
    for obj in names:
        setattr(trt, obj.__name__, obj)
    return trt
