"""Hugging Face transformers backend: an image-text-to-text model (captions) or a causal LM (descriptions), batched,
bf16 on a GPU, greedy by default. Imports torch/transformers only when built."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._optional import require
from edgekd.textgen.backend import Generation, Request

log = logging.getLogger(__name__)


def _messages(r: Request, vision: bool) -> list[dict[str, Any]]:
    content: Any = r.prompt
    if vision:
        content = ([{"type": "image"}] if r.image is not None else []) + [{"type": "text", "text": r.prompt}]
    msgs = [{"role": "system", "content": r.system}] if r.system else []
    return [*msgs, {"role": "user", "content": content}]


class TransformersBackend:
    """A local model via `transformers` (`AutoModelForImageTextToText` with its processor when `vision`, else
    `AutoModelForCausalLM` with its tokenizer); the chat template of the model formats each request."""

    def __init__(self, model: str, vision: bool, device: str = "auto", batch_size: int = 8, max_new_tokens: int = 96):
        self.torch = require("torch", extra="torch", purpose="the transformers backend")
        self.tf = require("transformers", extra="captions", purpose="the transformers backend")
        self.name, self.vision, self.batch_size, self.max_new_tokens = model, vision, batch_size, max_new_tokens
        self.device = self._pick_device(device)
        self.dtype = self.torch.bfloat16 if self.device.type == "cuda" else self.torch.float32
        self.processor, self.model = self._load(model)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # decoder-only batches: new tokens follow every prompt directly
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.processor, "chat_template", None) is None and self.tokenizer.chat_template is None:
            raise EdgekdError(f"--model {model}: it has no chat template; use an instruction-tuned (chat) model")

    def _pick_device(self, device: str):
        torch = self.torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgekdError(f"--device {device}: no CUDA device is available; use --device cpu")
        return torch.device(device)

    def _load(self, model: str):
        tf = self.tf
        auto_proc, auto_model = ((tf.AutoProcessor, tf.AutoModelForImageTextToText) if self.vision
                                 else (tf.AutoTokenizer, tf.AutoModelForCausalLM))
        try:
            processor = auto_proc.from_pretrained(model)
            net = auto_model.from_pretrained(model, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as e:
            where = "local folder" if Path(model).exists() else "hub id (needs the hub or its local cache)"
            kind = "an image-text-to-text" if self.vision else "a causal (chat) language"
            raise EdgekdError(f"--model {model}: cannot load it as {kind} model from this {where}: "
                              f"{str(e).splitlines()[0]}") from e
        return processor, net.to(self.device).eval()

    def identity(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.name, "max_new_tokens": self.max_new_tokens}

    def _inputs(self, requests: Sequence[Request]):
        texts = [self.processor.apply_chat_template(_messages(r, self.vision), add_generation_prompt=True,
                                                    tokenize=False) for r in requests]
        if not self.vision:
            return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        images = [[r.image] for r in requests if r.image is not None]
        return self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)

    def generate(self, requests: Sequence[Request], sample: bool = False) -> list[Generation]:
        """Requests -> generations, one batch (`[B, prompt]` left-padded -> `[B, new tokens]`)."""
        torch = self.torch
        inputs = self._inputs(requests).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": sample,
                              "pad_token_id": self.tokenizer.pad_token_id}
        if sample:
            kw.update(temperature=0.8, top_p=0.95)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kw)
        new = out[:, inputs["input_ids"].shape[1]:].cpu()
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [Generation(t, int(p), self._count_new(row)) for t, p, row in zip(texts, prompt_tokens, new)]

    def _count_new(self, row) -> int:
        """Generated tokens up to and including the first end/pad token."""
        stops = {self.tokenizer.pad_token_id, *self._eos_ids()}
        for i, tok in enumerate(row.tolist()):
            if tok in stops:
                return i + 1
        return len(row)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
