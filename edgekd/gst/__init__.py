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
from pathlib import Path

from edgekd.gst.bindings import (
    ELEMENT_NAME,
    SYSTEM_PACKAGES,
    GstUnavailableError,
    gst_error,
    import_gst,
)

__all__ = ["ELEMENT_NAME", "SYSTEM_PACKAGES", "GstUnavailableError", "gst_error", "import_gst", "plugin_dir",
           "python_path", "register"]


def plugin_dir() -> Path:
    """The directory to put on GST_PLUGIN_PATH: it holds `python/edgekdclassify.py`."""
    return Path(__file__).resolve().parent / "plugins"


def python_path() -> list[str]:
    """Directories GStreamer's embedded python needs on sys.path to import edgekd and its dependencies (this
    interpreter's site-packages and the directory holding the edgekd package)."""
    dirs = [str(Path(__file__).resolve().parents[2])]
    dirs += [d for d in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(d)]
    return list(dict.fromkeys(dirs))


def register() -> bool:
    """Register `edgekdclassify` and `edgekdroi` in this process (no libgstpython needed). True when they are."""
    Gst, _, _ = import_gst()
    from edgekd.gst.element import EdgekdClassify
    from edgekd.gst.roi_source import ROI_ELEMENT_NAME, EdgekdRoi

    ok = True
    for name, cls in ((ELEMENT_NAME, EdgekdClassify), (ROI_ELEMENT_NAME, EdgekdRoi)):
        if Gst.ElementFactory.find(name) is None:
            ok = bool(Gst.Element.register(None, name, Gst.Rank.NONE, cls)) and ok
    return ok
