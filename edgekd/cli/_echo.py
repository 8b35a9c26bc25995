"""Output shared by the commands: a long list of problems, shown up to a limit on stderr."""

from __future__ import annotations

import click


def echo_some(header: str, lines: list[str], rest: str, limit: int = 20) -> None:
    """`header`, then the first `limit` of `lines` indented, then "... and K more (`rest`)" for the others (stderr)."""
    click.echo(header, err=True)
    for line in lines[:limit]:
        click.echo(f"  {line}", err=True)
    if len(lines) > limit:
        click.echo(f"  ... and {len(lines) - limit} more ({rest})", err=True)
