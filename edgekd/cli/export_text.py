"""`edgekd export-text`: the teacher's text tower as ONNX + tokenizer files, for on-device label strings."""

from __future__ import annotations

import click

from edgekd.cli._teacher_opts import load_teacher_from_options, teacher_options


@click.command("export-text")
@teacher_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (text_encoder.onnx, bpe_simple_vocab_16e6.txt.gz, text_encoder.json); put it "
                   "in a bundle as BUNDLE/text to have the runtime pick it up.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(13, 21), help="ONNX opset.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="fp16: half the file (fp16 weights, float32 elsewhere). int8: 8-bit weights, a quarter of the file "
                   "and under half the memory. Both are gated against the fp32 tower over the class names x templates "
                   "of edgekd.export.text_gate; nothing is written if the gate fails.")
def export_text(teacher, pretrained, teacher_weights, random_teacher, device, out, opset, precision) -> None:
    """Export the teacher text tower (tokens int64 [B, 77] -> unit embedding [B, D]) with a parity check.

    The export always runs on the CPU (--device is ignored).
    """
    from pathlib import Path

    from edgekd.export.text import export_text_encoder
    from edgekd.runtime.text import text_gate_summary

    t = load_teacher_from_options(teacher, pretrained, teacher_weights, random_teacher, "cpu")
    meta = export_text_encoder(t, out, opset=opset, precision=precision)
    size = (Path(out) / meta["files"]["model"]).stat().st_size / 2**20
    click.echo(f"wrote {out}: {meta['files']['model']} ({precision}, {size:.1f} MB, {meta['embed_dim']}-d, teacher "
               f"{meta['teacher_id']}), tokenizer {meta['files']['tokenizer']}; parity min cosine "
               f"{meta['parity']['min_cosine']:.6f}")
    if precision != "fp32":
        click.echo(f"gate passed: {text_gate_summary(meta)}")
