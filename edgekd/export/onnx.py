"""ONNX export of students (and any image module), plus the "onnx" export target (fp32 / fp16 / int8).

Uses the TorchScript-based exporter (``dynamo=False``): on torch 2.14 it exports a student in ~0.1-0.5 s, keeps
opset 17 (the dynamo exporter emits opset 18 and fails to down-convert Resize/Reduce ops) and writes one self-contained
file; the dynamo exporter took 3-5 s and split weights into external data.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from edgekd import EdgekdError
from edgekd._io import atomic_path
from edgekd._optional import require
from edgekd.export.onnx_check import load_in_onnxruntime
from edgekd.export.targets import ExportRequest, ExportResult, register_target
from edgekd.preprocess import normalize_constants

if TYPE_CHECKING:
    from edgekd.labelpack import LabelPack
    from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # TensorRT 8.6+/10 and OpenVINO 2023+ both read opset 17
PIXELS, FRAMES = "pixels", "frames"


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    input_name: str = PIXELS,
    output_names: tuple[str, ...] = ("embedding",),
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    input_dtype: torch.dtype = torch.float32,
) -> Path:
    """Export `module` (eval mode, CPU) to ONNX at `path`, atomically; run the onnx checker and shape inference.

    input_shape: example input ([B,3,H,W] for pixels); dim 0 becomes the symbolic "batch" axis when `dynamic_batch`.
    Returns `path`. Raises EdgekdError when tracing or checking fails.
    """
    onnx = require("onnx", purpose="ONNX export")
    path = Path(path)
    module = module.eval().cpu()
    if input_dtype == torch.uint8:
        example = torch.randint(0, 256, tuple(input_shape), dtype=torch.uint8)
    else:
        example = torch.randn(*input_shape, dtype=input_dtype)
    dynamic_axes = ({input_name: {0: "batch"}, **{o: {0: "batch"} for o in output_names}} if dynamic_batch else None)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings / exporter deprecation notices are noise here
        try:
            torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as e:  # the exporter raises many unrelated types (RuntimeError, SymbolicValueError, ...)
            raise EdgekdError(f"ONNX export of {type(module).__name__} failed: {str(e).splitlines()[0][:300]}") from e
        model = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(model, full_check=True)
            model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise EdgekdError(f"exported ONNX graph is invalid: {str(e).splitlines()[0][:300]}") from e
        model.doc_string = f"edgekd export of {type(module).__name__}"
        onnx.save(model, str(tmp))
        load_in_onnxruntime(tmp, shown_as=path)  # the checks above are the rest of onnx_check.validate_onnx
    log.info("wrote %s (%.1f MB, opset %d)", path, path.stat().st_size / 1e6, opset)
    return path


class FramesToPixels(nn.Module):
    """uint8 [B,H,W,3] frames (already resized to H x W) -> float32 [B,3,H,W] = (x / 255 - mean) / std.

    The uint8 frame is transposed first (a quarter of the bytes) and normalised as one multiply-add per channel
    plane: element-wise ops broadcasting over a trailing axis of 3 cost onnxruntime ~0.3 ms each per 224x224 frame.
    The closing Reshape (to the shape it already has) changes no value; it keeps onnxruntime's layout optimizer from
    moving the multiply-add back into NHWC, which it does to feed its NHWC int8 convolutions: in an INT8
    mobilenetv4_conv_small at 224 the multiply-add then took 0.6 ms, 32 us with the Reshape
    (benchmarks/runtime_overhead.py)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        scale, shift = normalize_constants(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.from_numpy(shift).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h, w = int(frames.shape[1]), int(frames.shape[2])
        return (frames.permute(0, 3, 1, 2).to(torch.float32) * self.scale + self.shift).reshape(-1, 3, h, w)


class ExportWrapper(nn.Module):
    """The exported graph: optional in-graph preprocessing -> student (normalised) -> optional zero-shot scores.

    forward: [B,3,H,W] float (or [B,H,W,3] uint8) -> embedding [B,D] (, scores [B,C] = logit_scale * cosine).
    """

    def __init__(self, student: nn.Module, preprocess: Preprocess | None = None,
                 label_embeddings: np.ndarray | None = None, logit_scale: float = 100.0):
        super().__init__()
        self.pre = FramesToPixels(preprocess.mean, preprocess.std) if preprocess is not None else None
        self.student = student
        if label_embeddings is not None:
            w = torch.as_tensor(np.asarray(label_embeddings, np.float32))
            self.register_buffer("labels_t", (w * float(logit_scale)).t().contiguous())  # [D, C], scale folded in
        else:
            self.labels_t = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.pre is not None:
            x = self.pre(x)
        emb = self.student(x)
        if self.labels_t is None:
            return emb
        return emb, emb @ self.labels_t


def export_student_onnx(
    student: nn.Module,
    path: str | os.PathLike,
    preprocess: Preprocess,
    preprocess_in_graph: bool = False,
    label_pack: LabelPack | None = None,
    static_batch: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Export a student with L2-normalisation (and optionally preprocessing / label scores) inside the graph.

    Returns the bundle's io description: {"input": {name, shape, dtype, layout}, "output": {...}, "scores": {...}?}.
    """
    h, w = preprocess.size
    batch: int | str = static_batch if static_batch else "batch"
    wrapper = ExportWrapper(student, preprocess if preprocess_in_graph else None,
                            label_pack.embeddings if label_pack is not None else None,
                            label_pack.logit_scale if label_pack is not None else 100.0)
    if preprocess_in_graph:
        name, shape, dtype, layout, tdtype = FRAMES, [batch, h, w, 3], "uint8", "NHWC", torch.uint8
    else:
        name, shape, dtype, layout, tdtype = PIXELS, [batch, 3, h, w], "float32", "NCHW", torch.float32
    outputs = ("embedding", "scores") if label_pack is not None else ("embedding",)
    example = [static_batch or 1] + shape[1:]
    export_onnx(wrapper, path, tuple(example), name, outputs, dynamic_batch=not static_batch, opset=opset,
                input_dtype=tdtype)
    embed_dim = int(student.cfg.embed_dim) if hasattr(student, "cfg") else None
    io: dict[str, Any] = {"input": {"name": name, "shape": shape, "dtype": dtype, "layout": layout},
                          "output": {"name": "embedding", "shape": [batch, embed_dim], "dtype": "float32"}}
    if label_pack is not None:
        io["scores"] = {"name": "scores", "shape": [batch, len(label_pack)], "dtype": "float32",
                        "classes": len(label_pack), "logit_scale": label_pack.logit_scale}
    return io


# fp16 would overflow/underflow here: the L2 normalisation (squares, sums, roots) and the normalisation / softmax
# ops whose reductions TensorRT and onnxruntime keep in fp32 for the same reason. (The frames Cast is in the input
# head, kept by node name: blocking "Cast" by op type makes the converter loop over the Casts it inserts itself.)
FP16_BLOCKED_OPS = ("ReduceL2", "ReduceSumSquare", "ReduceSum", "ReduceMean", "Sqrt", "Pow", "Clip", "Max", "Expand",
                    "BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
                    "LpNormalization", "Softmax")


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, Any]:
    """fp32 ONNX -> fp16 weights and compute, with the model's inputs/outputs, the normalisation ops and the L2-norm
    tail before `embedding` kept in float32 (what TensorRT's strongly typed fp16 build and onnxruntime both need).
    The result passes edgekd.export.onnx_check.validate_onnx. Returns what was done, for the metadata."""
    onnx = require("onnx", purpose="fp16 conversion")
    from edgekd.export.onnx_check import validate_onnx

    model16, meta = to_fp16(onnx.load(str(src)))
    with atomic_path(dst) as tmp:
        onnx.save(model16, str(tmp))
        validate_onnx(tmp, shown_as=dst)
    return meta


def to_fp16(model: Any) -> tuple[Any, dict[str, Any]]:
    """fp32 ModelProto -> (fp16 ModelProto, what was done) as convert_fp16 describes; edits `model` (shared weights
    are inlined first). Uses onnxconverter-common when installed, else onnxruntime.transformers' copy of the same
    converter."""
    onnx = require("onnx", purpose="fp16 conversion")
    try:
        from onnxconverter_common import float16 as f16

        converter = "onnxconverter_common"
    except ImportError:
        f16 = require("onnxruntime.transformers.float16", extra="onnx", purpose="fp16 conversion")
        converter = "onnxruntime.transformers.float16"
    from edgekd.export.onnx_int8 import float_boundary_nodes

    inline_initializer_identities(model)
    untie_shared_float_initializers(model)
    name_unnamed_nodes(model)  # the converter names its Casts after their node: unnamed nodes would collide
    kept_nodes = float_boundary_nodes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model16 = f16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_BLOCKED_OPS),
                                               node_block_list=kept_nodes)
    restore_output_types(model, model16)
    retarget_casts(model16)
    n_fp16 = sum(1 for t in model16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return model16, {"converter": converter, "op_block_list": list(FP16_BLOCKED_OPS), "fp32_nodes": kept_nodes,
                     "fp16_initializers": n_fp16}


def untie_shared_float_initializers(model: Any) -> int:
    """Give every node after the first its own copy of a float initializer that several nodes read directly (not
    through Identity: onnxruntime's optimizer, run before quantisation, removes those); Q/DQ scales, which a
    QuantizeLinear and its DequantizeLinear share on purpose, stay shared. As with inline_initializer_identities, the
    converter could otherwise type the tensor fp16 for one reader and fp32 for a blocked one ("Add B has inconsistent
    type tensor(float16)" on a ViT's projection bias that shares LayerNorm's zeros). Returns how many copies."""
    from onnx import TensorProto

    weights = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    readers: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in weights:
                readers.setdefault(name, []).append((node, k))
    copies = 0
    for name, uses in readers.items():
        if len(uses) < 2 or all(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n, _ in uses):
            continue
        for j, (node, k) in enumerate(uses[1:], start=1):
            copy = TensorProto()
            copy.CopyFrom(weights[name])
            copy.name = f"{name}__untied{j}"
            model.graph.initializer.append(copy)
            node.input[k] = copy.name
            copies += 1
    return copies


def name_unnamed_nodes(model: Any) -> int:
    """Give each node without a name a unique one (`<op>_<index>`); returns how many. Edits `model` in place."""
    taken = {n.name for n in model.graph.node}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


def inline_initializer_identities(model: Any) -> int:
    """Replace each `Identity(initializer)` by a copy of the initializer under the Identity's output name; returns
    how many.

    torch's exporter shares equal weights that way (a random tower's LayerNorm and bias vectors are all ones and
    zeros), and the converter then types one weight fp16 for one reader while a blocked reader (LayerNorm) still
    wants float32: onnxruntime refuses the file ("Type (tensor(float16)) of output arg ... of node (Identity_120)
    does not match expected type"). Separate copies let each reader get its own type; only equal tensors were
    shared, which trained weights rarely are. Edits `model` in place."""
    from onnx import TensorProto

    weights = {t.name: t for t in model.graph.initializer}
    found = [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in weights]
    for node in found:
        copy = TensorProto()
        copy.CopyFrom(weights[node.input[0]])
        copy.name = node.output[0]
        model.graph.initializer.append(copy)
        model.graph.node.remove(node)
    return len(found)


def retarget_casts(converted: Any) -> int:
    """The converter retypes the output of a converted `Cast(to=FLOAT)` as fp16 but leaves `to` alone
    (onnxconverter-common issue #320), which onnxruntime refuses to load: make each Cast produce the type its output
    is declared with. Returns how many were retargeted. Edits `converted` in place."""
    declared = {v.name: v.type.tensor_type.elem_type for v in [*converted.graph.value_info, *converted.graph.output]}
    fixed = 0
    for node in converted.graph.node:
        want = declared.get(node.output[0]) if node.op_type == "Cast" else None
        for attr in node.attribute:
            if want and attr.name == "to" and attr.i != want:
                attr.i, fixed = want, fixed + 1
    return fixed


def restore_output_types(original: Any, converted: Any) -> None:
    """keep_io_types misses graph outputs produced by a blocked node (the converter ends them with a Cast to fp16):
    retarget that Cast so each output keeps its original type. Edits `converted` in place."""
    producers = {o: n for n in converted.graph.node for o in n.output}
    for want, out in zip(original.graph.output, converted.graph.output):
        elem = want.type.tensor_type.elem_type
        if out.type.tensor_type.elem_type == elem:
            continue
        node = producers.get(out.name)
        if node is None or node.op_type != "Cast":
            raise EdgekdError(f"fp16 conversion changed the type of output {out.name!r} and no Cast can restore it")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = elem
        out.type.tensor_type.elem_type = elem
    if any(o.type.tensor_type.elem_type != w.type.tensor_type.elem_type
           for w, o in zip(original.graph.output, converted.graph.output)):
        raise EdgekdError("fp16 conversion: output types could not be restored")


@register_target("onnx", precisions=("fp32", "fp16", "int8"))
def build_onnx(req: ExportRequest) -> ExportResult:
    """ONNX for onnxruntime / any ONNX runtime: fp32, fp16 (io stays float32) or INT8 QDQ (onnxruntime static)."""
    model_name = "model.onnx"
    if req.precision == "fp32":
        if req.onnx_path.name != model_name:
            os.replace(req.onnx_path, req.out_dir / model_name)
        return ExportResult({"model": model_name}, "onnxruntime", {})
    if req.precision == "fp16":
        tmp = req.out_dir / "model.fp16.onnx"
        meta = convert_fp16(req.onnx_path, tmp)
        os.replace(tmp, req.out_dir / model_name)
        return ExportResult({"model": model_name}, "onnxruntime", {"fp16": meta})
    from edgekd.export.onnx_int8 import build_int8

    return build_int8(req, model_name)
