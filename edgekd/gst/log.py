"""The `edgekd` GStreamer debug category: `GST_DEBUG=edgekd:5` shows what the element and the runtime log.

    from edgekd.gst.log import install_gst_logging
    install_gst_logging()          # once per process (the element does it when its type is registered)

Python's `logging` records of the `edgekd` loggers go to the category at the matching GStreamer level (with the
element as the object where it logs itself), so they land where GStreamer users look, beside every other element's
log, instead of on stderr. PyGObject cannot create a debug category, so it is made with GStreamer's own
`_gst_debug_category_new` (the function behind GST_DEBUG_CATEGORY_INIT) and then found by name.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from edgekd.gst.bindings import import_gst

CATEGORY = "edgekd"
DESCRIPTION = "edgekd open-vocabulary classifier (edgekdclassify and the edgekd runtime)"
_GST_LEVELS = {logging.ERROR: "ERROR", logging.WARNING: "WARNING", logging.INFO: "INFO", logging.DEBUG: "DEBUG"}
# GStreamer threshold (GstDebugLevel value) -> the Python level that produces at least that much
_PY_LEVELS = ((5, logging.DEBUG), (4, logging.INFO), (2, logging.WARNING), (1, logging.ERROR))
_category: Any = None


def debug_category() -> Any:
    """The `edgekd` Gst.DebugCategory (created once; its threshold follows GST_DEBUG)."""
    global _category
    if _category is None:
        Gst = import_gst()[0]
        found = [c for c in Gst.debug_get_all_categories() if c.get_name() == CATEGORY]
        if not found:
            lib = ctypes.CDLL("libgstreamer-1.0.so.0")
            lib._gst_debug_category_new.restype = ctypes.c_void_p
            lib._gst_debug_category_new.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_char_p]
            lib._gst_debug_category_new(CATEGORY.encode(), 0, DESCRIPTION.encode())
            found = [c for c in Gst.debug_get_all_categories() if c.get_name() == CATEGORY]
        _category = found[0]
    return _category


def gst_log(level: int, message: str, obj: Any = None, func: str = "", file: str = __file__, line: int = 0) -> None:
    """Log `message` at Python `level` into the `edgekd` category (object `obj`: an element, or None)."""
    Gst = import_gst()[0]
    name = _GST_LEVELS.get(_nearest(level), "DEBUG")
    Gst.debug_log_literal(debug_category(), getattr(Gst.DebugLevel, name), file, func, line, obj, message)


class GstCategoryHandler(logging.Handler):
    """A logging handler that writes records into the `edgekd` GStreamer debug category."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            gst_log(record.levelno, self.format(record), getattr(record, "gst_object", None), record.funcName,
                    record.pathname, record.lineno)
        except Exception:  # logging's own contract: a failing handler must never raise into the caller
            self.handleError(record)


def install_gst_logging(logger_name: str = "edgekd") -> None:
    """Route `logger_name`'s records into the category (once), and lower that logger's level to what GST_DEBUG asks
    for when the app has not set one."""
    logger = logging.getLogger(logger_name)
    if any(isinstance(h, GstCategoryHandler) for h in logger.handlers):
        return
    logger.addHandler(GstCategoryHandler())
    threshold = int(debug_category().get_threshold())
    wanted = next((py for gst, py in _PY_LEVELS if threshold >= gst), None)
    if logger.level == logging.NOTSET and wanted is not None and wanted < logging.WARNING:
        logger.setLevel(wanted)


def _nearest(level: int) -> int:
    return min(_GST_LEVELS, key=lambda lv: (abs(lv - level), lv))
