"""`edgekd cache`: run the teacher once over a dataset (K views per image) into a resumable cache;
`edgekd cache merge`: join shard caches."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgekd.cli._echo import echo_some
from edgekd.cli._teacher_opts import load_teacher_from_options, teacher_options


def _env_shard() -> str | None:
    """Shard I/N from torchrun's RANK/WORLD_SIZE when more than one process runs."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return f"{int(os.environ.get('RANK', '0') or 0)}/{world}" if world > 1 else None


@click.group("cache", invoke_without_command=True)
@click.option("--data", type=click.Path(), default=None,
              help="Dataset: ImageFolder (class sub-folders), any image folder, or a CSV/JSONL list of path[,label].")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Cache directory to write (or resume).")
@teacher_options
@click.option("--views", type=click.IntRange(min=1), default=1, show_default=True,
              help="Views per image: view 0 = eval view, views 1..K-1 = seeded random-resized crops + flips.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the augmented views.")
@click.option("--captions", type=click.Path(dir_okay=False), default=None,
              help="JSONL {\"path\": ..., \"captions\": [...]} per image (paths relative to the dataset).")
@click.option("--max-captions", type=click.IntRange(min=1), default=None, help="Keep at most this many per image.")
@click.option("--descriptions", type=click.Path(dir_okay=False), default=None,
              help="JSON {class: [description, ...]} for the label pack.")
@click.option("--templates", default="default", show_default=True,
              help="Prompt templates for labels.npz: default | simple | single | FILE.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per teacher batch (x views)  [default: 256 on a GPU, 64 on CPU].")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="DataLoader worker processes that decode and render views.")
@click.option("--shard", default=None,
              help="Build only part I/N of the dataset (default from torchrun RANK/WORLD_SIZE).")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing cache in --out.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.pass_context
def cache(ctx, data, out, teacher, pretrained, teacher_weights, random_teacher, device, views, seed, captions,
          max_captions, descriptions, templates, batch_size, workers, shard, overwrite, progress) -> None:
    """Run the teacher once over images and cache its embeddings (resumable: re-run the same command).

    \b
    Examples:
      edgekd cache --data imgs/ --out cache/ --views 4 --random-teacher
      torchrun --nproc-per-node 4 -m edgekd cache --data imgs/ --out cache/   # writes cache.shard-I-of-4
      edgekd cache merge cache.shard-* --out cache/
    """
    if ctx.invoked_subcommand is not None:
        return
    if not data or not out:
        raise click.UsageError("--data and --out are required (or use `edgekd cache merge`)")
    from edgekd.teacher.cache import build_cache, parse_shard

    out_path = Path(out)
    if shard is None and (shard := _env_shard()):
        i, n = parse_shard(shard)
        out_path = out_path.with_name(f"{out_path.name}.shard-{i}-of-{n}")
        if device == "auto" and os.environ.get("LOCAL_RANK"):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        click.echo(f"torchrun rank {i} of {n}: writing shard {out_path}", err=True)
    t = load_teacher_from_options(teacher, pretrained, teacher_weights, random_teacher, device)
    batch_size = batch_size or (256 if t.device.type == "cuda" else 64)
    c = build_cache(data, out_path, t, views=views, seed=seed, captions=captions, descriptions=descriptions,
                    batch_size=batch_size, workers=workers, shard=shard, progress=progress, overwrite=overwrite,
                    templates=templates, max_captions=max_captions)
    m = c.manifest
    click.echo(f"cache {out_path}: {m['counts']['valid']}/{m['counts']['images']} images x {c.num_views} views, "
               f"{c.embed_dim}-d, teacher {c.teacher_id}"
               + (f", {m['build']['images_per_s_last_run']} images/s" if m["build"].get("images_per_s_last_run")
                  else ""))
    if m["skipped"]:
        echo_some(f"skipped {len(m['skipped'])} unusable file(s):",
                  [f"{s['path']}: {s['reason']}" for s in m["skipped"]], f"see {out_path / 'manifest.json'}")
    if m.get("shard"):
        click.echo(f"shard {m['shard']['index']}/{m['shard']['count']} done; when all are, run: "
                   f"edgekd cache merge {out_path.parent / (Path(out).name + '.shard-*')} --out {out}")


@cache.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Merged cache directory.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing cache in --out.")
def merge(shards, out, overwrite) -> None:
    """Join shard caches (same teacher, dataset and views) into one normal cache."""
    from edgekd.teacher.cache_merge import merge_caches

    c = merge_caches(list(shards), out, overwrite=overwrite)
    click.echo(f"merged {len(shards)} shards into {out}: {c.num_images} images x {c.num_views} views")
