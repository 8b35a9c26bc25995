"""`edgekd eval RUN_OR_BUNDLE --data DIR`: zero-/few-shot accuracy, long-tail buckets and teacher fidelity."""

from __future__ import annotations

import click


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    if value is None or value.strip() in ("", "0", "none"):
        return ()
    try:
        shots = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers like 1,5,16", param=param) from e
    if any(k < 1 for k in shots):
        raise click.BadParameter(f"{value!r}: shots must be >= 1 (use 0 to skip few-shot)", param=param)
    return shots


def _name_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@click.command("eval")
@click.argument("source", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Held-out images: an image folder (one sub-folder per "
              "class), an unlabeled folder (fidelity only) or a CSV/JSONL list.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Label pack (.npz); default: the run's/bundle's.")
@click.option("--unseen", callback=_name_list, help="Comma-separated classes held out of distillation "
              "(seen/unseen split: unseen images among unseen texts, held-out seen among seen texts).")
@click.option("--split-file", type=click.Path(dir_okay=False),
              help="JSON {\"seen\": [...], \"unseen\": [...]} or a text file with one unseen class per line.")
@click.option("--train-index", type=click.Path(), help="Training cache dir, its index.json or the training "
              "dataset: per-class counts for the many/medium/few long-tail buckets.")
@click.option("--shots", default="1,5,16", callback=_int_list, help="Few-shot K values (0 = skip few-shot).")
@click.option("--seed", default=0, type=int, help="Seed of the deterministic few-shot support selection.")
@click.option("--teacher", "teacher_name", help="open_clip teacher name (default: the one recorded in the run).")
@click.option("--pretrained", help="Teacher weights tag (with --teacher).")
@click.option("--teacher-weights", type=click.Path(dir_okay=False), help="Local teacher weights file (with --teacher).")
@click.option("--random-teacher", is_flag=True, help="Seeded random teacher weights (with --teacher; tests only).")
@click.option("--teacher-cache", type=click.Path(file_okay=False),
              help="Teacher cache built on the same --data: teacher embeddings without running the teacher.")
@click.option("--no-teacher", is_flag=True, help="Skip the teacher's numbers and the fidelity metrics.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N (runs and the live teacher).")
@click.option("--backend", default="auto", help="Runtime backend for a bundle (onnxruntime, openvino, ...).")
@click.option("--batch-size", default=64, type=int, help="Images per forward pass.")
@click.option("--workers", default=None, type=int, help="DataLoader workers decoding images (default: cores-1, <=4).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the JSON results to this file.")
@click.option("--metrics-csv/--no-metrics-csv", default=True,
              help="For a run, append an eval row to its metrics.csv (bundles are never modified).")
def eval_cmd(source: str, data: str, labels: str | None, unseen: tuple[str, ...], split_file: str | None,
             train_index: str | None, shots: tuple[int, ...], seed: int, teacher_name: str | None,
             pretrained: str | None, teacher_weights: str | None, random_teacher: bool, teacher_cache: str | None,
             no_teacher: bool, device: str, backend: str, batch_size: int, workers: int | None, as_json: bool,
             out: str | None, metrics_csv: bool) -> None:
    """Evaluate a run directory or an export bundle on held-out images, next to its teacher.

    \b
    Zero-shot top-1/top-5 and mean per-class top-1 (all classes; seen vs unseen with --unseen/--split-file),
    few-shot NCM / logistic probe / Tip-Adapter with K shots per class, long-tail buckets with --train-index,
    and teacher fidelity (mean cosine, top-1 agreement, student->teacher retrieval@1), which needs no labels.
    """
    import json

    from edgekd import EdgekdError
    from edgekd._io import atomic_write_json
    from edgekd.evaluation.embed import default_workers
    from edgekd.evaluation.evaluate import EvalConfig, append_run_metrics, evaluate, format_table

    if no_teacher and (teacher_cache or teacher_name):
        raise EdgekdError("--no-teacher contradicts --teacher/--teacher-cache; pass one")
    if (pretrained or teacher_weights or random_teacher) and not teacher_name:
        raise EdgekdError("--pretrained/--teacher-weights/--random-teacher need --teacher NAME")
    teacher = None
    if teacher_name:
        teacher = {"name": teacher_name, "pretrained": None if (teacher_weights or random_teacher) else
                   (pretrained or "openai"), "weights_file": teacher_weights, "random_init": random_teacher}
    cfg = EvalConfig(data=data, labels=labels, unseen=unseen, split_file=split_file, train_index=train_index,
                     shots=shots, seed=seed, teacher=teacher, teacher_cache=teacher_cache, use_teacher=not no_teacher,
                     device=device, batch_size=batch_size,
                     workers=default_workers() if workers is None else workers, backend=backend)
    results = evaluate(source, cfg)
    if out:
        atomic_write_json(out, results)
    if results["source"]["kind"] == "run" and metrics_csv:
        append_run_metrics(results["source"]["path"], results)
    click.echo(json.dumps(results, indent=2) if as_json else format_table(results))
