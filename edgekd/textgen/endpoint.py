"""OpenAI-compatible chat endpoint backend (vLLM, Ollama, llama.cpp server, hosted APIs): standard library only.

Requests run `concurrency` at a time. A 429 or 5xx answer, a timeout, a dropped connection or a malformed body is
retried with exponential backoff (a 429's Retry-After is honoured); any other 4xx stops the run with the server's
message, since retrying cannot fix a bad key or a wrong model name.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgekd import EdgekdError
from edgekd.textgen.backend import Generation, Request

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class _Retryable(Exception):
    """A failure worth another try; `wait` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def read_api_key(env: str | None) -> str | None:
    """The key from environment variable `env`; without `env`, OPENAI_API_KEY if set (local servers need none)."""
    if env is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    key = os.environ.get(env)
    if not key:
        raise EdgekdError(f"--api-key-env {env}: the environment variable {env} is not set or empty")
    return key


def chat_url(endpoint: str) -> str:
    """A base URL (…/v1) or the full …/chat/completions URL -> the chat completions URL."""
    if not endpoint.startswith(("http://", "https://")):
        raise EdgekdError(f"--endpoint {endpoint}: expected an http(s) URL such as http://localhost:8000/v1")
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def image_data_url(image, side: int) -> str:
    """PIL image -> JPEG data URL, longest side at most `side` pixels (fewer image tokens billed)."""
    img = image.copy()
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) -> seconds to wait; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_reply(body: bytes) -> Generation:
    """A chat completion body -> Generation; raises _Retryable when it is not one."""
    try:
        data = json.loads(body)
        message = data["choices"][0]["message"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
        raise _Retryable(f"malformed reply ({type(e).__name__}: {body[:120]!r})") from e
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Generation(content if isinstance(content, str) else "", usage.get("prompt_tokens"),
                      usage.get("completion_tokens"))


class EndpointBackend:
    """Chat completions over HTTP, `concurrency` requests in flight, bounded retries."""

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, concurrency: int = 4,
                 timeout_s: float = 120.0, retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 max_new_tokens: int = 96, image_side: int = 512):
        self.url, self.model, self.api_key = chat_url(endpoint), model, api_key
        self.batch_size = self.concurrency = max(1, concurrency)
        self.timeout_s, self.retries, self.backoff_s, self.max_backoff_s = timeout_s, retries, backoff_s, max_backoff_s
        self.max_new_tokens, self.image_side = max_new_tokens, image_side
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="edgekd-endpoint")

    def identity(self) -> dict[str, Any]:
        return {"backend": "endpoint", "model": self.model, "max_new_tokens": self.max_new_tokens,
                "image_side": self.image_side}

    def body(self, r: Request, sample: bool) -> dict[str, Any]:
        content: Any = r.prompt
        if r.image is not None:
            content = [{"type": "text", "text": r.prompt},
                       {"type": "image_url", "image_url": {"url": image_data_url(r.image, self.image_side)}}]
        messages = ([{"role": "system", "content": r.system}] if r.system else []) + [
            {"role": "user", "content": content}]
        return {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens,
                "temperature": 0.8 if sample else 0.0}

    def generate(self, requests: Sequence[Request], sample: bool = False) -> list[Generation]:
        return list(self._pool.map(lambda r: self.post(self.body(r, sample)), requests))

    def post(self, body: dict[str, Any]) -> Generation:
        """One chat completion with up to `retries` retries."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return parse_reply(self._send(data))
            except _Retryable as e:
                last = str(e)
                if attempt == self.retries:
                    break
                wait = e.wait if e.wait is not None else self.backoff_s * 2**attempt * (1 + 0.25 * random.random())
                log.info("endpoint: %s; retry %d/%d in %.1fs", e, attempt + 1, self.retries, wait)
                time.sleep(min(wait, self.max_backoff_s))
        raise EdgekdError(f"--endpoint {self.url}: gave up after {self.retries + 1} attempts; last error: {last}")

    def _send(self, data: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace").strip()
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code} {detail}", retry_after(e.headers.get("Retry-After"))) from e
            raise EdgekdError(f"--endpoint {self.url}: HTTP {e.code}: {detail or e.reason}"
                              + (" (check the key in --api-key-env)" if e.code in (401, 403) else "")) from e
        except TimeoutError as e:
            raise _Retryable(f"no answer within --timeout {self.timeout_s:g}s") from e
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"connection failed ({getattr(e, 'reason', e)})") from e

