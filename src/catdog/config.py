"""One typed, frozen configuration for a run, with named presets and checked overrides.

    >>> cfg = resolve("tiny", ["epochs=2", "image_size=48"])
    >>> cfg.epochs, cfg.image_size
    (2, 48)

The resolved config is written into the run folder (`config.json`) so that a run can be
reproduced, or resumed, from its folder alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from catdog.errors import ConfigError, DataError
from catdog.presets import PRESETS


@dataclass(frozen=True)
class Config:
    # --- what to train
    model: str = "scratch"  # "scratch", or a backbone: MobileNet, EfficientNetB0, EfficientNetLite0, ... (any case)
    weights: str = "imagenet"  # backbone weights: "imagenet" (offline from the Keras cache), "none", or a file
    image_size: int = 128  # square side in pixels fed to the network
    width: int = 32  # scratch CNN: channels of the stem; each stage doubles it
    stages: int = 4  # scratch CNN: number of down-sampling stages after the stem
    dropout: float = 0.3  # before the logits head, in [0, 1)

    # --- data
    data: str | None = None  # train.zip, a folder, or None for $CATDOG_DATA / the cache
    val_fraction: float = 0.1  # share of each class held out for validation (checkpoints, calibration)
    test_fraction: float = 0.1  # share of each class held out for `catdog evaluate`
    split_seed: str = "catdog-v1"  # salt of the content hash that assigns files to splits
    max_images: int = 0  # per split, 0 = all; for quick runs and tests
    exclude: str = ""  # a list of pictures to leave out (`catdog audit --exclude-out FILE`), after the split is made
    relabel: str = ""  # a list of labels to change (`catdog audit --relabel-out FILE`), after the split is made
    near_duplicate_bits: int = 0  # keep pictures whose perceptual hashes differ by at most this many bits in one split; 0 = exact copies only
    cache: str = "auto"  # decoded pixels: "memory", "disk" (in the run folder), "none" (streamed), "auto" (by size)
    shards: str = ""  # train and validate from TFRecord shards of the split (`catdog prepare --shards DIR`); any TF filesystem

    # --- augmentation (training pipeline only)
    augment: bool = True  # random transforms of training batches (the ones below)
    flip: bool = True  # horizontal; a cat is a cat in a mirror, not upside down
    rotation: float = 0.05  # fraction of a full turn, either way
    zoom: float = 0.15  # fraction of the side, in or out
    translation: float = 0.1  # fraction of the side, any direction
    contrast: float = 0.2  # relative change, either way
    brightness: float = 0.1  # fraction of the 0..255 range, either way

    # --- optimisation
    epochs: int = 15  # scratch: all epochs; backbone: fine-tuning epochs after the frozen phase
    batch_size: int = 64  # images per training step
    learning_rate: float = 2e-3  # peak of a warm-up + cosine schedule
    warmup_epochs: float = 1.0  # linear warm-up to the peak, in epochs
    weight_decay: float = 0.05  # AdamW's decoupled decay, scaled by the learning rate
    label_smoothing: float = 0.0  # targets 0/1 pulled this far towards 0.5
    patience: int = 8  # early stopping: epochs without a better validation loss
    precision: str = "float32"  # "bfloat16": mixed precision (fast on AVX512-BF16 / AMX CPUs); "auto": bfloat16 there

    # --- transfer learning (ignored by model="scratch")
    head_epochs: int = 30  # frozen phase, on cached backbone features
    head_learning_rate: float = 1e-3  # its peak learning rate
    fine_tune_layers: int = 0  # unfreeze this many layers at the top of the backbone; 0 = frozen only
    cached_views: int = 0  # fine-tune on the frozen layers' output, computed once for this many views; 0 = pictures
    unknown: bool = True  # add the ImageNet pet detector, so predict can answer "unknown"
    unknown_budget: float = 0.005  # share of validation cats and dogs allowed to fall below its threshold
    unknown_non_pets: str = ""  # a folder of pictures of neither cats nor dogs: the detector learns one score from them
    unknown_prototypes: int = 0  # k-means centres of the training pets' ImageNet features for pet_similarity; 0 = unused

    # --- bookkeeping
    seed: int = 1337  # weights, sampling and the per-epoch data order
    runs_dir: str = "runs"  # where run folders are made
    name: str = ""  # run folder name; "" = model name and a timestamp


# The backbones `model=` accepts: the module that builds each (keras.applications', or catdog's
# own), and the input scaling it was trained with ("tf": -1..1, "torch": ImageNet mean/std,
# "caffe": BGR minus mean, "raw": inside the backbone). Here, not in models/builders.py, so that names are
# checked without importing Keras.
BACKBONES = {
    "EfficientNetLite0": ("catdog.models.efficientnet_lite", "raw"),
    "EfficientNetLite1": ("catdog.models.efficientnet_lite", "raw"),
    "EfficientNetLite2": ("catdog.models.efficientnet_lite", "raw"),
    "MobileNet": ("mobilenet", "tf"),
    "MobileNetV2": ("mobilenet_v2", "tf"),
    "MobileNetV3Small": ("mobilenet_v3", "raw"),
    "MobileNetV3Large": ("mobilenet_v3", "raw"),
    "EfficientNetB0": ("efficientnet", "raw"),
    "EfficientNetB1": ("efficientnet", "raw"),
    "EfficientNetV2B0": ("efficientnet_v2", "raw"),
    "ConvNeXtTiny": ("convnext", "raw"),
    "ResNet50": ("resnet", "caffe"),
    "ResNet50V2": ("resnet_v2", "tf"),
    "DenseNet121": ("densenet", "torch"),
    "InceptionV3": ("inception_v3", "tf"),
    "Xception": ("xception", "tf"),
    "VGG16": ("vgg16", "caffe"),
}
MODELS = ("scratch", *BACKBONES)

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
KEYS = frozenset(_FIELDS)  # every config key, for readers of a config written elsewhere
_TYPES = typing.get_type_hints(Config)
_CHOICES = {"cache": ("auto", "memory", "disk", "none"), "precision": ("float32", "bfloat16", "auto")}
# Closed ranges unless marked: (low, high, high is excluded).
_RANGES = {
    "image_size": (16, 1024, False), "width": (1, 512, False), "stages": (1, 8, False),
    "dropout": (0.0, 1.0, True), "val_fraction": (0.0, 1.0, True), "test_fraction": (0.0, 1.0, True),
    "max_images": (0, math.inf, False), "rotation": (0.0, 1.0, False), "zoom": (0.0, 1.0, True),
    "translation": (0.0, 1.0, True), "contrast": (0.0, 1.0, True), "brightness": (0.0, 1.0, False),
    "epochs": (1, 100_000, False), "batch_size": (1, 65_536, False), "learning_rate": (0.0, 10.0, False),
    "warmup_epochs": (0.0, 100_000, False), "weight_decay": (0.0, 10.0, False),
    "label_smoothing": (0.0, 1.0, True), "patience": (1, 100_000, False), "head_epochs": (1, 100_000, False),
    "head_learning_rate": (0.0, 10.0, False), "fine_tune_layers": (0, 100_000, False), "cached_views": (0, 1000, False),
    "unknown_budget": (0.0, 0.5, True), "unknown_prototypes": (0, 65_536, False), "near_duplicate_bits": (0, 32, False),
}
_POSITIVE = {"learning_rate", "head_learning_rate"}


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices`, case-insensitively, else ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def _spelled(name: str, choices: typing.Iterable[str]) -> str | None:
    """The registered spelling of `name` given in any case, or None."""
    return next((known for known in choices if known.lower() == str(name).lower()), None)


def canonical_model(name: str) -> str:
    """The registered spelling of a model name given in any case ("mobilenet" -> "MobileNet")."""
    if known := _spelled(name, MODELS):
        return known
    raise ConfigError(f"model: unknown model {name!r}{suggest(str(name), MODELS)}; choose scratch or one of "
                      f"{', '.join(BACKBONES)}")


def _parse(key: str, value: typing.Any) -> typing.Any:
    """`value` (a command-line string, or a JSON value from config.json) as the field's type."""
    kind = _TYPES[key]
    text = value if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("1", "true", "yes", "on"):
            return True
        if text is not None and text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{key}: expected int, got {value!r}")
            value = int(value)
        try:
            number = kind(value.strip()) if isinstance(value, str) else kind(value)
        except ValueError:
            raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if key == "data" and (value is None or (text is not None and text.lower() in ("", "none", "null"))):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected text, got {value!r}")
    return value


