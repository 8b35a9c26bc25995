"""What a text generator is to the rest of edgekd: requests (a prompt, maybe an image) in, generations out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Request:
    """One chat turn: `prompt` (and `image` for a vision model), with an optional system message."""

    prompt: str
    image: Image.Image | None = None
    system: str | None = None


@dataclass(frozen=True)
class Generation:
    """The model's text and the tokens a hosted endpoint would bill (None where unknown)."""

    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None


class Backend(Protocol):
    """A text generator. `batch_size` requests go to one `generate` call (a model batch, or concurrent HTTP calls);
    `sample=True` asks for a sampled answer (used on retries, where greedy decoding would repeat itself)."""

    batch_size: int

    def identity(self) -> dict[str, Any]: ...

    def generate(self, requests: Sequence[Request], sample: bool = False) -> list[Generation]: ...
