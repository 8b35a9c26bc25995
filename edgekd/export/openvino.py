"""OpenVINO export target: IR (.xml + .bin) from the fp32 ONNX; fp16 by weight compression, INT8 by NNCF.

    fp32  openvino.convert_model(onnx) -> save_model(compress_to_fp16=False)
    fp16  the same IR with fp16 weights (compress_to_fp16=True); CPUs decompress them and compute in fp32
    int8  nncf.quantize over req.calib (post-training quantisation, FakeQuantize nodes), or
          nncf.quantize_with_accuracy_control with --auto-mixed or options["max_drop"]: NNCF reverts the most
          harmful quantised layers to float until the calibration images, judged against the fp32 model, pass:
          --auto-mixed judges them by the parity gate's own criteria (cosine mean, 1st percentile, worst image,
          top-1 agreement with the tie margin: parity.gate_margin), each keeping half its allowance; max_drop by
          zero-shot agreement within max_drop points. The held-out parity images stay unseen. NNCF infers its
          candidates under the lowest oneDNN ISA level the parity gate will test (AVX2 with --gate-isa all), where
          INT8 numerics are worst.

INT8 weights and the CPU's ISA: x86 CPUs without VNNI (SSE4.1, AVX2, AVX-512 without VNNI) multiply u8 activations by
s8 weights with vpmaddubsw, which sums each pair of products into 16 bits and saturates at 32767; 255 * 127 * 2 does
not fit. NNCF's `overflow_fix` quantises weights to half the 8-bit range (7 bits) so that no pair can saturate. A
bundle gated under every ISA level (--gate-isa all, the default) is for any x86 CPU, so every Convolution/MatMul gets
it ("enable"); --gate-isa host (a VNNI/AMX-only fleet) keeps NNCF's default ("first_layer": the first layer only).
Sources: OpenVINO's "Saturation (overflow) Issue Workaround" page, the nncf.OverflowFix docstring (nncf 3.x).

openvino and nncf are imported inside the functions (`edgekd._optional.require`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_path
from edgekd._optional import require
from edgekd.export.targets import ExportRequest, ExportResult, register_target

log = logging.getLogger(__name__)

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
PRESETS = ("performance", "mixed")
# symmetric activations by default: "mixed" (asymmetric, zero points) makes OpenVINO's CPU plugin fall back to a
# legacy oneDNN AMX convolution kernel for some layers, which crashes Intel AMX CPUs (docs/export.md)
DEFAULT_PRESET = "performance"
LEGACY_AMX_MAX_PIXELS = 4  # outputs of 2x2 and 1x1 crashed; 3x3 (the 1x1-kernel variant) did not
# nncf.OverflowFix members by the names --option overflow_fix=... takes: 7-bit weights in every / the first / no
# Convolution and MatMul (module docstring)
# --auto-mixed: NNCF's accuracy control on the gate's criteria (edgekd.export.parity.gate_margin), stopping when each
# criterion keeps at least this share of its allowance on the calibration images
GATE_HEADROOM = 0.5
OVERFLOW_FIXES = {"enable": "ENABLE", "first_layer": "FIRST_LAYER", "disable": "DISABLE"}
# regex metacharacters that turn a --keep-fp16 entry into a pattern instead of an exact node name
_PATTERN_CHARS = re.compile(r"[*?\[\]()|+^$\\]")


@register_target("openvino", precisions=("fp32", "fp16", "int8"))
def build_openvino(req: ExportRequest) -> ExportResult:
    """OpenVINO IR (.xml/.bin): fp32, fp16 weights, or INT8 via NNCF post-training quantisation."""
    ov = require("openvino", purpose="--target openvino")
    t0 = time.perf_counter()
    model = ov.convert_model(str(req.onnx_path))
    meta: dict[str, Any] = {"openvino": {"version": ov.__version__, "compress_to_fp16": req.precision == "fp16",
                                         "source_onnx": Path(req.onnx_path).name}}
    if req.precision == "int8":
        model, qmeta = quantize_int8(model, req)
        meta["openvino"]["quantization"] = qmeta
    elif req.precision not in ("fp32", "fp16"):
        raise EdgekdError(f"--precision {req.precision}: the openvino target supports fp32, fp16, int8")
    save_ir(model, Path(req.out_dir) / MODEL_FILE, compress_to_fp16=req.precision == "fp16")
    meta["openvino"]["convert_seconds"] = round(time.perf_counter() - t0, 2)
    return ExportResult(files={"model": MODEL_FILE, "weights": WEIGHTS_FILE}, backend="openvino", metadata=meta)


def save_ir(model: Any, xml_path: Path, compress_to_fp16: bool) -> Path:
    """Write `model` as xml_path + its .bin, each replaced atomically (the .bin first: the xml names no file)."""
    ov = require("openvino", purpose="--target openvino")
    xml_path = Path(xml_path)
    with atomic_path(xml_path) as tmp_xml:
        tmp_bin = tmp_xml.with_suffix(".bin")
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
            os.replace(tmp_bin, xml_path.with_suffix(".bin"))
        finally:
            if tmp_bin.exists():
                tmp_bin.unlink()
    return xml_path


# --- INT8 ---------------------------------------------------------------------------------------------------------

def quantize_int8(model: Any, req: ExportRequest) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training INT8 of an ov.Model; returns (quantised model, facts for edgekd.json).

    options: preset ("performance" = symmetric activations, the default; "mixed" = asymmetric activations),
    model_type ("transformer" | "cnn" | None = auto from the trunk), keep_fp16 (node names or regexes left
    unquantised), max_drop (accuracy control: largest allowed drop, in points (%) of the validation metric),
    subset_size, fast_bias_correction (True), overflow_fix (enable | first_layer | disable; default from gate_isa:
    resolve_overflow_fix).

    A "mixed" result with convolutions that OpenVINO's CPU plugin runs on its crashing legacy AMX kernel
    (legacy_amx_convolutions) is quantised again with "performance", and edgekd.json says why.
    """
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    if req.calib is None or len(req.calib) == 0:
        raise EdgekdError("--precision int8 for openvino needs calibration images: pass --calib DIR")
    opts = req.options or {}
    preset_name = str(opts.get("preset") or DEFAULT_PRESET).lower()
    if preset_name not in PRESETS:
        raise EdgekdError(f"--preset {preset_name!r}: use one of {', '.join(PRESETS)}")
    if opts.get("calib_method"):
        log.warning("--calib-method %s is ignored by the openvino target (NNCF picks its own range estimators; "
                    "use --option preset=performance|mixed)", opts["calib_method"])
    calib = np.asarray(req.calib)
    settings = {"preset": preset_name, "model_type": resolve_model_type(req, opts.get("model_type")),
                "subset_size": min(int(opts.get("subset_size") or len(calib)), len(calib)),
                "fast_bias_correction": _flag(opts.get("fast_bias_correction", True)),
                "keep_fp16": opts.get("keep_fp16")}
    settings["overflow_fix"], overflow_because = resolve_overflow_fix(opts)
    ignored = build_ignored_scope(model, settings["keep_fp16"])
    meta: dict[str, Any] = {"tool": "nncf", "nncf_version": nncf.__version__, "preset": preset_name,
                            "model_type": settings["model_type"], "calibration_images": int(len(calib)),
                            "subset_size": settings["subset_size"],
                            "keep_fp16": list(ignored.names) + list(ignored.patterns) if ignored else [],
                            "overflow_fix": settings["overflow_fix"], "overflow_fix_because": overflow_because}
    # --max-drop: NNCF accuracy control on zero-shot agreement (points); --auto-mixed alone: on the gate's own criteria
    max_drop = opts.get("max_drop")
    by_gate = max_drop is None and bool(opts.get("auto_mixed"))
    t0 = time.perf_counter()
    qmodel, run_meta = _quantize(model, req, calib, settings, max_drop, by_gate)
    risky = legacy_amx_convolutions(qmodel)
    if risky:
        log.warning("preset mixed puts %d convolution(s) (%s) on OpenVINO's legacy AMX kernel, which crashes on "
                    "Intel AMX CPUs; quantising again with preset performance", len(risky), risky[0])
        settings = {**settings, "preset": "performance"}
        qmodel, run_meta = _quantize(require("openvino").convert_model(str(req.onnx_path)), req, calib, settings,
                                     max_drop, by_gate)
        meta.update(preset="performance", preset_requested=preset_name, preset_changed_because=(
            f"{len(risky)} convolution(s) with an asymmetric (zero-point) input and <= {LEGACY_AMX_MAX_PIXELS} "
            f"output pixels, which OpenVINO's CPU plugin runs on oneDNN's legacy AMX kernel, which segfaults "
            f"(docs/export.md, 'INT8 and the CPU'): {', '.join(risky[:5])}"))
    meta.update(run_meta)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    meta["fake_quantize_nodes"] = count_fake_quantize(qmodel)
    if meta["fake_quantize_nodes"] == 0:
        raise EdgekdError("NNCF quantised no layer of the model (every node ignored or unsupported); "
                          "check --keep-fp16")
    return qmodel, meta


