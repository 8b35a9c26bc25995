"""DeepStream: an `nvinfer` config for an exported bundle, so that DeepStream runs the student and attaches its raw
embedding as tensor meta (`output-tensor-meta=1`, `network-type=100`); a pad probe scores it against label embeddings
(examples/gstreamer/deepstream_probe.py).

    edgekd deepstream-config BUNDLE --out ds/          # ds/nvinfer_config.txt (+ ds/model_deepstream.onnx)

UNTESTED ON DEEPSTREAM: the config follows NVIDIA's Gst-nvinfer documentation and its numbers are checked here by
replaying nvinfer's documented preprocessing (y = net-scale-factor * (x - offsets[c])) in onnxruntime
(tests/test_deepstream.py), but it has not run on a Jetson or a dGPU DeepStream install yet.

nvinfer scales by one factor for all channels, the student normalises by a std per channel: for ONNX bundles the
remaining per-channel factor std_mean / std_c is folded into a copy of the model (a Mul before the first layer), so the
result is exact; a prebuilt TensorRT engine cannot be changed and runs with the mean std (the notes give the error).
nvinfer resizes the whole frame (stretch, or pad with maintain-aspect-ratio); a student evaluated on a centre crop
needs an upstream crop (`nvvideoconvert src-crop=...`, computed when the frame size is given).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._optional import require
from edgekd.preprocess import Preprocess
from edgekd.runtime.bundle import BundleInfo, gate_status, read_bundle

log = logging.getLogger(__name__)

CONFIG_FILE = "nvinfer_config.txt"
FOLDED_MODEL = "model_deepstream.onnx"
NETWORK_TYPE_OTHER = 100  # nvinfer: no parsing, output tensors attached as meta (needs output-tensor-meta=1)
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
# Preprocess.interpolation -> nvinfer scaling-filter (NvBufSurfTransform_Inter: 0 nearest, 1 bilinear, 2 Algo1 =
# GPU cubic / VIC 5-tap)
SCALING_FILTER = {"nearest": 0, "bilinear": 1, "bicubic": 2}


@dataclass
class NvinferConfig:
    """The [property] group of an nvinfer config, with notes on what it cannot reproduce exactly."""

    properties: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    channel_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel factor left after net-scale-factor
    src_crop: str | None = None  # nvvideoconvert src-crop "left:top:width:height" for the eval view's centre crop

    def render(self) -> str:
        head = ["# nvinfer config written by `edgekd deepstream-config` (UNTESTED on DeepStream until it runs on a",
                "# Jetson; see docs/runtime.md). The embedding is attached as NvDsInferTensorMeta; score it with",
                "# examples/gstreamer/deepstream_probe.py."]
        head += [f"# note: {n}" for n in self.notes]
        body = [f"{k}={_ini(v)}" for k, v in self.properties.items()]
        return "\n".join([*head, "[property]", *body]) + "\n"


def nvinfer_preprocessing(pp: Preprocess) -> tuple[dict[str, Any], tuple[float, float, float], list[str]]:
    """The student's eval preprocessing as nvinfer keys -> (properties, per-channel scale to fold, notes).

    nvinfer feeds y = net-scale-factor * (x - offsets[c]) for x in 0..255; the student wants (x / 255 - mean_c) /
    std_c, so offsets_c = 255 mean_c and net-scale-factor = 1 / (255 s) with s the mean std; std_c != s leaves a
    factor s / std_c per channel."""
    s = sum(pp.std) / 3.0
    scale = tuple(s / c for c in pp.std)
    props: dict[str, Any] = {"net-scale-factor": 1.0 / (255.0 * s), "offsets": [255.0 * m for m in pp.mean],
                             "model-color-format": 0}  # RGB, the order students are trained in
    notes = []
    if pp.resize_method != "pillow":  # edgekd.resize: area halvings + linear, which nvinfer's bilinear comes closest to
        notes.append(f"the student resizes with {pp.resize_method!r}; nvinfer has no area pre-decimation, using "
                     "bilinear")
        props["scaling-filter"] = SCALING_FILTER["bilinear"]
    else:
        if pp.interpolation not in SCALING_FILTER:
            notes.append(f"the student resizes with {pp.interpolation!r}, which nvinfer does not have; using bicubic")
        props["scaling-filter"] = SCALING_FILTER.get(pp.interpolation, SCALING_FILTER["bicubic"])
    if pp.resize_mode == "longest":
        props.update({"maintain-aspect-ratio": 1, "symmetric-padding": 1})
    else:
        props["maintain-aspect-ratio"] = 0
    if pp.resize_mode == "shortest":
        notes.append("the student sees a centre crop (resize_mode shortest); nvinfer stretches the whole frame: crop "
                     "upstream with nvvideoconvert src-crop (pass --frame-size to compute it)")
    return props, scale, notes


def centre_crop(frame_size: tuple[int, int], pp: Preprocess) -> str:
    """(width, height) of the camera frames -> nvvideoconvert src-crop 'left:top:width:height' of the eval view."""
    fw, fh = frame_size
    h, w = pp.size
    ratio = min(fw / w, fh / h)  # the crop with the model's aspect ratio that fills the short side
    cw, ch = min(fw, round(w * ratio)), min(fh, round(h * ratio))
    return f"{(fw - cw) // 2}:{(fh - ch) // 2}:{cw}:{ch}"


def build_nvinfer_config(info: BundleInfo, model_file: str, frame_size: tuple[int, int] | None = None,
                         batch_size: int = 1, gpu_id: int = 0) -> NvinferConfig:
    """The config for `info`'s bundle with `model_file` (an .onnx or .engine path as nvinfer should read it)."""
    if info.input_layout != "NCHW" or info.input_dtype != "float32":
        raise EdgekdError(f"{info.root}: its model takes {info.input_dtype} {info.input_layout} "
                          f"{'whole frames' if info.resize_in_graph else 'frames'} ({info.input_name!r}); nvinfer "
                          "feeds float32 NCHW pixels: export the bundle with --preprocess-in-graph none")
    if batch_size < 1:
        raise EdgekdError(f"batch size must be >= 1, got {batch_size}")
    props, scale, notes = nvinfer_preprocessing(info.preprocess)
    precision = str(info.meta.get("precision", "fp32"))
    h, w = info.size
    base: dict[str, Any] = {"gpu-id": gpu_id, "gie-unique-id": 1, "process-mode": 1, "batch-size": batch_size,
                            "network-type": NETWORK_TYPE_OTHER, "output-tensor-meta": 1,
                            "network-mode": NETWORK_MODE.get(precision, 0), "infer-dims": [3, h, w],
                            "output-blob-names": info.output_name}
    if model_file.endswith(".onnx"):
        base["onnx-file"] = model_file
        mode = {v: k for k, v in NETWORK_MODE.items()}[base["network-mode"]]
        base["model-engine-file"] = f"{model_file}_b{batch_size}_gpu{gpu_id}_{mode}.engine"  # nvinfer's cache name
    else:
        base["model-engine-file"] = model_file
    if precision not in NETWORK_MODE:
        notes.append(f"precision {precision!r} has no nvinfer network-mode; using fp32")
    if precision == "int8" and model_file.endswith(".onnx"):
        notes.append("int8: the ONNX carries its quantization (QDQ); no int8-calib-file is written")
    cfg = NvinferConfig({**base, **props}, notes, scale)
    if frame_size is not None:
        cfg.src_crop = centre_crop(frame_size, info.preprocess)
        cfg.notes.append(f"for {frame_size[0]}x{frame_size[1]} frames put `nvvideoconvert src-crop={cfg.src_crop}` "
                         "before nvstreammux")
    return cfg


