"""GStreamer integration: the `edgekdclassify` element (gst-python) on the numpy runtime, and where GStreamer finds it.

    eval "$(edgekd gst-path --env)"            # GST_PLUGIN_PATH and the PYTHONPATH GStreamer's python needs
    edgekd export-text --teacher ViT-B-32 --pretrained openai --precision int8 --out BUNDLE/text   # label texts
    gst-launch-1.0 v4l2src ! videoconvert ! edgekdclassify bundle=BUNDLE labels="person,forklift,pallet" ! \
        videoconvert ! autovideosink

    from edgekd.gst import register                       # in-process, without gst-python's plugin loader
    register()                                            # Gst.ElementFactory.make("edgekdclassify") works now

GStreamer's python plugin loader (libgstpython.so, Debian/Ubuntu `gstreamer1.0-python3-plugin-loader`) imports
`<dir>/python/*.py` for each <dir> of GST_PLUGIN_PATH; `plugin_dir()` is that <dir>. Nothing here imports gi until a
function needs it, so `import edgekd.gst` and `edgekd gst-path` work on machines without GStreamer.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path
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


def plugin_dir() -> Path:
    """The directory to put on GST_PLUGIN_PATH: it holds `python/edgekdclassify.py`."""
    return Path(__file__).resolve().parent / "plugins"


def python_path() -> list[str]:
    """Directories GStreamer's embedded python needs on sys.path to import edgekd and its dependencies (this
    interpreter's site-packages and the directory holding the edgekd package)."""
    dirs = [str(Path(__file__).resolve().parents[2])]
    dirs += [d for d in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(d)]
    return list(dict.fromkeys(dirs))


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


def register() -> bool:
    """Register `edgekdclassify` in this process (no libgstpython needed). True when it is registered."""
    Gst, _, _ = import_gst()
    from edgekd.gst.element import EdgekdClassify

    if Gst.ElementFactory.find(ELEMENT_NAME) is not None:
        return True
    return bool(Gst.Element.register(None, ELEMENT_NAME, Gst.Rank.NONE, EdgekdClassify))


def analytics_available() -> bool:
    """True when GstAnalytics (GStreamer >= 1.24) is importable: results are then attached as classification meta."""
    try:
        import gi

        gi.require_version("GstAnalytics", "1.0")
        from gi.repository import GstAnalytics  # noqa: F401
    except (ImportError, ValueError):
        return False
    return True
