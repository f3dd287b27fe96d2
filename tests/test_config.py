import dataclasses

import pytest

from catdog import config


def test_presets_resolve_and_differ():
    tiny, default = config.resolve("tiny"), config.resolve()
    assert tiny.image_size == 32 and tiny.max_images > 0
    assert default == config.Config()
    assert config.resolve("mobilenet").model == "MobileNet"


@pytest.mark.parametrize("preset, model, size", [("lite1", "EfficientNetLite1", 240), ("lite2", "EfficientNetLite2", 260)])
def test_the_bigger_lite_presets_are_the_lite0_recipe(preset, model, size):
    lite0, bigger = dataclasses.asdict(config.resolve("lite0")), dataclasses.asdict(config.resolve(preset))
    assert {key for key in lite0 if lite0[key] != bigger[key]} == {"model", "image_size", "fine_tune_layers"}
    assert (bigger["model"], bigger["image_size"], bigger["fine_tune_layers"]) == (model, size, 52)


def test_overrides_are_typed():
    cfg = config.resolve("tiny", ["epochs=3", "learning_rate=0.01", "augment=false", "model=MobileNet"])
    assert (cfg.epochs, cfg.learning_rate, cfg.augment, cfg.model) == (3, 0.01, False, "MobileNet")


@pytest.mark.parametrize("item, message", [
    ("epoch=3", "unknown config key"),
    ("epochs=three", "epochs: expected int"),
    ("augment=maybe", "augment: expected true or false"),
    ("epochs", "not of the form key=value"),
    ("cache=gpu", "cache: expected one of auto, memory, disk, none"),
    ("unknown_budget=0.5", r"unknown_budget: expected a value in \[0.0, 0.5\)"),
    ("unknown_budget=-0.1", "unknown_budget: expected a value"),
])
def test_bad_overrides_name_the_field(item, message):
    with pytest.raises(config.ConfigError, match=message):
        config.resolve("tiny", [item])


def test_unknown_preset():
    with pytest.raises(config.ConfigError, match="unknown preset 'huge'"):
        config.resolve("huge")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.Config().epochs = 1


def test_save_load_round_trip(tmp_path):
    cfg = config.resolve("mobilenet", ["data=/x/train.zip"])
    config.save(cfg, tmp_path / "config.json")
    assert config.load(tmp_path / "config.json") == cfg


def test_load_rejects_unknown_keys(tmp_path):
    (tmp_path / "config.json").write_text('{"epochs": 2, "colour": "red"}')
    with pytest.raises(config.ConfigError, match="colour"):
        config.load(tmp_path / "config.json")
