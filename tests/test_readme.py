"""README.md and docs/ quote measured figures only through blocks generated from benchmarks/results/."""

from __future__ import annotations

from pathlib import Path

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _tables():
    return load_benchmark("readme_tables")


def test_generated_blocks_match_the_results_files(capsys):
    assert _tables().main(["--check"]) == 0, capsys.readouterr().out


def test_a_hand_edited_figure_is_caught():
    tables = _tables()
    text = (ROOT / "README.md").read_text()
    blocks = list(tables.BLOCK.finditer(text))
    assert {m.group("spec").split()[0] for m in blocks} >= {"demo", "headline", "cifar10", "transcript"}
    m = blocks[0]
    body = m.group("body")
    digit = next(i for i, c in enumerate(body) if c.isdigit())
    edited = text[:m.start("body") + digit] + str((int(body[digit]) + 1) % 10) + text[m.start("body") + digit + 1:]
    _, changed = tables.rewrite(edited)
    assert changed == [m.group("spec")]
    assert tables.rewrite(text)[1] == []


def test_no_absolute_paths_of_a_development_machine():
    for path in [*ROOT.glob("benchmarks/*.sh"), *ROOT.glob("benchmarks/*.py"), ROOT / "Makefile"]:
        assert "/work/shared" not in path.read_text(), path
