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
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "int8"]),
              help="int8: 8-bit weights (a quarter of the size and memory), gated against the fp32 tower over the "
                   "class names x templates of edgekd.export.text.GATE_CLASSES; nothing is written if it fails.")
def export_text(teacher, pretrained, teacher_weights, random_teacher, device, out, opset, precision) -> None:
    """Export the teacher text tower (tokens int64 [B, 77] -> unit embedding [B, D]) with a parity check.

    The export always runs on the CPU (--device is ignored).
    """
    from pathlib import Path

    from edgekd.export.text import export_text_encoder

    t = load_teacher_from_options(teacher, pretrained, teacher_weights, random_teacher, "cpu")
    meta = export_text_encoder(t, out, opset=opset, precision=precision)
    size = (Path(out) / meta["files"]["model"]).stat().st_size / 2**20
    click.echo(f"wrote {out}: {meta['files']['model']} ({precision}, {size:.1f} MB, {meta['embed_dim']}-d, teacher "
               f"{meta['teacher_id']}), tokenizer {meta['files']['tokenizer']}; parity min cosine "
               f"{meta['parity']['min_cosine']:.6f}")
    if "gate" in meta:
        m = meta["gate"]["metrics"]
        click.echo(f"gate against fp32 passed on {m['prompts']} prompts: prompt cosine p1 "
                   f"{m['prompt_cosine_p01']:.5f}, label cosine min {m['label_cosine_min']:.5f}, top-1 agreement "
                   f"{100 * m['top1_agreement']:.1f}%")