def resolve_overflow_fix(opts: dict[str, Any]) -> tuple[str, str]:
    """(NNCF overflow_fix, why) for this export: --option overflow_fix=... as given, else "enable" when the bundle is
    gated for every x86 ISA level (gate_isa "all", the default) and NNCF's default "first_layer" for "host"."""
    requested = opts.get("overflow_fix")
    if requested:
        value = str(requested).strip().lower()
        if value not in OVERFLOW_FIXES:
            raise EdgekdError(f"--option overflow_fix={requested}: use one of {', '.join(OVERFLOW_FIXES)}")
        return value, f"--option overflow_fix={value}"
    gate_isa = opts.get("gate_isa") or "all"
    if gate_isa == "host":
        return "first_layer", ("--gate-isa host: NNCF's default, 7-bit weights in the first layer only; the other "
                               "layers' 8-bit weights can saturate on x86 CPUs without VNNI (AVX2, AVX-512 without "
                               "VNNI), so the bundle is for VNNI/AMX CPUs")
    return "enable", (f"--gate-isa {gate_isa}: the bundle must run on any x86 CPU, and 8-bit dot products on CPUs "
                      "without VNNI (AVX2, AVX-512 without VNNI) saturate their 16-bit intermediate; 7-bit weights in "
                      "every Convolution/MatMul cannot")


