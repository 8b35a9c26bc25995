"""End-to-end demo (`python -m edgekd.demo`, `make demo`): a list of stages, each skipped when already done.

Stages: data -> teacher -> labels -> cache -> info -> distill -> eval -> export (INT8 OpenVINO) -> bench (teacher vs
student) -> classify (runtime) -> summary. Each gets the shared `Demo` context and records its outputs in
`demo.outputs`; the later stages run the `edgekd` commands themselves and print them, so they can be copied.

Environment:
  EDGEKD_DEMO_DATA         an ImageFolder to use (default: CIFAR-10 test set via torchvision into ./demo-out/data)
  EDGEKD_DEMO_PER_CLASS    training images per class (default 50; the first N files of each class, sorted by name;
                           the next min(N, 20) are held out)
  EDGEKD_DEMO_OUT          output folder (default ./demo-out)
  EDGEKD_TEACHER_WEIGHTS   local ViT-B-32 weights file (when the model hub is unreachable)
  EDGEKD_RANDOM_TEACHER=1  allow a random teacher when no weights are reachable (same as --random-teacher)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edgekd import EdgekdError
from edgekd._io import atomic_write_json
from edgekd.data.images import is_image_file

log = logging.getLogger(__name__)

TEACHER = "ViT-B-32"
PRETRAINED = "openai"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class Demo:
    """State shared by the stages. `outputs` maps stage name -> what it produced (persisted in demo.json)."""

    out: Path
    per_class: int = 50

    @property
    def holdout(self) -> int:
        return max(5, min(self.per_class, 20))  # 20 of each CIFAR-10 class: the parity gate's 200 images
    random_teacher: bool = False
    device: str = "auto"
    views: int = 1  # the fidelity study: extra views cost teacher time that more images spend better
    batch_size: int = 64
    workers: int = 2
    data: Path | None = None
    heldout: Path | None = None
    student: str = "mobilenetv4_conv_small"
    student_size: int = 128  # CPU-sized; the student's own resolution, independent of the teacher's 224
    epochs: int = 10
    bench_seconds: float = 3.0
    templates: str | None = None  # None: the 80-prompt ensemble on GPU, open_clip's 7 'simple' ones on CPU
    teacher: Any = None  # edgekd.teacher.clip.Teacher once the teacher stage ran
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.out / "demo.json"

    def say(self, msg: str) -> None:
        print(f"[demo] {msg}", flush=True)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Demo], None]
    always: bool = False  # run even when recorded as done (cheap stages that set up context, e.g. the teacher)


# --------------------------------------------------------------------------------------------------- stages


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        return
    try:
        os.symlink(src.absolute(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _subset_imagefolder(src: Path, dst: Path, per_class: int, start: int = 0) -> int:
    """Images [start, start + per_class) (sorted) of each class folder of `src`, linked into `dst/<class>/`."""
    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgekdError(f"EDGEKD_DEMO_DATA={src} has no class sub-folders; it must be an ImageFolder "
                          "(ROOT/<class>/<image>)")
    n = 0
    for c in classes:
        files = sorted(p for p in c.rglob("*") if p.is_file() and is_image_file(p.name))[start:start + per_class]
        for f in files:
            _link_or_copy(f, dst / c.name / f.relative_to(c))
        n += len(files)
    return n


def _cifar10_subset(root: Path, dst: Path, per_class: int, start: int = 0) -> int:
    """Download CIFAR-10 (test split) with torchvision and write images [start, start + per_class) of each class."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as e:
        raise EdgekdError("torchvision is not installed, so CIFAR-10 cannot be downloaded; set EDGEKD_DEMO_DATA to an "
                          "ImageFolder (ROOT/<class>/<image>) instead") from e
    try:
        ds = CIFAR10(str(root), train=False, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise EdgekdError(f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}). Without internet, "
                          "set EDGEKD_DEMO_DATA=/path/to/imagefolder (ROOT/<class>/<image>)") from e
    seen = dict.fromkeys(range(10), 0)
    written = 0
    for i, label in enumerate(ds.targets):
        seen[label] += 1
        if not start < seen[label] <= start + per_class:
            continue
        path = dst / CIFAR10_CLASSES[label] / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            ds[i][0].save(path)
        written += 1
    return written


