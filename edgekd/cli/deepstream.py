"""`edgekd deepstream-config BUNDLE`: a DeepStream nvinfer config (untested on DeepStream until it runs on a Jetson)."""

from __future__ import annotations

import click


def _frame_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1920x1080", param=param) from None
    if w < 1 or h < 1:
        raise click.BadParameter(f"{value!r}: width and height must be positive", param=param)
    return w, h


@click.command("deepstream-config")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: BUNDLE/deepstream].")
@click.option("--frame-size", callback=_frame_size, default=None, metavar="WxH",
              help="Camera frame size: prints the nvvideoconvert src-crop of the student's centre crop.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1)
@click.option("--gpu-id", type=click.IntRange(min=0), default=0)
@click.option("--allow-ungated", is_flag=True, help="Write it for a bundle whose parity gate failed or was skipped.")
def deepstream_config(bundle: str, out: str | None, frame_size: tuple[int, int] | None, batch_size: int,
                      gpu_id: int, allow_ungated: bool) -> None:
    """Write an nvinfer config (output-tensor-meta=1) for BUNDLE; score its tensor with
    examples/gstreamer/deepstream_probe.py. BUNDLE: an ONNX bundle (fp32/fp16), or a TensorRT bundle (its engine once
    built on the device; before that model.onnx / model.fp16.onnx, which nvinfer builds). INT8 needs the engine edgekd
    built (or its calibration cache). UNTESTED on DeepStream until it runs on a Jetson."""
    from edgekd.deepstream import write_deepstream_config

    path, cfg = write_deepstream_config(bundle, out, frame_size, batch_size, gpu_id, allow_ungated)
    for note in cfg.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(str(path))