def advanced_quantization_parameters(settings: dict[str, Any]) -> Any:
    """nncf.AdvancedQuantizationParameters for `settings` (its overflow_fix), or None for NNCF's defaults."""
    if not settings.get("overflow_fix"):
        return None
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    return nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix[OVERFLOW_FIXES[settings["overflow_fix"]]])


def _quantize(model: Any, req: ExportRequest, calib: np.ndarray, settings: dict[str, Any],
              max_drop: float | None, by_gate: bool = False) -> tuple[Any, dict[str, Any]]:
    """One NNCF run with `settings`: plain post-training quantisation, or accuracy control judged by the gate's
    criteria (by_gate) or by zero-shot agreement within max_drop points."""
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    if max_drop is None and not by_gate:
        log.info("NNCF post-training quantisation (preset %s, overflow_fix %s) on %d calibration inputs",
                 settings["preset"], settings.get("overflow_fix"), len(calib))
        return nncf.quantize(model, nncf.Dataset(list(_batches(calib))), **nncf_kwargs(model, settings),
                             advanced_parameters=advanced_quantization_parameters(settings)), {"mode": "ptq"}
    # NNCF tunes on the calibration images: the parity gate's held-out images (req.val) must stay unseen, or the
    # gate would only confirm what accuracy control was fitted to.
    opts = req.options or {}
    labels = None if req.label_pack is None else np.asarray(req.label_pack.embeddings, np.float32)
    from edgekd.export.parity import GateCriteria

    gate = opts.get("gate") or GateCriteria.default("int8")
    isa = worst_gate_isa(opts.get("gate_isa") or "all")
    criteria = dataclasses.asdict(gate) if by_gate else None
    with tempfile.TemporaryDirectory(prefix=".accuracy-control.", dir=req.out_dir) as tmp:
        xml = Path(tmp) / MODEL_FILE
        result = run_accuracy_control(str(req.onnx_path), calib, labels, gate.tie_margin,
                                      0.0 if criteria else float(max_drop), settings, xml, isa=isa, criteria=criteria)
        core = require("openvino").Core()
        core.set_property({"ENABLE_MMAP": False})  # read the weights into memory: the files go with `tmp`
        qmodel = core.read_model(str(xml))
    control = {"judged_by": "gate criteria", "min_gate_margin": GATE_HEADROOM} if criteria else \
        {"judged_by": "zero-shot agreement", "max_drop_points": float(max_drop)}
    return qmodel, {"mode": "accuracy_control", **control, "judged_under_isa": isa or "host", **result}


def worst_gate_isa(gate_isa: str) -> str | None:
    """The lowest oneDNN ISA level the parity gate runs an OpenVINO model under (edgekd.export.parity.gate_isa_levels:
    AVX2 on any AVX2 CPU with --gate-isa all), or None for the level in force."""
    from edgekd.export.parity import gate_isa_levels

    return gate_isa_levels("openvino", gate_isa)[0]


