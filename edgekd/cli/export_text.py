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
def export_text(teacher, pretrained, teacher_weights, random_teacher, device, out, opset) -> None:
    """Export the teacher text tower (tokens int64 [B, 77] -> unit embedding [B, D]) with a parity check.

    The export always runs on the CPU (--device is ignored).
    """
    from edgekd.export.text import export_text_encoder

    t = load_teacher_from_options(teacher, pretrained, teacher_weights, random_teacher, "cpu")
    meta = export_text_encoder(t, out, opset=opset)
    click.echo(f"wrote {out}: {meta['files']['model']} ({meta['embed_dim']}-d, teacher {meta['teacher_id']}), "
               f"tokenizer {meta['files']['tokenizer']}; parity min cosine {meta['parity']['min_cosine']:.6f}")
