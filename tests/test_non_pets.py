"""benchmarks/non_pets.py's choice of pictures, on fake unpacked packages (no download), and the
per-kind report of benchmarks/unknown_kinds.py on made-up scores."""

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import non_pets  # noqa: E402
import unknown_kinds  # noqa: E402


def qt_resources(folder: str, files: dict[str, bytes], compress: bool = True) -> bytes:
    """A Qt resource file (.rcc, format 1) holding folder/NAME for each of `files`, as Qt's rcc writes it."""
    names, name_at = b"", {}
    for name in [folder, *files]:
        name_at[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    payload, tree = b"", []
    tree.append(struct.pack(">IHII", 0, 2, 1, 1))  # the root: one folder, entry 1
    tree.append(struct.pack(">IHII", name_at[folder], 2, len(files), 2))
    for name, data in files.items():
        blob = struct.pack(">I", len(data)) + zlib.compress(data) if compress else data
        tree.append(struct.pack(">IHHHI", name_at[name], 1 if compress else 0, 0, 0, len(payload)))
        payload += struct.pack(">I", len(blob)) + blob
    tree_bytes = b"".join(tree)
    start = 20
    return (b"qres" + struct.pack(">IIII", 1, start, start + len(tree_bytes), start + len(tree_bytes) + len(payload))
            + tree_bytes + payload + names)


@pytest.mark.parametrize("compress", [True, False])
def test_pictures_come_out_of_qt_resource_files_whole(compress):
    files = {"goat.webp": b"RIFF goat", "hedgehog.webp": b"RIFF hedgehog" * 50}
    found = dict(non_pets.rcc_files(qt_resources("animals", files, compress)))
    assert found == {f"/animals/{name}": data for name, data in files.items()}
    with pytest.raises(ValueError, match="Qt resource"):
        list(non_pets.rcc_files(b"PK\x03\x04" + bytes(30)))


@pytest.mark.parametrize("path, pet", [
    ("stamps/animals/mammals/cats/tabby.png", True), ("seasonal/halloween/blackcat.png", True),
    ("lang/words_sample/Dog.webp", True), ("puppies_2.png", True), ("sheepdog.png", True),
    ("categorization/images/others/pet.webp", True), ("words_sample/animal.webp", True),
    ("fish/catfish.png", False), ("monuments/cathedral.webp", False), ("insects/caterpillar.webp", False),
    ("categorization/hammer.webp", False), ("town/education.png", False), ("trumpet.png", False),
])
def test_cats_and_dogs_are_left_out_by_any_word_of_their_path(path, pet):
    assert non_pets.shows_pet(path) is pet


def test_imagenet_classes_give_the_kind_and_no_cat_or_dog_class_passes():
    assert non_pets.imagenet_kind(243) is None and non_pets.imagenet_kind(281) is None  # bull mastiff, tabby
    assert [non_pets.imagenet_kind(i) for i in (99, 341, 559, 948, 970, 983)] == [
        "animals", "animals", "objects", "food", "scenes", "people"]


def fake_packages(root: Path) -> None:
    """Unpacked packages as they lie after `dpkg-deb -x` / unzip, a few files each, with pets among them."""
    def put(relative: str, data: bytes) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)

    rcc = "gcompris-qt-data/usr/share/gcompris-qt/rcc/"
    put(rcc + "explore_farm_animals.rcc", qt_resources("explore_farm_animals", {
        "pig.webp": b"pig", "dog.webp": b"dog", "cat.webp": b"cat", "notes.txt": b"not a picture"}))
    put(rcc + "paintings.rcc", qt_resources("paintings", {"bruegel.webp": b"bruegel"}))
    put(rcc + "core.rcc", qt_resources("icons", {"menu.png": b"icon"}))  # no kind: left out
    stamps = "tuxpaint-stamps-default/usr/share/tuxpaint/stamps/"
    put(stamps + "animals/mammals/equines/horse.png", b"horse")
    put(stamps + "animals/mammals/dogs/beagle.png", b"beagle")
    put(stamps + "seasonal/halloween/blackcat.png", b"black cat")
    put(stamps + "food/fruit/apple.png", b"apple")
    put(stamps + "town/houses/cottage.png", b"cottage")
    put(stamps + "sports/cartoon/runner.png", b"runner")
    put(stamps + "vehicles/ship/ferry.png", b"ferry")
    put(stamps + "vehicles/ship/ferry.txt", b"ferry's description")
    for i in range(non_pets.DRAWINGS + 5):
        put(f"openclipart-png/usr/share/openclipart/png/misc/tree_{i}.png", f"tree {i}".encode())
    put("openclipart-png/usr/share/openclipart/png/animals/dog_bone.png", b"dog bone")
    put("lomiri-wallpapers-20.04/usr/share/backgrounds/Fjord.jpg", b"fjord")
    put("foolbox/foolbox/data/imagenet_00_243.jpg", b"mastiff")
    put("foolbox/foolbox/data/imagenet_01_559.jpg", b"folding chair")
    put("foolbox/foolbox/data/cifar10_00_3.png", b"a cifar cat")
    put("insightface/insightface/data/images/t1.jpg", b"people at a table")
    put("insightface/insightface/data/images/mask_blue.jpg", b"a face mask")
    put("insightface/insightface/gui/assets/app_icon.png", b"icon")
    put("ultralytics/ultralytics/assets/bus.jpg", b"bus with people")


