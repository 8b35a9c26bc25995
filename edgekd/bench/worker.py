"""What runs inside one benchmark subprocess: `python -m edgekd.bench.worker SPEC.json RESULT.json`.

A spec is {"task": "measure" | "export", "model": ModelSpec dict, "backend", "batch", "threads", "warmup_s",
"min_time_s", "min_iters", "throughput_s", "device", "mode": "model" | "e2e", "power": bool, "onnx": path}. The
result (one row of results.json, or the export's outcome) is written as JSON to RESULT.json; a failure is written
there too, as {"status": "failed", "reason": "<error type>: <message>"}. torch is imported only for the torch
backend and for exports, so an onnxruntime/OpenVINO measurement carries no torch memory or threads.
"""

from __future__ import annotations

import io
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json
from edgekd.bench.models import CAMERA_FRAME, ModelSpec, model_file_mb
from edgekd.bench.teacher_precisions import OPENVINO_HINTS
from edgekd.bench.timer import Timer

log = logging.getLogger(__name__)

E2E_FRAME = CAMERA_FRAME[::-1]  # synthetic camera frame (W, H) for --e2e
E2E_TOPK = 5


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m edgekd.bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, out_path = argv
    spec = read_json(spec_path)
    try:
        task = {"export": export, "quantize": quantize_teacher}.get(spec.get("task"), measure)
        result = task(spec)
    except Exception as e:  # the reporting boundary: every failure becomes a 'failed' row with its message
        msg = " ".join(str(e).split()) or repr(e)
        result = {"status": "failed", "reason": f"{type(e).__name__}: {msg[:500]}",
                  "traceback": traceback.format_exc()[-3000:]}
    atomic_write_json(out_path, result)
    return 0


# --- building models ----------------------------------------------------------------------------------------------

def build_torch_module(model: ModelSpec, device: str = "cpu") -> Any:
    """The model as a torch module in eval mode on `device`: [B,3,H,W] -> [B,D] unit vectors."""
    import torch
    import torch.nn.functional as F

    if model.kind == "teacher":
        from edgekd.teacher.clip import load_teacher

        t = model.teacher or {}
        teacher = load_teacher(t["name"], pretrained=t.get("pretrained"), weights=t.get("weights"),
                               random_init=bool(t.get("random_init")), device=device)

        class TeacherImageTower(torch.nn.Module):
            """open_clip visual tower + L2 normalisation (what the teacher cache computes per image)."""

            def __init__(self, visual: torch.nn.Module):
                super().__init__()
                self.visual = visual

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return F.normalize(self.visual(x), dim=-1)

        module = TeacherImageTower(teacher.model.visual)
        del teacher  # the text tower is not benchmarked; drop it so RSS is the image tower's
    elif model.kind == "run":
        from edgekd.students.io import load_student

        module = load_student(model.source)
    elif model.kind == "timm":
        from edgekd.students.model import create_student

        module = create_student(model.source, model.embed_dim or 512, img_size=model.img_size[0])
    else:
        raise EdgekdError(f"{model.source}: a {model.kind} is an exported model and has no torch form")
    return module.eval().requires_grad_(False).to(device)