def fold_channel_scale(src: str | os.PathLike, dst: str | os.PathLike, input_name: str,
                       scale: tuple[float, float, float]) -> Path:
    """Copy the ONNX model at `src` to `dst` with `pixels * scale[c]` ([1, 3, 1, 1]) before its first layer."""
    onnx = require("onnx", extra="onnx", purpose="the DeepStream model")
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    scaled = f"{input_name}__deepstream_scaled"
    for node in graph.node:
        node.input[:] = [scaled if i == input_name else i for i in node.input]
    graph.initializer.append(helper.make_tensor(f"{scaled}_k", TensorProto.FLOAT, [1, 3, 1, 1], list(scale)))
    graph.node.insert(0, helper.make_node("Mul", [input_name, f"{scaled}_k"], [scaled], name="deepstream_std"))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return Path(dst)


def write_deepstream_config(bundle: str | os.PathLike, out: str | os.PathLike | None = None,
                            frame_size: tuple[int, int] | None = None, batch_size: int = 1,
                            gpu_id: int = 0) -> tuple[Path, NvinferConfig]:
    """Write OUT/nvinfer_config.txt (default OUT: BUNDLE/deepstream) and, for ONNX bundles whose stds differ per
    channel, OUT/model_deepstream.onnx. Returns (config path, config)."""
    info = read_bundle(bundle)
    out = Path(out) if out is not None else info.root / "deepstream"
    out.mkdir(parents=True, exist_ok=True)
    model = info.model_path
    if model.suffix not in (".onnx", ".engine", ".plan", ".trt"):
        raise EdgekdError(f"{model}: nvinfer reads ONNX models or TensorRT engines, not {model.suffix} files; "
                          "export the bundle with --target onnx or tensorrt")
    cfg = build_nvinfer_config(info, str(model.resolve()), frame_size, batch_size, gpu_id)
    status = gate_status(info.meta)
    if status != "passed":
        cfg.notes.append(f"the bundle's parity gate {status}; re-export it with the gate before deploying")
    if max(abs(k - 1.0) for k in cfg.channel_scale) > 1e-6:
        if model.suffix == ".onnx":
            folded = fold_channel_scale(model, out / FOLDED_MODEL, info.input_name, cfg.channel_scale)
            notes = cfg.notes
            cfg = build_nvinfer_config(info, str(folded.resolve()), frame_size, batch_size, gpu_id)
            cfg.notes = [*notes, f"{FOLDED_MODEL} = the bundle's model with the per-channel std factors "
                             f"{_ini(list(cfg.channel_scale))} folded in (exact normalisation)"]
        else:
            err = max(abs(k - 1.0) for k in cfg.channel_scale)
            cfg.notes.append(f"the engine cannot take the per-channel std: inputs are off by up to {err:.1%} per "
                             "channel; build the engine from the bundle's ONNX with this generator for exact inputs")
    path = out / CONFIG_FILE
    path.write_text(cfg.render(), encoding="utf-8")
    log.info("wrote %s", path)
    return path, cfg


def read_nvinfer_config(path: str | os.PathLike) -> dict[str, str]:
    """The [property] keys of an nvinfer config file (values as strings)."""
    import configparser

    cp = configparser.ConfigParser()
    cp.read(path, encoding="utf-8")
    return dict(cp["property"])


def _ini(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join(_ini(v) for v in value)
    if isinstance(value, float):
        return f"{value:.9g}"
    return str(value)
