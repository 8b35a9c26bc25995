"""Classify one image with an exported bundle (numpy + onnxruntime/OpenVINO/TensorRT; no torch).

    python examples/classify_image.py BUNDLE_DIR IMAGE [LABELS.npz]
"""

import sys

from edgekd.runtime import OpenVocabClassifier

clf = OpenVocabClassifier.load(sys.argv[1], labels=sys.argv[3] if len(sys.argv) > 3 else None)
for p in clf.classify(sys.argv[2], top_k=5):
    print(f"{p.label:30s} prob {p.prob:.3f}  cosine {p.score:+.3f}")