def export_to_onnx(module: Any, path: Path, img_size: tuple[int, int]) -> Path:
    """fp32 ONNX with a dynamic batch axis (`pixels` -> `embedding`), via edgekd.export when it is installed."""
    import torch

    # nn.MultiheadAttention's inference fast path (open_clip ViTs) has no ONNX symbolic; export the plain math
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _export_to_onnx(module, path, img_size)
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _export_to_onnx(module: Any, path: Path, img_size: tuple[int, int]) -> Path:
    try:
        from edgekd.export.onnx import export_onnx
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        return Path(export_onnx(module, path, input_shape=(1, 3, *img_size), input_name="pixels",
                                output_names=("embedding",), dynamic_batch=True, opset=17))
    import torch

    from edgekd._io import atomic_path

    x = torch.zeros(1, 3, *img_size)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(module, (x,), str(tmp), input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return path


def export(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the torch model and write it as ONNX to spec["onnx"] (for the onnxruntime/OpenVINO rows)."""
    model = ModelSpec.from_dict(spec["model"])
    t0 = time.perf_counter()
    module = build_torch_module(model, "cpu")
    path = export_to_onnx(module, Path(spec["onnx"]), model.img_size)
    return {"status": "ok", "onnx": str(path), "export_s": time.perf_counter() - t0,
            "params_m": sum(p.numel() for p in module.parameters()) / 1e6}


def quantize_teacher(spec: dict[str, Any]) -> dict[str, Any]:
    """The teacher's fp32 ONNX -> INT8 for spec["target"] (onnx | openvino) with edgekd's export targets, calibrated
    on spec["calib"] images rendered with the teacher's own preprocessing; written into spec["out_dir"]."""
    from edgekd.export.calibration import load_image_set
    from edgekd.export.targets import ExportRequest, get_target
    from edgekd.teacher.clip import load_teacher

    model = ModelSpec.from_dict(spec["model"])
    t = model.teacher or {}
    pp = load_teacher(t["name"], pretrained=t.get("pretrained"), weights=t.get("weights"),
                      random_init=bool(t.get("random_init")), device="cpu").preprocess
    t0 = time.perf_counter()
    images = load_image_set(spec["calib"], pp, 128, "--calib")
    req = ExportRequest(student=None, preprocess=pp, out_dir=Path(spec["out_dir"]), precision="int8",
                        onnx_path=Path(spec["onnx"]), calib=pp.normalize(images.frames),
                        options={"model_type": "transformer"})
    result = get_target(spec["target"]).build(req)
    return {"status": "ok", "file": str(Path(spec["out_dir"]) / result.files["model"]),
            "calibration_images": len(images), "quantize_s": time.perf_counter() - t0, "metadata": result.metadata}


# --- measuring ----------------------------------------------------------------------------------------------------

class _Loaded(NamedTuple):
    """A model loaded for timing: `infer()` runs the timed input, `infer_array(x)` any input -> embeddings."""

    infer: Callable[[], Any]
    infer_array: Callable[[np.ndarray], np.ndarray]
    sync: Callable[[], Any] | None = None  # torch.cuda.synchronize on a CUDA device
    torch_cuda: bool = False
    params_m: float | None = None
    backend: Any = None  # the runtime backend (None for torch)
    classifier: Any = None  # the runtime's OpenVocabClassifier (e2e rows of bundles)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One row of results.json: import the backend, load the model, time it (model only or end to end), describe it.

    Every step runs in the order the row's numbers assume: import, RSS before load, load, timing, peak memory.
    """
    model = ModelSpec.from_dict(spec["model"])
    backend, batch, threads = spec["backend"], int(spec["batch"]), spec.get("threads")
    mode = spec.get("mode", "model")
    import_s = _import_backend(backend)
    rss_start = _peak_rss_mb()
    t0 = time.perf_counter()
    if backend == "torch":
        loaded = _load_torch(model, spec, batch, threads)
    else:
        loaded = _load_runtime(model, spec, backend, batch, threads, mode)
    load_s = time.perf_counter() - t0
    timer = Timer(float(spec.get("warmup_s", 2.0)), float(spec.get("min_time_s", 5.0)),
                  int(spec.get("min_iters", 10)), sync=loaded.sync)
    if mode == "e2e":
        timing, power, extra = _time_e2e(timer, model, loaded, bool(spec.get("power")))
        thr = None
    else:
        extra: dict[str, Any] = {}
        timing, power = _timed(timer, loaded.infer, bool(spec.get("power")))
        thr = timer.throughput(loaded.infer, batch, float(spec.get("throughput_s", timer.min_time_s / 2)))
    lat = timing.stats_ms()
    images = batch * len(timing.times_s)
    if power:
        power["energy_mj_per_image"] = power["avg_mw"] * timing.elapsed_s / images
    row = {
        "status": "ok", "reason": None, "mode": mode,
        "latency_ms": lat,
        "throughput_ips": thr["ips"] if thr else 1e3 / lat["mean"],
        "throughput_mode": "pipelined back-to-back calls, one sync at the end" if thr else "1 / mean e2e latency",
        "latency_ips": batch * 1e3 / lat["mean"],
        "first_run_ms": timing.first_call_s * 1e3,
        "warmup_iters": timing.warmup_iters,
        "load_s": load_s,
        "import_s": import_s,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_load_mb": rss_start,
        "peak_gpu_mb": _peak_gpu_mb(loaded.torch_cuda),
        "model_mb": model_file_mb(model, spec.get("engine_file") or spec.get("onnx"))
        if backend != "torch" or model.kind == "run" else None,
        "params_m": loaded.params_m,
        "runtime_precision": getattr(loaded.backend, "inference_precision", None) if backend != "torch" else None,
        "power": power,
        "pid": os.getpid(),
        **extra,
    }
    if backend == "torch" and row["model_mb"] is None and loaded.params_m is not None:
        row["model_mb"] = loaded.params_m * 1e6 * 4 / 2**20  # fp32 parameters in memory (no file: built from a name)
    return row


def _import_backend(backend: str) -> float:
    """Import what `backend` runs on (torch + timm, or the runtime's module); -> seconds (not counted as load)."""
    t_import = time.perf_counter()
    if backend == "torch":
        import timm  # noqa: F401  (import cost is not load time)
        import torch  # noqa: F401
    else:
        from edgekd._optional import require
        from edgekd.runtime.backends import BACKEND_MODULES

        require(BACKEND_MODULES.get(backend, backend), purpose=f"the {backend} backend")
    return time.perf_counter() - t_import


def _load_torch(model: ModelSpec, spec: dict[str, Any], batch: int, threads: int | None) -> _Loaded:
    """The model as a torch module on spec["device"], with its timed input [batch, ...] already on the device."""
    import torch

    from edgekd.devices import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(spec.get("device") or "auto")
    module = build_torch_module(model, str(device))
    params_m = sum(p.numel() for p in module.parameters()) / 1e6
    torch_cuda = device.type == "cuda"
    sync = None
    if torch_cuda:
        sync = torch.cuda.synchronize
        torch.cuda.reset_peak_memory_stats(device)
    x_t = torch.from_numpy(_input(model, batch)).to(device)

    # a bf16 teacher: autocast, as a user would run it (edgekd.bench.teacher_precisions checked it is native)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=model.precision == "bf16")

    def infer() -> Any:
        with torch.inference_mode(), autocast:
            return module(x_t)

    def infer_array(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast:
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return _Loaded(infer, infer_array, sync, torch_cuda, params_m)


def _load_runtime(model: ModelSpec, spec: dict[str, Any], backend: str, batch: int, threads: int | None,
                  mode: str) -> _Loaded:
    """The model file on a runtime backend (a bundle's e2e row: the runtime's own classifier, as an app loads it),
    with its timed input [batch, ...] in the backend's input dtype."""
    from edgekd.runtime.backends import create_backend

    file = spec.get("engine_file") or spec.get("onnx") or model.file
    clf = None
    if mode == "e2e" and model.kind == "bundle":
        clf = _load_classifier(model, backend, threads, spec.get("device_engine"))
        be = clf.backend
    else:
        hint = OPENVINO_HINTS.get(model.precision) if model.is_teacher else None
        be = create_backend(file, backend, threads=threads, device=spec.get("device_engine"),
                            inference_precision=hint)
    x_np = _input(model, batch, be.input_dtype)
    out_name = "embedding" if "embedding" in be.output_names else be.output_names[0]

    def infer() -> Any:
        return be.run(x_np)

    def infer_array(x: np.ndarray) -> np.ndarray:
        return be.run(x)[out_name]

    return _Loaded(infer, infer_array, backend=be, classifier=clf)


def _time_e2e(timer: Timer, model: ModelSpec, loaded: _Loaded, power: bool
              ) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    """Time the open-vocabulary path on one JPEG frame. -> (timing, power summary or None, the row's e2e fields:
    path, per-stage medians, frame size, label source)."""
    clf = loaded.classifier
    fn, stages, label_source = _e2e_runtime(clf) if clf is not None else _e2e(model, loaded.infer_array)
    extra: dict[str, Any] = {}
    extra["e2e_path"] = "OpenVocabClassifier" if clf is not None else "bench (same steps as the runtime)"
    timing, power_summary = _timed(timer, fn, power)
    n = len(timing.times_s)  # per-stage medians over the timed calls only (not the warm-up)
    extra["stages_ms"] = {k: float(np.median(v[-n:]) * 1e3) for k, v in stages.items()}
    # a camera hands over decoded frames: the per-frame cost is everything after decode, per call
    frame = [p + i + s for p, i, s in zip(stages["preprocess"][-n:], stages["infer"][-n:], stages["score"][-n:])]
    extra["stages_ms"]["frame"] = float(np.median(frame) * 1e3)
    extra["frame"] = list(E2E_FRAME)
    extra["labels"] = label_source
    return timing, power_summary, extra


def _timed(timer: Timer, fn: Any, power: bool) -> tuple[Any, dict[str, Any] | None]:
    from edgekd.bench import tegrastats

    if power and tegrastats.is_available():
        with tegrastats.TegrastatsSampler() as sampler:
            timing = timer.measure(fn)
        return timing, sampler.summary()
    return timer.measure(fn), None


def _input(model: ModelSpec, batch: int, dtype: Any = np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = model.input_shape(batch)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype)


def _e2e(model: ModelSpec, infer_array: Any) -> tuple[Any, dict[str, list[float]], str]:
    """The open-vocabulary runtime path on one JPEG frame: decode -> resize/normalise -> infer -> score -> top-k.
    Returns the callable, its per-stage time lists (seconds) and where the label embeddings came from."""
    from PIL import Image

    from edgekd.preprocess import Preprocess

    jpeg = synthetic_jpeg(*E2E_FRAME)
    pp = Preprocess.from_dict(model.preprocess) if model.preprocess else Preprocess()
    pp = pp.with_size(model.img_size)
    uint8_input = model.input_dtype == "uint8"
    probe = pp.render(Image.new("RGB", E2E_FRAME))[None]
    dim = infer_array(probe if uint8_input else pp.normalize(probe)).shape[-1]  # the model's own embedding size
    labels, scale, label_source = _label_matrix(model.labels, dim)
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": [], "score": []}

    def run() -> np.ndarray:
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(jpeg)) as im:
            img = im.convert("RGB")
        t1 = time.perf_counter()
        px = pp.render(img)[None]
        x = px if uint8_input else pp.normalize(px)
        t2 = time.perf_counter()
        emb = infer_array(x)
        t3 = time.perf_counter()
        emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        scores = scale * emb @ labels.T
        top = np.argpartition(-scores[0], min(E2E_TOPK, scores.shape[1] - 1))[:E2E_TOPK]
        top = top[np.argsort(-scores[0, top])]
        t4 = time.perf_counter()
        for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("infer", t2, t3), ("score", t3, t4)):
            stages[k].append(b - a)
        return top

    return run, stages, label_source


def _label_matrix(labels_path: str | None, dim: int) -> tuple[np.ndarray, float, str]:
    """[C, D] label embeddings: the model's label pack when it has one, else 1000 random unit vectors."""
    if labels_path and Path(labels_path).is_file():
        from edgekd.labelpack import load_label_pack

        pack = load_label_pack(labels_path)
        return pack.embeddings, pack.logit_scale, f"{Path(labels_path).name} ({len(pack)} classes)"
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, dim)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), 100.0, "random (1000 classes)"


