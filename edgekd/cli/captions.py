"""`edgekd captions`: describe every image with a vision-language model (transformers or an OpenAI-compatible
endpoint) into the JSONL that `edgekd cache --captions` reads; `edgekd captions merge`: join shard files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edgekd.cli._echo import echo_some


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose and tune the text generator (shared with `edgekd describe`)."""
    opts = [
        click.option("--model", default=None,
                     help="transformers: hub id or local folder; --endpoint: the served model name."),
        click.option("--endpoint", default=None,
                     help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1); default: run --model locally."),
        click.option("--api-key-env", default=None,
                     help="Environment variable holding the endpoint's API key  [default: OPENAI_API_KEY if set]."),
        click.option("--device", default="auto", show_default=True, help="transformers: auto | cpu | cuda | cuda:N."),
        click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                     help="transformers: requests per generate() batch."),
        click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                     help="--endpoint: requests in flight."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                     help="--endpoint: seconds to wait for one answer."),
        click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
                     help="--endpoint: retries of a failed request (429/5xx/timeout/malformed), exponential backoff."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=96, show_default=True,
                     help="Most tokens generated per answer."),
        click.option("--empty-retries", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Ask again (sampling) when the answer is empty or a refusal; then record it as missing."),
        click.option("--prompt-file", type=click.Path(dir_okay=False), default=None,
                     help="Prompt templates, one per line or a JSON list; '{label}' = the class name."),
        click.option("--overwrite", is_flag=True, default=False, help="Start --out afresh instead of resuming."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_backend(opts: dict[str, Any], vision: bool, image_side: int = 512):
    """The backend the options describe (heavy imports happen here, inside the command)."""
    from edgekd.textgen.factory import create_backend

    return create_backend(opts["model"], opts["endpoint"], vision=vision, max_new_tokens=opts["max_new_tokens"],
                          device=opts["device"], batch_size=opts["batch_size"], concurrency=opts["concurrency"],
                          timeout_s=opts["timeout"], retries=opts["retries"], api_key_env=opts["api_key_env"],
                          image_side=image_side)


@click.group("captions", invoke_without_command=True)
@click.option("--data", type=click.Path(), default=None, help="Dataset: ImageFolder, image folder, or CSV/JSONL list.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Captions JSONL to write or resume ({\"path\": ..., \"captions\": [...]} per image).")
@backend_options
@click.option("--per-image", type=click.IntRange(min=1), default=1, show_default=True,
              help="Captions per image: one per prompt template (the first N).")
@click.option("--with-label", is_flag=True, default=False, help="Give the image's class name to the prompt.")
@click.option("--image-side", type=click.IntRange(min=32), default=512, show_default=True,
              help="--endpoint: longest image side sent (fewer billed image tokens).")
@click.option("--shard", default=None, help="Caption only part I/N; writes <out stem>.shard-I-of-N.jsonl.")
@click.option("--retry-missing", is_flag=True, default=False,
              help="On resume, try images recorded as missing or bad again.")
@click.pass_context
def captions(ctx, data, out, per_image, with_label, image_side, shard, retry_missing, **opts) -> None:
    """Write free-form captions of every image (VLM-KD's text supervision); resumable: run the same command again.

    \b
    Examples:
      edgekd captions --data imgs/ --out captions.jsonl --model HuggingFaceTB/SmolVLM-256M-Instruct
      edgekd captions --data imgs/ --out c.jsonl --endpoint http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-3B-Instruct
      edgekd captions --data imgs/ --out captions.jsonl --shard 0/4 ...   # then: edgekd captions merge
    """
    if ctx.invoked_subcommand is not None:
        return
    if not data or not out:
        raise click.UsageError("--data and --out are required (or use `edgekd captions merge`)")
    from edgekd.teacher.cache import parse_shard
    from edgekd.textgen.captions import CaptionSettings, caption_dataset
    from edgekd.textgen.prompts import caption_prompts, pick

    shard_t = parse_shard(shard)
    prompts = pick(caption_prompts(opts["prompt_file"], with_label), per_image, "--per-image")
    backend = make_backend(opts, vision=True, image_side=image_side)
    rep = caption_dataset(data, out, backend, CaptionSettings(prompts, with_label, opts["empty_retries"]),
                          shard=shard_t, overwrite=opts["overwrite"], retry_missing=retry_missing,
                          progress=opts["progress"])
    _report(rep, out)


def _report(rep, out: str) -> None:
    c = rep.counts
    rate = f", {rep.images_per_s} images/s" if rep.images_per_s else ""
    click.echo(f"{rep.out}: {c['ok']} images captioned, {c['missing']} missing, {c['bad_image']} bad "
               f"({rep.new} new, {rep.skipped_done} already done{rate})")
    if rep.usage.get("prompt_tokens") is not None and rep.new:
        click.echo(f"tokens this run: {rep.usage['prompt_tokens']} prompt + {rep.usage.get('output_tokens', 0)} "
                   f"output over {rep.usage['requests']} requests", err=True)
    for title, items in (("bad image(s) skipped", rep.bad), ("image(s) without caption", rep.missing)):
        if items:
            echo_some(f"{len(items)} {title} (--retry-missing tries them again):",
                      [f"{it[0]}: {it[1]}" if isinstance(it, tuple) else f"{it}" for it in items],
                      f"status field in {rep.out}")
    if rep.shard:
        from edgekd.textgen.store import shard_path

        pattern = shard_path(out, 0, rep.shard[1]).name.replace("shard-0-", "shard-*-")
        click.echo(f"shard {rep.shard[0]}/{rep.shard[1]} written; when all are done: "
                   f"edgekd captions merge {rep.out.parent / pattern} --out {out}")


@captions.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Merged captions JSONL.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing --out.")
def merge(shards, out, overwrite) -> None:
    """Join the shard files of one `--shard I/N` run into one captions JSONL (sorted by path)."""
    from edgekd.textgen.store import merge_shards

    meta = merge_shards(list(shards), out, overwrite=overwrite)
    c = meta["counts"]
    click.echo(f"merged {len(shards)} shards into {out}: {c['ok']} captioned, {c['missing']} missing, "
               f"{c['bad_image']} bad")
