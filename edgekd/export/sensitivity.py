"""--auto-mixed: find the weight layers that hurt the embedding most and keep them in float until INT8 passes.

Ranking: the fp32 and the INT8 model both expose every weight layer's (Conv/MatMul/Gemm) output and data input; a
layer's score is the error (1 - cosine with fp32) its output adds on top of the error already present in its input.
The worst layers, each with the quantised element-wise ops that follow it, are excluded from quantisation in growing
groups (1, 2, 4, ...), re-using the cached calibration ranges, until the gate criteria hold on a calibration subset
(the held-out parity images are not used for this choice).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd._optional import require
from edgekd.export.onnx_quant import HEAVY_OPS, quantizable_nodes, quantize
from edgekd.export.targets import ExportRequest

log = logging.getLogger(__name__)

EVAL_IMAGES = 64  # calibration images used to judge candidates
RANK_IMAGES = 16  # images used to rank nodes (intermediate activations are large)


def _session(model: Any) -> Any:
    ort = require("onnxruntime", purpose="--auto-mixed")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _with_outputs(path: Path, names: list[str]) -> Any:
    onnx = require("onnx", purpose="--auto-mixed")
    model = onnx.load(str(path))
    present = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name in present and name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """1 - mean per-sample cosine of two activations [N, ...]."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(1.0 - cos.mean())


def rank_nodes(fp32_path: Path, int8_path: Path, x: np.ndarray, input_name: str,
               candidates: list[str]) -> list[dict[str, Any]]:
    """Per-node marginal error of the INT8 model vs fp32 on inputs x [N, ...], worst first."""
    onnx = require("onnx", purpose="--auto-mixed")
    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    nodes = {n.name: n for n in fp32.graph.node if n.name in set(candidates)}
    float_inputs = {i.name for i in fp32.graph.initializer}
    watch = sorted({t for n in nodes.values() for t in [n.output[0], n.input[0]] if t not in float_inputs})
    graph_inputs = {i.name for i in fp32.graph.input}
    watch = [t for t in watch if t not in graph_inputs]
    ref_sess, q_sess = _session(_with_outputs(fp32_path, watch)), _session(_with_outputs(int8_path, watch))
    names = [o.name for o in ref_sess.get_outputs() if o.name in set(watch)]
    qnames = {o.name for o in q_sess.get_outputs()}
    names = [n for n in names if n in qnames]
    ref = dict(zip(names, ref_sess.run(names, {input_name: x})))
    qua = dict(zip(names, q_sess.run(names, {input_name: x})))
    err = {n: _error(ref[n], qua[n]) for n in names}
    ranking = []
    for name, node in nodes.items():
        if node.output[0] not in err:
            continue
        own = err[node.output[0]] - err.get(node.input[0], 0.0)
        ranking.append({"node": name, "op": node.op_type, "output_error": err[node.output[0]], "added_error": own})
    ranking.sort(key=lambda r: r["added_error"], reverse=True)
    return ranking


def layer_groups(model: Any, layers: list[str], quantized: set[str]) -> dict[str, list[str]]:
    """Each weight layer (Conv/MatMul/Gemm) with the quantised element-wise ops after it, up to the next weight
    layer: keeping a layer in float only helps when its activation, pooling and residual ops stay float with it."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = {n.name: n for n in model.graph.node}
    groups = {}
    for layer in layers:
        group, stack, seen = [layer], list(nodes[layer].output), set()
        while stack:
            for node in consumers.get(stack.pop(), []):
                if id(node) in seen or node.op_type in HEAVY_OPS:  # by identity: some exporters leave names empty
                    continue
                seen.add(id(node))
                if node.name and node.name in quantized:
                    group.append(node.name)
                stack.extend(node.output)
        groups[layer] = group
    return groups


def _evaluate(int8_path: Path, x: np.ndarray, ref: np.ndarray, req: ExportRequest) -> tuple[bool, dict[str, Any]]:
    from edgekd.export.parity import GateCriteria, compare, judge

    sess = _session(require("onnx").load(str(int8_path)))
    emb = sess.run(["embedding"], {req.input_name: x})[0]
    criteria = req.options.get("gate") or GateCriteria.default("int8", req.options.get("max_drop"))
    criteria = replace(criteria, min_images=1)  # a search on EVAL_IMAGES calibration images, not the gate itself
    metrics = compare(ref, emb, req.label_pack, tie_margin=criteria.tie_margin)
    passed, _, _ = judge(metrics, criteria)
    return passed, metrics


def auto_mixed(pre_path: Path, int8_path: Path, req: ExportRequest, cache: Path, method: str, exclude: list[str],
               settings: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Grow the float-kept node set until the INT8 model passes on calibration images. Rewrites `int8_path`.

    Returns (nodes kept in float by this search, the sensitivity ranking).
    """
    onnx = require("onnx", purpose="--auto-mixed")
    x = req.calib[:EVAL_IMAGES]
    ref = _session(onnx.load(str(pre_path))).run(["embedding"], {req.input_name: x})[0]
    passed, metrics = _evaluate(int8_path, x, ref, req)
    if passed:
        log.info("auto-mixed: full INT8 already passes on calibration images (%s)", metrics)
        return [], []
    pre_model = onnx.load(str(pre_path), load_external_data=False)
    candidates = [n for n in quantizable_nodes(pre_model) if n not in set(exclude)]
    groups = layer_groups(pre_model, candidates, set(quantizable_nodes(pre_model, settings["op_types"])) - set(exclude))
    ranking = rank_nodes(pre_path, int8_path, req.calib[:RANK_IMAGES], req.input_name, candidates)
    order = [r["node"] for r in ranking]
    trial = int8_path.with_name("trial.onnx")
    k = 1
    while k <= len(order):
        kept = list(dict.fromkeys(n for layer in order[:k] for n in groups[layer]))
        quantize(pre_path, trial, None, req.input_name, cache, method, exclude + kept, **settings)
        passed, metrics = _evaluate(trial, x, ref, req)
        log.info("auto-mixed: %d layer(s) (%d nodes) kept in float -> cosine %.5f, passed=%s", k, len(kept),
                 metrics["cosine_mean"], passed)
        if passed:
            trial.replace(int8_path)
            return kept, ranking
        k = k * 2 if k * 2 <= len(order) or k == len(order) else len(order)
    trial.unlink(missing_ok=True)
    log.warning("auto-mixed: even with all %d quantisable nodes kept in float the criteria fail; keeping full INT8 "
                "(the parity gate will report it)", len(order))
    return [], ranking