def _load_classifier(model: ModelSpec, backend: str, threads: int | None, device: str | None) -> Any:
    """OpenVocabClassifier of a bundle; a bundle without labels gets 1000 random classes (scoring cost is real)."""
    from edgekd.labelpack import LabelPack
    from edgekd.runtime.classifier import OpenVocabClassifier

    clf = OpenVocabClassifier.load(model.source, backend=backend, threads=threads, device=device)
    if not clf.class_names:
        emb, scale, _ = _label_matrix(None, clf.embed_dim)
        clf.set_labels(LabelPack([f"class{i}" for i in range(len(emb))], emb, meta={"logit_scale": scale}))
    return clf


def _e2e_runtime(clf: Any) -> tuple[Any, dict[str, list[float]], str]:
    """Like `_e2e`, through the runtime's OpenVocabClassifier: prepare -> embed_inputs -> label_set.predict."""
    from PIL import Image

    jpeg = synthetic_jpeg(*E2E_FRAME)
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": [], "score": []}
    label_source = f"{len(clf.class_names)} classes" + (" (random)" if clf.class_names[0] == "class0" else "")

    def run() -> Any:
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(jpeg)) as im:
            img = im.convert("RGB")
        t1 = time.perf_counter()
        x = clf.prepare(img)[None]
        t2 = time.perf_counter()
        emb = clf.embed_inputs(x)
        t3 = time.perf_counter()
        preds = clf.label_set.predict(emb, E2E_TOPK)
        t4 = time.perf_counter()
        for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("infer", t2, t3), ("score", t3, t4)):
            stages[k].append(b - a)
        return preds

    return run, stages, label_source


def synthetic_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """A camera-like frame (smooth gradients + noise) encoded as JPEG, so decode cost is realistic."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], -1)
    img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: VmHWM of this process image (ru_maxrss would include the
    parent's RSS, inherited through fork before exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024  # bytes on macOS, KiB on Linux


def _peak_gpu_mb(torch_cuda: bool) -> float | None:
    if torch_cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    if shutil.which("nvidia-smi") is None:  # no driver: and no fork from a process whose runtime threads run (a
        return None                          # fork child of an OpenVINO worker once hung here before its exec)
    try:  # engines allocate outside torch: ask the driver what this process holds
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, mem = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(mem.strip())
    return None


if __name__ == "__main__":
    sys.exit(main())
