"""On-device runtime: numpy + one inference backend. Never imports torch or open_clip.

    from edgekd.runtime import OpenVocabClassifier
    clf = OpenVocabClassifier.load("bundle/")
    clf.classify("cat.jpg")
"""

from __future__ import annotations

from typing import Any

from edgekd.unwind import pin_gcc_unwinder

pin_gcc_unwinder()  # before anything can load GStreamer: C++ exceptions in the backends stay safe (edgekd.unwind)

_LAZY = {
    "OpenVocabClassifier": "edgekd.runtime.classifier",
    "Prediction": "edgekd.runtime.labels",
    "LabelSet": "edgekd.runtime.labels",
    "TextEncoder": "edgekd.runtime.text",
    "ClipTokenizer": "edgekd.runtime.text",
    "read_bundle": "edgekd.runtime.bundle",
    "create_backend": "edgekd.runtime.backends",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:  # PEP 562: import the piece only when used (backends stay cheap to import)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekd.runtime' has no attribute {name!r}")
