"""Run one measuring function of a benchmark script in a fresh process that imports only the runtime.

    in_child(__file__, "measure_crops", bundle=..., threads=2)    # parent: the function's JSON result
    if sys.argv[1] == "--child": run_job(globals(), sys.argv[2])  # child: the script's own main() hands over

A fresh process per measurement keeps one backend's thread pools and allocations out of the next one's timing, and
the child checks that it never imported torch (the runtime must not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def in_child(script: str, fn: str, **kwargs: Any) -> Any:
    """`fn(**kwargs)` of `script`, run as `python script --child JOB`; SystemExit with the child's stderr tail."""
    job = json.dumps({"fn": fn, "kwargs": kwargs})
    out = subprocess.run([sys.executable, script, "--child", job], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{fn}({kwargs}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_job(namespace: dict[str, Any], job: str) -> None:
    """The child side: call the named function of the script's `namespace` and print its result as JSON."""
    spec = json.loads(job)
    value = namespace[spec["fn"]](**spec["kwargs"])
    assert not any(m.split(".")[0] == "torch" for m in sys.modules), "the runtime process imported torch"
    print(json.dumps(value))
