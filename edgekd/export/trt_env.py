"""The TensorRT, CUDA Python bindings and NVIDIA driver of this machine, and whether they fit (`edgekd info --env`).

Nothing here raises or imports at module level: each piece is read lazily and a missing one is reported as missing,
with what installs it. The facts the checks rest on:

  * the x86_64 wheels tensorrt-cu12 / tensorrt-cu13 carry TensorRT's CUDA major in their name; NVIDIA's `tensorrt`
    metapackage requires tensorrt_cu12 up to 10.13.0 and tensorrt_cu13 from 10.13.2 (their PyPI metadata)
  * cuda-python N.x is a metapackage of cuda-bindings ~= N.x (PyPI metadata): its major is the CUDA major it binds
  * a driver runs CUDA 13.x from 580, 12.x from 525, 11.x from 450 (NVIDIA CUDA Compatibility, "Minor Version
    Compatibility", docs.nvidia.com/deploy/cuda-compatibility); cuDriverGetVersion names the newest CUDA it runs
  * on JetPack 5 / 6 TensorRT and CUDA come with JetPack's apt packages (python3-libnvinfer), not from pip; JetPack
    7.2.2+ takes NVIDIA's TensorRT 11.4.1 SBSA build
"""

from __future__ import annotations

import platform
import re
from typing import Any

from edgekd._optional import installed_version, is_available, require

# CUDA major -> the oldest driver branch that runs it (minor version compatibility)
DRIVER_MIN = {13: 580, 12: 525, 11: 450}
_WHEEL = re.compile(r"^tensorrt[-_]cu(\d+)$", re.IGNORECASE)
INSTALL_TRT = ("pip install 'edgekd[tensorrt-cu13]' (driver >= 580) or 'edgekd[tensorrt-cu12]' (driver >= 525); "
               "on a Jetson it comes with JetPack")


def extra_for(cuda_major: int) -> str:
    return f"pip install 'edgekd[tensorrt-cu{cuda_major}]'"


def cuda_python_pin(cuda_major: int) -> str:
    return f"pip install 'cuda-python>={cuda_major}.0,<{cuda_major + 1}'"


# --- facts ----------------------------------------------------------------------------------------------------------

def tensorrt_wheels() -> dict[str, str]:
    """{"tensorrt-cu12": "10.3.0", ...}: the CUDA-versioned TensorRT wheels installed (from metadata, no import)."""
    from importlib import metadata

    out = {}
    for dist in metadata.distributions():
        m = _WHEEL.match(dist.metadata["Name"] or "")
        if m:
            out[f"tensorrt-cu{m.group(1)}"] = dist.version
    return out


def import_tensorrt() -> tuple[Any, str | None]:
    """(module, None), (None, why it failed to import) or (None, None) when it is not installed."""
    if not is_available("tensorrt"):
        return None, None
    try:
        return require("tensorrt"), None
    except (ImportError, OSError, RuntimeError) as e:  # a wheel whose libnvinfer cannot be loaded
        cause = e.__cause__ or e
        return None, f"{type(cause).__name__}: {cause}"


def tensorrt_facts(jetson: bool) -> dict[str, Any]:
    """What TensorRT is installed, from where, for which CUDA major, and whether it has DLA."""
    from edgekd.export.tensorrt_plan import TrtCapabilities, dla_unsupported_reason

    wheels = tensorrt_wheels()
    majors = sorted({int(name.rsplit("cu", 1)[1]) for name in wheels})
    trt, error = import_tensorrt()
    version = str(trt.__version__) if trt is not None else next(iter(wheels.values()), None)
    d: dict[str, Any] = {"version": version, "wheels": wheels, "cuda_major": majors[0] if len(majors) == 1 else None}
    if wheels:
        d["source"] = "pip wheel " + ", ".join(sorted(wheels))
    elif trt is not None:
        d["source"] = "JetPack (apt: python3-libnvinfer)" if jetson else "system package (no pip metadata)"
    if error:
        d["error"] = error
    if trt is not None:
        caps = TrtCapabilities.detect(trt)
        d["dla"] = caps.dla
        if not caps.dla:
            d["dla_why_not"] = dla_unsupported_reason(caps.version) or "the module has no DeviceType.DLA"
    if version is None:
        d["hint"] = INSTALL_TRT
    return d


def cuda_python_facts() -> dict[str, Any]:
    """cuda-python / cuda-bindings versions and the CUDA major they bind (what edgekd's TensorRT runtime imports)."""
    meta, bindings = installed_version("cuda-python"), installed_version("cuda-bindings")
    version = bindings or meta
    d: dict[str, Any] = {"cuda_python": meta, "cuda_bindings": bindings,
                         "cuda_major": int(version.split(".")[0]) if version else None}
    if version is None:
        d["hint"] = "comes with the tensorrt-cu12 / tensorrt-cu13 extras; on a Jetson: " + cuda_python_pin(12) + \
            " for JetPack 6 (CUDA 12)"
    return d


