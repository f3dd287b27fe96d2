"""One typed, frozen configuration for a run, with named presets and checked overrides.

    >>> cfg = resolve("tiny", ["epochs=2", "image_size=48"])
    >>> cfg.epochs, cfg.image_size
    (2, 48)

The resolved config is written into the run folder (`config.json`) so that a run can be
reproduced, or resumed, from its folder alone.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    # --- what to train
    model: str = "scratch"  # "scratch", or a keras.applications name: "MobileNet", "EfficientNetB0", ...
    weights: str = "imagenet"  # backbone weights: "imagenet", "none", or a path to a weights file
    image_size: int = 128  # square side in pixels fed to the network
    width: int = 32  # scratch CNN: channels of the stem; each stage doubles it
    stages: int = 4  # scratch CNN: number of down-sampling stages after the stem
    dropout: float = 0.3  # before the logits head

    # --- data
    data: str | None = None  # train.zip, a folder, or None for $CATDOG_DATA / the cache
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: str = "catdog-v1"  # salt of the content hash that assigns files to splits
    max_images: int = 0  # per split, 0 = all; for quick runs and tests
    cache: str = "memory"  # decoded pixels: "memory", "disk" (in the run folder) or "none"

    # --- augmentation (training pipeline only)
    augment: bool = True
    flip: bool = True  # horizontal; a cat is a cat in a mirror, not upside down
    rotation: float = 0.05  # fraction of a full turn, either way
    zoom: float = 0.15
    translation: float = 0.1
    contrast: float = 0.2
    brightness: float = 0.1

    # --- optimisation
    epochs: int = 15  # scratch: all epochs; backbone: fine-tuning epochs after the frozen phase
    batch_size: int = 64
    learning_rate: float = 2e-3  # peak of a warm-up + cosine schedule
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05  # AdamW's decoupled decay, scaled by the learning rate
    label_smoothing: float = 0.0
    patience: int = 8  # early stopping on validation loss

    # --- transfer learning (ignored by model="scratch")
    head_epochs: int = 30  # frozen phase, on cached backbone features
    head_learning_rate: float = 1e-3
    fine_tune_layers: int = 0  # unfreeze this many layers at the top of the backbone; 0 = frozen only
    unknown: bool = True  # add the ImageNet pet detector, so predict can answer "unknown"
    unknown_budget: float = 0.005  # share of validation cats and dogs allowed to fall below its threshold

    # --- bookkeeping
    seed: int = 1337
    runs_dir: str = "runs"
    name: str = ""  # run folder name; "" = model name and a timestamp


PRESETS: dict[str, dict[str, typing.Any]] = {
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
}


class ConfigError(ValueError):
    """An unknown preset, an unknown key or a value of the wrong type."""


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_CHOICES = {"cache": ("memory", "disk", "none")}
_RANGES = {"unknown_budget": (0.0, 0.5)}  # [low, high)


def _parse(key: str, text: str) -> typing.Any:
    kind = typing.get_type_hints(Config)[key]
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}") from None
    if text.lower() in ("", "none", "null") and key == "data":
        return None
    return text


def override(cfg: Config, changes: dict[str, typing.Any]) -> Config:
    """Returns `cfg` with `changes`; an unknown key is an error naming it."""
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    parsed = {k: _parse(k, v) if isinstance(v, str) else v for k, v in changes.items()}
    for key, allowed in _CHOICES.items():
        if key in parsed and parsed[key] not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {parsed[key]!r}")
    for key, (low, high) in _RANGES.items():
        if key in parsed and not low <= parsed[key] < high:
            raise ConfigError(f"{key}: expected a value in [{low}, {high}), got {parsed[key]!r}")
    return dataclasses.replace(cfg, **parsed)


def resolve(preset: str = "scratch", overrides: typing.Iterable[str] = ()) -> Config:
    """Builds a config from a preset name and `key=value` strings."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    changes = dict(PRESETS[preset])
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        changes[key.strip()] = value.strip()
    return override(Config(), changes)


def save(cfg: Config, path: Path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load(path: Path) -> Config:
    """Reads a `config.json`; keys this version does not know are an error, not ignored."""
    return override(Config(), json.loads(Path(path).read_text()))
