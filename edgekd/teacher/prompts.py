"""Prompt templates that turn class names (and per-class descriptions) into the texts a CLIP teacher embeds.

`default` is open_clip's OPENAI_IMAGENET_TEMPLATES (the 80-prompt CLIP ensemble), `simple` its 7-prompt
SIMPLE_IMAGENET_TEMPLATES, `single` the plain "a photo of a {}." of the OOD-distillation paper. A templates file holds
one template per line (or a JSON list), each with one `{}` where the class name goes.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd import EdgekdError
from edgekd._io import read_string_list

SINGLE_TEMPLATE = "a photo of a {}."
DESCRIPTION_TEMPLATE = "a photo of {name} . {description}"  # Li et al. 2023, enriched label text


def _open_clip_templates(attr: str) -> list[str]:
    from open_clip import zero_shot_metadata

    # open_clip stores templates as lambdas c -> f"...{c}..."; calling them with "{}" gives format strings
    return [t("{}") for t in getattr(zero_shot_metadata, attr)]


def builtin_templates() -> dict[str, list[str]]:
    return {
        "default": _open_clip_templates("OPENAI_IMAGENET_TEMPLATES"),
        "simple": _open_clip_templates("SIMPLE_IMAGENET_TEMPLATES"),
        "single": [SINGLE_TEMPLATE],
    }


def load_templates(spec: str | os.PathLike | None = "default") -> tuple[list[str], str]:
    """`default` | `simple` | `single` | path of a templates file -> (templates, name recorded in the label pack)."""
    spec = "default" if spec is None else str(spec)
    builtins = builtin_templates()
    if spec in builtins:
        return builtins[spec], spec
    path = Path(spec)
    if not path.is_file():
        raise EdgekdError(f"--templates {spec}: neither a built-in set ({', '.join(builtins)}) nor an existing file")
    templates = read_string_list(path, "--templates")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise EdgekdError(f"--templates {path}: every template needs exactly one '{{}}' for the class name; "
                          f"bad: {bad[0]!r}")
    if not templates:
        raise EdgekdError(f"--templates {path}: no templates in the file")
    return templates, str(path)


def display_name(class_name: str) -> str:
    """Folder names to words: 'golden_retriever' -> 'golden retriever'."""
    return " ".join(class_name.replace("_", " ").split())


def build_prompts(class_names: list[str], templates: list[str],
                  descriptions: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """{class: [template prompts..., description prompts...]} (descriptions matched by class name)."""
    prompts: dict[str, list[str]] = {}
    for c in class_names:
        name = display_name(c)
        ps = [t.format(name) for t in templates]
        ps += [DESCRIPTION_TEMPLATE.format(name=name, description=d) for d in (descriptions or {}).get(c, [])]
        prompts[c] = list(dict.fromkeys(ps))  # de-duplicate, keep order
    return prompts
