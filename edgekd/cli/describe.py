"""`edgekd describe`: per-class attribute descriptions from a language model into the JSON `--descriptions` reads."""

from __future__ import annotations

import click

from edgekd.cli.captions import backend_options, make_backend


@click.command("describe")
@click.option("--classes", default=None, help="Comma-separated class names, e.g. 'cat,dog,red car'.")
@click.option("--classes-file", type=click.Path(dir_okay=False), default=None,
              help="File with one class name per line (or a JSON list).")
@click.option("--data", type=click.Path(), default=None, help="Take the class names of this dataset.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Descriptions JSON {class: [description, ...]} to write or extend.")
@backend_options
@click.option("--per-class", type=click.IntRange(min=1), default=3, show_default=True,
              help="Descriptions per class: one per prompt template (the first N).")
def describe(classes, classes_file, data, out, per_class, **opts) -> None:
    """Describe each class's appearance with a language model (text only); cached per class, so re-runs are free.

    \b
    Examples:
      edgekd describe --data imgs/ --out descriptions.json --model HuggingFaceTB/SmolLM2-360M-Instruct
      edgekd describe --classes cat,dog --out d.json --endpoint http://localhost:11434/v1 --model llama3.2
      edgekd labels --data imgs/ --descriptions descriptions.json --out labels.npz ...
    """
    from edgekd.teacher.labels import read_class_names
    from edgekd.textgen.describe import describe_classes
    from edgekd.textgen.prompts import describe_prompts, pick

    names = read_class_names(classes, classes_file, data)
    prompts = pick(describe_prompts(opts["prompt_file"]), per_class, "--per-class")
    backend = make_backend(opts, vision=False)
    rep = describe_classes(names, out, backend, prompts, retries=opts["empty_retries"], overwrite=opts["overwrite"],
                           progress=opts["progress"])
    click.echo(f"{out}: {rep.described}/{len(names)} classes described ({rep.new} new, {rep.cached} cached)")
    if rep.missing:
        click.echo(f"{len(rep.missing)} class(es) got no usable description (re-run to try again): "
                   f"{', '.join(rep.missing[:20])}", err=True)
