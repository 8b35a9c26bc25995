"""Import orders of numpy / torch / GStreamer / OpenVINO / onnxruntime in one process (edgekd.unwind).

Each order runs in a child process, because a wrong order kills the process (SIGABRT/SIGSEGV): never in the test
process itself. The runtime must either work or refuse with the one-line fix; the detector's verdict must agree with
what the raw libraries do on this host (so the tests also hold on a GStreamer built without libunwind)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_runtime_support import make_bundle

from edgekd.unwind import FIX, global_definition, loaded_libraries, pin_gcc_unwinder

ROOT = Path(__file__).resolve().parents[1]
STEPS = {
    "numpy": "import numpy",
    "torch": "import torch",
    "gst": "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None)",
    "edgekd": "import edgekd.runtime",
    "edgekd-gst": "from edgekd.gst import import_gst; import_gst()",
}
# loads the bundle on both backends and classifies a frame; prints one line per backend
CLASSIFY = """
import numpy as np
from edgekd import EdgekdError
from edgekd.runtime.classifier import OpenVocabClassifier
for backend in ("openvino", "onnxruntime"):
    try:
        clf = OpenVocabClassifier.load({bundle!r}, backend=backend, threads=1)
        print(backend, "ok", clf.classify(np.full((40, 50, 3), 90, np.uint8), top_k=1)[0].label)
    except EdgekdError as e:
        print(backend, "refused", e)
"""
RAW_OPENVINO = """
import openvino as ov
core = ov.Core()
core.compile_model(core.read_model({model!r}), "CPU")
print("compiled")
"""


def _gst_missing() -> str | None:
    out = _run(["gst"], "print('gst ok')")
    return None if out.returncode == 0 and "gst ok" in out.stdout else f"GStreamer not importable: {out.stderr[-200:]}"


def _run(order: list[str], tail: str) -> subprocess.CompletedProcess:
    code = "\n".join([STEPS[s] for s in order] + [tail])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=ROOT)


def _conflict(order: list[str]) -> bool:
    out = _run(order, "from edgekd.unwind import unwinder_conflict; print('conflict', unwinder_conflict() is not None)")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "conflict True"


@pytest.fixture(scope="module")
def gst_or_skip():
    reason = _gst_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    return make_bundle(tmp_path_factory.mktemp("unwind") / "b")


def test_loaded_libraries_and_global_definition():
    libs = loaded_libraries()
    assert libs and any("libc.so" in lib for lib in libs)
    assert pin_gcc_unwinder() == sys.platform.startswith("linux")
    if sys.platform.startswith("linux"):
        assert global_definition("malloc") is not None
        assert global_definition("no_such_symbol_edgekd") is None


@pytest.mark.parametrize("order", [["edgekd", "numpy", "gst"], ["edgekd", "torch", "gst"], ["numpy", "edgekd", "gst"],
                                   ["torch", "edgekd-gst", "numpy"], ["gst", "numpy", "edgekd"],
                                   ["gst", "torch", "edgekd"]])
def test_orders_that_edgekd_makes_safe(gst_or_skip, bundle, order):
    """edgekd (runtime or gst) imported before GStreamer arrives, or GStreamer first: both backends just work."""
    out = _run(order, CLASSIFY.format(bundle=str(bundle)))
    assert out.returncode == 0, (order, out.returncode, out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()[-2:]
    assert [line.split()[:2] for line in lines] == [["openvino", "ok"], ["onnxruntime", "ok"]], (order, lines)
    assert not _conflict(order)


@pytest.mark.parametrize("first", ["numpy", "torch"])
def test_too_late_orders_refuse_with_the_fix(gst_or_skip, bundle, first):
    """The app loaded GStreamer after numpy/torch and before edgekd: a one-line refusal naming the fix where the
    unwinders are mixed, never a dead process; on a host whose GStreamer has no libunwind, it just works."""
    order = [first, "gst", "edgekd"]
    out = _run(order, CLASSIFY.format(bundle=str(bundle)))
    assert out.returncode == 0, (order, out.returncode, out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()[-2:]
    if _conflict(order):
        assert all(line.split()[1] == "refused" and FIX in line for line in lines), lines
    else:
        assert all(line.split()[1] == "ok" for line in lines), lines


@pytest.mark.parametrize("order", [["numpy", "gst"], ["gst", "numpy"], ["edgekd", "numpy", "gst"]])
def test_the_detector_agrees_with_openvino_itself(gst_or_skip, bundle, order):
    """Raw OpenVINO (no edgekd backend) in the same order: it dies from a signal exactly when the detector says the
    unwinders are mixed (on this Debian 12 host: numpy, then GStreamer)."""
    model = str(bundle / "model.onnx")
    raw = _run(order, RAW_OPENVINO.format(model=model))
    crashed = raw.returncode < 0
    assert crashed or (raw.returncode == 0 and "compiled" in raw.stdout), raw.stderr[-2000:]
    assert crashed == _conflict(order), (order, raw.returncode)



def test_listing_libraries_does_not_deadlock_with_an_importing_thread(tmp_path):
    """loaded_libraries() in one thread while another imports extension modules (GIL held, then the loader lock in
    dlopen: OpenVINO's telemetry thread after `import openvino`). With dl_iterate_phdr and a Python callback (loader
    lock held, then the GIL) this deadlocked in 3 runs of 3; the link_map walk takes no loader lock."""
    code = f"""
import importlib.machinery, importlib.util, os, shutil, threading
from edgekd.unwind import loaded_libraries
src = importlib.util.find_spec("_multiprocessing").origin
copies = [shutil.copy(src, os.path.join({str(tmp_path)!r}, f"m{{i}}.so")) for i in range(150)]
def importer():
    for p in copies:  # each copy is a new dlopen, made with the GIL held
        loader = importlib.machinery.ExtensionFileLoader("_multiprocessing", p)
        importlib.util.module_from_spec(importlib.util.spec_from_file_location("_multiprocessing", p, loader=loader))
t = threading.Thread(target=importer, daemon=True)
t.start()
calls = 0
while t.is_alive():
    libs = loaded_libraries()
    calls += 1
assert any(name.endswith("m149.so") for name in loaded_libraries()) and libs[0] == "", libs[:2]
print(calls)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and int(proc.stdout.strip()) > 0, proc.stderr[-2000:]
