"""A second set of non-pet pictures, from Debian's wallpaper and OpenCV sample packages.

    sudo apt-get update                                  # once, on Debian or Ubuntu
    python benchmarks/debian_photos.py ~/debian-photos         # downloads about 260 MB of packages
    python benchmarks/unknown.py --model runs/NAME --non-pets ~/debian-photos

146 pictures: landscapes, flowers, insects, an elephant, a baboon, a squirrel, buildings,
street scenes, people, fruit, text, logos, patterns and abstract art. The one dog among
OpenCV's samples (chicky_512.png) is left out. This set was used to choose the unknown
detector's scores; the sample photos of scikit-image, scikit-learn and matplotlib were not.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers",
            "sway-backgrounds", "opencv-doc")
SUFFIXES = (".jpg", ".jpeg", ".png")
PETS = {"chicky_512"}
STEREO_REPEATS = re.compile(r"(left|right)(0[2-9]|1\d)")  # OpenCV's calibration series: keep the first pair


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and "screenshot" not in p.name.lower())


def select(root: Path) -> dict[str, Path]:
    """{output name: file} from the packages unpacked under root/<package>."""
    chosen = {}
    for wallpaper in sorted((root / "plasma-workspace-wallpapers").glob("usr/share/wallpapers/*")):
        if files := _images(wallpaper):  # the same picture in many sizes: the largest
            chosen[wallpaper.name] = max(files, key=lambda p: p.stat().st_size)
    for package in PACKAGES[1:-1]:
        for path in _images(root / package):  # size variants share the name before "_"
            chosen.setdefault(f"{package}-{path.stem.split('_')[0]}", path)
    examples = root / "opencv-doc" / "usr/share/doc/opencv-doc/examples"
    opencv = _images(examples / "data") + sorted((examples / "text").glob("scenetext0*.jpg"))
    opencv.append(examples / "alphamat/input_images/plant.jpg")
    for path in opencv:
        if path.stem not in PETS and not STEREO_REPEATS.fullmatch(path.stem):
            chosen[f"opencv-{path.stem}"] = path
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the pictures to")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True)
        for deb in tmp.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / deb.name.split("_")[0])], check=True)
        chosen = select(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name, path in chosen.items():
            shutil.copyfile(path, out / f"{name.replace(' ', '_')}{path.suffix.lower()}")
    print(f"{len(chosen)} pictures in {out}")


if __name__ == "__main__":
    main()