def stage_data(demo: Demo) -> None:
    """Small deterministic per-class subsets as ImageFolders: training images (the first N of each class) and
    held-out images (the next N/2) for eval, calibration checks and classification."""
    dst = demo.out / "data" / f"subset-{demo.per_class}"
    held = demo.out / "data" / f"heldout-{demo.holdout}"
    src = os.environ.get("EDGEKD_DEMO_DATA")
    if src:
        src_path = Path(src)
        if not src_path.is_dir():
            raise EdgekdError(f"EDGEKD_DEMO_DATA={src}: no such folder")
        n = _subset_imagefolder(src_path, dst, demo.per_class)
        n_held = _subset_imagefolder(src_path, held, demo.holdout, start=demo.per_class)
        origin = str(src_path)
    else:
        demo.say("EDGEKD_DEMO_DATA not set: downloading CIFAR-10 (test split) with torchvision")
        n = _cifar10_subset(demo.out / "data", dst, demo.per_class)
        n_held = _cifar10_subset(demo.out / "data", held, demo.holdout, start=demo.per_class)
        origin = "cifar10-test (torchvision)"
    if n_held == 0:
        raise EdgekdError(f"{origin}: no images beyond the first {demo.per_class} of each class are left for "
                          "held-out evaluation; lower EDGEKD_DEMO_PER_CLASS")
    demo.data, demo.heldout = dst, held
    demo.outputs["data"] = {"path": str(dst), "images": n, "heldout": str(held), "heldout_images": n_held,
                            "origin": origin, "per_class": demo.per_class}
    demo.say(f"data: {n} training + {n_held} held-out images from {origin} -> {dst}, {held}")


def stage_teacher(demo: Demo) -> None:
    """ViT-B-32 with openai weights, or EDGEKD_TEACHER_WEIGHTS; random only when explicitly allowed."""
    from edgekd.teacher.clip import load_teacher

    weights = os.environ.get("EDGEKD_TEACHER_WEIGHTS")
    if demo.random_teacher:
        demo.teacher = _random_teacher(demo, "random teacher requested")
    else:
        try:
            demo.teacher = load_teacher(TEACHER, pretrained=PRETRAINED, weights=weights, device=demo.device)
        except EdgekdError as e:
            log.debug("teacher load failed: %s", e)
            where = (f"EDGEKD_TEACHER_WEIGHTS={weights} could not be loaded ({e})" if weights else
                     f"the model hub did not deliver '{PRETRAINED}' weights and EDGEKD_TEACHER_WEIGHTS is not set")
            raise EdgekdError(
                f"no {TEACHER} teacher weights reachable: {where}. Set EDGEKD_TEACHER_WEIGHTS=/path/to/{TEACHER}-"
                f"{PRETRAINED} weights (safetensors or state dict), or run with --random-teacher / "
                "EDGEKD_RANDOM_TEACHER=1 for a pipeline check with meaningless accuracy") from e
    if demo.templates is None:
        demo.templates = "default" if demo.teacher.device.type == "cuda" else "simple"
        if demo.templates == "simple":
            demo.say("CPU teacher: label packs use open_clip's 7 'simple' templates instead of the 80-prompt ensemble")
    demo.outputs["teacher"] = demo.teacher.describe()
    demo.say(f"teacher: {demo.teacher.teacher_id} ({demo.teacher.spec.source()}) on {demo.teacher.device}")


def _random_teacher(demo: Demo, why: str) -> Any:
    from edgekd.teacher.clip import load_teacher

    bar = "!" * 78
    demo.say(f"\n{bar}\n!! {why.upper()}: {TEACHER} WITH RANDOM WEIGHTS.\n!! Every accuracy number of this demo is "
             f"MEANINGLESS; speed, sizes, export and fidelity are real.\n{bar}")
    return load_teacher(TEACHER, random_init=True, device=demo.device)


