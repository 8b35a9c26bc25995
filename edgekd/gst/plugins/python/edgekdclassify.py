"""GStreamer's python plugin loader (libgstpython.so) imports this file from `<dir>/python/` for each <dir> on
GST_PLUGIN_PATH (`edgekd gst-path` prints it) and registers the element named in `__gstelementfactory__`.

That loader runs the system python embedded in GStreamer: edgekd and its dependencies must be importable there.
`eval "$(edgekd gst-path --env)"` exports GST_PLUGIN_PATH and a PYTHONPATH with this install's site-packages.
"""

import sys
from pathlib import Path

try:
    import edgekd  # noqa: F401
except ImportError:  # a source checkout: the directory that holds the edgekd package
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

try:
    from edgekd.gst import ELEMENT_NAME, import_gst
    from edgekd.gst.element import EdgekdClassify
except ImportError as e:
    raise ImportError(f"edgekdclassify: {e} (in GStreamer's python {sys.version.split()[0]}, {sys.executable}); "
                      "run `eval \"$(edgekd gst-path --env)\"` in the environment where edgekd is installed") from e

Gst = import_gst()[0]
__gstelementfactory__ = (ELEMENT_NAME, Gst.Rank.NONE, EdgekdClassify)
