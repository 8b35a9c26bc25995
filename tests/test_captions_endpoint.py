"""`edgekd captions` on the OpenAI-compatible endpoint backend, against a chat server on 127.0.0.1 run by the test:
retries (429 + Retry-After, 500, timeout, malformed JSON), resume after an interrupted run, shard + merge, bad
images, empty and refused answers."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image

from edgekd import EdgekdError
from edgekd.cli import cli
from edgekd.data.captions import load_captions
from edgekd.textgen.backend import Request
from edgekd.textgen.endpoint import EndpointBackend
from edgekd.textgen.store import read_records


class FakeChatServer:
    """A chat-completions server whose answers follow a script: each request takes the next action of `script`
    (then `default`): ok | empty | refuse | 429:<retry-after> | 500 | 401 | sleep:<s> | malformed. An ok answer is
    derived from the request, so the same image always gets the same caption. Stops itself after `lifetime` s."""

    def __init__(self, default: str = "ok", lifetime: float = 60.0):
        self.script: list[str] = []
        self.default = default
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    action = server.script.pop(0) if server.script else server.default
                server.answer(self, action, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True
        self.timer.start()

    @staticmethod
    def text_for(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str):  # describe: text only
            return f"A typical thing with visible parts; prompt {hashlib.sha1(content.encode()).hexdigest()[:6]}."
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        code = hashlib.sha1(url.encode()).hexdigest()[:8]
        return f"The image shows a small object, code {code}, on a plain background."

    def answer(self, h: BaseHTTPRequestHandler, action: str, body: dict) -> None:
        kind, _, arg = action.partition(":")
        if kind == "sleep":
            time.sleep(float(arg))
            kind = "ok"
        if kind in ("429", "500", "401"):
            payload = json.dumps({"error": {"message": f"scripted {kind}"}}).encode()
            h.send_response(int(kind))
            if kind == "429" and arg:
                h.send_header("Retry-After", arg)
        else:
            text = {"ok": self.text_for(body), "empty": "", "refuse": "I'm sorry, I can't help with that."}.get(kind)
            reply = {"choices": [{"message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
            payload = b'{"choices": [' if kind == "malformed" else json.dumps(reply).encode()
            h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        try:
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeChatServer()
    yield s
    s.stop()


@pytest.fixture
def images(tmp_path) -> Path:
    """ImageFolder of 2 classes x 3 images, plus one corrupt file."""
    root = tmp_path / "imgs"
    for ci, name in enumerate(("cat", "dog")):
        for i in range(3):
            make_image(root / name / f"{i}.png", (40 + 80 * ci, 90, 30 * i), size=(24, 20), seed=ci * 10 + i)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


BODY = {"model": "m", "messages": [{"role": "user", "content": "describe a cat"}]}


def _backend(server, **kw) -> EndpointBackend:
    kw = {"backoff_s": 0.01, "retries": 3, "timeout_s": 5.0, **kw}
    return EndpointBackend(server.url, "tiny-vlm", **kw)


def test_success_sends_openai_chat_with_image(server):
    from PIL import Image

    g = _backend(server, api_key="sk-test").generate([Request("describe", Image.new("RGB", (900, 300)))])[0]
    assert g.text.startswith("The image shows a small object") and (g.prompt_tokens, g.output_tokens) == (100, 20)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    parts = req["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "describe"}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert req["body"]["model"] == "tiny-vlm" and req["body"]["temperature"] == 0.0


def test_429_retry_after_is_honoured(server):
    server.script = ["429:0.4"]
    t0 = time.perf_counter()
    g = _backend(server).post(BODY)
    assert time.perf_counter() - t0 >= 0.4 and g.text and len(server.requests) == 2


@pytest.mark.parametrize("script", [["500"], ["500", "500"], ["malformed"], ["sleep:1.5"]])
def test_transient_failures_are_retried(server, script):
    server.script = list(script)
    g = _backend(server, timeout_s=0.5).post(BODY)
    assert g.text.startswith("A typical thing") and len(server.requests) == len(script) + 1


def test_persistent_failures_give_up_with_one_line(server):
    server.default = "malformed"
    with pytest.raises(EdgekdError, match=r"gave up after 3 attempts; last error: malformed reply"):
        _backend(server, retries=2).post(BODY)
    assert len(server.requests) == 3  # bounded


def test_client_errors_are_not_retried(server):
    server.default = "401"
    with pytest.raises(EdgekdError, match=r"HTTP 401: .*scripted 401.*--api-key-env"):
        _backend(server).post(BODY)
    assert len(server.requests) == 1


def _run(server, images, out, *extra, ok=True):
    args = ["captions", "--data", str(images), "--out", str(out), "--endpoint", server.url, "--model", "tiny-vlm",
            "--no-progress", "--retries", "1", *extra]
    r = CliRunner().invoke(cli, args)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def test_captions_cli_writes_what_cache_reads(server, images, tmp_path):
    out = tmp_path / "captions.jsonl"
    r = _run(server, images, out, "--per-image", "2", "--concurrency", "3")
    assert "6 images captioned, 0 missing, 1 bad" in r.output
    assert "dog/broken.jpg: not an image" in r.output  # bad images are listed
    caps = load_captions(out, [p.relative_to(images).as_posix() for p in images.rglob("*.*")])
    assert caps.pop("dog/broken.jpg") == []  # recorded, but no caption
    assert len(caps) == 6 and all(len(c) == 1 for c in caps.values())  # 2 prompts, same answer -> deduplicated
    assert all(c[0].startswith("A small object") for c in caps.values())  # boilerplate stripped
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["complete"] and meta["counts"] == {"ok": 6, "missing": 0, "bad_image": 1}
    assert meta["usage"] == {"requests": 12, "prompt_tokens": 1200, "output_tokens": 240}
    n = len(server.requests)
    r = _run(server, images, out, "--per-image", "2")
    assert "0 new, 7 already done" in r.output and len(server.requests) == n  # resume: nothing asked again
    r = _run(server, images, out, ok=False)  # other prompts -> refuse to mix
    assert r.exit_code == 1 and "other settings (prompts differ)" in r.output


def test_with_label_puts_class_name_in_prompt(server, images, tmp_path):
    _run(server, images, tmp_path / "c.jsonl", "--with-label")
    prompts = [q["body"]["messages"][0]["content"][0]["text"] for q in server.requests]
    assert sum("is a cat." in p for p in prompts) == 3 and sum("is a dog." in p for p in prompts) == 3


def test_empty_and_refused_answers_become_missing_never_captions(server, images, tmp_path):
    server.default = "refuse"
    server.script = ["empty"]
    out = tmp_path / "c.jsonl"
    r = _run(server, images, out, "--empty-retries", "2")
    assert "0 images captioned, 6 missing, 1 bad" in r.output
    assert len(server.requests) == 6 * 3  # first try + 2 retries each
    assert sum(q["body"]["temperature"] > 0 for q in server.requests) == 12  # retries sample
    recs = read_records(out)
    assert all(rec["captions"] == [] for rec in recs.values())
    assert load_captions(out) == {p: [] for p in recs}  # the reader sees no caption at all
    server.default = "ok"
    r = _run(server, images, out, "--empty-retries", "2", "--retry-missing")
    assert "6 images captioned, 0 missing, 1 bad" in r.output


def _lines(path: Path) -> list[str]:
    return [json.loads(ln)["path"] for ln in path.read_text().splitlines()]


def test_resume_after_interrupted_run_and_partial_line(server, images, tmp_path):
    ref = tmp_path / "ref.jsonl"
    _run(server, images, ref, "--concurrency", "1")
    out = tmp_path / "c.jsonl"
    server.script = ["ok", "ok", "401"]  # the run dies on its third image
    r = _run(server, images, out, "--concurrency", "1", ok=False)
    assert r.exit_code == 1 and "HTTP 401" in r.output
    done = _lines(out)
    with open(out, "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write(b'{"path": "dog/2.png", "capt')
    r = _run(server, images, out, "--concurrency", "1")
    assert f"{7 - len(done)} new, {len(done)} already done" in r.output
    paths = _lines(out)
    assert len(paths) == len(set(paths)) == 7  # no duplicate, none lost
    assert load_captions(out) == load_captions(ref)


def test_shards_merged_equal_one_run(server, images, tmp_path):
    one = tmp_path / "one.jsonl"
    _run(server, images, one)
    out = tmp_path / "c.jsonl"
    r = _run(server, images, out, "--shard", "1/2")
    assert "edgekd captions merge" in r.output and (tmp_path / "c.shard-1-of-2.jsonl").is_file()
    r = CliRunner().invoke(cli, ["captions", "merge", str(tmp_path / "c.shard-1-of-2.jsonl"), "--out", str(out)])
    assert r.exit_code == 1 and "every shard 0..N-1" in r.output
    _run(server, images, out, "--shard", "0/2")
    shards = [str(tmp_path / f"c.shard-{i}-of-2.jsonl") for i in range(2)]
    r = CliRunner().invoke(cli, ["captions", "merge", *shards, "--out", str(out)])
    assert r.exit_code == 0 and "6 captioned, 0 missing, 1 bad" in r.output, r.output
    assert out.read_text() == "".join(sorted(one.read_text().splitlines(keepends=True)))


def test_bad_inputs_give_one_line_errors(server, images, tmp_path):
    out = str(tmp_path / "c.jsonl")
    cases = [
        (["--endpoint", "localhost:1"], "expected an http(s) URL"),
        (["--endpoint", server.url, "--api-key-env", "EDGEKD_TEST_NO_SUCH_KEY"], "EDGEKD_TEST_NO_SUCH_KEY is not set"),
        (["--endpoint", server.url, "--shard", "2/2"], "--shard 2/2: need 0 <= I < N"),
        (["--endpoint", server.url, "--per-image", "9"], "--per-image 9: only 3 prompt templates"),
    ]
    for extra, msg in cases:
        r = CliRunner().invoke(cli, ["captions", "--data", str(images), "--out", out, "--model", "m", *extra])
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(cli, ["captions", "--data", str(images), "--out", out])
    assert r.exit_code == 1 and "--model is required" in r.output
    unlabeled = tmp_path / "flat"
    shutil.copytree(images / "cat", unlabeled)
    r = CliRunner().invoke(cli, ["captions", "--data", str(unlabeled), "--out", out, "--model", "m", "--endpoint",
                                 server.url, "--with-label"])
    assert r.exit_code == 1 and "--with-label" in r.output and "unlabeled" in r.output
    Path(out).write_text('{"path": "x.png", "captions": ["hand-written"]}\n')
    r = _run(server, images, out, ok=False)
    assert r.exit_code == 1 and "not written by edgekd captions" in r.output
