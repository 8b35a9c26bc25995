"""One C++ exception unwinder per process: GStreamer's libunwind against libgcc_s, whatever the app imported first.

    pin_gcc_unwinder()            # edgekd.runtime and edgekd.gst call it on import: later imports are then safe
    unwinder_conflict()           # None, or why a C++ exception would abort this process (too late to fix)

Debian/Ubuntu build libgstreamer-1.0 against libunwind (the nongnu one), which also exports the `_Unwind_*`
functions of the C++ exception ABI that libgcc_s provides. PyGObject opens libgstreamer with RTLD_GLOBAL, so from
then on every newly loaded library binds `_Unwind_*` to libunwind, while libraries loaded before keep libgcc_s's:
libstdc++ among them once numpy, torch or OpenCV has been imported (Python loads extensions with RTLD_NOW, which
binds at once). An exception raised by one unwinder and resumed by the other aborts the process: OpenVINO throws and
catches inside `compile_model` (SIGABRT; SIGSEGV after torch), and onnxruntime aborts on a bad model file instead of
raising. `import numpy; Gst.init(None); core.compile_model(...)` is enough, with no edgekd involved
(tests/test_unwind.py runs every order). `LD_PRELOAD=libgcc_s.so.1` cures it, and so does putting libgcc_s into the
global scope before GStreamer arrives, which is what pin_gcc_unwinder() does from inside the process.
"""

from __future__ import annotations

import ctypes
import os
import sys

GCC_UNWINDER = "libgcc_s.so.1"
_PROBE = "_Unwind_RaiseException"  # what libstdc++'s throw calls; libunwind and libgcc_s both define it
FIX = ("import edgekd.runtime (or edgekd.gst) before numpy, torch or cv2, or initialise GStreamer before them, or "
       f"start the program with LD_PRELOAD={GCC_UNWINDER}")


def pin_gcc_unwinder() -> bool:
    """Put libgcc_s's `_Unwind_*` into the process's global symbol scope, ahead of any libunwind loaded later.
    Harmless when libunwind is already global (it stays first; unwinder_conflict() then tells). True when pinned."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(GCC_UNWINDER, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    except OSError:  # not glibc (musl has no libgcc_s), or a static build: nothing to pin
        return False
    return True


def unwinder_conflict() -> str | None:
    """None when C++ exceptions are safe in this process; else one line: libunwind resolves `_Unwind_*` for newly
    loaded libraries while libstdc++, loaded before libunwind, is bound to libgcc_s."""
    if not sys.platform.startswith("linux"):
        return None
    libs = loaded_libraries()
    unwind = _first(libs, "/libunwind.so")
    stdcxx = _first(libs, "/libstdc++.so")
    if unwind is None or stdcxx is None or stdcxx > unwind:
        return None
    provider = global_definition(_PROBE)
    if provider is None or "/libunwind.so" not in provider:
        return None
    return (f"this process loaded GStreamer's libunwind ({libs[unwind]}) after libstdc++ ({libs[stdcxx]}), so two C++ "
            "exception unwinders are mixed and the first C++ exception in an inference engine aborts the process; "
            f"{FIX}")


def loaded_libraries() -> list[str]:
    """Paths of the shared objects of this process in load order (the executable is '').

    Read from the dynamic linker's own list (`_r_debug.r_map`, the link_map chain debuggers walk) while holding the
    GIL. dl_iterate_phdr with a Python callback deadlocked: it holds the loader lock while the callback waits for
    the GIL, and a thread importing an extension module (OpenVINO's telemetry thread right after `import openvino`)
    holds the GIL while dlopen waits for that lock. glibc links a new object in only after filling in its name, so
    the walk never sees a half-made entry."""
    try:
        debug = _RDebug.in_dll(ctypes.CDLL(None), "_r_debug")
    except (ValueError, OSError):  # not glibc: nothing to walk
        return []
    names: list[str] = []
    node = debug.r_map
    while node:
        names.append((node.contents.l_name or b"").decode(errors="replace"))
        node = node.contents.l_next
    return names


def global_definition(symbol: str) -> str | None:
    """Path of the library whose `symbol` a newly loaded library would bind to (the first in the global scope)."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p)
        dladdr = getattr(process, "dladdr", None) or ctypes.CDLL("libdl.so.2").dladdr  # glibc < 2.34: in libdl
    except (AttributeError, OSError):
        return None
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.fname:
        return None
    return info.fname.decode(errors="replace")


def _first(libs: list[str], part: str) -> int | None:
    return next((i for i, name in enumerate(libs) if part in name), None)


class _LinkMap(ctypes.Structure):  # the public leading fields of struct link_map (<link.h>)
    pass


_LinkMap._fields_ = [("l_addr", ctypes.c_size_t), ("l_name", ctypes.c_char_p), ("l_ld", ctypes.c_void_p),
                     ("l_next", ctypes.POINTER(_LinkMap)), ("l_prev", ctypes.POINTER(_LinkMap))]


class _RDebug(ctypes.Structure):  # struct r_debug (<link.h>): the dynamic linker's list of loaded objects
    _fields_ = [("r_version", ctypes.c_int), ("r_map", ctypes.POINTER(_LinkMap))]


class _DlInfo(ctypes.Structure):  # Dl_info (<dlfcn.h>)
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p),
                ("saddr", ctypes.c_void_p)]

