"""`edgekd classify`: run an exported bundle over images or folders and print the top-k labels (table or JSON lines)."""

from __future__ import annotations

import click


@click.command("classify")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None,
              help="Label pack (.npz from `edgekd labels`); default: the bundle's labels.npz.")
@click.option("--label", "label_strings", multiple=True,
              help="A label string (repeatable), embedded on device by the text encoder (or a class of the pack).")
@click.option("--text-encoder", type=click.Path(file_okay=False), default=None,
              help="`edgekd export-text` directory (default: BUNDLE/text when present).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, None), help="Predictions per image.")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="Answer 'unknown' when the best cosine score is below this.")
@click.option("--json", "as_json", is_flag=True, default=False, help="One JSON object per image (JSON lines).")
@click.option("--backend", default="auto", show_default=True,
              help="auto | onnxruntime | openvino | tensorrt | ort-cuda | ort-trt.")
@click.option("--threads", type=click.IntRange(1, None), default=None, help="Inference threads (default: backend's).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, None),
              help="Images decoded per step, and the preferred model batch (the model gets batches it accepts).")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Descend into sub-folders.")
@click.option("--allow-ungated", is_flag=True, help="Use a bundle whose parity gate failed or was skipped.")
def classify(bundle, images, labels_path, label_strings, text_encoder, top_k, threshold, as_json, backend, threads,
             batch_size, recursive, allow_ungated) -> None:
    """Classify IMAGES (files or folders) with BUNDLE. Unreadable images are reported on stderr and skipped."""
    import json
    import sys

    from tqdm.auto import tqdm

    from edgekd import EdgekdError
    from edgekd.runtime.bundle import gate_summary
    from edgekd.runtime.classifier import OpenVocabClassifier, find_images

    if labels_path and label_strings:
        raise click.UsageError("give either --labels PACK or --label TEXT, not both")
    clf = OpenVocabClassifier.load(bundle, labels=labels_path, backend=backend, threads=threads,
                                   text_encoder=text_encoder, allow_ungated=allow_ungated)
    click.echo(f"{bundle}: {clf.backend.name} {clf.info.meta.get('precision')}, parity gate "
               f"{gate_summary(clf.info.meta)}", err=True)
    if label_strings:
        clf.set_labels(list(label_strings))
    clf.label_set  # noqa: B018  (fails early with a clear message when there are no labels)
    if threshold is not None:
        clf.set_thresholds(default=threshold)
    paths = find_images(images, recursive=recursive)
    if not paths:
        raise EdgekdError(f"no images found in {', '.join(images)}")
    done = skipped = 0
    bar = tqdm(total=len(paths), unit="img", desc="classify", disable=len(paths) < 2 or None, leave=False)
    for start in range(0, len(paths), batch_size):
        chunk, inputs = [], []
        for p in paths[start: start + batch_size]:
            try:
                inputs.append(clf.prepare(p))
                chunk.append(p)
            except (EdgekdError, ValueError) as e:
                skipped += 1
                bar.write(f"skipped {e}", file=sys.stderr)
        bar.update(len(paths[start: start + batch_size]))
        if not chunk:
            continue
        import numpy as np

        results = clf.label_set.predict(clf.embed_inputs(np.stack(inputs), batch_size=batch_size), top_k)
        for p, preds in zip(chunk, results):
            done += 1
            if as_json:
                click.echo(json.dumps({"image": str(p), "predictions": [x.to_dict() for x in preds]}))
            else:
                click.echo(_row(str(p), preds))
    bar.close()
    if skipped:
        click.echo(f"{done} classified, {skipped} skipped (unreadable)", err=True)
    if not done:
        raise EdgekdError(f"none of the {len(paths)} images could be read")


def _row(path: str, preds) -> str:
    cells = "  ".join(f"{p.label} ({p.prob:.3f}, cos {p.score:+.3f})" for p in preds)
    return f"{path}\t{cells}"