def driver_facts() -> dict[str, Any]:
    """The NVIDIA driver version and the newest CUDA it runs, from nvidia-smi, NVML (pynvml) or cuda-python."""
    nvml = _nvml()
    version, source = _smi_driver(), "nvidia-smi"
    if version is None and nvml:
        version, source = nvml["version"], "NVML (pynvml)"
    cuda, cuda_source = _driver_cuda_version(), "cuDriverGetVersion (cuda-python)"
    if cuda is None and nvml and nvml.get("cuda"):
        cuda, cuda_source = nvml["cuda"], "NVML (pynvml)"
    d: dict[str, Any] = {"version": version, "source": source if version else None, "cuda": cuda,
                         "cuda_source": cuda_source if cuda else None}
    d["cuda_major"] = int(cuda.split(".")[0]) if cuda else cuda_major_for_driver(version)
    if cuda is None and d["cuda_major"] is not None:
        d["cuda_source"] = f"driver {version} (minor version compatibility table)"
    if version is None and cuda is None:
        d["hint"] = "neither nvidia-smi, NVML nor cuDriverGetVersion answered: no NVIDIA GPU driver here"
    return d


def cuda_major_for_driver(version: str | None) -> int | None:
    """The newest CUDA major a driver branch runs: '550.54.15' -> 12 (NVIDIA's minor-version compatibility table)."""
    m = re.match(r"(\d+)", version or "")
    if not m:
        return None
    branch = int(m.group(1))
    return next((major for major, least in sorted(DRIVER_MIN.items(), reverse=True) if branch >= least), None)


def _smi_driver() -> str | None:
    from edgekd.bench.env import gpu_info

    gpus = gpu_info()
    return gpus[0]["driver"] if isinstance(gpus, list) and gpus else None


def _driver_cuda_version() -> str | None:
    """'12.4' from the CUDA driver API (cuda-python), None where cuda-python or libcuda is missing."""
    for name in ("cuda.bindings.driver", "cuda.cuda"):  # cuda-python >= 12.6 moved the bindings
        try:
            driver = require(name, extra="tensorrt")
            err, version = driver.cuDriverGetVersion()
        except (ImportError, OSError, RuntimeError, AttributeError):
            continue
        if int(err) == 0 and version:
            return f"{version // 1000}.{version % 1000 // 10}"
    return None


