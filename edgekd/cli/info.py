"""`edgekd info PATH`: what a cache, run, bundle, label pack or bench result contains; `edgekd info --env`: this
machine's TensorRT, CUDA Python bindings and NVIDIA driver, and whether they fit together."""

from __future__ import annotations

import click


@click.command("info")
@click.argument("path", type=click.Path(), required=False)
@click.option("--env", "env", is_flag=True, default=False,
              help="Instead of PATH: this machine's TensorRT / cuda-python / driver facts and whether they fit.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Machine-readable JSON instead of text.")
def info(path: str | None, env: bool, as_json: bool) -> None:
    """Describe a cache, run dir, export bundle, label pack or bench result (or, with --env, this machine)."""
    import json

    if env == bool(path):
        raise click.UsageError("give PATH (an artifact to describe) or --env (this machine's TensorRT setup), not both"
                               if env else "Missing argument 'PATH' (or --env for this machine's TensorRT setup)")
    if env:
        from edgekd.export.trt_env import collect_trt_env, format_trt_env

        d = collect_trt_env()
        click.echo(json.dumps(d, indent=2, default=str) if as_json else format_trt_env(d))
        return
    from edgekd.info import describe, format_text

    d = describe(path)
    click.echo(json.dumps(d, indent=2, default=str) if as_json else format_text(d))
