"""What a text generator is to the rest of edgekd: requests (a prompt, maybe an image) in, generations out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edgekd import EdgekdError

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


def create_backend(model: str, endpoint: str | None = None, *, vision: bool, max_new_tokens: int = 96,
                   device: str = "auto", batch_size: int = 8, concurrency: int = 4, timeout_s: float = 120.0,
                   retries: int = 5, api_key_env: str | None = None, image_side: int = 512) -> Backend:
    """A transformers backend for `model` (hub id or local folder), or an endpoint backend when `endpoint` is given.

    vision: image-text-to-text (captions) rather than a text-only chat model (descriptions).
    """
    if not model:
        raise EdgekdError("--model is required: a hub id or local folder (transformers), or the served model name "
                          "(--endpoint)")
    if endpoint:
        from edgekd.textgen.endpoint import EndpointBackend, read_api_key

        return EndpointBackend(endpoint, model, api_key=read_api_key(api_key_env), concurrency=concurrency,
                               timeout_s=timeout_s, retries=retries, max_new_tokens=max_new_tokens,
                               image_side=image_side)
    from edgekd.textgen.hf import TransformersBackend

    return TransformersBackend(model, vision=vision, device=device, batch_size=batch_size,
                               max_new_tokens=max_new_tokens)
