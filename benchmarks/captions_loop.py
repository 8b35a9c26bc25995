"""VLM-KD's loop closed end to end on CIFAR-10-LT: `edgekd captions` -> `edgekd cache --captions` ->
`edgekd distill --recipe vlmkd` (with and without the caption term) -> `edgekd eval --train-index` (many/medium/few).

Every stage is the real CLI in its own process (`python -m edgekd ...`), so stage times include start-up and imports.
What is a stand-in, plainly:
* The captions come from a **deterministic template server** started here on 127.0.0.1 (OpenAI-compatible chat API):
  it describes each image's colour and texture statistics from the pixels it is sent (never the label). It exercises
  the real endpoint backend (JPEG data URLs, concurrency, post-processing, resume files) but is not a VLM: a real
  VLM on this CPU takes ~36 s per image (benchmarks/results/captions/), i.e. hours for this subset.
* The class descriptions (`edgekd describe`, text-only requests) come from the same server: it finds the class name
  in the prompt (one of the built-in describe templates) and puts it into a fixed sentence per template. It is
  **not a language model**; what is real is the CLI path: requests, clean-up, the per-class cache (the stage runs
  `edgekd describe` twice, the second run sends no request) and `edgekd labels --descriptions` reading the file.
* The teacher is ViT-B-32 with **random weights** (no model hub here), the student is randomly initialised too, so
  **every accuracy here is meaningless**; the times, sizes and throughputs are real.

Long-tailed subset as in CIFAR-10-LT: class i (sorted names) keeps int(head * imbalance^(-i/(C-1))) training
images; the test set is balanced. The default head (200) is the smallest that puts classes in VLM-KD's "many"
bucket (> 100 training images) and keeps the run to ~10 minutes on 2 loaded cores.

    python benchmarks/captions_loop.py                     # CIFAR-10 from ../shared/assets (unpacked into /tmp)
    python benchmarks/captions_loop.py --data DIR          # DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg
    python benchmarks/captions_loop.py --stages describe   # only describe + labels (~1 min), merged into the results
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "captions_loop"
BUCKETS = ("many", "medium", "few")
ARMS = {"with_captions": [], "without_captions": ["--w-capcon", "0"]}
STAGE_GROUPS = ("loop", "describe")
NOTE = ("random-weight teacher and student, captions and class descriptions from a deterministic template server "
        "(not a VLM, not a language model): accuracies are meaningless; times, sizes and throughputs are real")
# The stand-in's answer to each built-in describe template (edgekd.textgen.prompts.DESCRIBE_PROMPTS), in order.
DESCRIPTION_PHRASES = (
    "{a_label} seen whole near the centre of the frame, in its usual outline and colours.",
    "{a_label} is told apart from similar things by the shape and proportions of its characteristic parts.",
    "{a_label} has its familiar shape, colours and parts and is usually seen in its typical surroundings.",
)


# --- data ---------------------------------------------------------------------------------------------------------


def find_cifar10(data: str | None, assets: Path, unpack_to: Path) -> Path:
    """The CIFAR-10 ImageFolder root (train/ + test/): --data, or unpacked from the shared assets."""
    if data is None:
        script = assets / "unpack-cifar10.sh"
        if not script.is_file():
            sys.exit(f"Error: no CIFAR-10: pass --data DIR (train/<class>/, test/<class>/) or --assets DIR with "
                     f"unpack-cifar10.sh ({script} not found)")
        out = subprocess.run(["bash", str(script), str(unpack_to)], check=True, capture_output=True, text=True)
        data = out.stdout.strip().splitlines()[-1]
    root = Path(data)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        sys.exit(f"Error: {root} needs train/<class>/ and test/<class>/ folders")
    return root


def lt_counts(classes: list[str], head: int, imbalance: float) -> dict[str, int]:
    """CIFAR-LT profile: class i keeps int(head * imbalance^(-i/(C-1))) images (at least 1)."""
    c = len(classes)
    return {name: max(1, int(head * imbalance ** (-i / (c - 1)))) for i, name in enumerate(classes)}


def link_subset(src: Path, dst: Path, counts: dict[str, int]) -> None:
    """The first counts[class] images (sorted) of each src/<class>/ as symlinks in dst/<class>/."""
    for name, n in counts.items():
        files = sorted(p for p in (src / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) < n:
            sys.exit(f"Error: {src / name} has {len(files)} images, {n} wanted")
        (dst / name).mkdir(parents=True, exist_ok=True)
        for f in files[:n]:
            if not (dst / name / f.name).exists():
                os.symlink(f.resolve(), dst / name / f.name)


# --- the stand-in captioner -----------------------------------------------------------------------------------


def _colour(rgb: np.ndarray) -> str:
    r, g, b = rgb
    if max(rgb) - min(rgb) < 25:
        return "grey" if 60 < r < 190 else ("white" if r >= 190 else "black")
    if r > g and r > b:
        return "orange" if g > 0.6 * r else "red"
    if g >= r and g > b:
        return "yellowish green" if r > 0.8 * g else "green"
    return "purple" if r > 0.8 * b else "blue"


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _compare(a: float, b: float, more: str, less: str) -> str:
    return more if a > b + 10 else (less if a < b - 10 else "about as bright as")


def template_caption(img: Image.Image) -> str:
    """A deterministic description of an image's pixel statistics (no label, no model): what the stand-in answers."""
    a = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.float32)
    centre, border = a[8:24, 8:24].reshape(-1, 3).mean(0), np.concatenate([a[:4], a[-4:]]).reshape(-1, 3).mean(0)
    grey = a.mean(2)
    lum, sat = grey.mean(), (a.max(2) - a.min(2)).mean()
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    light = "bright" if lum > 150 else ("dark" if lum < 80 else "evenly lit")
    tone = "vivid" if sat > 60 else ("muted" if sat < 25 else "moderately saturated")
    texture = "busy and detailed" if edges > 30 else ("smooth" if edges < 12 else "moderately textured")
    vertical = _compare(grey[:16].mean(), grey[16:].mean(), "lighter than", "darker than")
    horizontal = _compare(grey[:, :16].mean(), grey[:, 16:].mean(), "lighter than", "darker than")
    return (f"{_article(_colour(centre)).capitalize()} object in the centre against {_article(_colour(border))} "
            f"background. The scene is {light}, {tone} and {texture}; the top is {vertical} the bottom and the left "
            f"side {horizontal} the right.")