def stage_labels(demo: Demo) -> None:
    """Label pack of the dataset classes (template ensemble)."""
    from edgekd.labelpack import load_label_pack
    from edgekd.teacher.labels import build_label_pack, read_class_names

    out = demo.out / "labels.npz"
    classes = read_class_names(data=demo.data)
    if out.is_file():
        pack = load_label_pack(out)
        if (pack.teacher_id == demo.teacher.teacher_id and pack.class_names == classes
                and pack.meta.get("templates") == demo.templates):
            demo.say(f"labels: {out} is up to date")
            demo.outputs["labels"] = {"path": str(out), "classes": len(pack)}
            return
    pack = build_label_pack(demo.teacher, classes, demo.templates, progress=True)
    pack.save(out)
    demo.outputs["labels"] = {"path": str(out), "classes": len(pack)}
    demo.say(f"labels: {len(pack)} classes -> {out}")


def stage_cache(demo: Demo) -> None:
    """Teacher cache, `demo.views` views per image (resumable; a finished cache is reused as is)."""
    from edgekd.teacher.cache import build_cache

    out = demo.out / "cache"
    c = build_cache(demo.data, out, demo.teacher, views=demo.views, batch_size=demo.batch_size,
                    workers=demo.workers, progress=True, templates=demo.templates)
    m = c.manifest
    demo.outputs["cache"] = {"path": str(out), "images": c.num_images, "valid": m["counts"]["valid"],
                             "views": c.num_views, "images_per_s": m["build"].get("images_per_s_last_run")}
    views = f"{c.num_views} view{'s' * (c.num_views != 1)}"
    demo.say(f"cache: {m['counts']['valid']}/{c.num_images} images x {views} -> {out}")


def stage_info(demo: Demo) -> None:
    """Print what the cache holds (`edgekd info`)."""
    from edgekd.info import describe, format_text

    print(format_text(describe(demo.out / "cache")), flush=True)


def _edgekd(demo: Demo, *args: str) -> Any:
    """Run an `edgekd` command in this process, printing it first so it can be copied."""
    from edgekd.cli import cli

    shown = " ".join(a if a and " " not in a else repr(a) for a in args)
    demo.say(f"$ edgekd {shown}")
    return cli.main(list(args), prog_name="edgekd", standalone_mode=False)


def _teacher_args(demo: Demo) -> list[str]:
    if demo.random_teacher:
        return ["--random-teacher"]
    weights = os.environ.get("EDGEKD_TEACHER_WEIGHTS")
    return ["--teacher-weights", weights] if weights else ["--pretrained", PRETRAINED]


def stage_distill(demo: Demo) -> None:
    """Train the student from the cache (resumable: a finished run is kept)."""
    run = demo.out / "run"
    args = ["distill", "--cache", str(demo.out / "cache"), "--student", demo.student, "--img-size",
            str(demo.student_size), "--out", str(run), "--epochs", str(demo.epochs),
            "--batch-size", str(min(50, demo.outputs["cache"]["valid"])),
            "--lr", "2e-3", "--workers", str(demo.workers), "--device", demo.device]
    if (run / "train_state.pt").is_file():
        args.append("--resume")
    _edgekd(demo, *args)
    demo.outputs["distill"] = {"path": str(run)}


def stage_eval(demo: Demo) -> None:
    """Zero-shot, few-shot and teacher fidelity of the student on held-out images, teacher side by side."""
    out = demo.out / "eval.json"
    _edgekd(demo, "eval", str(demo.out / "run"), "--data", str(demo.heldout), "--shots", "1,5", "--device",
            demo.device, "--workers", str(demo.workers), "--out", str(out))
    demo.outputs["eval"] = {"path": str(out)}


