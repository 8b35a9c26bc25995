"""Whole-frame preprocessing inside an exported ONNX graph: crop + antialiased resize + channel order.

`add_frame_head` prepends to a model that takes uint8 [B, h, w, 3] frames at its own size (the graph already
normalises, `--preprocess-in-graph`) a head that takes camera frames of any size [B, H, W, 3]:

    frames [B,H,W,3] uint8 -> Slice (the eval view's centre crop) -> Resize (antialias, Pillow's filter) [B,h,w,3]
        -> Gather(channel_order) -> round to uint8 (as Pillow's output) -> the model

onnxruntime's antialiased Resize (opset 18) follows Pillow's resampler: with Pillow's cubic coefficient (-0.5) and
weights renormalised inside the image (exclude_outside) it matches `Preprocess.render` to within 1-3 grey levels
(mean < 0.3; Pillow rounds between its two passes, the graph resamples in float) when a frame is shrunk up to ~5x
(1080p -> 224; tests/test_frame_head.py). The gap grows with stronger shrinking (measured on a textured frame: 4
levels at 8x, 10 at 17x), which the export's parity gate measures on real images. The crop box is rounded to whole
pixels; Pillow's is exact, so a frame whose eval view starts at half a pixel (an odd width minus height) is shifted
by half a source pixel.

`channel_order` is an optional graph input (an overridable initializer, default [0, 1, 2]): feed [2, 1, 0] for BGR
frames and the model reorders the resized [h, w] frame instead of the app copying the full-size one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgekd import EdgekdError
from edgekd._io import atomic_path
from edgekd._optional import require
from edgekd.preprocess import Preprocess

if TYPE_CHECKING:
    import onnx

MIN_OPSET = 18  # Resize with antialias and axes
FRAMES = "frames"
CHANNEL_ORDER = "channel_order"
RGB_ORDER = (0, 1, 2)  # the default; edgekd.runtime.classifier.channel_order_feed makes the feed
# Preprocess.interpolation -> ONNX Resize mode (Pillow's box and Lanczos filters have no ONNX counterpart)
RESIZE_MODES = {"bicubic": "cubic", "bilinear": "linear"}
PILLOW_CUBIC_A = -0.5
_INNER = "frames_at_model_size"


def unsupported_reason(preprocess: Preprocess) -> str | None:
    """None when the student's eval preprocessing can run in the graph, else why not (one line)."""
    if preprocess.resize_method != "pillow":
        return (f"the student resizes with {preprocess.resize_method!r} (edgekd.resize), which the in-graph head does "
                "not reproduce; it resizes in the app, as in training")
    if preprocess.interpolation not in RESIZE_MODES:
        return (f"the student resizes with Pillow's {preprocess.interpolation!r} filter, which ONNX Resize does not "
                f"have (in-graph resizing supports {', '.join(RESIZE_MODES)})")
    if preprocess.resize_mode not in ("shortest", "squash"):
        return f"resize_mode {preprocess.resize_mode!r} (padding) is not supported in-graph; only shortest and squash"
    return None


def add_frame_head(path: str | os.PathLike, preprocess: Preprocess) -> dict[str, Any]:
    """Rewrite the ONNX model at `path` (input "frames" uint8 [B, h, w, 3], opset >= 18) to take whole frames.

    Returns the new input description for edgekd.json.
    """
    onnx = require("onnx", extra="onnx", purpose="in-graph resizing")
    from onnx import TensorProto, helper

    reason = unsupported_reason(preprocess)
    if reason:
        raise EdgekdError(f"--preprocess-in-graph full: {reason}; export with --preprocess-in-graph (normalise only)")
    model = onnx.load(str(path))
    batch_dim = _frames_batch_dim(model, path)
    graph = model.graph
    for node in graph.node:  # the model now reads the head's output
        node.input[:] = [_INNER if name == FRAMES else name for name in node.input]
    h, w = preprocess.size
    consts = [helper.make_tensor("fh_sizes", TensorProto.INT64, [2], [h, w]),
              helper.make_tensor(CHANNEL_ORDER, TensorProto.INT64, [3], list(RGB_ORDER))]
    nodes = []
    source = FRAMES
    if preprocess.resize_mode == "shortest":  # centre crop with the model's aspect ratio, whole pixels
        crop_consts, crop_nodes = _crop_head(h, w)
        consts += crop_consts
        nodes += crop_nodes
        source = "fh_cropped"
    resize_consts, resize_nodes = _resize_head(source, preprocess.interpolation)
    consts += resize_consts
    nodes += resize_nodes
    _prepend_head(model, nodes, consts, batch_dim)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise EdgekdError(f"{path}: the graph with in-graph resizing is invalid: {str(e).splitlines()[0][:300]}") from e
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return {"name": FRAMES, "shape": [batch_dim, "height", "width", 3], "dtype": "uint8", "layout": "NHWC",
            "resize": "in-graph", "channel_order_input": CHANNEL_ORDER}


