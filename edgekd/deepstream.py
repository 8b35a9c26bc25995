"""DeepStream: an `nvinfer` config for an exported bundle, so that DeepStream runs the student and attaches its raw
embedding as tensor meta (`output-tensor-meta=1`, `network-type=100`); a pad probe scores it against label embeddings
(examples/gstreamer/deepstream_probe.py).

    edgekd deepstream-config BUNDLE --out ds/          # ds/nvinfer_config.txt (+ ds/model_deepstream.onnx)

UNTESTED ON DEEPSTREAM: the config follows NVIDIA's Gst-nvinfer documentation and its numbers are checked here by
replaying nvinfer's documented preprocessing (y = net-scale-factor * (x - offsets[c])) in onnxruntime
(tests/test_deepstream.py), but it has not run on a Jetson or a dGPU DeepStream install yet.

What nvinfer reads: an engine edgekd built (TensorRT bundle after `--from-onnx` or build_engine.sh), else an ONNX that
nvinfer builds and caches itself: the ONNX bundle's model, or the TensorRT bundle's model.onnx (fp32) /
model.fp16.onnx (fp16). INT8 needs the engine, or a calibration cache for nvinfer's calibrator (--trt-calibrator):
without `int8-calib-file` nvinfer builds FP16 instead, so INT8 ONNX alone is refused, and asymmetric (uint8, zero
point) Q/DQ, which TensorRT cannot take, is refused with its own reason. Ungated bundles need allow_ungated.

nvinfer scales by one factor for all channels, the student normalises by a std per channel: for ONNX bundles the
remaining per-channel factor std_mean / std_c is folded into a copy of the model (a Mul before the first layer), so the
result is exact; a prebuilt TensorRT engine cannot be changed and runs with the mean std (the notes give the error).
nvinfer resizes the whole frame (stretch, or pad with maintain-aspect-ratio); a student evaluated on a centre crop
needs an upstream crop (`nvvideoconvert src-crop=...`, computed when the frame size is given).

Secondary mode (SecondaryGie, `--secondary`): nvinfer runs the student on the objects an upstream detector (the primary
nvinfer) found, each box cropped and scaled by nvinfer, and attaches each embedding to its object
(obj_user_meta_list) as NvDsInferTensorMeta with the secondary's gie-unique-id; the probe scores those too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import read_json, sha256_file
from edgekd._optional import require
from edgekd.export.trtexec import BUILD_FILE, ENGINE_FILE, ENGINE_MANIFEST
from edgekd.preprocess import Preprocess
from edgekd.runtime.bundle import BUNDLE_FILE, BundleInfo, gate_status, gate_summary, read_bundle, refuse_ungated

log = logging.getLogger(__name__)

CONFIG_FILE = "nvinfer_config.txt"
FOLDED_MODEL = "model_deepstream.onnx"
NETWORK_TYPE_OTHER = 100  # nvinfer: no parsing, output tensors attached as meta (needs output-tensor-meta=1)
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
# Preprocess.interpolation -> nvinfer scaling-filter (NvBufSurfTransform_Inter: 0 nearest, 1 bilinear, 2 Algo1 =
# GPU cubic / VIC 5-tap)
SCALING_FILTER = {"nearest": 0, "bilinear": 1, "bicubic": 2}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# the ONNX nvinfer builds from in a TensorRT bundle without its engine (roles of edgekd.export.tensorrt.ONNX_FILES);
# INT8 only from model.onnx with a calibration cache (model.qdq.onnx needs edgekd's builder: see nvinfer_model)
TENSORRT_ONNX_ROLE = {"fp32": "onnx", "fp16": "onnx_fp16", "int8": "onnx"}
# nvinfer's calibrator is an IInt8EntropyCalibrator2 reading int8-calib-file (NvDsInferInt8Calibrator,
# nvdsinfer_context_impl.cpp); TensorRT recalibrates when a cache's header names another algorithm
NVINFER_CALIBRATOR = "EntropyCalibration2"
PROCESS_MODE = {"primary": 1, "secondary": 2}  # nvinfer process-mode: 1 full frames, 2 objects of upstream GIEs


# nvinfer's secondary mode as NVIDIA documents and parses it. The Gst-nvinfer plugin page (docs.nvidia.com/metropolis/
# deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html: "Secondary mode: Operates on objects added in the meta by
# upstream components"); gst_nvinfer_parse_props in the plugin's released source (sources/gst-plugins/gst-nvinfer/
# gstnvinfer_property_parser.cpp, DeepStream 4.0.1): gie-unique-id must be > 0, process-mode 1 or 2,
# operate-on-class-ids is read with g_key_file_get_integer_list (';'-separated) and indexes a vector by class id (a
# negative id is out of range), input-object-min-width/-height must be >= 0, secondary-reinfer-interval is an integer;
# gstnvinfer.cpp's should_infer_object (same release) skips objects of another operate-on-gie-id, under the minimum
# size or of a class not listed; gstnvinfer_meta_utils.cpp's attach_tensor_output_meta (DeepStream 6.x sources)
# attaches the tensor meta (unique_id = gie-unique-id) to the object in secondary mode (nvds_add_user_meta_to_obj).
# NVIDIA's deepstream-test2 secondary config (deepstream_python_apps apps/deepstream-test2/dstest2_sgie1_config.txt)
# writes process-mode=2, gie-unique-id=2, operate-on-gie-id=1, operate-on-class-ids=0, input-object-min-width/height=64
# and batch-size=16.
@dataclass(frozen=True)
class SecondaryGie:
    """nvinfer in secondary mode: the student embeds each object that the GIE `operate_on_gie_id` (the primary
    detector's gie-unique-id) found, of the classes `operate_on_class_ids` (empty: all), and attaches the embedding to
    the object as NvDsInferTensorMeta whose unique_id is `gie_unique_id`. `reinfer_interval`: frames between two
    inferences of a tracked object (secondary-reinfer-interval); `min_object_size`: (width, height) in pixels of the
    muxer's frames under which an object is skipped (input-object-min-width / -height)."""

    operate_on_gie_id: int = 1
    operate_on_class_ids: tuple[int, ...] = ()
    gie_unique_id: int = 2
    reinfer_interval: int | None = None
    min_object_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "operate_on_class_ids", tuple(sorted({int(c) for c in self.operate_on_class_ids})))
        problem = self._problem()
        if problem is not None:
            raise EdgekdError(problem)

    def _problem(self) -> str | None:
        if self.gie_unique_id < 1:
            return f"gie-unique-id must be >= 1 (nvinfer refuses 0 and below), got {self.gie_unique_id}"
        if self.operate_on_gie_id < 1:
            return (f"operate-on-gie-id must be the primary detector's gie-unique-id (>= 1), got "
                    f"{self.operate_on_gie_id}")
        if self.operate_on_gie_id == self.gie_unique_id:
            return (f"gie-unique-id {self.gie_unique_id} is also operate-on-gie-id: give the secondary an id of its "
                    "own (the detector's is usually 1, e.g. --gie-unique-id 2)")
        negative = [c for c in self.operate_on_class_ids if c < 0]
        if negative:
            return f"operate-on-class-ids are the detector's class indices (>= 0), got {negative}"
        if self.reinfer_interval is not None and self.reinfer_interval < 0:
            return f"secondary-reinfer-interval must be >= 0 frames, got {self.reinfer_interval}"
        if self.min_object_size is not None and min(self.min_object_size) < 1:
            return (f"the minimum object size must be at least 1x1 pixels, got {self.min_object_size}; leave it out "
                    "for no minimum")
        return None

    def properties(self) -> dict[str, Any]:
        """The [property] keys of the secondary mode."""
        props: dict[str, Any] = {"gie-unique-id": self.gie_unique_id, "process-mode": PROCESS_MODE["secondary"],
                                 "operate-on-gie-id": self.operate_on_gie_id}
        if self.operate_on_class_ids:
            props["operate-on-class-ids"] = list(self.operate_on_class_ids)
        if self.reinfer_interval is not None:
            props["secondary-reinfer-interval"] = self.reinfer_interval
        if self.min_object_size is not None:
            props["input-object-min-width"], props["input-object-min-height"] = self.min_object_size
        return props

    def notes(self, pp: Preprocess, batch_size: int) -> list[str]:
        """What the secondary mode does differently from the runtime's classify_regions, or may not do."""
        h, w = pp.size
        notes = []
        if pp.resize_mode == "shortest":
            notes.append(f"the student sees a centre crop of each box (resize_mode shortest, as classify_regions "
                         f"does); nvinfer cannot crop inside an object: it stretches the whole box to {w}x{h} "
                         "(maintain-aspect-ratio=0; =1 would pad it instead), so boxes of another aspect ratio are "
                         "seen distorted and scores can differ from classify_regions on the same boxes")
        if self.reinfer_interval is not None:
            notes.append("secondary-reinfer-interval: in NVIDIA's gst-nvinfer sources (gstnvinfer.cpp "
                         "should_infer_object, DeepStream 4.0.1; NVIDIA quotes the same code for 5.0) the interval "
                         "applies to tracked objects of classifier instances (network-type=1; detectors too in later "
                         "sources), and this config is network-type=100: nvinfer may embed every object in every "
                         "frame regardless; check on the device")
        if batch_size == 1:
            notes.append("batch-size=1: nvinfer embeds the objects of a frame one at a time; pass --batch-size with "
                         "the most objects per frame you expect (NVIDIA's secondary samples use 16; an engine must "
                         "be built for that batch)")
        return notes


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
        if self.properties.get("process-mode") == PROCESS_MODE["secondary"]:
            head.append(f"# Secondary mode: one embedding per object of GIE {self.properties['operate-on-gie-id']}, "
                        f"in its obj_user_meta_list (unique_id {self.properties['gie-unique-id']}).")
        head += [f"# note: {n}" for n in self.notes]
        body = [f"{k}={_ini(v)}" for k, v in self.properties.items()]
        return "\n".join([*head, "[property]", *body]) + "\n"


