"""Pieces of `edgekd captions`: text clean-up, the 77-token limit, the JSONL store's partial-line repair, prompts,
and the commands' --help."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.textgen.postprocess import clean, clip_token_counter, finish, truncate_tokens
from edgekd.textgen.prompts import caption_prompts, fill
from edgekd.textgen.store import read_records, repair_tail


@pytest.mark.parametrize("raw, want", [
    ("The image shows a red bird on a branch.", "A red bird on a branch."),
    ("Sure! Here is a description: In this image, a dog runs.", "A dog runs."),
    ("**This is a photo of** a parked car", "A parked car"),
    ("The image is blurry but shows a cat", "The image is blurry but shows a cat"),  # not boilerplate
    ("I'm sorry, I can't help with that.", ""),
    ("  \x00 ", ""),
])
def test_clean(raw, want):
    assert clean(raw) == want


def test_truncate_to_clip_context_and_dedup():
    count, _ = clip_token_counter()
    long = "A bird sits on a branch. " + "It has many small feathers of several colours " * 10 + "."
    cut = truncate_tokens(long)
    assert cut == "A bird sits on a branch." and count(cut) <= 75
    words = truncate_tokens("feather " * 200)
    assert 60 < count(words) <= 75
    assert truncate_tokens("a short caption") == "a short caption"
    assert finish(["A cat.", "a cat", "The image shows a cat!", "", "I cannot do that"]) == ["A cat."]


def test_partial_last_line_is_dropped(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"path": "a.png", "captions": ["x"]}\n{"path": "b.png", "capt')
    assert read_records(p).keys() == {"a.png"}  # a reader never sees the half line
    assert repair_tail(p) > 0 and p.read_bytes() == b'{"path": "a.png", "captions": ["x"]}\n'
    assert repair_tail(p) == 0


def test_prompts_with_and_without_label(tmp_path):
    assert all("{label}" in p for p in caption_prompts(with_label=True))
    f = tmp_path / "p.txt"
    f.write_text("# mine\nWhat is special about this {label}?\n")
    with pytest.raises(EdgekdError, match="add --with-label"):
        caption_prompts(f)
    assert fill(caption_prompts(f, with_label=True)[0], "golden_retriever") == \
        "What is special about this golden retriever?"


@pytest.mark.parametrize("args", [["captions"], ["captions", "merge"], ["describe"]])
def test_help(args):
    r = CliRunner().invoke(cli, [*args, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_usage_errors():
    r = CliRunner().invoke(cli, ["captions", "--out", "x.jsonl"])
    assert r.exit_code == 2 and "--data and --out are required" in r.output
    r = CliRunner().invoke(cli, ["captions", "merge", "--out", "x.jsonl"])
    assert r.exit_code == 2 and "Missing argument" in r.output
