"""Tiny open_clip configs (random weights) for tests and smoke runs, registered like open_clip's own configs."""

from __future__ import annotations

import open_clip.factory as _factory

TINY_CONFIGS = {
    # 32x32 images, 2-layer ViT and 2-layer text transformer, 32-d embeddings: builds in well under a second.
    "edgekd-test-tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
}

for _name, _cfg in TINY_CONFIGS.items():
    _factory._MODEL_CONFIGS.setdefault(_name, _cfg)
