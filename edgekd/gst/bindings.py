"""GStreamer's python bindings (gi: Gst, GstBase, GstVideo 1.0): importing them with a message that says how to
install them, what the element is called, whether GstAnalytics is there, and the floating reference a
python-defined element owes GStreamer. The one place that imports gi for the
package: `edgekd.gst` re-exports it, and `element` / `log` import it without importing their parent's `register`."""

from __future__ import annotations

import sys
from typing import Any

from edgekd import EdgekdError
from edgekd.unwind import pin_gcc_unwinder

pin_gcc_unwinder()  # before gi loads GStreamer and its libunwind (edgekd.unwind)

ELEMENT_NAME = "edgekdclassify"
GI_VERSIONS = {"Gst": "1.0", "GstBase": "1.0", "GstVideo": "1.0"}
# Debian/Ubuntu (and JetPack, which is Ubuntu) packages the element needs
SYSTEM_PACKAGES = ("gstreamer1.0-tools", "gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good",
                   "gstreamer1.0-python3-plugin-loader", "python3-gi", "python3-gst-1.0", "gir1.2-gstreamer-1.0",
                   "gir1.2-gst-plugins-base-1.0")
INSTALL_HINT = ("install GStreamer's python bindings: `make gst` (examples/gstreamer/setup.sh), or on Debian/Ubuntu/"
                f"JetPack `sudo apt-get install {' '.join(SYSTEM_PACKAGES)}`")


class GstUnavailableError(EdgekdError, ImportError):
    """gi / GStreamer 1.0 (Gst, GstBase, GstVideo) cannot be imported."""


def gst_error() -> str | None:
    """None when gi and Gst/GstBase/GstVideo 1.0 import here, else why not (one line)."""
    try:
        import_gst()
    except GstUnavailableError as e:
        return str(e)
    return None


def import_gst() -> tuple[Any, Any, Any]:
    """-> (Gst, GstBase, GstVideo), initialised; GstUnavailableError with how to install them otherwise."""
    try:
        import gi

        for name, version in GI_VERSIONS.items():
            gi.require_version(name, version)
        from gi.repository import Gst, GstBase, GstVideo
    except (ImportError, ValueError) as e:
        raise GstUnavailableError(f"GStreamer's python bindings are not importable in {sys.executable} "
                                  f"({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    if not Gst.is_initialized():
        Gst.init(None)
    return Gst, GstBase, GstVideo


def float_for_gstreamer(element: Any) -> None:
    """Hand GStreamer the floating reference it expects from a new element, plus the one PyGObject keeps (every
    python-defined element calls it in __init__).

    PyGObject sinks the floating reference of an object created from C (gst_element_factory_make, gst-launch)
    while wrapping it, and GStreamer then logs "The created element should be floating" as a CRITICAL, which aborts
    under G_DEBUG=fatal-criticals. A second, floating reference gives GStreamer what a C element gives it: the bin
    sinks that one, and the wrapper's stays the wrapper's (the same counts as without this, as the leaks tracer
    shows: tests/gst_element_cases.py). PyGObject refuses force_floating(), hence libgobject via ctypes."""
    import ctypes

    if element.is_floating():
        return
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    pointer = ctypes.c_void_p(ctypes.pythonapi.PyCapsule_GetPointer(element.__gpointer__, None))
    gobject.g_object_ref(pointer)
    gobject.g_object_force_floating(pointer)


def analytics_available() -> bool:
    """True when GstAnalytics (GStreamer >= 1.24) is importable: results are then attached as classification meta."""
    try:
        import gi

        gi.require_version("GstAnalytics", "1.0")
        from gi.repository import GstAnalytics  # noqa: F401
    except (ImportError, ValueError):
        return False
    return True
