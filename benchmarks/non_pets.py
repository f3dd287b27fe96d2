"""A set of pictures with no cat or dog, in kinds, from packages of Debian and PyPI, split for fitting and evaluation.

    sudo apt-get update                                     # once, on Debian or Ubuntu
    python benchmarks/non_pets.py ~/non-pets                # downloads about 700 MB of packages

writes OUT/fit/KIND/*.* and OUT/eval/KIND/*.*, KIND one of animals (other than cats and dogs),
people, food, objects, scenes (indoor, outdoor, nature), drawings (drawings, paintings, text),
and OUT/fit/debian/ (benchmarks/debian_photos.py's 146, all on the fitting side, as before).
Each picture goes to fit or eval by a hash of its bytes, so the split never depends on the order
of files or on which packages were given; identical files are kept once.

Where the pictures come from:
- gcompris-qt-data: the pictures inside its Qt resource files (.rcc): photos of animals of the
  world and the farm (and behind the eraser game), fish, tools and things, monuments, windmills and dams; paintings and
  details of paintings, the words game's cartoons;
- tuxpaint-stamps-default: cut-out photos and drawings by kind (animals, food, vehicles, ...);
- openclipart-png: drawings, a sample of `DRAWINGS` of its 8,000;
- lomiri-wallpapers-16.04/-20.04: landscapes;
- PyPI foolbox (20 ImageNet validation photos, named by class), insightface and ultralytics
  (photos of people).
Cats and dogs are left out by name (`PET_WORDS`, any word of the path) and by ImageNet class
(`catdog.models.pet_classes`); a sample was also looked at by eye.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from catdog.models.pet_classes import PET_CLASSES

DEBIAN = ("gcompris-qt-data", "tuxpaint-stamps-default", "openclipart-png", "lomiri-wallpapers-16.04",
          "lomiri-wallpapers-20.04")
PYPI = ("foolbox==3.3.4", "insightface==2.1", "ultralytics==8.4.190")
KINDS = ("animals", "people", "food", "objects", "scenes", "drawings")
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DRAWINGS = 400  # openclipart's drawings would outnumber every other kind
PET_WORDS = frozenset("""cat cats kitten kittens kitty tabby siamese dog dogs puppy puppies pup pups hound hounds
    poodle terrier dachshund retriever spaniel bulldog husky collie beagle pug corgi chihuahua labrador dalmatian
    chien chiens chat chats pet pets animal""".split())  # "animal": the words game's picture may be either


PET_ENDINGS = ("cat", "cats", "dog", "dogs", "kitten", "kittens", "puppy", "puppies")


class Picture(NamedTuple):
    kind: str
    name: str  # source-name.ext, unique in its kind
    data: bytes


def words(path: str) -> set[str]:
    """The lower-case words of a path: 'explore/Black_cat2.webp' -> {'explore', 'black', 'cat', 'webp'}."""
    return set(re.findall(r"[a-z]+", path.lower()))


def shows_pet(path: str) -> bool:
    """True when any word of `path` names a cat or a dog (or "pet" or "animal", which may be one), or
    ends as one does ('blackcat', 'sheepdog'; 'category' and 'caterpillar' stay)."""
    return any(word in PET_WORDS or word.endswith(PET_ENDINGS) for word in words(path))


def part(data: bytes) -> str:
    """"fit" or "eval", half and half, from the picture's bytes alone."""
    return "fit" if int(hashlib.sha256(data).hexdigest()[:8], 16) % 2 == 0 else "eval"