def legacy_amx_convolutions(model: Any) -> list[str]:
    """Quantised Convolutions of an ov.Model that OpenVINO's CPU plugin may run on oneDNN's legacy AMX kernel
    (jit_avx512_amx), which segfaults on outputs of <= 4 pixels: an asymmetric input FakeQuantize (u8 with a zero
    point, NNCF's "mixed" preset) and <= LEGACY_AMX_MAX_PIXELS output pixels. Found with benchmarks/openvino_amx/
    (docs/export.md, "INT8 and the CPU"); conservative: some of these run on the safe brgemm kernel."""
    risky = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        src = op.input(0).get_source_output().get_node()
        if src.get_type_name() != "FakeQuantize" or not _has_zero_point(src):
            continue
        spatial = list(op.get_output_partial_shape(0))[2:]
        if spatial and all(d.is_static for d in spatial) and \
                int(np.prod([d.get_length() for d in spatial])) <= LEGACY_AMX_MAX_PIXELS:
            risky.append(op.get_friendly_name())
    return risky


def _has_zero_point(fq: Any) -> bool:
    """Whether a FakeQuantize quantises to u8 with a non-zero zero point: its input range is neither [0, hi]
    (unsigned) nor NNCF's symmetric signed [-s, s * 127/128] (for 256 levels: lo / hi = -128/127)."""
    consts = [fq.input(i).get_source_output().get_node() for i in (1, 2)]
    if any(c.get_type_name() != "Constant" for c in consts):
        return True  # ranges computed at run time: assume the worst
    lo, hi = (np.asarray(c.get_data(), np.float64).ravel() for c in consts)
    levels = int(fq.get_attributes().get("levels", 256))
    unsigned = np.all(np.abs(lo) <= 1e-7 * np.maximum(np.abs(hi), 1e-12))
    signed = np.allclose(lo, -hi * (levels / 2) / (levels / 2 - 1), rtol=1e-3, atol=1e-9)
    return not (unsigned or signed)


