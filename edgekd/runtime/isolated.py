"""Run inference (or any job) in a fresh child process, so that a native crash inside an inference engine becomes a
one-line error instead of the silent death of the caller. numpy only; torch-free.

    outs = infer_isolated("bundle/model.xml", "openvino", inputs, what="the parity gate of bundle/")
    result = call_isolated("edgekd.export.openvino:accuracy_control_job", {...}, what="NNCF accuracy control")

Why: an INT8 graph that one CPU runs can crash another (OpenVINO's legacy AMX convolution kernel segfaults on some
quantised layers, docs/export.md "INT8 and the CPU"). The export pipeline runs every inference of a freshly
quantised model through here, and the runtime runs a short canary this way before trusting a bundle on a new CPU.
Jobs are `module:function` names called with JSON keyword arguments; arrays travel as .npz files.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError

log = logging.getLogger(__name__)

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the child imports this same edgekd


class NativeCrashError(EdgekdError):
    """A child process died from a signal (a segfault or abort inside native code)."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name


def signal_name(returncode: int) -> str:
    """'SIGSEGV' for a child killed by signal 11 (returncode -11)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def call_isolated(target: str, kwargs: dict[str, Any], what: str, advice: str = "",
                  timeout_s: float | None = None, env: dict[str, str] | None = None) -> Any:
    """Call `module:function(**kwargs)` in `python -m edgekd.runtime.isolated` and return its (JSON) result.

    A child killed by a signal raises NativeCrashError("<what> crashed (SIGSEGV) on <cpu> ...; <advice>"); an
    EdgekdError in the child is raised here with its message; any other failure names the exit status (the child's
    traceback is on stderr above). `env`: extra environment variables of the child (e.g. ONEDNN_MAX_CPU_ISA).
    """
    from edgekd.cpu import cpu_facts, describe

    with tempfile.TemporaryDirectory(prefix="edgekd-isolated-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"target": target, "kwargs": kwargs, "result": str(result)}))
        child_env = {**os.environ, **(env or {}),
                     "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))}
        try:
            rc = subprocess.run([sys.executable, "-m", "edgekd.runtime.isolated", str(job)], env=child_env,
                                timeout=timeout_s, check=False).returncode
        except subprocess.TimeoutExpired as e:
            raise EdgekdError(f"{what}: no answer within {timeout_s:.0f} s (the child process was stopped)") from e
        if rc < 0:
            sig = signal_name(rc)
            raise NativeCrashError(f"{what} crashed ({sig}) on this CPU, {describe(cpu_facts(env=child_env))}"
                                   f"{'; ' + advice if advice else ''}", sig)
        answer = json.loads(result.read_text()) if result.is_file() else None
        if rc != 0 or answer is None:
            if answer and answer.get("error"):
                raise EdgekdError(answer["error"])
            raise EdgekdError(f"{what} failed in its child process (exit status {rc}; its log is above)")
        return answer["value"]


def run_model(backend: Any, x: np.ndarray | Sequence[np.ndarray], batch_size: int | None = None
              ) -> dict[str, np.ndarray]:
    """Run an edgekd.runtime Backend over `x` [N, ...] in batches it accepts (edgekd.runtime.batching), or over a
    sequence of [1, ...] inputs of different sizes (whole frames for in-graph resizing), one at a time.
    -> {output name: float32 [N, ...]}."""
    from edgekd.runtime.batching import run_batched

    if not isinstance(x, np.ndarray):
        parts = [run_model(backend, x[i], batch_size) for i in range(len(x))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {k: np.asarray(v, np.float32) for k, v in run_batched(backend, x, batch_size=batch_size).items()}


def infer_job(model: str, backend: str, threads: int | None, inputs: str, outputs: str) -> dict[str, Any]:
    """Child side of infer_isolated: run the model over the arrays of `inputs` (.npz; one array [N, ...], or several
    [1, ...] frames) and save its outputs to `outputs` (.npz)."""
    from edgekd.runtime.backends import create_backend

    be = create_backend(model, backend=backend, threads=threads)
    with np.load(inputs) as data:
        arrays = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    outs = run_model(be, arrays[0] if len(arrays) == 1 else arrays)
    np.savez(outputs, **outs)
    return {"backend": be.name}


def infer_isolated(model: str | os.PathLike, backend: str, x: np.ndarray | Sequence[np.ndarray],
                   threads: int | None = None, what: str | None = None, advice: str = "",
                   env: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """run_model(create_backend(model, backend), x) in a child process (with `env` added to its environment) ->
    {output name: [N, ...]}."""
    with tempfile.TemporaryDirectory(prefix="edgekd-infer-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        arrays = [x] if isinstance(x, np.ndarray) else [x[i] for i in range(len(x))]
        np.savez(inputs, **{f"arr_{i}": a for i, a in enumerate(arrays)})
        call_isolated("edgekd.runtime.isolated:infer_job",
                      {"model": str(model), "backend": backend, "threads": threads, "inputs": str(inputs),
                       "outputs": str(outputs)}, what or f"{backend} inference of {model}", advice, env=env)
        with np.load(outputs) as data:
            return {k: data[k] for k in data.files}


def _main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    module, _, name = job["target"].partition(":")
    func = getattr(importlib.import_module(module), name)
    try:
        value = func(**job["kwargs"])
    except EdgekdError as e:
        Path(job["result"]).write_text(json.dumps({"error": str(e)}))
        return 1
    Path(job["result"]).write_text(json.dumps({"value": value}))
    return 0


if __name__ == "__main__":  # python -m edgekd.runtime.isolated JOB.json
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(_main(sys.argv[1]))