def rcc_files(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of each file in a Qt resource file (.rcc, format 1-3; zlib-compressed or stored)."""
    magic, version, tree, payload, names = struct.unpack(">4sIIII", data[:20])
    if magic != b"qres":
        raise ValueError("not a Qt resource file")
    entry = 14 if version < 2 else 22

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        at = tree + index * entry
        name_at, flags = struct.unpack(">IH", data[at:at + 6])
        (length,) = struct.unpack(">H", data[names + name_at:names + name_at + 2])
        name = data[names + name_at + 6:names + name_at + 6 + 2 * length].decode("utf-16-be") if index else ""
        path = f"{prefix}/{name}" if index else ""
        if flags & 2:  # a folder
            count, first = struct.unpack(">II", data[at + 6:at + 14])
            for child in range(first, first + count):
                yield from walk(child, path)
            return
        (offset,) = struct.unpack(">I", data[at + 10:at + 14])
        (size,) = struct.unpack(">I", data[payload + offset:payload + offset + 4])
        blob = data[payload + offset + 4:payload + offset + 4 + size]
        if flags & 4:
            return  # zstd: not used by these packages' pictures
        yield path, zlib.decompress(blob[4:]) if flags & 1 else blob

    yield from walk(0, "")


# gcompris: activity folder -> kind. The words game's pictures are cartoons, whatever they show.
GCOMPRIS = {"explore_world_animals": "animals", "explore_farm_animals": "animals", "fishes": "animals",
            "tools": "objects", "others": "objects", "explore_world_music": "objects", "renewable": "scenes",
            "monuments": "scenes", "explore_monuments": "scenes", "erase": "animals", "paintings": "drawings",
            "details": "drawings", "babyshapes": "drawings", "words_sample": "drawings"}


def gcompris_kind(path: str) -> str | None:
    """The kind of a gcompris resource path, None for what is not used (icons, sprites, pets)."""
    return next((GCOMPRIS[p] for p in path.strip("/").split("/") if p in GCOMPRIS), None)


TUXPAINT = {"animals": "animals", "food": "food", "people": "people", "plants": "scenes", "space": "scenes",
            "symbols": "drawings", "naturalforces": "scenes"}


def tuxpaint_kind(relative: str) -> str:
    """Kind of a stamp from its folder under stamps/: cartoons and symbols are drawings, money and the rest things."""
    parts = relative.split("/")
    if {"cartoon", "faces", "body_parts"} & set(parts):
        return "drawings"
    if "toys" in parts:
        return "objects"
    if parts[0] == "town" and parts[1] in ("houses", "monuments"):
        return "scenes"
    if parts[0] == "plants" and Path(relative).stem in ("eggplant", "lettuce_bolted", "thyme"):
        return "food"
    if parts[:2] == ["symbols", "money"]:
        return "objects"
    return TUXPAINT.get(parts[0], "objects")


def imagenet_kind(index: int) -> str | None:
    """Kind of an ImageNet class by its index; None for the cat and dog classes."""
    if index in PET_CLASSES:
        return None
    if index < 398:
        return "animals"
    if 923 <= index <= 969:
        return "food"
    if 970 <= index <= 980:
        return "scenes"
    return "people" if 981 <= index <= 983 else "objects"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def select(root: Path) -> Iterator[Picture]:
    """Every picture of no cat or dog, with its kind, from the packages unpacked under root/<package>."""
    for rcc in sorted((root / "gcompris-qt-data").rglob("*.rcc")):
        for path, data in rcc_files(rcc.read_bytes()):
            if Path(path).suffix in SUFFIXES and (kind := gcompris_kind(path)) and not shows_pet(path):
                yield Picture(kind, f"gcompris-{rcc.stem}-{Path(path).name}", data)
    stamps = root / "tuxpaint-stamps-default" / "usr/share/tuxpaint/stamps"
    for path in _image_files(stamps):
        relative = path.relative_to(stamps).as_posix()
        if not shows_pet(relative):
            yield Picture(tuxpaint_kind(relative), f"tuxpaint-{relative.replace('/', '-')}", path.read_bytes())
    clipart = [p for p in _image_files(root / "openclipart-png") if not shows_pet(p.as_posix())]
    for path in sorted(clipart, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())[:DRAWINGS]:
        yield Picture("drawings", f"openclipart-{path.name}", path.read_bytes())
    for package in ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"):
        for path in _image_files(root / package):
            yield Picture("scenes", f"lomiri-{path.name}", path.read_bytes())
    for path in _image_files(root / "foolbox"):
        if match := re.fullmatch(r"imagenet_\d+_(\d+)", path.stem):
            if kind := imagenet_kind(int(match[1])):
                yield Picture(kind, f"foolbox-{path.name}", path.read_bytes())
    for package in ("insightface", "ultralytics"):
        for path in _image_files(root / package):
            if "gui" not in path.parts:  # insightface's app icon
                kind = "objects" if path.stem.startswith("mask_") else "people"  # face masks, no face
                yield Picture(kind, f"{package}-{path.name}", path.read_bytes())


def write(pictures: Iterator[Picture], out: Path) -> Counter:
    """Each picture (first of identical files) into out/PART/KIND/NAME; {(part, kind): count}."""
    seen, counts = set(), Counter()
    for picture in pictures:
        digest = hashlib.sha256(picture.data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        folder = out / part(picture.data) / picture.kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / picture.name.replace(" ", "_")).write_bytes(picture.data)
        counts[part(picture.data), picture.kind] += 1
    return counts


def unpack(tmp: Path) -> None:
    """Downloads the packages into tmp and unpacks each into tmp/<package name>."""
    subprocess.run(["apt-get", "download", *DEBIAN], cwd=tmp, check=True)
    for deb in tmp.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / deb.name.split("_")[0])], check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp), *PYPI], check=True)
    for wheel in tmp.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp / wheel.name.split("-")[0].replace("_", "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the pictures to")
    parser.add_argument("--unpacked", type=Path, help="the packages already unpacked here (no download)")
    parser.add_argument("--no-debian-146", action="store_true", help="leave out debian_photos.py's set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.unpacked or Path(tmp)
        if not args.unpacked:
            unpack(root)
        counts = write(select(root), args.out)
    if not args.no_debian_146:
        subprocess.run([sys.executable, str(Path(__file__).with_name("debian_photos.py")), str(args.out / "fit/debian")],
                       check=True)
    print("| kind | fit | eval |\n| --- | --- | --- |")
    for kind in KINDS:
        print(f"| {kind} | {counts['fit', kind]} | {counts['eval', kind]} |")
    print(f"{sum(counts.values())} pictures in {args.out}")


if __name__ == "__main__":
    main()
