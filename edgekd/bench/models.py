"""Turn MODEL arguments into `ModelSpec`s (what to run, which backends can run it) and, inside a worker, into
runnable things: a torch module for eager timing or an ONNX file for onnxruntime / OpenVINO.

MODEL is one of: an export bundle (directory with edgekd.json), a run directory (config.json + model.safetensors),
a model file (.onnx, .xml, .engine/.plan), or a bare timm model name (random weights, for architecture studies).
The teacher (`--teacher NAME[:weights]`) is a model too: its image tower with the L2 normalisation.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import read_json
from edgekd.runtime.backends import BACKEND_MODULES, SUFFIX_BACKENDS

TORCH_KINDS = ("run", "timm", "teacher")  # kinds built with torch (eager, or exported to ONNX for the engines)
ALL_BACKENDS = ("torch", "onnxruntime", "openvino", "ort-cuda", "ort-trt", "tensorrt")
BUNDLE_FILE = "edgekd.json"
CAMERA_FRAME = (480, 640)  # (H, W): the frame fed to bundles that resize in-graph, and decoded by --e2e


@dataclass(frozen=True)
class ModelSpec:
    """One model to benchmark. JSON-serialisable (it travels to the worker in the spec file)."""

    name: str  # display name in tables
    kind: str  # bundle | run | timm | teacher | file
    source: str  # the argument as given (path or name)
    img_size: tuple[int, int] = (224, 224)  # (H, W)
    embed_dim: int | None = None
    precision: str = "fp32"  # fp32 | fp16 | int8 | unknown
    file: str | None = None  # the model file (exported kinds) or weights file
    input_dtype: str = "float32"  # float32 pixels NCHW, or uint8 frames NHWC
    layout: str = "NCHW"
    frame_size: tuple[int, int] | None = None  # (H, W) of the whole frames fed to a model that resizes in-graph
    teacher: dict[str, Any] | None = None  # {name, pretrained, weights, random_init} for kind "teacher"
    preprocess: dict[str, Any] | None = None
    labels: str | None = None  # label pack path (used by --e2e)
    eval: dict[str, Any] | None = None  # the bundle's "eval" block (for the Pareto plot)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        return self.kind in TORCH_KINDS

    @property
    def is_teacher(self) -> bool:
        return self.kind == "teacher"

    def backends(self) -> tuple[str, ...]:
        """Backends this model's format allows (whether they are installed is decided elsewhere)."""
        if self.is_torch:
            return ("torch",) + SUFFIX_BACKENDS[".onnx"]
        if self.frame_size:  # crop + resize in the graph: onnxruntime's Resize and channel_order input
            return tuple(b for b in SUFFIX_BACKENDS[".onnx"] if BACKEND_MODULES.get(b) == "onnxruntime")
        return SUFFIX_BACKENDS[Path(self.file or "").suffix.lower()]

    def format_reason(self, backend: str) -> str | None:
        """None when `backend` can run this model's format, else why not (and what to do)."""
        if backend in self.backends():
            return None
        if backend == "tensorrt":
            return ("needs a TensorRT engine: `edgekd export --target tensorrt` on the target device, then bench "
                    "the bundle")
        if self.frame_size and backend in SUFFIX_BACKENDS[".onnx"]:
            return "this bundle crops and resizes in its graph, which runs on onnxruntime only"
        if backend == "torch":
            return f"{self.kind} {self.source} is an exported model; torch eager runs run dirs, timm names and teachers"
        return f"{backend} cannot run {Path(self.file or '').suffix} files (use {', '.join(self.backends())})"

    def input_shape(self, batch: int) -> tuple[int, ...]:
        h, w = self.frame_size or self.img_size
        return (batch, h, w, 3) if self.layout == "NHWC" else (batch, 3, h, w)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["frame_size"] = list(self.frame_size) if self.frame_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["img_size"] = tuple(d.get("img_size", (224, 224)))
        d["frame_size"] = tuple(d["frame_size"]) if d.get("frame_size") else None
        return cls(**d)


