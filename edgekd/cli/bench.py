"""`edgekd bench`: latency, throughput, memory (and Jetson power) of teachers and students, one subprocess per
measurement. Thin: parses options, calls edgekd.bench."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click


def _int_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...] | str | None) -> tuple[int, ...]:
    """'1,2,4' (or the option repeated) -> (1, 2, 4)."""
    if value is None:
        return ()
    parts = [p for v in ((value,) if isinstance(value, str) else value) for p in str(v).split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 1,8,32", param=param) from e


def _str_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.strip() for v in value for p in v.split(",") if p.strip())


@click.command("bench")
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--teacher", "teacher", default=None, metavar="NAME[:weights]",
              help="Also bench this open_clip teacher's image tower (weights: a hub tag or a local file).")
@click.option("--random-teacher", is_flag=True, help="Teacher with random weights (no download; speed is the same). "
              "Without --teacher this benches ViT-B-32.")
@click.option("--backend", "backends", multiple=True, callback=_str_list,
              help="torch, onnxruntime, openvino, tensorrt, ort-cuda, ort-trt (repeat or comma-separate). "
                   "Default: every backend the model's format allows; missing ones are reported as skipped.")
@click.option("--threads", default=None, callback=_int_list, help="CPU thread counts, e.g. 1,2,4 [all cores].")
@click.option("--batch", "batches", default="1", callback=_int_list, help="Batch sizes, e.g. 1,8,32.")
@click.option("--img-size", "img_sizes", default=None, callback=_int_list,
              help="Input sizes for bare timm model names, e.g. 160,224 (others use their own size).")
@click.option("--embed-dim", default=512, type=click.IntRange(min=1), help="Embedding size of bare timm students.")
@click.option("--warmup-s", default=2.0, type=click.FloatRange(min=0), help="Warm-up seconds per measurement.")
@click.option("--min-time-s", default=5.0, type=click.FloatRange(min=0), help="Minimum timed seconds per row.")
@click.option("--min-iters", default=10, type=int, help="Minimum timed iterations per row.")
@click.option("--throughput-s", default=None, type=click.FloatRange(min=0),
              help="Seconds of the pipelined throughput loop [min-time-s / 2].")
@click.option("--device", default="auto", help="torch device for the torch backend (auto, cpu, cuda, cuda:N).")
@click.option("--e2e", is_flag=True, help="Also time the open-vocabulary runtime path (decode, resize/normalise, "
              "infer, score, top-k) on a JPEG frame next to model-only time.")
@click.option("--power/--no-power", default=True, help="Sample tegrastats (Jetson) during timed loops.")
@click.option("--omp-wait-policy", type=click.Choice(("PASSIVE", "ACTIVE"), case_sensitive=False), default="PASSIVE",
              help="OpenMP wait policy of torch workers (ACTIVE spins: faster on an idle dedicated machine, much "
                   "slower on a busy one). An OMP_WAIT_POLICY environment variable wins.")
@click.option("--timeout-s", default=1800.0, type=click.FloatRange(min=1), help="Per-measurement time limit.")
@click.option("--out", "out_dir", default="bench-out", type=click.Path(file_okay=False),
              help="Output directory (results.json, results.md, latency.png, throughput.png).")
@click.option("--plots/--no-plots", default=True, help="Write the PNG plots (needs matplotlib).")
@click.option("--allow-ungated", is_flag=True, help="Bench bundles whose parity gate failed or was skipped.")
@click.option("--teacher-precisions", multiple=True, default=("fp32,bf16,fp16,int8",), callback=_str_list,
              show_default=True,
              help="Teacher precisions to time, each on the backends that offer it on this machine (int8 needs "
                   "--calib): the report compares students with the fastest ('vs best teacher').")
@click.option("--calib", type=click.Path(exists=True, file_okay=False), default=None,
              help="Calibration images for the INT8 teacher (edgekd's own INT8 export path).")
@click.option("--compare", nargs=2, default=None, type=click.Path(exists=True), metavar="A.json B.json",
              help="Show two result files side by side (no benchmarking).")
def bench(models: tuple[str, ...], teacher: str | None, random_teacher: bool, backends: tuple[str, ...],
          threads: tuple[int, ...], batches: tuple[int, ...], img_sizes: tuple[int, ...], embed_dim: int,
          warmup_s: float, min_time_s: float, min_iters: int, throughput_s: float | None, device: str, e2e: bool,
          power: bool, omp_wait_policy: str, timeout_s: float, out_dir: str, plots: bool, allow_ungated: bool,
          teacher_precisions: tuple[str, ...], calib: str | None, compare: tuple[str, str] | None) -> None:
    """Benchmark MODELs: export bundles, run directories, ONNX/IR/engine files or bare timm model names.

    Each measurement runs in its own subprocess with its thread count pinned; rows that cannot run are listed as
    skipped (with why) and rows that fail as failed (with the error).

    \b
    edgekd bench runs/mnv4 --random-teacher --backend torch,onnxruntime --batch 1,32 --threads 1,2
    edgekd bench bundle-int8/ --e2e --out bench-int8
    edgekd bench --compare bench-a/results.json bench-b/results.json
    """
    from edgekd import EdgekdError

    if compare:
        from edgekd.bench.compare import compare_markdown

        click.echo(compare_markdown(*compare), nl=False)
        return
    from edgekd.bench.models import resolve_model, resolve_teacher
    from edgekd.bench.report import markdown, write_results
    from edgekd.bench.runner import BenchConfig, run_bench

    cfg = BenchConfig(backends=backends or None, threads=threads, batches=batches, warmup_s=warmup_s,
                      min_time_s=min_time_s, min_iters=min_iters, throughput_s=throughput_s, device=device, e2e=e2e,
                      power=power, timeout_s=timeout_s, omp_wait_policy=omp_wait_policy,
                      teacher_precisions=tuple(teacher_precisions), calib=calib)
    specs = []
    if teacher or random_teacher:
        specs.append(resolve_teacher(teacher or "ViT-B-32", random_init=random_teacher))
    for m in models:
        specs += resolve_model(m, list(img_sizes) or None, embed_dim, allow_ungated)
    if not specs:
        raise EdgekdError("nothing to bench: pass MODEL arguments and/or --teacher / --random-teacher "
                          "(or --compare A.json B.json)")
    out = Path(out_dir)
    doc = run_bench(specs, cfg, out)
    command = shlex.join(["edgekd", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("edgekd", "__main__.py") else None
    paths = write_results(doc, out, plots=plots, command=command)
    click.echo(markdown(doc), nl=False)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = sum(r["status"] == "failed" for r in doc["rows"])
    if failed:
        click.echo(f"{failed} measurement(s) failed; see the reasons above and in {paths['json']}", err=True)