def template_description(prompt: str) -> str:
    """A fixed sentence around the class name that one of the built-in describe templates asks about (no model)."""
    from edgekd.textgen.prompts import DESCRIBE_PROMPTS, LABEL

    for template, phrase in zip(DESCRIBE_PROMPTS, DESCRIPTION_PHRASES):
        m = re.fullmatch(re.escape(template).replace(re.escape(LABEL), "(.+?)"), prompt.strip())
        if m:
            return phrase.format(a_label=_article(m.group(1)).capitalize())
    raise ValueError(f"the stand-in answers only the built-in describe templates, not {prompt[:80]!r}")


def stand_in_answer(content: str | list[dict]) -> tuple[str, str]:
    """(kind, answer) for the last user message: text only -> a class description, with an image -> a caption."""
    if isinstance(content, str):
        return "describe", template_description(content)
    url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
    return "caption", template_caption(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def start_template_server() -> tuple[ThreadingHTTPServer, str]:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers stand_in_answer(); `server.served` counts
    the answers of each kind."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                kind, text = stand_in_answer(body["messages"][-1]["content"])
            except ValueError as e:  # a 4xx stops the client with this message (never retried into a table row)
                status, reply = 400, {"error": {"message": str(e)}}
            else:
                with lock:
                    httpd.served[kind] += 1
                status, reply = 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.served = Counter()
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


# --- stages -----------------------------------------------------------------------------------------------------


def run_stage(name: str, args: list[str], work: Path, log: dict) -> str:
    """`python -m edgekd ARGS`, timed; a failure stops the benchmark with the stage's output (never a table row)."""
    print(f"== [{name}] edgekd {' '.join(args)}".replace(str(work), "WORK"), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - t0
    text = (proc.stdout + proc.stderr).replace(str(work), "WORK")
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"{name}.txt").write_text(text)
    if proc.returncode != 0:
        sys.exit(f"Error: stage {name} failed (exit {proc.returncode}):\n{text[-3000:]}")
    lines = [ln for ln in text.splitlines() if ln.strip() and not re.search(r"warn|^NOTE", ln, re.IGNORECASE)]
    log[name] = {"seconds": round(seconds, 1), "command": "edgekd " + " ".join(args).replace(str(work), "WORK"),
                 "output_tail": lines[-3:]}
    print(f"   {seconds:.1f} s: {lines[-1] if lines else ''}", flush=True)
    return text


def dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 3)