def _frames_batch_dim(model: onnx.ModelProto, path: str | os.PathLike) -> int | str:
    """The batch dimension of the model's uint8 "frames" input; refuses an opset below 18 or no such input."""
    from onnx import TensorProto

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise EdgekdError(f"{path}: opset {opset}; in-graph resizing needs opset >= {MIN_OPSET} (--opset {MIN_OPSET})")
    inputs = [i for i in model.graph.input if i.name == FRAMES]
    if not inputs or inputs[0].type.tensor_type.elem_type != TensorProto.UINT8:
        raise EdgekdError(f"{path}: expected a uint8 '{FRAMES}' input (export with --preprocess-in-graph)")
    batch = inputs[0].type.tensor_type.shape.dim[0]
    return batch.dim_param or batch.dim_value or "batch"


def _crop_head(h: int, w: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """(initializers, nodes): frames [B,H,W,3] -> "fh_cropped", the centre crop with the model's h:w aspect ratio,
    rounded to whole pixels (at least one)."""
    from onnx import TensorProto, helper

    consts = [
        helper.make_tensor("fh_hw_idx", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("fh_swap", TensorProto.INT64, [2], [1, 0]),
        helper.make_tensor("fh_aspect", TensorProto.FLOAT, [2], [h / w, w / h]),  # crop (H, W) per source (W, H)
        helper.make_tensor("fh_half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("fh_one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("fh_axes", TensorProto.INT64, [2], [1, 2]),
    ]
    nodes = [
        helper.make_node("Shape", [FRAMES], ["fh_shape"]),
        helper.make_node("Gather", ["fh_shape", "fh_hw_idx"], ["fh_hw_i"]),
        helper.make_node("Cast", ["fh_hw_i"], ["fh_hw"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["fh_hw", "fh_swap"], ["fh_wh"]),
        helper.make_node("Mul", ["fh_wh", "fh_aspect"], ["fh_fit"]),
        helper.make_node("Min", ["fh_hw", "fh_fit"], ["fh_crop"]),
        helper.make_node("Sub", ["fh_hw", "fh_crop"], ["fh_margin"]),
        helper.make_node("Mul", ["fh_margin", "fh_half"], ["fh_start_f"]),
        helper.make_node("Round", ["fh_start_f"], ["fh_start_r"]),
        helper.make_node("Round", ["fh_crop"], ["fh_crop_round"]),
        helper.make_node("Max", ["fh_crop_round", "fh_one"], ["fh_crop_r"]),  # a 1-pixel-wide frame still crops 1
        helper.make_node("Add", ["fh_start_r", "fh_crop_r"], ["fh_end_r"]),
        helper.make_node("Cast", ["fh_start_r"], ["fh_start"], to=TensorProto.INT64),
        helper.make_node("Cast", ["fh_end_r"], ["fh_end"], to=TensorProto.INT64),
        helper.make_node("Slice", [FRAMES, "fh_start", "fh_end", "fh_axes"], ["fh_cropped"]),
    ]
    return consts, nodes


def _resize_head(source: str, interpolation: str) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """(initializers, nodes): uint8 `source` [B,H',W',3] -> antialiased resize to "fh_sizes" -> channel_order ->
    rounded uint8 [B,h,w,3], the model's input."""
    from onnx import TensorProto, helper

    consts = [helper.make_tensor("fh_min", TensorProto.FLOAT, [], [0.0]),
              helper.make_tensor("fh_max", TensorProto.FLOAT, [], [255.0])]
    nodes = [  # resampled in float (faster than onnxruntime's uint8 kernel, and closer to Pillow), then rounded
        helper.make_node("Cast", [source], ["fh_float"], to=TensorProto.FLOAT),
        helper.make_node("Resize", ["fh_float", "", "", "fh_sizes"], ["fh_resized"], mode=RESIZE_MODES[
            interpolation], antialias=1, axes=[1, 2], cubic_coeff_a=PILLOW_CUBIC_A, exclude_outside=1,
            coordinate_transformation_mode="half_pixel"),
        helper.make_node("Gather", ["fh_resized", CHANNEL_ORDER], ["fh_ordered"], axis=3),
        helper.make_node("Round", ["fh_ordered"], ["fh_rounded"]),
        helper.make_node("Clip", ["fh_rounded", "fh_min", "fh_max"], ["fh_clipped"]),
        helper.make_node("Cast", ["fh_clipped"], [_INNER], to=TensorProto.UINT8),
    ]
    return consts, nodes


def _prepend_head(model: onnx.ModelProto, nodes: list[onnx.NodeProto], consts: list[onnx.TensorProto],
                  batch_dim: int | str) -> None:
    """Put the head's nodes before the model's, add its initializers, and make the graph's inputs whole frames
    [B, height, width, 3] and the overridable channel order (then the model's other inputs)."""
    from onnx import TensorProto, helper

    graph = model.graph
    new_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(consts)
    frames = helper.make_tensor_value_info(FRAMES, TensorProto.UINT8, [batch_dim, "height", "width", 3])
    order = helper.make_tensor_value_info(CHANNEL_ORDER, TensorProto.INT64, [3])
    others = [i for i in graph.input if i.name != FRAMES]
    del graph.input[:]
    graph.input.extend([frames, order, *others])
    if model.ir_version < 4:  # inputs with an initializer of the same name are overridable from IR 4 on
        model.ir_version = 4
