"""Per-class attribute descriptions from a language model into the JSON that `--descriptions` reads
(`{class name: [description, ...]}`), cached per class: a re-run asks only for classes the file lacks."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, atomic_write_text, read_json
from edgekd.teacher.prompts import DESCRIPTION_TEMPLATE
from edgekd.textgen.backend import Backend, Request
from edgekd.textgen.captions import billed_usage, generate_with_retries
from edgekd.textgen.postprocess import CONTEXT_LENGTH, clip_token_counter, finish
from edgekd.textgen.prompts import SYSTEM_DESCRIBE, fill
from edgekd.textgen.store import meta_path, sum_usage

log = logging.getLogger(__name__)

FORMAT = "edgekd.descriptions"


@dataclass
class DescribeReport:
    out: Path
    described: int
    cached: int
    new: int
    missing: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)


def _open(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, list[str]]:
    """The descriptions already in `out` when it was made with the same settings."""
    mpath = meta_path(out)
    if overwrite or not out.exists():
        mpath.unlink(missing_ok=True)
        return {}
    if not mpath.exists():
        raise EdgekdError(f"--out {out} exists but was not written by edgekd describe (no {mpath.name}); "
                          "choose another path or pass --overwrite")
    if read_json(mpath).get("identity") != identity:
        raise EdgekdError(f"--out {out} was made with another model or other prompts; run with the same settings "
                          "to add classes, or pass --overwrite")
    data = read_json(out)
    if not isinstance(data, dict):
        raise EdgekdError(f"--out {out}: not a JSON object of descriptions; pass --overwrite to replace it")
    return {str(k): list(v) for k, v in data.items()}


def _save(out: Path, descriptions: dict[str, list[str]], identity: dict[str, Any], missing: list[str],
          usage: dict[str, int]) -> None:
    # the data file first: a kill between the two writes leaves a meta that still matches an older, valid file
    atomic_write_text(out, json.dumps(descriptions, indent=2, ensure_ascii=False) + "\n")
    atomic_write_json(meta_path(out), {"format": FORMAT, "version": 1, "identity": identity, "missing": missing,
                                       "tokenizer": clip_token_counter()[1], "usage": usage})


def describe_classes(names: list[str], out: str | os.PathLike, backend: Backend, prompts: tuple[str, ...],
                     retries: int = 2, overwrite: bool = False, progress: bool = True) -> DescribeReport:
    """Ask the model each prompt for each class not yet in `out`; descriptions are cleaned, deduplicated and cut to
    fit the teacher's context inside `"a photo of {name} . {description}"`. Classes that get none are listed."""
    out = Path(out)
    identity = {**backend.identity(), "prompts": list(prompts), "max_tokens": CONTEXT_LENGTH}
    have = _open(out, identity, overwrite)
    todo = [c for c in dict.fromkeys(names) if c not in have]
    old_meta = read_json(meta_path(out)) if meta_path(out).exists() else {}
    usage, missing = dict(old_meta.get("usage", {})), []
    count = clip_token_counter()[0]
    step = max(1, backend.batch_size // len(prompts))
    with tqdm(total=len(todo), unit="class", desc="describe", disable=not progress) as bar:
        for s in range(0, len(todo), step):
            batch = todo[s:s + step]
            requests = [Request(fill(p, c), system=SYSTEM_DESCRIBE) for c in batch for p in prompts]
            attempts = generate_with_retries(backend, requests, retries)
            for k, c in enumerate(batch):
                mine = attempts[k * len(prompts):(k + 1) * len(prompts)]
                reserve = count(DESCRIPTION_TEMPLATE.format(name=c.replace("_", " "), description=""))
                descs = finish((a[-1].text for a in mine), CONTEXT_LENGTH, reserve)
                if descs:
                    have[c] = descs
                else:
                    missing.append(c)
                usage = sum_usage([usage, billed_usage(mine)])
            _save(out, have, identity, missing, usage)
            bar.update(len(batch))
    if not todo:
        log.info("all %d classes already described in %s", len(names), out)
    return DescribeReport(out, sum(c in have for c in names), len(names) - len(todo), len(todo) - len(missing),
                          missing, usage)
