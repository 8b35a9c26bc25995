"""Run `make demo`'s pipeline from scratch (random teacher, CIFAR-10 test JPEGs) and keep its summary for the README.

    python benchmarks/demo_run.py [--data CIFAR10_TEST_DIR] [--work /tmp/edgekd-demo-run]

Writes benchmarks/results/demo/summary.txt (the demo's closing summary, verbatim) and demo.json (wall time, the
command, host CPU). The README's demo block is generated from them (benchmarks/readme_tables.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd.cpu import cpu_facts  # noqa: E402
from edgekd.cpu import describe as describe_cpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="ImageFolder for EDGEKD_DEMO_DATA (default: CIFAR-10 test from ../shared/assets)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-demo-run"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "demo")
    args = ap.parse_args()
    data = args.data or subprocess.run([str(REPO.parent / "shared" / "assets" / "unpack-cifar10.sh"),
                                        "/tmp/edgekd-data"], capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1] + "/test"
    shutil.rmtree(args.work, ignore_errors=True)  # from scratch: every stage runs
    cmd = [sys.executable, "-m", "edgekd.demo", "--out", str(args.work)]
    env = {**os.environ, "EDGEKD_DEMO_DATA": str(data), "EDGEKD_RANDOM_TEACHER": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(f"the demo failed (exit {proc.returncode})")
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if "edgekd demo summary" in line) - 1
    summary = "\n".join(lines[start:]).replace(str(args.work), "demo-out") + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.txt").write_text(summary)
    facts = cpu_facts()
    (args.out / "demo.json").write_text(json.dumps({
        "seconds": round(seconds, 1), "command": "EDGEKD_DEMO_DATA=<cifar10 test> EDGEKD_RANDOM_TEACHER=1 make demo",
        "cpu": describe_cpu(facts), "cpu_facts": facts, "cores": len(os.sched_getaffinity(0)),
        "created": time.strftime("%Y-%m-%d %H:%M")}, indent=1) + "\n")
    print(f"wrote {args.out / 'summary.txt'} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
