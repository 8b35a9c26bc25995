"""The `edgekd` command line: a click group whose commands are imported only when run (so --help is fast)."""

from __future__ import annotations

import errno
import importlib
import logging
from typing import Any

import click

from edgekd import EdgekdError, __version__

# name -> (module:attribute, one-line help). Adding a command = adding a module under edgekd/cli/ and a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "cache": ("edgekd.cli.cache:cache", "Run the teacher once over images and cache its embeddings."),
    "labels": ("edgekd.cli.labels:labels", "Embed label texts (templates + descriptions) into a label pack."),
    "info": ("edgekd.cli.info:info", "Describe a cache, run, bundle, label pack or bench result."),
    "students": ("edgekd.cli.students:students", "List student presets with parameters and MACs."),
    "distill": ("edgekd.cli.distill:distill", "Train a student from a teacher cache."),
    "eval": ("edgekd.cli.eval:eval_cmd", "Zero-/few-shot accuracy and teacher fidelity of a run or bundle."),
    "export": ("edgekd.cli.export:export", "Export a student to ONNX / OpenVINO / TensorRT with a parity gate."),
    "export-text": ("edgekd.cli.export_text:export_text", "Export the teacher text tower to ONNX (on-device labels)."),
    "bench": ("edgekd.cli.bench:bench", "Latency, throughput and memory of teacher and students."),
    "classify": ("edgekd.cli.classify:classify", "Classify images with an exported bundle and a label pack."),
    "gst-path": ("edgekd.cli.gst:gst_path", "Print the GST_PLUGIN_PATH entry of the edgekdclassify GStreamer element."),
    "deepstream-config": ("edgekd.cli.deepstream:deepstream_config", "Write a DeepStream nvinfer config for a bundle."),
    "captions": ("edgekd.cli.captions:captions", "Caption every image with a VLM (transformers or an endpoint)."),
    "describe": ("edgekd.cli.describe:describe", "Per-class attribute descriptions from an LLM for --descriptions."),
    "plan": ("edgekd.cli.plan:plan", "Time this machine, then print cache + distill commands that fit N minutes."),
}

# Exit statuses beyond click's (0 ok, 1 error, 2 usage).
EXIT_GATE_FAILED = 3  # an export failed its parity gate (report kept)
EXIT_NEEDS_DEVICE = 4  # work prepared for another machine (e.g. TensorRT engine build); instructions printed


# Modules of the `torch` extra: a command that needs them on a runtime-only install says what to install.
TORCH_STACK = ("torch", "torchvision", "timm", "open_clip", "safetensors")


class LazyGroup(click.Group):
    """click's documented lazy-loading group: list commands from COMMANDS, import one only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, short_help = COMMANDS[name]
        module, attr = target.split(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            return click.Command(name, short_help=f"{short_help} (not available in this version)",
                                 callback=lambda: _fail(f"`edgekd {name}` is not implemented in this version"))
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        """EdgekdError -> a one-line `Error: ...` and its exit status (1 unless it carries another)."""
        try:
            return super().invoke(ctx)
        except EdgekdError as e:
            raise UserError(str(e), getattr(e, "exit_code", 1)) from e
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in TORCH_STACK:
                raise
            raise UserError(f"this command needs {e.name}, which comes with the training stack: "
                            "pip install 'edgekd[torch]' (the base install is the torch-free runtime)") from e
        except KeyboardInterrupt:
            raise UserError("interrupted; state so far is saved, run the same command again to resume", 130) from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise UserError(f"{where}disk full ({e.strerror}); free some space and run the same command again "
                            "(finished work is kept)") from e


class UserError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _fail(message: str) -> None:
    raise EdgekdError(message)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config FILE: YAML mapping `command: {option: value}` that feeds option defaults."""
    if not value:
        return value
    import yaml

    try:
        with open(value, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise click.BadParameter(f"cannot read {value}: {e.strerror}", param=param) from e
    except yaml.YAMLError as e:
        raise click.BadParameter(f"{value} is not valid YAML: {e}", param=param) from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise click.BadParameter(f"{value} must map command names to option mappings, e.g. 'distill: {{epochs: 5}}'",
                                 param=param)
    unknown = sorted(set(data) - set(COMMANDS))
    if unknown:
        raise click.BadParameter(f"{value}: unknown command(s) {', '.join(unknown)}; known: {', '.join(COMMANDS)}",
                                 param=param)
    ctx.default_map = {cmd: {k.replace("-", "_"): v for k, v in opts.items()} for cmd, opts in data.items()}
    return value


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "EDGEKD", "show_default": True,
                                             "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True, expose_value=False,
              envvar="EDGEKD_CONFIG", help="YAML file of option defaults per command ({command: {option: value}}).")
def cli(verbose: int) -> None:
    """edgekd: distill a CLIP teacher into an edge student, export it, benchmark it, run it.

    Pipeline: images -> cache -> distill -> export -> bench -> runtime (classify). Every option can also be set
    through an environment variable EDGEKD_<COMMAND>_<OPTION> or a --config YAML file.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="edgekd")
