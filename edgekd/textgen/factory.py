"""create_backend: the text generator a model name (and maybe an endpoint URL) asks for. Apart from the interface in
`backend`, so that the implementations (`hf`, `endpoint`) import the interface without importing their chooser."""

from __future__ import annotations

from edgekd import EdgekdError
from edgekd.textgen.backend import Backend


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