def _check(key: str, value: typing.Any) -> typing.Any:
    """Raises a ConfigError naming `key` when `value` is outside what it accepts; returns it normalised."""
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key}: expected one of {', '.join(_CHOICES[key])}, got {value!r}"
                          f"{suggest(str(value), _CHOICES[key])}")
    if key in _RANGES:
        low, high, open_high = _RANGES[key]
        if value < low or value > high or (open_high and value == high) or (key in _POSITIVE and value <= 0):
            top = "inf" if high == math.inf else high
            shape = f"({low}, {top}]" if key in _POSITIVE else f"[{low}, {top}{')' if open_high else ']'}"
            raise ConfigError(f"{key}: expected a value in {shape}, got {value!r}")
    if key == "model":
        return canonical_model(value)
    if key == "weights" and value.lower() in ("imagenet", "none"):
        return value.lower()
    if key == "name" and (value in (".", "..") or re.search(r"[/\\\x00]", value)):
        raise ConfigError(f"name: expected a folder name without '/' (it goes under runs_dir), got {value!r}")
    if key in ("runs_dir", "split_seed") and not value:
        raise ConfigError(f"{key}: expected a non-empty value")
    return value


def parse_value(key: str, value: typing.Any) -> typing.Any:
    """One config value, parsed and checked: the type and range of field `key`, or a ConfigError."""
    if key not in _FIELDS:
        raise ConfigError(f"unknown config key {key!r}{suggest(key, _FIELDS)}; `catdog config` lists them")
    return _check(key, _parse(key, value))