def stage_export(demo: Demo) -> None:
    """INT8 OpenVINO bundle (NNCF calibration on the training images; --auto-mixed: NNCF accuracy control keeps the
    layers that flip zero-shot answers in float), gated against the PyTorch student on the held-out images. A failed
    gate keeps the bundle and its report; the demo says so loudly and goes on with it."""
    from edgekd.cli import EXIT_GATE_FAILED
    from edgekd.export.parity import MIN_GATE_IMAGES

    bundle = demo.out / "bundle-openvino-int8"
    args = ["export", str(demo.out / "run"), "--target", "openvino", "--precision", "int8", "--calib",
            str(demo.data), "--val", str(demo.heldout), "--eval", str(demo.out / "eval.json"), "--out", str(bundle),
            "--overwrite", "--auto-mixed"]
    held = demo.outputs["data"]["heldout_images"]
    if held < MIN_GATE_IMAGES:
        demo.say(f"note: only {held} held-out images, fewer than the {MIN_GATE_IMAGES} a parity gate needs: the demo "
                 "accepts a small gate (--small-gate-ok); its verdict says how many images it saw")
        args.append("--small-gate-ok")
    passed = True
    try:
        _edgekd(demo, *args)
    except click.ClickException as e:
        if e.exit_code != EXIT_GATE_FAILED:
            raise
        passed = False
        why = (" With a RANDOM teacher the label embeddings of the classes are nearly identical, so zero-shot "
               "predictions flip on tiny differences; a pretrained teacher gives real margins."
               if demo.random_teacher else "")
        demo.say(f"!! the INT8 bundle FAILED its parity gate ({e.format_message()}).{why} The demo goes on with "
                 "the kept bundle (--allow-ungated below); for deployment, follow the advice above.")
    demo.outputs["export"] = {"path": str(bundle), "gate_passed": passed}


def _ungated_flag(demo: Demo) -> list[str]:
    """--allow-ungated for the stages after an export whose gate failed (the demo shows the whole pipeline)."""
    return [] if demo.outputs.get("export", {}).get("gate_passed", True) else ["--allow-ungated"]


def stage_bench(demo: Demo) -> None:
    """The teacher (fp32, and bf16/fp16 where OpenVINO offers them here) vs the INT8 student on OpenVINO, batch 1, 2
    threads, in one run (no INT8 teacher: that needs calibration time the demo does not spend)."""
    out = demo.out / "bench"
    weights = os.environ.get("EDGEKD_TEACHER_WEIGHTS") or PRETRAINED
    teacher = TEACHER if demo.random_teacher else f"{TEACHER}:{weights}"
    args = ["bench", str(demo.out / "bundle-openvino-int8"), "--teacher", teacher, "--backend", "openvino",
            "--threads", "2", "--batch", "1", "--warmup-s", "1", "--min-time-s", str(demo.bench_seconds),
            "--out", str(out), *_ungated_flag(demo)]
    if demo.random_teacher:
        args.insert(4, "--random-teacher")
    _edgekd(demo, *args)
    demo.outputs["bench"] = {"path": str(out)}


def stage_classify(demo: Demo) -> None:
    """The on-device runtime (numpy + OpenVINO, no torch) on three held-out images."""
    images = [sorted(c.iterdir())[0] for c in sorted(demo.heldout.iterdir())[:3]]
    _edgekd(demo, "classify", str(demo.out / "bundle-openvino-int8"), *map(str, images), "--top-k", "3",
            *_ungated_flag(demo))


