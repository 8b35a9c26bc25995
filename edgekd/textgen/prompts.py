"""Prompt templates for captions (VLM-KD: visible attributes, context, distinguishing parts) and class descriptions
(the OOD paper's one-sentence appearance description, several phrasings).

A template may hold `{label}` where the class name goes (replaced literally, other braces stay as they are).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd import EdgekdError
from edgekd._io import read_string_list

LABEL = "{label}"

# VLM-KD asks the VLM for free-form, image-specific text; these ask for what a student can learn from a photo.
CAPTION_PROMPTS = (
    "Describe the main object in this image in one or two sentences: its visible attributes (colour, shape, size, "
    "texture), its distinguishing parts, and its surroundings.",
    "What makes the object in this photo recognisable? Name its characteristic parts and the context it appears in, "
    "in one or two sentences.",
    "Describe this scene briefly: the main object, its pose or arrangement, and the background.",
)
CAPTION_PROMPTS_WITH_LABEL = (
    "The main object in this image is a {label}. In one or two sentences, describe what this particular "
    "{label} looks like: its visible attributes (colour, shape, size, texture), its distinguishing parts, and its "
    "surroundings.",
    "This photo shows a {label}. Which parts and details make it recognisable here, and in what context does it "
    "appear? Answer in one or two sentences.",
    "This photo shows a {label}. Describe its pose or arrangement and the background, in one or two sentences.",
)
DESCRIBE_PROMPTS = (
    "Describe what a {label} looks like in a photo, in one sentence.",
    "What visual features distinguish a {label} from similar things? Answer in one sentence.",
    "Describe the typical shape, colours, parts and surroundings of a {label}, in one sentence.",
)
SYSTEM_DESCRIBE = "You write short, factual visual descriptions. Answer with the description only."


def load_prompt_file(path: str | os.PathLike, option: str = "--prompt-file") -> tuple[str, ...]:
    """One prompt per line ('#' comments and blank lines ignored) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{option} {path}: no such file")
    prompts = [p.strip() for p in read_string_list(path, option) if p.strip()]
    if not prompts:
        raise EdgekdError(f"{option} {path}: no prompts in the file")
    return tuple(prompts)


def caption_prompts(prompt_file: str | os.PathLike | None = None, with_label: bool = False) -> tuple[str, ...]:
    """The caption templates: the built-in set (with or without the class name) or a file's.

    With `with_label`, a file prompt without `{label}` gets "The main object in this image is a {label}. " in front;
    without it, a prompt that asks for `{label}` is an error (the label would never be filled in).
    """
    if prompt_file is None:
        return CAPTION_PROMPTS_WITH_LABEL if with_label else CAPTION_PROMPTS
    prompts = load_prompt_file(prompt_file)
    if with_label:
        return tuple(p if LABEL in p else f"The main object in this image is a {LABEL}. {p}" for p in prompts)
    if any(LABEL in p for p in prompts):
        raise EdgekdError(f"--prompt-file {prompt_file}: a prompt uses {LABEL}; add --with-label to fill it with "
                          "the class name (needs a labeled dataset)")
    return prompts


def describe_prompts(prompt_file: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class-description templates; each must name the class with `{label}`."""
    if prompt_file is None:
        return DESCRIBE_PROMPTS
    prompts = load_prompt_file(prompt_file)
    bad = [p for p in prompts if LABEL not in p]
    if bad:
        raise EdgekdError(f"--prompt-file {prompt_file}: every describe prompt needs {LABEL} for the class name; "
                          f"bad: {bad[0]!r}")
    return prompts


def fill(template: str, label: str | None) -> str:
    """Put the class name (underscores as spaces) where `{label}` is."""
    if LABEL not in template:
        return template
    if not label:
        raise EdgekdError(f"prompt {template!r} needs a class name but the image has no label")
    return template.replace(LABEL, label.replace("_", " "))


def pick(prompts: tuple[str, ...], n: int, option: str) -> tuple[str, ...]:
    """The first `n` templates: one generation per template, so `n` cannot exceed the set."""
    if n > len(prompts):
        raise EdgekdError(f"{option} {n}: only {len(prompts)} prompt templates; give more with --prompt-file")
    return prompts[:n]
