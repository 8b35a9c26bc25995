"""`edgekd info PATH`: what a cache, run, bundle, label pack or bench result contains."""

from __future__ import annotations

import click


@click.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, default=False, help="Machine-readable JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a cache, run dir, export bundle, label pack or bench result."""
    import json

    from edgekd.info import describe, format_text

    d = describe(path)
    click.echo(json.dumps(d, indent=2, default=str) if as_json else format_text(d))