def _nvml() -> dict[str, str] | None:
    """{"version", "cuda"} from NVML where nvidia-ml-py (pynvml) is installed and a driver answers."""
    if not is_available("pynvml"):
        return None
    try:
        pynvml = require("pynvml")
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            version, cuda = pynvml.nvmlSystemGetDriverVersion(), pynvml.nvmlSystemGetCudaDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return {"version": version, "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""}


# --- do they fit? ---------------------------------------------------------------------------------------------------

def _check(name: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


def check_wheels(trt: dict[str, Any]) -> dict[str, Any] | None:
    """Two TensorRT wheels for different CUDA majors write the same `tensorrt` package: one of them is broken."""
    if len(trt["wheels"]) < 2:
        return None
    names = " and ".join(sorted(trt["wheels"]))
    return _check("one TensorRT wheel", False, f"{names} are both installed and share the `tensorrt` module: pip "
                  "uninstall the one whose CUDA major your driver does not run")


def check_bindings(trt: dict[str, Any], cuda: dict[str, Any]) -> dict[str, Any]:
    """TensorRT's CUDA major against cuda-python's: the runtime passes cuda-python's device buffers to TensorRT."""
    name = "tensorrt vs cuda-python"
    need, have = trt["cuda_major"], cuda["cuda_major"]
    if trt["version"] is None or cuda["cuda_major"] is None:
        return _check(name, None, "not checked: " + ("tensorrt" if trt["version"] is None else "cuda-python")
                      + " is missing")
    if need is None:
        return _check(name, None, f"not checked: TensorRT {trt['version']} is not a tensorrt-cuNN wheel (on a Jetson "
                      f"its CUDA is JetPack's; cuda-python here is CUDA {have})")
    if need == have:
        return _check(name, True, f"TensorRT and cuda-python are both CUDA {need}")
    return _check(name, False, f"TensorRT is tensorrt-cu{need} but cuda-python is CUDA {have}: "
                  f"{cuda_python_pin(need)} (or {extra_for(need)})")


def check_driver(what: str, major: int | None, driver: dict[str, Any], unknown: str = "") -> dict[str, Any]:
    """Whether the driver runs the CUDA major `what` (tensorrt / cuda-python) was built for; `unknown`: why the CUDA
    major of `what` is not known."""
    name = f"driver vs {what}"
    if major is None:
        return _check(name, None, f"not checked: {unknown or what + ' is missing'}")
    if driver["cuda_major"] is None:
        return _check(name, None, "not checked: no NVIDIA driver answered")
    runs = driver["cuda"] or f"{driver['cuda_major']}.x"
    if driver["cuda_major"] >= major:
        return _check(name, True, f"the driver runs CUDA {runs}, {what} needs CUDA {major}")
    fix = extra_for(driver["cuda_major"]) if driver["cuda_major"] in DRIVER_MIN else "update the driver"
    return _check(name, False, f"the driver ({driver['version'] or '?'}) runs CUDA up to {runs} but {what} is CUDA "
                  f"{major} (needs driver >= {DRIVER_MIN.get(major, '?')}): update the driver or {fix}")


def fit_checks(trt: dict[str, Any], cuda: dict[str, Any], driver: dict[str, Any]) -> list[dict[str, Any]]:
    unknown = "" if trt["version"] is None else f"TensorRT {trt['version']}'s CUDA major is unknown (not one " \
        "tensorrt-cuNN wheel; on a Jetson it is JetPack's)"
    checks = [check_wheels(trt), check_bindings(trt, cuda),
              check_driver("tensorrt", trt["cuda_major"], driver, unknown),
              check_driver("cuda-python", cuda["cuda_major"], driver)]
    return [c for c in checks if c is not None]


def verdict(trt: dict[str, Any], cuda: dict[str, Any], driver: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    """One line: does not fit / incomplete (what is missing) / fits / fits as far as can be told."""
    bad = [c for c in checks if c["ok"] is False]
    if bad:
        return f"does not fit: {len(bad)} problem(s), see the checks"
    missing = [name for name, present in (("TensorRT", trt["version"]), ("cuda-python", cuda["cuda_major"]),
                                          ("NVIDIA driver", driver["cuda_major"])) if present is None]
    if missing:
        cannot = ("; TensorRT engines cannot be built or run here (`edgekd export --target tensorrt` writes what "
                  "the device needs and exits 4)") if trt["version"] is None else ""
        return f"incomplete: no {', no '.join(missing)} on this machine{cannot}"
    if all(c["ok"] for c in checks):
        return "fits"
    return "no mismatch found, but not everything could be checked (see the checks)"


def collect_trt_env() -> dict[str, Any]:
    """Everything `edgekd info --env` prints, JSON-able."""
    from edgekd.bench.env import jetson_info

    jetson = jetson_info()
    trt = tensorrt_facts(jetson is not None)
    cuda, driver = cuda_python_facts(), driver_facts()
    checks = fit_checks(trt, cuda, driver)
    board = {k: jetson[k] for k in ("model", "l4t", "jetpack")} if jetson else None
    return {"format": "edgekd.trt_env", "machine": platform.machine(), "jetson": board, "tensorrt": trt,
            "cuda_python": cuda, "driver": driver, "checks": checks, "verdict": verdict(trt, cuda, driver, checks)}


# --- text -----------------------------------------------------------------------------------------------------------

def _describe_trt(t: dict[str, Any]) -> str:
    if t["version"] is None:
        return f"missing ({t['hint']})"
    cuda = f", CUDA {t['cuda_major']}" if t["cuda_major"] else ""
    error = f"; does not import: {t['error']}" if t.get("error") else ""
    return f"{t['version']} ({t.get('source', '?')}{cuda}){error}"


def _describe_cuda(c: dict[str, Any]) -> str:
    if c["cuda_major"] is None:
        return f"missing ({c['hint']})"
    return f"cuda-python {c['cuda_python'] or '-'}, cuda-bindings {c['cuda_bindings'] or '-'} (CUDA {c['cuda_major']})"


def _describe_driver(d: dict[str, Any]) -> str:
    if d["cuda_major"] is None:
        return f"missing ({d['hint']})" if d.get("hint") else f"{d['version']} (CUDA it runs: unknown)"
    return f"{d['version'] or '?'} (runs CUDA {d['cuda'] or str(d['cuda_major']) + '.x'}; {d['cuda_source']})"


def _describe_dla(t: dict[str, Any]) -> str:
    if "dla" not in t:
        return "-"
    return "yes (TensorRT has it; the build checks this device's DLA cores)" if t["dla"] else f"no: {t['dla_why_not']}"


def format_trt_env(d: dict[str, Any]) -> str:
    """Human-readable `collect_trt_env()`."""
    board = d["jetson"]
    where = f"Jetson {board['model']}, L4T {board['l4t']}, JetPack {board['jetpack']}" if board else "not a Jetson"
    marks = {True: "ok  ", False: "FAIL", None: "?   "}
    lines = [f"TensorRT / CUDA on this machine ({d['machine']}; {where})",
             f"  tensorrt     {_describe_trt(d['tensorrt'])}",
             f"  cuda-python  {_describe_cuda(d['cuda_python'])}",
             f"  driver       {_describe_driver(d['driver'])}",
             f"  DLA          {_describe_dla(d['tensorrt'])}",
             "  checks:",
             *[f"    {marks[c['ok']]} {c['check']}: {c['detail']}" for c in d["checks"]],
             f"  verdict: {d['verdict']}"]
    return "\n".join(lines)
