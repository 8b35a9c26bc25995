"""GStreamer's python plugin loader imports this file (see edgekdclassify.py beside it) and registers `edgekdroi`."""

import sys
from pathlib import Path

try:
    import edgekd  # noqa: F401
except ImportError:  # a source checkout: the directory that holds the edgekd package
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

try:
    from edgekd.gst import import_gst
    from edgekd.gst.roi_source import ROI_ELEMENT_NAME, EdgekdRoi
except ImportError as e:
    raise ImportError(f"edgekdroi: {e} (in GStreamer's python {sys.version.split()[0]}, {sys.executable}); "
                      "run `eval \"$(edgekd gst-path --env)\"` in the environment where edgekd is installed") from e

Gst = import_gst()[0]
__gstelementfactory__ = (ROI_ELEMENT_NAME, Gst.Rank.NONE, EdgekdRoi)