def test_the_builder_keeps_every_kind_and_no_pet(tmp_path):
    fake_packages(tmp_path / "unpacked")
    chosen = {p.name: p.kind for p in non_pets.select(tmp_path / "unpacked")}
    assert chosen == {
        "gcompris-explore_farm_animals-pig.webp": "animals", "gcompris-paintings-bruegel.webp": "drawings",
        "tuxpaint-animals-mammals-equines-horse.png": "animals", "tuxpaint-food-fruit-apple.png": "food",
        "tuxpaint-town-houses-cottage.png": "scenes", "tuxpaint-sports-cartoon-runner.png": "drawings",
        "tuxpaint-vehicles-ship-ferry.png": "objects", "lomiri-Fjord.jpg": "scenes",
        "foolbox-imagenet_01_559.jpg": "objects", "insightface-t1.jpg": "people",
        "insightface-mask_blue.jpg": "objects", "ultralytics-bus.jpg": "people",
        **{name: "drawings" for name in chosen if name.startswith("openclipart-")},
    }
    clipart = [name for name in chosen if name.startswith("openclipart-")]
    assert len(clipart) == non_pets.DRAWINGS and not any("dog" in name for name in clipart)


def test_pictures_split_by_their_bytes_alone_and_copies_are_kept_once(tmp_path):
    pictures = [non_pets.Picture("food", f"apple-{i}.png", f"apple {i}".encode()) for i in range(200)]
    copy = non_pets.Picture("objects", "same-bytes.png", pictures[0].data)
    counts = non_pets.write(iter([*pictures, copy]), tmp_path / "out")
    assert sum(counts.values()) == 200 and 70 < counts["fit", "food"] < 130  # about half and half
    for picture in pictures:
        assert (tmp_path / "out" / non_pets.part(picture.data) / "food" / picture.name).read_bytes() == picture.data
    again = non_pets.write(iter(reversed(pictures)), tmp_path / "again")  # another order: the same split
    assert again == counts
    assert non_pets.part(b"x") == non_pets.part(b"x") and {non_pets.part(p.data) for p in pictures} == {"fit", "eval"}


def made_up_scores(rng, n, pet_energy, p_pet, density):
    return {"pet_energy": rng.normal(pet_energy, 1.0, n), "p_pet": 1 / (1 + np.exp(-rng.normal(p_pet, 1.0, n))),
            "similarity": rng.normal(density, 1.0, n)}


def test_each_kind_is_reported_and_a_kind_left_out_is_scored_by_a_rule_that_never_saw_it():
    rng = np.random.default_rng(0)
    pets = made_up_scores(rng, 4000, 8.0, 4.0, 0.0)
    # "scenes" differ from pets in pet_energy alone, "animals" in p_pet alone: a score learned without
    # one kind weighs only what tells the other from pets, and lets the left-out kind through.
    # Both kinds are far from the pets' features.
    fit = {"scenes": made_up_scores(rng, 300, 1.0, 4.0, -9.0), "animals": made_up_scores(rng, 300, 8.0, -3.0, -9.0)}
    evaluation = {"scenes": made_up_scores(rng, 300, 1.0, 4.0, -9.0),
                  "animals": made_up_scores(rng, 300, 8.0, -3.0, -9.0)}
    learned = unknown_kinds.thresholded([], learned=True)
    seen = unknown_kinds.by_kind(learned, pets, fit, evaluation, 0.003)
    left_out = unknown_kinds.leave_one_kind_out(learned, pets, fit, evaluation, 0.003)
    assert seen["animals"] > 0.9 and seen["scenes"] > 0.9
    assert left_out["scenes"] < 0.1 and left_out["animals"] < 0.1
    density = unknown_kinds.thresholded(["similarity"])
    assert unknown_kinds.leave_one_kind_out(density, pets, fit, evaluation, 0.003) == pytest.approx(
        unknown_kinds.by_kind(density, pets, fit, evaluation, 0.003))  # it needs no non-pets
    assert min(unknown_kinds.by_kind(density, pets, fit, evaluation, 0.003).values()) > 0.99


def test_a_rule_flags_a_picture_when_any_score_is_below_its_threshold():
    scores = {"a": np.array([0.0, 2.0, 2.0]), "b": np.array([2.0, 0.0, 2.0])}
    assert unknown_kinds.flags(scores, {"a": 1.0, "b": 1.0}).tolist() == [True, True, False]
    rule = unknown_kinds.as_shipped({"unknown_thresholds": {"pet_score": 0.0},
                                     "pet_score": {"pet_energy": 1.0, "log_p_pet": 1.0, "bias": -5.0}})
    flagged = rule({}, {}, 0.003)({"pet_energy": np.array([10.0, 1.0]), "p_pet": np.array([0.5, 0.5])})
    assert flagged.tolist() == [False, True]  # 10 - 0.69 - 5 > 0 > 1 - 0.69 - 5


def test_feature_rules_need_no_non_pets_and_catch_what_lies_away_from_the_training_pets():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=32)

    def pets(n):
        return {"features": centre + rng.normal(0, 0.3, (n, 32)), "p_pet": np.ones(n)}

    train, val, test = pets(1000), pets(2000), pets(2000)
    far = {"features": -centre + rng.normal(0, 0.3, (200, 32)), "p_pet": np.ones(200)}
    for rule in (unknown_kinds.neighbours(train["features"], 5), unknown_kinds.mahalanobis(train["features"])):
        assert rule.learns_from_non_pets is False
        flagged = rule(val, {}, 0.01)
        assert flagged(far).all() and unknown_kinds.rates(flagged(test)) < 0.03


def test_the_neighbour_rule_scores_the_kth_nearest_training_pet():
    train = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0]])  # lengths do not count: cosines
    query = {"features": np.array([[0.6, 0.8]])}  # cosines 0.6, 0.96, 0.8
    similarities = [unknown_kinds.neighbour_similarity(train, k)(query)["similarity"][0] for k in (1, 2, 3)]
    np.testing.assert_allclose(similarities, [0.96, 0.8, 0.6], rtol=1e-6)