def nvinfer_preprocessing(pp: Preprocess, objects: bool = False,
                          ) -> tuple[dict[str, Any], tuple[float, float, float], list[str]]:
    """The student's eval preprocessing as nvinfer keys -> (properties, per-channel scale to fold, notes); `objects`:
    nvinfer scales object boxes (secondary mode, whose crop note is SecondaryGie.notes'), not whole frames.

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
    if pp.resize_mode == "shortest" and not objects:
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


@dataclass(frozen=True)
class NvinferModel:
    """The file nvinfer reads for a bundle: an engine edgekd built, or an ONNX that nvinfer builds and caches."""

    path: Path
    precision: str
    calib_file: Path | None = None  # int8-calib-file: a TensorRT calibration cache, for an ONNX built in INT8

    @property
    def is_engine(self) -> bool:
        return self.path.suffix in ENGINE_SUFFIXES


def nvinfer_engine_name(onnx_file: str, batch_size: int, gpu_id: int, precision: str) -> str:
    """The engine nvinfer builds from `onnx_file` and saves beside it: as model-engine-file, the next start loads it.

    nvdsinfer's TrtModelBuilder::buildModel(initParams, suggestedPathName) (DeepStream 8.0 SDK API reference). Its
    sources as released in DeepStream 6.2 (sources/libs/nvdsinfer/nvdsinfer_model_builder.h/.cpp) document "suggested
    path = [modelName]_b[#batchSize]_[#device]_[#dataType].engine" and build modelPath + "_b" + maxBatchSize
    (batch-size) + "_" + "gpu<gpu-id>" (or "dla<core>") + "_" + networkMode2Str (fp32 | fp16 | int8) + ".engine" with
    the mode really built: INT8 without a readable int8-calib-file becomes FP16 ("INT8 calibration file not
    specified. Trying FP16 mode.")."""
    return f"{onnx_file}_b{batch_size}_gpu{gpu_id}_{precision}.engine"


def refuse_frame_crop(frame_size: tuple[int, int] | None, secondary: SecondaryGie | None) -> None:
    """A whole-frame src-crop in secondary mode would crop the detector's input too: refused."""
    if secondary is not None and frame_size is not None:
        raise EdgekdError("the frame size gives the src-crop of whole frames, which would crop the detector's input "
                          "too; in secondary mode nvinfer crops each object itself: leave out --frame-size")


def build_nvinfer_config(info: BundleInfo, model_file: str, frame_size: tuple[int, int] | None = None,
                         batch_size: int = 1, gpu_id: int = 0, calib_file: str | None = None,
                         secondary: SecondaryGie | None = None) -> NvinferConfig:
    """The config for `info`'s bundle with `model_file` (an .onnx or engine path as nvinfer should read it) and, for
    an ONNX built in INT8, `calib_file` (its int8-calib-file); with `secondary`, nvinfer's secondary mode (the
    objects of an upstream detector instead of whole frames)."""
    if info.input_layout != "NCHW" or info.input_dtype != "float32":
        raise EdgekdError(f"{info.root}: its model takes {info.input_dtype} {info.input_layout} "
                          f"{'whole frames' if info.resize_in_graph else 'frames'} ({info.input_name!r}); nvinfer "
                          "feeds float32 NCHW pixels: export the bundle again without --preprocess-in-graph")
    if batch_size < 1:
        raise EdgekdError(f"batch size must be >= 1, got {batch_size}")
    refuse_frame_crop(frame_size, secondary)
    props, scale, notes = nvinfer_preprocessing(info.preprocess, objects=secondary is not None)
    precision = str(info.meta.get("precision", "fp32"))
    if precision not in NETWORK_MODE:
        notes.append(f"precision {precision!r} has no nvinfer network-mode; using fp32")
        precision = "fp32"
    is_onnx = model_file.endswith(".onnx")
    if is_onnx and precision == "int8" and calib_file is None:
        raise EdgekdError(f"{model_file}: nvinfer builds INT8 from an ONNX only with an int8-calib-file (else FP16); "
                          "pass the calibration cache, or use the engine edgekd built")
    h, w = info.size
    base: dict[str, Any] = {"gpu-id": gpu_id, "gie-unique-id": 1, "process-mode": PROCESS_MODE["primary"],
                            "batch-size": batch_size, "network-type": NETWORK_TYPE_OTHER, "output-tensor-meta": 1,
                            "network-mode": NETWORK_MODE[precision], "infer-dims": [3, h, w],
                            "output-blob-names": info.output_name}
    if is_onnx:
        base["onnx-file"] = model_file
        base["model-engine-file"] = nvinfer_engine_name(model_file, batch_size, gpu_id, precision)
    else:
        base["model-engine-file"] = model_file
    if calib_file is not None:
        base["int8-calib-file"] = calib_file
    if secondary is not None:
        base.update(secondary.properties())
        notes += secondary.notes(info.preprocess, batch_size)
    cfg = NvinferConfig({**base, **props}, notes, scale)
    if frame_size is not None:
        cfg.src_crop = centre_crop(frame_size, info.preprocess)
        cfg.notes.append(f"for {frame_size[0]}x{frame_size[1]} frames put `nvvideoconvert src-crop={cfg.src_crop}` "
                         "before nvstreammux")
    return cfg


# --- what nvinfer reads --------------------------------------------------------------------------------------------

INT8_FIX = ("export with `--target tensorrt --precision int8` and build the engine on the device with the command in "
            "its tensorrt_build.json, then run deepstream-config on that bundle; or export with --precision fp16")


def read_for_nvinfer(bundle: str | os.PathLike) -> tuple[BundleInfo, NvinferModel]:
    """The bundle (its files checked) and the file nvinfer reads for it; an EdgekdError with the fix where nvinfer
    cannot run it at its precision. A TensorRT bundle whose engine is pending is read with its ONNX as the model."""
    path = Path(bundle)
    root = path.parent if path.name == BUNDLE_FILE else path
    meta = _peek_meta(root)
    precision = str(meta.get("precision", "fp32"))
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    if meta.get("target") != "tensorrt" or "model" in files:
        info = read_bundle(root)  # also says what is wrong with a bundle that is not one
        return info, _model_of(info, precision)
    info = read_bundle(root, model_role=TENSORRT_ONNX_ROLE.get(precision, "onnx"))
    return info, _pending_engine_model(info, precision)


def _peek_meta(root: Path) -> dict[str, Any]:
    """edgekd.json as it is ({} when unreadable: read_bundle then says why)."""
    try:
        meta = read_json(root / BUNDLE_FILE)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _model_of(info: BundleInfo, precision: str) -> NvinferModel:
    """A bundle with its model: an engine as it is; an ONNX unless it is INT8, which nvinfer cannot build as such."""
    model = info.model_path
    if model.suffix in ENGINE_SUFFIXES:
        return NvinferModel(model, precision)
    if model.suffix != ".onnx":
        raise EdgekdError(f"{model}: nvinfer reads ONNX models or TensorRT engines, not {model.suffix} files; "
                          "export the bundle with --target onnx or tensorrt")
    if precision == "int8":
        problem = asymmetric_qdq(model)
        if problem is not None:
            raise EdgekdError(f"{model}: INT8 that TensorRT cannot take ({problem}; it takes only symmetric int8 "
                              f"Q/DQ, zero point 0): {INT8_FIX}")
        raise EdgekdError(f"{model}: an INT8 ONNX without an engine or a calibration file, which nvinfer would build "
                          f"in FP16 instead (at every start): {INT8_FIX}")
    return NvinferModel(model, precision)


def _pending_engine_model(info: BundleInfo, precision: str) -> NvinferModel:
    """A TensorRT bundle without an engine in edgekd.json: the engine build_engine.sh left, else the ONNX for the
    precision (INT8: model.onnx with the calibration cache of --trt-calibrator)."""
    engine = built_engine(info.root)
    if engine is not None:
        return NvinferModel(engine, precision)
    if precision != "int8":
        return NvinferModel(info.model_path, precision)
    calib = calibration_cache(info)
    if calib is None:
        command = build_command(info.root, info.meta)
        raise EdgekdError(f"{info.root}: its INT8 engine is not built yet and nvinfer builds INT8 from an ONNX only "
                          f"with a calibration file (else FP16): build it on the device with `{command}` and run "
                          "deepstream-config again, or export with --precision fp16")
    return NvinferModel(info.model_path, precision, calib)


def built_engine(root: Path) -> Path | None:
    """The engine that edgekd.export.trtexec's build_engine.sh left in the bundle (engine.json records its sha256;
    edgekd's own builder also names it in edgekd.json), or None."""
    engine, manifest = root / ENGINE_FILE, root / ENGINE_MANIFEST
    if not engine.is_file() or not manifest.is_file():
        return None
    if read_json(manifest).get("engine_sha256") != sha256_file(engine):
        raise EdgekdError(f"{engine}: not the engine {ENGINE_MANIFEST} describes (sha256 differs); build it again on "
                          f"the device with `{build_command(root)}`")
    return engine


def calibration_cache(info: BundleInfo) -> Path | None:
    """The TensorRT calibration cache of a --trt-calibrator bundle (files.calib_cache, else the name the builder gives
    it: edgekd.export.tensorrt.calib_cache_name), checked to be one nvinfer's calibrator reads; None when absent."""
    name = (info.meta.get("files") or {}).get("calib_cache")
    if not name:
        from edgekd.export.tensorrt import calib_cache_name

        name = calib_cache_name(info.model_path)
    path = info.root / name
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        header = f.readline(200).decode(errors="replace").strip()
    if NVINFER_CALIBRATOR not in header:
        raise EdgekdError(f"{path}: a {header!r} calibration cache, but nvinfer calibrates with TensorRT's "
                          f"{NVINFER_CALIBRATOR} and would recalibrate without images: build it with --calib-method "
                          "entropy")
    return path


def build_command(root: Path, meta: dict[str, Any] | None = None) -> str:
    """The edgekd command that builds the bundle's engine on the device, as its tensorrt_build.json records it."""
    build = root / ((meta or {}).get("files") or {}).get("build", BUILD_FILE)
    try:
        return str(read_json(build)["commands"]["edgekd"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"edgekd export {root} --target tensorrt --from-onnx"


def asymmetric_qdq(onnx_path: str | os.PathLike) -> str | None:
    """None when TensorRT takes every QuantizeLinear / DequantizeLinear of the ONNX at `onnx_path` (symmetric int8:
    int8 zero points, all 0), else the first that it refuses, e.g. "QuantizeLinear 'q': UINT8 zero point (...)".
    The rules are edgekd.export.trt_contract's (TensorRT 10.x, as in DeepStream 7.1+); QOperator ops (QLinearConv,
    ...) count as refused: TensorRT's parser has no importer for them."""
    onnx = require("onnx", extra="onnx", purpose="checking INT8 quantization for TensorRT")
    from edgekd.export.trt_contract import tensorrt_refusals

    model = onnx.load(str(onnx_path), load_external_data=False)
    for refusal in tensorrt_refusals(model, "10.x", strongly_typed=False):
        op = refusal.op
        if op in ("QuantizeLinear", "DequantizeLinear") or op.startswith("QLinear") or op.endswith("Integer"):
            return f"{op} {refusal.node!r}: {refusal.reason}"
    return None


# --- gate and writing -----------------------------------------------------------------------------------------------

def nvinfer_gate(info: BundleInfo, model: NvinferModel) -> str:
    """The parity verdict on what nvinfer reads: the bundle's, or for the ONNX of a TensorRT bundle whose engine is
    pending, the verdict on that very ONNX (parity.onnx_gate, judged on onnxruntime; its "where" names the file)."""
    status = gate_status(info.meta)
    parity = info.meta.get("parity")
    if status == "passed" or model.is_engine or not isinstance(parity, dict):
        return status
    where = str((parity.get("onnx_gate") or {}).get("where") or "")
    return gate_status(parity, "onnx_gate") if where.split(" ", 1)[0] == model.path.name else status


def require_nvinfer_gate(info: BundleInfo, model: NvinferModel, allow_ungated: bool = False) -> str:
    """nvinfer_gate's verdict; raises UngatedBundleError unless it passed or `allow_ungated`."""
    status = nvinfer_gate(info, model)
    if status != "passed":
        what = {"failed": "failed", "skipped": "was skipped", "missing": "left no verdict"}[status]
        refuse_ungated(f"{info.root}: its parity gate {what} ({gate_summary(info.meta)}); export it again with the "
                       "gate (an engine: `edgekd export BUNDLE --target tensorrt --from-onnx` on the device checks "
                       "it), or pass --allow-ungated / allow_ungated=True", allow_ungated)
    return status


def folded_name(onnx_path: Path) -> str:
    """model.onnx -> model_deepstream.onnx, model.fp16.onnx -> model_deepstream.fp16.onnx."""
    stem, _, rest = onnx_path.name.partition(".")
    return f"{stem}_deepstream.{rest}"


def exact_std_config(info: BundleInfo, model: NvinferModel, out: Path, frame_size: tuple[int, int] | None,
                     batch_size: int, gpu_id: int, secondary: SecondaryGie | None = None) -> NvinferConfig:
    """build_nvinfer_config for `model`, with the per-channel std folded into a copy of an ONNX in `out` (exact
    inputs), or for an engine a note with the error it leaves."""
    calib = str(model.calib_file.resolve()) if model.calib_file is not None else None
    cfg = build_nvinfer_config(info, str(model.path.resolve()), frame_size, batch_size, gpu_id, calib, secondary)
    err = max(abs(k - 1.0) for k in cfg.channel_scale)
    if err <= 1e-6:
        return cfg
    if model.is_engine:
        cfg.notes.append(f"the engine cannot take the per-channel std: inputs are off by up to {err:.1%} per channel; "
                         "an ONNX that nvinfer builds (fp32/fp16) gets it folded in by this generator")
        return cfg
    folded = fold_channel_scale(model.path, out / folded_name(model.path), info.input_name, cfg.channel_scale)
    exact = build_nvinfer_config(info, str(folded.resolve()), frame_size, batch_size, gpu_id, calib, secondary)
    exact.notes = [*cfg.notes, f"{folded.name} = the bundle's {model.path.name} with the per-channel std factors "
                               f"{_ini(list(cfg.channel_scale))} folded in (exact normalisation)"]
    if calib is not None:
        exact.notes.append("the calibration cache has no range for the folded Mul's output, so TensorRT keeps that "
                           "one tensor out of INT8")
    return exact


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
                            frame_size: tuple[int, int] | None = None, batch_size: int = 1, gpu_id: int = 0,
                            allow_ungated: bool = False, secondary: SecondaryGie | None = None,
                            ) -> tuple[Path, NvinferConfig]:
    """Write OUT/nvinfer_config.txt (default OUT: BUNDLE/deepstream) and, for an ONNX whose stds differ per channel,
    OUT/<model>_deepstream.onnx. Refuses what nvinfer cannot run at the bundle's precision and, unless
    `allow_ungated`, a bundle without a passed parity gate; `secondary`: nvinfer's secondary mode (SecondaryGie).
    Returns (config path, config)."""
    refuse_frame_crop(frame_size, secondary)
    info, model = read_for_nvinfer(bundle)
    status = require_nvinfer_gate(info, model, allow_ungated)
    out = Path(out) if out is not None else info.root / "deepstream"
    out.mkdir(parents=True, exist_ok=True)
    cfg = exact_std_config(info, model, out, frame_size, batch_size, gpu_id, secondary)
    if status != "passed":
        cfg.notes.append(f"the parity gate of what nvinfer reads {status}; written anyway (allow_ungated)")
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
