"""`edgekd deepstream-config BUNDLE`: a DeepStream nvinfer config (untested on DeepStream until it runs on a Jetson)."""

from __future__ import annotations

from typing import Any

import click

SECONDARY_ONLY = ("operate_on_gie_id", "operate_on_class_ids", "gie_unique_id", "reinfer_interval", "min_object_size")


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1920x1080", param=param) from None
    if w < 1 or h < 1:
        raise click.BadParameter(f"{value!r}: width and height must be positive", param=param)
    return w, h


def _class_ids(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        ids = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma list of the detector's class ids, e.g. 0,2",
                                 param=param) from None
    if min(ids) < 0:
        raise click.BadParameter(f"{value!r}: class ids are the detector's class indices, >= 0", param=param)
    return ids


@click.command("deepstream-config")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: BUNDLE/deepstream].")
@click.option("--frame-size", callback=_size, default=None, metavar="WxH",
              help="Camera frame size: prints the nvvideoconvert src-crop of the student's centre crop.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1,
              help="Frames (objects with --secondary) per inference.")
@click.option("--gpu-id", type=click.IntRange(min=0), default=0)
@click.option("--allow-ungated", is_flag=True, help="Write it for a bundle whose parity gate failed or was skipped.")
@click.option("--secondary", is_flag=True,
              help="Secondary mode (process-mode=2): embed the objects of an upstream detector, not whole frames.")
@click.option("--operate-on-gie-id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="--secondary: the detector's gie-unique-id [default: 1].")
@click.option("--operate-on-class-ids", callback=_class_ids, default=None, metavar="0,2",
              help="--secondary: the detector's classes to embed [default: all].")
@click.option("--gie-unique-id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="--secondary: this nvinfer's id, the unique_id of its tensor meta [default: 2].")
@click.option("--reinfer-interval", type=click.IntRange(min=0), default=None, metavar="FRAMES",
              help="--secondary: secondary-reinfer-interval for tracked objects.")
@click.option("--min-object-size", callback=_size, default=None, metavar="WxH",
              help="--secondary: skip objects smaller than this (input-object-min-width/height).")
def deepstream_config(bundle: str, out: str | None, frame_size: tuple[int, int] | None, batch_size: int,
                      gpu_id: int, allow_ungated: bool, secondary: bool, **secondary_options: Any) -> None:
    """Write an nvinfer config (output-tensor-meta=1) for BUNDLE; score its tensor with
    examples/gstreamer/deepstream_probe.py. BUNDLE: an ONNX bundle (fp32/fp16), or a TensorRT bundle (its engine once
    built on the device; before that model.onnx / model.fp16.onnx, which nvinfer builds). INT8 needs the engine edgekd
    built (or its calibration cache). --secondary: run it on a primary detector's objects (one embedding per object).
    UNTESTED on DeepStream until it runs on a Jetson."""
    from edgekd.deepstream import SecondaryGie, write_deepstream_config

    given = {k: v for k, v in secondary_options.items() if v is not None}
    if given and not secondary:
        names = ", ".join("--" + k.replace("_", "-") for k in SECONDARY_ONLY if k in given)
        raise click.UsageError(f"{names} apply to secondary mode only: add --secondary")
    gie = SecondaryGie(**given) if secondary else None
    path, cfg = write_deepstream_config(bundle, out, frame_size, batch_size, gpu_id, allow_ungated, gie)
    for note in cfg.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(str(path))
