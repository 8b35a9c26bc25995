"""End-to-end demo (`python -m edgekd.demo`, `make demo`): a list of stages, each skipped when already done.

Stages now: data -> teacher -> labels -> cache -> info. Later stages (distill, export, bench, classify) are added by
appending `Stage(name, fn)` to STAGES; each gets the shared `Demo` context and records its outputs in
`demo.outputs`.

Environment:
  EDGEKD_DEMO_DATA         an ImageFolder to use (default: CIFAR-10 test set via torchvision into ./demo-out/data)
  EDGEKD_DEMO_PER_CLASS    images per class (default 20; the first N files of each class, sorted by name)
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
    per_class: int = 20
    random_teacher: bool = False
    device: str = "auto"
    views: int = 2
    batch_size: int = 64
    workers: int = 2
    data: Path | None = None
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


def _subset_imagefolder(src: Path, dst: Path, per_class: int) -> int:
    """First `per_class` images (sorted) of each class folder of `src`, linked into `dst/<class>/`."""
    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgekdError(f"EDGEKD_DEMO_DATA={src} has no class sub-folders; it must be an ImageFolder "
                          "(ROOT/<class>/<image>)")
    n = 0
    for c in classes:
        files = sorted(p for p in c.rglob("*") if p.is_file() and is_image_file(p.name))[:per_class]
        for f in files:
            _link_or_copy(f, dst / c.name / f.relative_to(c))
        n += len(files)
    return n


def _cifar10_subset(root: Path, dst: Path, per_class: int) -> int:
    """Download CIFAR-10 (test split) with torchvision and write the first `per_class` images of each class."""
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
    counts = dict.fromkeys(range(10), 0)
    for i, label in enumerate(ds.targets):
        if counts[label] >= per_class:
            continue
        path = dst / CIFAR10_CLASSES[label] / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            ds[i][0].save(path)
        counts[label] += 1
    return sum(counts.values())


def stage_data(demo: Demo) -> None:
    """Pick a small deterministic per-class subset as an ImageFolder under demo-out/data/subset."""
    dst = demo.out / "data" / f"subset-{demo.per_class}"
    src = os.environ.get("EDGEKD_DEMO_DATA")
    if src:
        src_path = Path(src)
        if not src_path.is_dir():
            raise EdgekdError(f"EDGEKD_DEMO_DATA={src}: no such folder")
        n = _subset_imagefolder(src_path, dst, demo.per_class)
        origin = str(src_path)
    else:
        demo.say("EDGEKD_DEMO_DATA not set: downloading CIFAR-10 (test split) with torchvision")
        n = _cifar10_subset(demo.out / "data", dst, demo.per_class)
        origin = "cifar10-test (torchvision)"
    demo.data = dst
    demo.outputs["data"] = {"path": str(dst), "images": n, "origin": origin, "per_class": demo.per_class}
    demo.say(f"data: {n} images from {origin} -> {dst}")


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
    """Teacher cache with 2 views per image (resumable; a finished cache is reused as is)."""
    from edgekd.teacher.cache import build_cache

    out = demo.out / "cache"
    c = build_cache(demo.data, out, demo.teacher, views=demo.views, batch_size=demo.batch_size,
                    workers=demo.workers, progress=True, templates=demo.templates)
    m = c.manifest
    demo.outputs["cache"] = {"path": str(out), "images": c.num_images, "valid": m["counts"]["valid"],
                             "views": c.num_views, "images_per_s": m["build"].get("images_per_s_last_run")}
    demo.say(f"cache: {m['counts']['valid']}/{c.num_images} images x {c.num_views} views -> {out}")


def stage_info(demo: Demo) -> None:
    """Print what the cache holds (`edgekd info`)."""
    from edgekd.info import describe, format_text

    print(format_text(describe(demo.out / "cache")), flush=True)


STAGES: list[Stage] = [
    Stage("data", stage_data, always=True),
    Stage("teacher", stage_teacher, always=True),
    Stage("labels", stage_labels, always=True),  # checks its own output; cheap when up to date
    Stage("cache", stage_cache, always=True),  # resumable; a complete cache returns at once
    Stage("info", stage_info, always=True),
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
    p.add_argument("--per-class", type=int, default=int(os.environ.get("EDGEKD_DEMO_PER_CLASS", "20")))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    random_teacher = args.random_teacher or os.environ.get("EDGEKD_RANDOM_TEACHER", "") not in ("", "0", "false")
    demo = Demo(Path(args.out), per_class=args.per_class, random_teacher=random_teacher, device=args.device,
                workers=args.workers)
    try:
        run(demo)
    except EdgekdError as e:
        print(f"[demo] Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[demo] interrupted; run it again to continue where it stopped", file=sys.stderr)
        return 130
    demo.say(f"done; outputs under {demo.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
