"""`edgekd gst-path`: where GStreamer finds the `edgekdclassify` element (the GST_PLUGIN_PATH entry)."""

from __future__ import annotations

import shlex

import click


@click.command("gst-path")
@click.option("--env", "as_env", is_flag=True, default=False,
              help="Print shell `export` lines (GST_PLUGIN_PATH and the PYTHONPATH GStreamer's python needs) for "
                   "eval \"$(edgekd gst-path --env)\".")
@click.option("--check", is_flag=True, default=False,
              help="Also check that GStreamer's python bindings import here and the element registers.")
def gst_path(as_env: bool, check: bool) -> None:
    """Print the plugin directory to put on GST_PLUGIN_PATH (it holds python/edgekdclassify.py)."""
    from edgekd.gst import plugin_dir, python_path

    path = str(plugin_dir())
    if as_env:
        pythonpath = ":".join(python_path())
        click.echo(f"export GST_PLUGIN_PATH={shlex.quote(path)}${{GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}}")
        click.echo(f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}")
    else:
        click.echo(path)
    if check:
        from edgekd.gst import register

        register()  # GstUnavailableError (an EdgekdError) says what to install
        click.echo("edgekdclassify registers in this python", err=True)
