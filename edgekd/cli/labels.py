"""`edgekd labels`: embed class names (x prompt templates, + descriptions) with the teacher into a label pack."""

from __future__ import annotations

import click

from edgekd.cli._teacher_opts import load_teacher_from_options, teacher_options


@click.command("labels")
@teacher_options
@click.option("--classes", default=None, help="Comma-separated class names, e.g. 'cat,dog,red car'.")
@click.option("--classes-file", type=click.Path(dir_okay=False), default=None,
              help="File with one class name per line (or a JSON list).")
@click.option("--data", type=click.Path(), default=None,
              help="Take the class names of this dataset (ImageFolder/list).")
@click.option("--templates", default="default", show_default=True,
              help="Prompt templates: default (80 CLIP prompts) | simple (7) | single | FILE (one '{}' per line).")
@click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
              help="JSON {class: [description, ...]}; adds 'a photo of {name} . {description}' prompts.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output label pack (.npz).")
def labels(teacher, pretrained, teacher_weights, random_teacher, device, classes, classes_file, data, templates,
           descriptions, out) -> None:
    """Embed label texts with the teacher into a label pack (.npz) for training, eval and the runtime."""
    from edgekd.teacher.labels import build_label_pack, read_class_names

    names = read_class_names(classes, classes_file, data)
    t = load_teacher_from_options(teacher, pretrained, teacher_weights, random_teacher, device)
    pack = build_label_pack(t, names, templates, descriptions, progress=True)
    pack.save(out)
    n_prompts = sum(len(v) for v in pack.prompts.values())
    click.echo(f"wrote {out}: {len(pack)} classes, {n_prompts} prompts ({pack.meta['templates']} templates"
               f"{', + descriptions' if descriptions else ''}), {pack.embed_dim}-d, teacher {pack.teacher_id}")