def distill_figures(run: Path) -> dict:
    """Steps, mean images/s and the last logged loss parts from the run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r.get("phase")]
    skip = {"step", "epoch", "lr", "images_per_s", "phase", "time"}
    parts = [k for k in rows[-1] if k not in skip and rows[-1][k] not in ("", None)]
    ips = [float(r["images_per_s"]) for r in rows[1:] or rows]  # the first window includes start-up
    return {"steps": int(rows[-1]["step"]), "train_images_per_s_mean": round(float(np.mean(ips)), 1),
            "first_loss_parts": {k: float(rows[0][k]) for k in parts},
            "last_loss_parts": {k: float(rows[-1][k]) for k in parts},
            "model_safetensors_mb": round((run / "model.safetensors").stat().st_size / 1e6, 3),
            "run_dir_mb": dir_mb(run)}


def run_loop(a: argparse.Namespace, work: Path, url: str, classes: list[str], counts: dict[str, int]) -> dict:
    """captions -> cache -> distill (with and without the caption term) -> eval: the results without environment."""
    from edgekd.data.captions import load_captions
    from edgekd.evaluation.metrics import long_tail_bucket

    t0 = time.perf_counter()
    stages: dict = {}
    dev = ["--device", a.device]
    run_stage("captions", ["captions", "--data", str(work / "train"), "--out", str(work / "captions.jsonl"),
                           "--endpoint", url, "--model", "template-stand-in", "--concurrency", "4",
                           "--image-side", "64", "--no-progress"], work, stages)
    cap_meta = json.loads((work / "captions.jsonl.meta.json").read_text())
    run_stage("cache", ["cache", "--data", str(work / "train"), "--out", str(work / "cache"), "--teacher", a.teacher,
                        "--random-teacher", "--captions", str(work / "captions.jsonl"), "--templates", "simple",
                        "--workers", "1", "--no-progress", *dev], work, stages)
    manifest = json.loads((work / "cache" / "manifest.json").read_text())
    arms: dict = {}
    for arm, extra in ARMS.items():
        run = work / f"run_{arm}"
        run_stage(f"distill_{arm}", ["distill", "--cache", str(work / "cache"), "--student", a.student,
                                     "--out", str(run), "--recipe", "vlmkd", "--img-size", str(a.img_size),
                                     "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--workers", "1",
                                     "--log-every", "5", "--no-progress", *dev, *extra], work, stages)
        out = work / f"eval_{arm}.json"
        run_stage(f"eval_{arm}", ["eval", str(run), "--data", str(work / "test"), "--train-index",
                                  str(work / "cache"), "--no-teacher", "--shots", "0", "--workers", "1",
                                  "--out", str(out), *dev], work, stages)
        ev = json.loads(out.read_text())
        arms[arm] = {"distill": distill_figures(run), "eval_seconds": ev["seconds"],
                     "eval_images_per_s": round(ev["data"]["evaluated"] / ev["seconds"], 1),
                     "zero_shot_top1": ev["zero_shot"]["student"]["all"]["top1"],
                     "long_tail": ev["long_tail"]["student"]}
    return {
        "setup": {"data": "CIFAR-10 (shared assets)", "classes": classes, "train_counts": counts,
                  "train_images": sum(counts.values()), "buckets": {c: long_tail_bucket(n) for c, n in counts.items()},
                  "imbalance": a.imbalance, "head": a.head, "test_per_class": a.test_per_class,
                  "teacher": f"{a.teacher} (random weights)", "student": a.student, "img_size": a.img_size,
                  "epochs": a.epochs, "batch_size": a.batch_size, "recipe": "vlmkd",
                  "captioner": "deterministic template server on 127.0.0.1 (pixel statistics, no label)"},
        "stages": stages,
        "captions": {"counts": cap_meta["counts"], "images_per_s": cap_meta.get("images_per_s_last_run"),
                     "jsonl_kb": round((work / "captions.jsonl").stat().st_size / 1e3, 1),
                     "distinct": len({c for r in load_captions(work / "captions.jsonl").values() for c in r}),
                     "example": json.loads((work / "captions.jsonl").read_text().splitlines()[0])["captions"]},
        "cache": {"images_per_s": manifest["build"].get("images_per_s_last_run"), "size_mb": dir_mb(work / "cache"),
                  "caption_embeds_mb": round((work / "cache" / "caption_embeds.npy").stat().st_size / 1e6, 3),
                  "images_with_captions": manifest["captions"]["images_with_captions"],
                  "embed_dim": manifest.get("embed_dim") or manifest.get("teacher", {}).get("embed_dim")},
        "arms": arms,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }


def run_describe(a: argparse.Namespace, work: Path, url: str, server: ThreadingHTTPServer) -> tuple[dict, dict]:
    """`edgekd describe` for the classes of WORK/train against the stand-in, the same command again (answered from
    its per-class cache), then `edgekd labels --descriptions` reading the file: (stage log, figures)."""
    from edgekd.bench.env import load_average
    from edgekd.labelpack import load_label_pack
    from edgekd.teacher.prompts import DESCRIPTION_TEMPLATE

    load_start, stages = load_average(), {}
    out, pack_path = work / "descriptions.json", work / "labels_with_descriptions.npz"
    cmd = ["describe", "--data", str(work / "train"), "--out", str(out), "--endpoint", url,
           "--model", "template-stand-in", "--concurrency", "4", "--no-progress"]
    requests = []
    for name in ("describe", "describe_rerun"):
        before = server.served["describe"]
        run_stage(name, cmd, work, stages)
        requests.append(server.served["describe"] - before)
    run_stage("labels_with_descriptions", ["labels", "--data", str(work / "train"), "--templates", "simple",
                                           "--descriptions", str(out), "--out", str(pack_path), "--teacher",
                                           a.teacher, "--random-teacher", "--device", a.device], work, stages)
    descriptions = json.loads(out.read_text())
    pack = load_label_pack(pack_path)
    unread = [(c, d) for c, ds in descriptions.items() for d in ds
              if DESCRIPTION_TEMPLATE.format(name=c.replace("_", " "), description=d) not in pack.prompts.get(c, [])]
    if unread or requests[1]:
        sys.exit(f"Error: descriptions not in the label pack ({unread[:2]}) or a re-run that asked the server again "
                 f"({requests[1]} requests)")
    first = next(iter(descriptions))
    return stages, {
        "describer": "deterministic template server on 127.0.0.1 (class name from the prompt + a fixed sentence per "
                     "template; not a language model)",
        "classes": len(descriptions), "descriptions": sum(map(len, descriptions.values())),
        "requests": {"describe": requests[0], "describe_rerun": requests[1]},
        "json_bytes": out.stat().st_size, "example": {first: descriptions[first]},
        "labels": {"templates": "simple", "prompts": sum(map(len, pack.prompts.values())),
                   "prompts_from_descriptions": pack.meta.get("num_descriptions"),
                   "npz_kb": round(pack_path.stat().st_size / 1e3, 1), "embed_dim": pack.embed_dim},
        "load_avg": {"start": load_start, "end": load_average()},
        "measured": time.strftime("%Y-%m-%d"),
    }


def load_results(path: Path) -> dict:
    """The results of an earlier full run, to merge a describe-only run into."""
    if not path.is_file():
        sys.exit(f"Error: {path} not found: run the loop first (without --stages, or --stages loop,describe)")
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="CIFAR-10 ImageFolder root with train/ and test/ (default: unpack --assets)")
    ap.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets",
                    help="folder with cifar10-jpg.tar.gz + unpack-cifar10.sh [default: REPO/../shared/assets]")
    ap.add_argument("--unpack-to", type=Path, default=Path("/tmp/edgekd-data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-captions-loop"), help="artifacts (deleted first)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--stages", default=",".join(STAGE_GROUPS),
                    help="comma-separated: loop (captions -> cache -> distill -> eval), describe (describe, its "
                         "cached re-run, labels --descriptions); without loop, merged into the existing results")
    ap.add_argument("--head", type=int, default=200, help="training images of the largest class")
    ap.add_argument("--imbalance", type=float, default=100.0, help="largest / smallest class")
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--teacher", default="ViT-B-32")
    ap.add_argument("--student", default="mobilenetv4_conv_small")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    groups = [g.strip() for g in a.stages.split(",") if g.strip()]
    if not groups or set(groups) - set(STAGE_GROUPS):
        ap.error(f"--stages {a.stages}: choose from {', '.join(STAGE_GROUPS)}")

    from edgekd.bench.env import collect_environment, load_average

    results_json = a.results / "captions_loop.json"
    old = None if "loop" in groups else load_results(results_json)
    env = collect_environment()
    src = find_cifar10(a.data, a.assets, a.unpack_to)
    shutil.rmtree(a.work, ignore_errors=True)
    work = a.work
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    counts = lt_counts(classes, a.head, a.imbalance)
    link_subset(src / "train", work / "train", counts)
    link_subset(src / "test", work / "test", dict.fromkeys(classes, a.test_per_class))
    print(f"train (long-tailed, imbalance {a.imbalance:g}): {counts}; test: {a.test_per_class}/class", flush=True)

    server, url = start_template_server()
    try:
        if old is None:
            results = {"format": "edgekd.bench.captions_loop", "version": 1, "note": NOTE, "environment": env,
                       **run_loop(a, work, url, classes, counts), "load_avg_end": load_average()}
        else:
            results = old
        if "describe" in groups:
            stages, results["describe"] = run_describe(a, work, url, server)
            results["stages"].update(stages)
            if old is not None:  # this run's host, next to the loop's
                results["describe"]["environment"] = env
    finally:
        server.shutdown()
        server.server_close()
    results["note"] = NOTE
    a.results.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(results, indent=1) + "\n")
    (a.results / "captions_loop.md").write_text(report(results))
    shutil.copytree(work / "logs", a.results / "transcript", dirs_exist_ok=True)  # each stage's output, WORK-relative
    if "describe" in groups:  # what describe wrote, as `--descriptions` reads it
        shutil.copyfile(work / "descriptions.json", a.results / "descriptions.json")
    print(report(results))


def describe_figures(d: dict | None) -> dict[str, str]:
    """The stage table's figures for the describe stages (none before the stage existed)."""
    if d is None:
        return {}
    lab = d["labels"]
    return {
        "describe": f"{d['classes']} classes, {d['descriptions']} descriptions from {d['requests']['describe']} "
                    f"requests (stand-in server, not a language model); descriptions.json {d['json_bytes']} bytes",
        "describe_rerun": f"the same command: {d['requests']['describe_rerun']} requests (per-class cache), "
                          "so this is start-up alone",
        "labels_with_descriptions": f"{lab['prompts']} prompts ({lab['templates']} templates + "
                                    f"{lab['prompts_from_descriptions']} from the descriptions), {lab['embed_dim']}-d; "
                                    f"labels.npz {lab['npz_kb']} kB",
    }


