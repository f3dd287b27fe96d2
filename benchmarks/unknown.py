"""How often "unknown" is answered: for photos of neither cats nor dogs, and for the test split's pets.

    pip install -e ".[bench]"     # scikit-image and matplotlib carry the sample photos
    python benchmarks/unknown.py --model runs/mobilenet-224 [--non-pets DIR ...]

Non-pet photos: every sample picture that ships inside scikit-image, scikit-learn and
matplotlib (photos, micrographs, textures, documents, logos), except scikit-image's cat
"chelsea", which is checked the other way. `--non-pets DIR` adds a folder of other non-pet
pictures as a row of its own (benchmarks/debian_photos.py makes one from Debian's packages).
The thresholds are fitted on validation pets alone (`catdog calibrate`). Prints a table and
writes benchmarks/results/unknown.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catdog import data  # noqa: E402
from catdog.predict import Predictor  # noqa: E402

PHOTO_SUFFIXES = (".png", ".jpg")


def sample_photos() -> tuple[list[str], list[str]]:
    """(non-pet pictures, pet pictures) from the sample data of installed packages."""
    import matplotlib
    import skimage.data
    import sklearn.datasets

    folders = [Path(skimage.data.__file__).parent, Path(sklearn.datasets.__file__).parent / "images",
               Path(matplotlib.get_data_path()) / "sample_data"]
    files = sorted(str(p) for folder in folders for p in folder.iterdir() if p.suffix in PHOTO_SUFFIXES)
    pets = [f for f in files if Path(f).stem == "chelsea"]
    return [f for f in files if f not in pets], pets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder or .keras (default: the shipped model)")
    parser.add_argument("--run", help="run folder whose test split to use (default: --model)")
    parser.add_argument("--non-pets", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of pictures that show neither cats nor dogs (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unknown.json")
    args = parser.parse_args()
    predictor = Predictor(args.model, unknown=True)
    non_pets, pets = sample_photos()
    run = Path(args.run or args.model)
    root = json.loads((run / "data.json").read_text())["root"]
    test = [str(e.path) for e in data.load_split(run / "manifest.csv", root, "test")]
    rows = []
    sets = [("non-pet sample photos", non_pets, True)]
    sets += [(f"non-pets in {folder.name}/", [str(folder)], True) for folder in args.non_pets]
    sets += [("pet sample photos", pets, False), ("test split cats and dogs", test, False)]
    for name, paths, non_pet in sets:
        records = list(predictor.predict_paths(paths))
        unknown = [r for r in records if r.get("label") == "unknown"]
        missed = [Path(r["path"]).name for r in records if r.get("label") != "unknown"]
        rows.append(dict(set=name, images=len(records), unknown=len(unknown), unknown_rate=len(unknown) / len(records),
                         missed=missed if non_pet else None))
    print("unknown when", " or ".join(f"{k} < {v:.4g}" for k, v in predictor.unknown_thresholds.items()))
    print("| set | images | answered unknown | share |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['set']} | {r['images']} | {r['unknown']} | {r['unknown_rate']:.1%} |")
    for r in rows:
        if r["missed"] is not None:
            print(f"{r['set']} answered cat or dog:", ", ".join(r["missed"]) or "none")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(thresholds=predictor.unknown_thresholds, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