def resolve_model(arg: str, img_sizes: list[int] | None = None, embed_dim: int = 512,
                  allow_ungated: bool = False) -> list[ModelSpec]:
    """A MODEL argument -> its specs (a timm name gives one per --img-size; everything else has its own size).
    A bundle whose parity gate failed or was skipped is refused unless `allow_ungated`."""
    path = Path(arg)
    if path.exists():
        if path.is_dir():
            if (path / BUNDLE_FILE).is_file():
                return [resolve_bundle(path, allow_ungated)]
            if (path / "config.json").is_file():
                return [resolve_run(path)]
            raise EdgekdError(f"{arg}: directory is neither an export bundle (no {BUNDLE_FILE}) nor a run directory "
                              "(no config.json); pass a bundle, run dir, model file or timm model name")
        if path.name == BUNDLE_FILE:
            return [resolve_bundle(path.parent, allow_ungated)]
        if path.suffix.lower() in SUFFIX_BACKENDS:
            if (path.parent / BUNDLE_FILE).is_file() and _bundle_model_file(path.parent) == path.resolve():
                return [resolve_bundle(path.parent, allow_ungated)]
            return [resolve_file(path)]
        if path.suffix == ".safetensors" and (path.parent / "config.json").is_file():
            return [resolve_run(path.parent)]
        raise EdgekdError(f"{arg}: not a model; expected an export bundle, a run directory, a model file "
                          f"({', '.join(SUFFIX_BACKENDS)}) or a timm model name")
    import timm

    if timm.is_model(arg):
        sizes = img_sizes or [224]
        return [ModelSpec(name=arg if len(sizes) == 1 else f"{arg}@{s}", kind="timm", source=arg, img_size=(s, s),
                          embed_dim=embed_dim) for s in sizes]
    if os.sep in arg or path.suffix:
        raise EdgekdError(f"{arg}: no such file or directory")
    close = timm.list_models(f"*{arg.split('_')[0]}*")[:6]
    hint = f" (similar timm models: {', '.join(close)})" if close else ""
    raise EdgekdError(f"{arg}: not a file, directory or timm model name{hint}")


def resolve_teacher(arg: str, random_init: bool = False) -> ModelSpec:
    """`NAME[:weights]` (weights = a hub tag like 'openai' or a local file) -> the teacher's image tower."""
    name, _, weights = arg.partition(":")
    weights_file = weights if weights and (Path(weights).suffix or os.sep in weights) else None
    if weights_file and not Path(weights_file).is_file():
        raise EdgekdError(f"--teacher {arg}: weights file {weights_file} not found")
    pretrained = None if (random_init or weights_file) else (weights or "openai")
    import open_clip

    from edgekd.teacher import tiny  # noqa: F401  (registers the tiny test configs)

    if name not in open_clip.list_models():
        raise EdgekdError(f"--teacher {name!r} is not an open_clip model; see open_clip.list_models()")
    size = _teacher_image_size(name)
    label = "random" if random_init else Path(weights_file).name if weights_file else pretrained
    return ModelSpec(name=f"teacher:{name}", kind="teacher", source=arg, img_size=(size, size),
                     embed_dim=_teacher_embed_dim(name),
                     teacher={"name": name, "pretrained": pretrained, "weights": weights_file,
                              "random_init": random_init}, extra={"weights": label})


def resolve_run(path: Path) -> ModelSpec:
    from edgekd.students.io import load_student_config

    cfg = load_student_config(path)
    if not (path / "model.safetensors").is_file():
        raise EdgekdError(f"{path}: run directory has no model.safetensors yet")
    labels = path / "labels.npz"
    return ModelSpec(name=path.name, kind="run", source=str(path), img_size=(cfg.img_size, cfg.img_size),
                     embed_dim=cfg.embed_dim, file=str(path / "model.safetensors"), preprocess=cfg.preprocess or None,
                     labels=str(labels) if labels.is_file() else None, extra={"arch": cfg.arch})


def resolve_bundle(path: Path, allow_ungated: bool = False) -> ModelSpec:
    from edgekd.runtime.bundle import gate_status, gate_summary

    meta = _read_bundle(path)
    if gate_status(meta) != "passed" and not allow_ungated:
        raise EdgekdError(f"{path}: its parity gate did not pass ({gate_summary(meta)}); re-export it with the gate, "
                          "or bench it anyway with --allow-ungated")
    model_file = _bundle_model_file(path, meta)
    if not model_file.is_file():
        raise EdgekdError(f"{path}: {BUNDLE_FILE} names model file {model_file.name}, which is missing")
    inp = meta.get("input", {})
    shape = inp.get("shape", ["batch", 3, 224, 224])
    layout = inp.get("layout", "NHWC" if shape[-1] == 3 else "NCHW")
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    frame_size = None
    if meta.get("resize_in_graph"):  # input is frames of any size: time it on a camera frame
        h, w = (meta.get("preprocess") or {}).get("size", (224, 224))
        frame_size = CAMERA_FRAME
    labels = (meta.get("files") or {}).get("labels")
    student = meta.get("student") or {}
    name = f"{path.name}"
    return ModelSpec(name=name, kind="bundle", source=str(path), img_size=(int(h), int(w)),
                     embed_dim=meta.get("embed_dim"), precision=meta.get("precision", "unknown"),
                     file=str(model_file), input_dtype=inp.get("dtype", "float32"), layout=layout,
                     frame_size=frame_size, preprocess=meta.get("preprocess"),
                     labels=str(path / labels) if labels else None,
                     eval=meta.get("eval"), extra={"arch": student.get("arch"), "target": meta.get("target"),
                                                   "teacher_id": meta.get("teacher_id"),
                                                   "parity": gate_summary(meta)})