def stage_summary(demo: Demo) -> None:
    """Where everything went, and the numbers a user looks at first."""
    from edgekd._io import read_json

    lines = ["", "=" * 78, "edgekd demo summary" + ("  (RANDOM teacher: accuracy meaningless)" if demo.random_teacher
                                                    else ""), "=" * 78]
    for name in ("labels", "cache", "distill", "eval", "export", "bench"):
        if isinstance(demo.outputs.get(name), dict) and "path" in demo.outputs[name]:
            lines.append(f"  {name:<8} {demo.outputs[name]['path']}")
    bundle = read_json(demo.out / "bundle-openvino-int8" / "edgekd.json")
    size_mb = sum((demo.out / "bundle-openvino-int8" / f).stat().st_size for f in bundle["sha256"]) / 1e6
    teacher_mb = sum(p.numel() * p.element_size() for p in demo.teacher.model.visual.parameters()) / 1e6
    lines.append(f"  size     teacher image tower {teacher_mb:.1f} MB (fp32) -> student bundle {size_mb:.1f} MB "
                 f"(INT8, {teacher_mb / size_mb:.0f}x smaller)")
    rows = read_json(demo.out / "bench" / "results.json")["rows"]
    for r in rows:
        if r.get("teacher"):
            continue
        if r["status"] == "ok" and r.get("speedup_vs_teacher"):
            lines.append(f"  speed    {r['model']} ({demo.student_size} px) {r['backend']} {r['precision']} batch "
                         f"{r['batch']}: {r['latency_ms']['p50']:.2f} ms p50; vs the teacher (224 px) in fp32 on "
                         f"{r['backend']} {r['speedup_vs_teacher']:.1f}x, vs the fastest teacher of the bench "
                         f"({r['best_teacher']}) {r['speedup_vs_best_teacher']:.1f}x")
        elif r["status"] != "ok":
            lines.append(f"  speed    {r['model']} {r['backend']}: {r['status']} ({r.get('reason')})")
    fid = read_json(demo.out / "eval.json").get("fidelity") or {}
    if fid:
        lines.append(f"  fidelity student vs teacher on held-out images: mean cosine {fid['mean_cosine']:.3f}, "
                     f"retrieval@1 {fid['retrieval_at_1']:.1%}"
                     + (f", zero-shot top-1 agreement {fid['top1_agreement']:.1%}" if "top1_agreement" in fid else ""))
    from edgekd.runtime.bundle import gate_summary

    lines.append(f"  parity   INT8 vs PyTorch: {gate_summary(bundle)}")
    lines.append("=" * 78)
    print("\n".join(lines), flush=True)


STAGES: list[Stage] = [
    Stage("data", stage_data, always=True),
    Stage("teacher", stage_teacher, always=True),
    Stage("labels", stage_labels, always=True),  # checks its own output; cheap when up to date
    Stage("cache", stage_cache, always=True),  # resumable; a complete cache returns at once
    Stage("info", stage_info, always=True),
    Stage("distill", stage_distill),
    Stage("eval", stage_eval),
    Stage("export", stage_export),
    Stage("bench", stage_bench),
    Stage("classify", stage_classify, always=True),
    Stage("summary", stage_summary, always=True),
]


# --------------------------------------------------------------------------------------------------- driver


def run(demo: Demo, stages: list[Stage] | None = None) -> Demo:
    """Run `stages` in order; a stage recorded as done in demo.json (and not `always`) is skipped."""
    demo.out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}
    if demo.state_file.is_file():
        try:
            done = json.loads(demo.state_file.read_text()).get("done", {})
        except (OSError, ValueError):
            done = {}
    demo.outputs.update(done)
    for st in stages or STAGES:
        if st.name in done and not st.always:
            demo.say(f"{st.name}: done before, skipped")
            continue
        st.run(demo)
        done[st.name] = demo.outputs.get(st.name, True)
        atomic_write_json(demo.state_file, {"done": done})
    return demo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgekd.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-teacher", action="store_true", help="use a random ViT-B-32 (pipeline check only)")
    p.add_argument("--out", default=os.environ.get("EDGEKD_DEMO_OUT", "demo-out"))
    p.add_argument("--per-class", type=int, default=int(os.environ.get("EDGEKD_DEMO_PER_CLASS", "50")))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--student", default=Demo.student, help="timm student (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=Demo.student_size, help="student resolution (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=Demo.epochs)
    p.add_argument("--bench-seconds", type=float, default=Demo.bench_seconds, help="timed seconds per bench row")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    random_teacher = args.random_teacher or os.environ.get("EDGEKD_RANDOM_TEACHER", "") not in ("", "0", "false")
    demo = Demo(Path(args.out), per_class=args.per_class, random_teacher=random_teacher, device=args.device,
                workers=args.workers, student=args.student, student_size=args.img_size, epochs=args.epochs,
                bench_seconds=args.bench_seconds)
    try:
        run(demo)
    except EdgekdError as e:
        print(f"[demo] Error: {e}", file=sys.stderr)
        return 1
    except click.ClickException as e:  # an `edgekd` command the demo ran failed; it says why
        print(f"[demo] Error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("[demo] interrupted; run it again to continue where it stopped", file=sys.stderr)
        return 130
    demo.say(f"done; outputs under {demo.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
