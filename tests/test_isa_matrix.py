"""The OpenVINO export and runtime tests again under each oneDNN ISA level this CPU has (ONEDNN_MAX_CPU_ISA per
subprocess): OpenVINO's CPU kernels, and with them INT8 numerics and crashes, change with the ISA (issue #13: an INT8
IR that ran on AVX-512 VNNI segfaulted on AMX).

`make test` runs AVX2, the lowest level and the one whose kernels differ most (the host's own level is the rest of
the suite), to keep the suite under 10 minutes; `make test-isa` (EDGEKD_ISA_ALL=1) runs every level, AVX-512 VNNI
included.

onnxruntime has no equivalent switch: its MLAS kernels are picked from CPUID when the library loads, with no
environment or session option to cap the ISA (microsoft/onnxruntime#7010, #12479), so its tests run at the host's
level only, and no test may depend on one CPU's int8 rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.cpu import cpu_facts

ISA_LEVELS = ("AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_AMX")
ISA_TESTS = ("tests/test_export_openvino.py", "tests/test_export_openvino_e2e.py", "tests/test_isolation.py")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.isa
@pytest.mark.openvino
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_openvino_tests_pass_under_isa(isa):
    pytest.importorskip("openvino")
    host = cpu_facts(env={})
    if isa not in host["onednn_isa_levels"]:
        pytest.skip(f"this CPU ({host['model']}) has no {isa}")
    if not os.environ.get("EDGEKD_ISA_ALL"):
        if isa == cpu_facts()["onednn_isa"]:
            pytest.skip(f"{isa} is the level this test session runs at (make test-isa runs it separately too)")
        if isa != ISA_LEVELS[0]:
            pytest.skip(f"make test runs the lowest level ({ISA_LEVELS[0]}) only; make test-isa runs {isa} too")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "openvino", "-p", "no:cacheprovider", "--timeout=300",
           *ISA_TESTS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
    assert proc.returncode == 0, f"ONEDNN_MAX_CPU_ISA={isa}: exit {proc.returncode}\n{tail}"