def nncf_kwargs(model: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of nncf.quantize(_with_accuracy_control) from plain JSON settings (they also travel to the
    accuracy-control worker process)."""
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    preset = nncf.QuantizationPreset.MIXED if settings["preset"] == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    return dict(preset=preset, subset_size=settings["subset_size"],
                fast_bias_correction=settings["fast_bias_correction"],
                model_type=nncf.ModelType.TRANSFORMER if settings["model_type"] == "transformer" else None,
                ignored_scope=build_ignored_scope(model, settings["keep_fp16"]))


def accuracy_control(onnx_path: str, calib: np.ndarray, labels: np.ndarray | None, tie_margin: float,
                     max_drop_points: float, settings: dict[str, Any], out_xml: str,
                     criteria: dict[str, Any] | None = None) -> dict[str, Any]:
    """nncf.quantize_with_accuracy_control of the ONNX model, judged against its fp32 self on `calib`; writes the
    INT8 IR to `out_xml`. Runs in a child process (run_accuracy_control). Returns facts for edgekd.json.

    criteria (a GateCriteria as a dict): NNCF maximises edgekd.export.parity.gate_margin, the parity gate's own
    criteria (cosine mean, 1st percentile, worst image, top-1 agreement over `labels` [C, D] with the tie margin),
    and reverts the most harmful layers until every criterion keeps GATE_HEADROOM of its allowance on `calib` (the
    held-out gate images then have room). Without: zero-shot agreement over `labels` (or embedding cosine), at most
    `max_drop_points` below fp32."""
    ov = require("openvino", purpose="--target openvino")
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    model = ov.convert_model(onnx_path)
    metric_fn, metric_name = build_validation_fn(model, calib, labels, tie_margin, criteria)
    max_drop = 1.0 - GATE_HEADROOM if criteria else max_drop_points / 100.0
    log.info("NNCF accuracy-controlled quantisation: %s on the %d calibration inputs, max drop %.4f", metric_name,
             len(calib), max_drop)
    qmodel = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(list(_batches(calib))), nncf.Dataset(list(enumerate(_batches(calib))), lambda i: i[1]),
        metric_fn, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **nncf_kwargs(model, settings),
        advanced_quantization_parameters=advanced_quantization_parameters(settings))
    save_ir(qmodel, Path(out_xml), compress_to_fp16=False)
    return {"metric": metric_name, "metric_int8": round(metric_fn.evaluate(qmodel), 6)}


def run_accuracy_control(onnx_path: str, calib: np.ndarray, labels: np.ndarray | None, tie_margin: float,
                         max_drop_points: float, settings: dict[str, Any], out_xml: Path,
                         isa: str | None = None, criteria: dict[str, Any] | None = None) -> dict[str, Any]:
    """accuracy_control(...) in a child process (edgekd.runtime.isolated). NNCF infers the quantised candidates on
    this CPU, which can crash the engine; and run in a process that had trained with torch before, NNCF's accuracy
    control corrupted the Python heap (a later SIGSEGV in Py_INCREF, seen under gdb in `make demo`). Inputs travel
    as .npy files. `isa`: the ONEDNN_MAX_CPU_ISA of the child (None: the level in force)."""
    from edgekd.cpu import ONEDNN_ISA_ENV
    from edgekd.runtime.isolated import call_isolated

    work = out_xml.parent
    np.save(work / "calib.npy", calib)
    if labels is not None:
        np.save(work / "labels.npy", labels)
    return call_isolated("edgekd.export.openvino:accuracy_control_job", {
        "onnx_path": onnx_path, "calib": str(work / "calib.npy"),
        "labels": str(work / "labels.npy") if labels is not None else None, "tie_margin": tie_margin,
        "max_drop_points": max_drop_points, "settings": settings, "out_xml": str(out_xml), "criteria": criteria},
        what="NNCF accuracy control (--auto-mixed / --max-drop)" + (f" under {ONEDNN_ISA_ENV}={isa}" if isa else ""),
        advice="export without --auto-mixed / --max-drop, or with --option preset=performance",
        env={ONEDNN_ISA_ENV: isa} if isa else None)


def accuracy_control_job(onnx_path: str, calib: str, labels: str | None, tie_margin: float, max_drop_points: float,
                         settings: dict[str, Any], out_xml: str, criteria: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
    """Child side of run_accuracy_control: arrays from .npy files."""
    return accuracy_control(onnx_path, np.load(calib), np.load(labels) if labels else None, tie_margin,
                            max_drop_points, settings, out_xml, criteria)


def resolve_model_type(req: ExportRequest, requested: str | None) -> str:
    """'transformer' for students with attention blocks (NNCF then keeps softmax/layernorm paths precise)."""
    if requested:
        requested = str(requested).lower()
        if requested not in ("transformer", "cnn"):
            raise EdgekdError(f"--model-type {requested!r}: use transformer or cnn")
        return requested
    student = getattr(req, "student", None)
    if student is None:
        return "cnn"
    names = {type(m).__name__ for m in student.modules()}
    # timm's Attention/WindowAttention/..., EfficientViT's LiteMLA (multi-scale linear attention), *Attn blocks
    return "transformer" if any(k in n for n in names for k in ("Attention", "Attn", "MLA")) else "cnn"


def build_ignored_scope(model: Any, keep: Iterable[str] | str | None) -> Any:
    """nncf.IgnoredScope from --keep-fp16 entries: exact node names, or regexes when they contain metacharacters.

    Unknown names are refused here (with close matches) rather than inside NNCF.
    """
    if not keep:
        return None
    nncf = require("nncf", purpose="INT8 quantisation for --target openvino")
    entries = [k.strip() for k in (keep.split(",") if isinstance(keep, str) else keep) if k and k.strip()]
    op_names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    known = set(op_names)
    names = [e for e in entries if not _PATTERN_CHARS.search(e)]
    patterns = [e for e in entries if _PATTERN_CHARS.search(e)]
    for name in names:
        if name not in known:
            stem = name.rsplit("/", 1)[-1].lower()
            close = [n for n in op_names if stem and stem in n.lower()][:5]
            hint = f"; similar nodes: {', '.join(close)}" if close else ""
            raise EdgekdError(f"--keep-fp16 {name!r}: no such node in the OpenVINO model{hint}")
    for pattern in patterns:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise EdgekdError(f"--keep-fp16 {pattern!r}: invalid regular expression ({e})") from e
        if not any(rx.match(n) for n in op_names):
            raise EdgekdError(f"--keep-fp16 {pattern!r}: the pattern matches no node of the OpenVINO model")
    return nncf.IgnoredScope(names=names, patterns=patterns)


class _EmbeddingAgreement:
    """NNCF validation_fn: per held-out input, agreement with the fp32 model's output (higher is better).

    With a label pack the per-item value is zero-shot top-1 agreement (0/1); otherwise the cosine between the
    embeddings. Returns (mean, per-item values), the form NNCF's accuracy control ranks layers with.
    """

    def __init__(self, inputs: np.ndarray, reference: np.ndarray, label_embeddings: np.ndarray | None,
                 tie_margin: float = 0.0):
        self.inputs = inputs  # [N, ...] held-out model inputs
        self.reference = reference  # [N, D] unit rows from the fp32 model
        self.labels = label_embeddings  # [C, D] or None
        self.tie_margin = tie_margin  # the parity gate's: distance to the class boundary within which a flip is a tie

    def evaluate(self, model: Any) -> float:
        """The metric of an ov.Model on all held-out inputs (compiled in f32 like NNCF does)."""
        ov = require("openvino", purpose="--target openvino")
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return self(compiled, enumerate(_batches(self.inputs)))[0]

    def __call__(self, compiled: Any, items: Iterable[tuple[int, np.ndarray]]) -> tuple[float, list[float]]:
        from edgekd.export.parity import agreeing_images

        values = []
        for index, x in items:
            emb = np.asarray(compiled(x)[0], dtype=np.float32)  # [1, D]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            if self.labels is None:
                values.append(float(emb[0] @ self.reference[index]))
            else:
                agrees, _ = agreeing_images(self.reference[index:index + 1], emb, self.labels, self.tie_margin)
                values.append(float(agrees[0]))
        return (float(np.mean(values)) if values else 0.0), values


class _GateMargin(_EmbeddingAgreement):
    """NNCF validation_fn judged as the parity gate judges: edgekd.export.parity.gate_margin of the items' metrics
    (1 for the fp32 model itself); the per-item values NNCF ranks layers with are the embedding cosines."""

    def __init__(self, inputs: np.ndarray, reference: np.ndarray, label_embeddings: np.ndarray | None,
                 criteria: Any):
        super().__init__(inputs, reference, label_embeddings, criteria.tie_margin)
        self.criteria = criteria

    def __call__(self, compiled: Any, items: Iterable[tuple[int, np.ndarray]]) -> tuple[float, list[float]]:
        from edgekd.export.parity import _agreement, compare, gate_margin

        index, emb = [], []
        for i, x in items:
            index.append(i)
            emb.append(np.asarray(compiled(x)[0], dtype=np.float32)[0])
        if not index:
            return 0.0, []
        ref, emb = self.reference[index], np.stack(emb)
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        metrics = compare(ref, unit)
        if self.labels is not None:
            metrics.update(_agreement(ref, unit, self.labels.astype(np.float64), self.tie_margin))
        return gate_margin(metrics, self.criteria), [float(c) for c in np.sum(ref * unit, axis=1)]


def build_validation_fn(model: Any, val: np.ndarray, label_embeddings: np.ndarray | None, tie_margin: float = 0.0,
                        criteria: dict[str, Any] | None = None) -> tuple[_EmbeddingAgreement, str]:
    """Reference fp32 embeddings of `val` ([N, ...] model inputs) and the metric NNCF maximises: the gate margin
    under `criteria`, else the agreement."""
    ov = require("openvino", purpose="--target openvino")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ref = np.concatenate([np.asarray(compiled(x)[0], dtype=np.float32) for x in _batches(val)])
    ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    labels = None
    if label_embeddings is not None:
        labels = np.asarray(label_embeddings, dtype=np.float32)
        if labels.shape[1] != ref.shape[1]:
            raise EdgekdError(f"--labels: label embeddings are {labels.shape[1]}-d, the model outputs "
                              f"{ref.shape[1]}-d")
    if criteria is not None:
        from edgekd.export.parity import GateCriteria

        return _GateMargin(val, ref, labels, GateCriteria(**criteria)), "gate_margin"
    return _EmbeddingAgreement(val, ref, labels, tie_margin), ("zero_shot_top1_agreement" if labels is not None
                                              else "embedding_cosine")


def _flag(value: Any) -> bool:
    """Option values arrive as strings from `--option KEY=VALUE`: "false"/"0"/"no"/"off" mean False."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


def count_fake_quantize(model: Any) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def _batches(x: np.ndarray) -> Iterable[np.ndarray]:
    """[N, ...] -> N arrays [1, ...] (batch-1 items, as NNCF feeds them)."""
    for i in range(len(x)):
        yield np.ascontiguousarray(x[i:i + 1])