def parse_pairs(items: typing.Iterable[str], allowed: typing.Iterable[str] | None = None) -> dict[str, typing.Any]:
    """`["epochs=3", ...]` -> {"epochs": 3}: the one `key=value` syntax of every command.

    `allowed` limits the keys (e.g. what `prepare` uses); every value is parsed and checked.
    """
    allowed = None if allowed is None else tuple(allowed)
    pairs = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{item!r} is not of the form key=value (e.g. epochs=5)")
        if allowed is not None and key in _FIELDS and key not in allowed:
            raise ConfigError(f"{key}: not a setting of this command; it takes {', '.join(allowed)}")
        pairs[key] = parse_value(key, value.strip())
    return pairs


def _check_whole(cfg: Config) -> Config:
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(f"val_fraction + test_fraction: expected less than 1, got "
                          f"{cfg.val_fraction} + {cfg.test_fraction}")
    if cfg.shards and cfg.max_images:
        raise ConfigError(f"shards={cfg.shards} with max_images={cfg.max_images}: shards hold whole splits; "
                          f"leave max_images=0, or train from the pictures")
    return cfg


def override(cfg: Config, changes: dict[str, typing.Any]) -> Config:
    """Returns `cfg` with `changes` (strings or typed values), each checked; an unknown key is an error naming it."""
    parsed = {key: parse_value(key, value) for key, value in changes.items()}
    return _check_whole(dataclasses.replace(cfg, **parsed))


def preset_name(preset: str) -> str:
    """The registered spelling of a preset name given in any case."""
    if known := _spelled(preset, PRESETS):
        return known
    raise ConfigError(f"unknown preset {preset!r}{suggest(str(preset), PRESETS)}; choose from: {', '.join(PRESETS)}")


def resolve(preset: str = "scratch", overrides: typing.Iterable[str] = ()) -> Config:
    """Builds a config from a preset name and `key=value` strings."""
    return override(Config(), {**PRESETS[preset_name(preset)], **parse_pairs(overrides)})


def resolve_file(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """A config.json (a run's, to run it again) with `key=value` changes.

    A run's own name is dropped (a new run gets a fresh one) unless `name=` is among the changes.
    """
    cfg = load(path)
    if Path(path).resolve().parent.name == cfg.name:
        cfg = dataclasses.replace(cfg, name="")
    return override(cfg, parse_pairs(overrides))


def describe(key: str) -> str:
    """The comment beside field `key` in this file: what it means and what it takes."""
    return _DOCS.get(key, "")


def _field_docs() -> dict[str, str]:
    try:
        source = inspect.getsource(Config)
    except (OSError, TypeError):  # no source in this install: fields without their notes
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): [^=]+=[^#\n]*#(.*)$", source, re.M)}


_DOCS = _field_docs()


def explain(cfg: Config) -> str:
    """The resolved config, one `key=value  # meaning` line per field (`catdog config`)."""
    values = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in dataclasses.asdict(cfg).items()}
    width = max(len(f"{k}={v}") for k, v in values.items())
    return "\n".join(f"{k}={v}".ljust(width) + f"  # {describe(k)}" for k, v in values.items())


def save(cfg: Config, path: Path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load(path: str | Path) -> Config:
    """Reads a `config.json`; keys this version does not know are an error, not ignored."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a config.json file (e.g. runs/NAME/config.json)")
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable config.json ({error})") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a JSON object of config keys")
    try:
        return override(Config(), values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