def resolve_file(path: Path) -> ModelSpec:
    """A bare .onnx/.xml/.engine: check it is what its suffix says, read the input shape where possible."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise EdgekdError(f"{path}: empty file, not a model")
    shape: list[Any] = ["batch", 3, 224, 224]
    precision = "unknown"
    dtype = "float32"
    if suffix == ".onnx":
        shape, dtype, precision = _inspect_onnx(path)
    elif suffix == ".xml":
        shape, dtype, precision = _inspect_ir(path)
    layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 else "NCHW"
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    if not (isinstance(h, int) and isinstance(w, int)):
        raise EdgekdError(f"{path}: input height/width are dynamic ({shape}); bench needs a fixed image size")
    return ModelSpec(name=path.stem if path.stem != "model" else f"{path.parent.name}/{path.name}", kind="file",
                     source=str(path), img_size=(h, w), precision=precision, file=str(path), input_dtype=dtype,
                     layout=layout, extra={"batch_dim": shape[0]})


def _inspect_onnx(path: Path) -> tuple[list[Any], str, str]:
    from edgekd._optional import is_available

    if not is_available("onnx"):
        return ["batch", 3, 224, 224], "float32", "unknown"
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise EdgekdError(f"{path}: not an ONNX model ({type(e).__name__}: {str(e)[:200]}); pass an exported "
                          "model, bundle or run directory") from e
    if not model.graph.input or not model.graph.node:
        raise EdgekdError(f"{path}: not an ONNX model (no graph inputs or nodes)")
    inits = {i.name for i in model.graph.initializer}
    inp = next((i for i in model.graph.input if i.name not in inits), model.graph.input[0])
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in
            inp.type.tensor_type.shape.dim]
    dtype = "uint8" if inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8 else "float32"
    ops = {n.op_type for n in model.graph.node}
    fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    precision = "int8" if ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
                                 "MatMulInteger", "ConvInteger"} else "fp16" if fp16 else "fp32"
    if len(dims) != 4:
        raise EdgekdError(f"{path}: input {inp.name} has shape {dims}; bench expects an image input [B,3,H,W]")
    return dims, dtype, precision


def _inspect_ir(path: Path) -> tuple[list[Any], str, str]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise EdgekdError(f"{path}: not an OpenVINO IR file (XML error: {e})") from e
    if root.tag != "net":
        raise EdgekdError(f"{path}: not an OpenVINO IR file (root element <{root.tag}>, expected <net>)")
    if not path.with_suffix(".bin").is_file():
        raise EdgekdError(f"{path}: OpenVINO IR weights {path.with_suffix('.bin').name} are missing")
    precision = "int8" if root.find(".//layer[@type='FakeQuantize']") is not None else "fp32"
    for layer in root.iter("layer"):
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            shape_txt = data.get("shape", "") if data is not None else ""
            dims: list[Any] = [int(d) if d.isdigit() else "batch" for d in re.split(r"\s*,\s*", shape_txt) if d]
            et = (data.get("element_type", "f32") if data is not None else "f32")
            if len(dims) == 4:
                return dims, "uint8" if et == "u8" else "float32", precision
    raise EdgekdError(f"{path}: OpenVINO IR has no 4-d image input")


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        meta = read_json(path / BUNDLE_FILE)
    except (OSError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path / BUNDLE_FILE}: unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != "edgekd.bundle":
        raise EdgekdError(f"{path / BUNDLE_FILE}: not an edgekd export bundle (format {meta.get('format')!r})")
    return meta


def _bundle_model_file(path: Path, meta: dict[str, Any] | None = None) -> Path:
    meta = meta if meta is not None else _read_bundle(path)
    name = (meta.get("files") or {}).get("model")
    if not name:
        raise EdgekdError(f"{path / BUNDLE_FILE}: files.model is missing")
    return (path / name).resolve()


def _teacher_cfg(name: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise EdgekdError(f"--teacher {name}: open_clip has no config for it")
    return cfg


def _teacher_image_size(name: str) -> int:
    size = _teacher_cfg(name).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)


def _teacher_embed_dim(name: str) -> int | None:
    dim = _teacher_cfg(name).get("embed_dim")
    return int(dim) if dim else None


def model_file_mb(spec: ModelSpec, onnx_path: str | None = None) -> float | None:
    """Size on disk of what the backend loads (ONNX + external data, IR .xml + .bin, engine, or safetensors)."""
    path = onnx_path or spec.file
    if not path:
        return None
    p = Path(path)
    files = [p]
    if p.suffix == ".xml":
        files.append(p.with_suffix(".bin"))
    elif p.suffix == ".onnx":
        files += [q for q in p.parent.glob(p.name + ".data")]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