def report(r: dict) -> str:
    s, env = r["setup"], r["environment"]
    cpu = env["cpu"]
    lines = [
        "# VLM-KD loop on CIFAR-10-LT: captions -> cache --captions -> distill (vlmkd) -> eval (many/medium/few); "
        "describe -> labels --descriptions",
        "",
        f"`benchmarks/captions_loop.py`. **{r['note']}.**",
        "",
        f"Host: {cpu['model']} ({cpu['onednn_isa']}), {cpu['cores_usable']} usable cores, shared with other jobs "
        f"(load average {env['load_avg']} at the start, {r['load_avg_end']} at the end); {r['total_seconds']} s "
        "in all.",
        "",
        f"Data: CIFAR-10 train, long-tailed with imbalance {s['imbalance']:g} (head {s['head']}): "
        + ", ".join(f"{c} {n} ({s['buckets'][c]})" for c, n in s["train_counts"].items())
        + f" = {s['train_images']} images; balanced test set, {s['test_per_class']} per class. Teacher "
        f"{s['teacher']}; student {s['student']} at {s['img_size']} px, {s['epochs']} epochs, batch {s['batch_size']}.",
        "",
        "| stage | wall s (own process, incl. start-up) | figures |",
        "|---|---|---|",
    ]
    cap, cache = r["captions"], r["cache"]
    figures = {
        "captions": f"{cap['counts']['ok']} captioned, {cap['counts']['missing']} missing; {cap['images_per_s']} "
                    f"images/s (stand-in server); {cap['distinct']} distinct texts; JSONL {cap['jsonl_kb']} kB",
        "cache": f"{cache['images_per_s']} images/s (teacher + caption texts); {cache['size_mb']} MB (caption "
                 f"embeddings {cache['caption_embeds_mb']} MB); "
                 f"{cache['images_with_captions']} images with captions",
    }
    for arm, v in r["arms"].items():
        d = v["distill"]
        figures[f"distill_{arm}"] = (f"{d['steps']} steps, {d['train_images_per_s_mean']} images/s; "
                                     f"model.safetensors {d['model_safetensors_mb']} MB, run dir {d['run_dir_mb']} MB")
        figures[f"eval_{arm}"] = f"{v['eval_images_per_s']} images/s (student only; incl. loading and decoding)"
    figures.update(describe_figures(r.get("describe")))
    for name, st in r["stages"].items():
        lines.append(f"| {name} | {st['seconds']} | {figures.get(name, '')} |")
    lines += ["", "Example caption (stand-in): " + json.dumps(cap["example"]), ""]
    if "describe" in r:
        d = r["describe"]
        lines += [f"Example class descriptions (stand-in, {d['describer']}; measured {d['measured']}, load average "
                  f"{d['load_avg']['start']} at the start, {d['load_avg']['end']} at the end): "
                  + json.dumps(d["example"]), ""]
    lines += ["Long-tail top-1 on the balanced test set (%; **random weights: meaningless, shown to prove the "
              "report works**):", "",
              "| caption term | loss parts at the last step | many | medium | few | all |", "|---|---|---|---|---|---|"]
    for arm, v in r["arms"].items():
        lt = v["long_tail"]
        parts = ", ".join(f"{k} {x:.3g}" for k, x in v["distill"]["last_loss_parts"].items())
        cells = [f"{100 * lt[b]['top1']:.1f} ({lt[b]['classes']} cl.)" if b in lt else "-" for b in BUCKETS]
        lines.append(f"| {'on (capcon 1)' if arm == 'with_captions' else 'off (--w-capcon 0)'} | {parts} | "
                     + " | ".join(cells) + f" | {100 * v['zero_shot_top1']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
