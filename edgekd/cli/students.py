"""`edgekd students`: the student presets with parameter counts and MACs at a resolution."""

from __future__ import annotations

import json

import click


@click.command("students")
@click.argument("names", nargs=-1)
@click.option("--img-size", type=click.IntRange(16, 4096), default=224, help="Input resolution (square).")
@click.option("--embed-dim", type=click.IntRange(1), default=512, help="Teacher embedding size (head output).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def students(names: tuple[str, ...], img_size: int, embed_dim: int, as_json: bool) -> None:
    """List student presets (or the given preset/timm NAMES) with parameters and MACs per image."""
    from edgekd.students.registry import describe_students

    rows = describe_students(list(names) or None, img_size=img_size, embed_dim=embed_dim)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'name':<26} {'family':<20} {'params (M)':>10} {'MACs (G)':>9}  note"
    click.echo(f"students at {img_size}x{img_size}, linear head to {embed_dim}-d (MACs = FLOPs / 2, batch 1)")
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        click.echo(f"{r['name']:<26} {r['family']:<20} {r['params'] / 1e6:>10.2f} {r['macs'] / 1e9:>9.3f}  {r['note']}")
