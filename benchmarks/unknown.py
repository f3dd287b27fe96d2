"""How often "unknown" is answered: for photos of neither cats nor dogs, and for the test split's pets.

    pip install -e ".[bench]"     # scikit-image and matplotlib carry the sample photos
    python benchmarks/unknown.py --model runs/mobilenet-224 [--non-pets DIR ...] [--curve docs/unknown-tradeoff.png]

Non-pet photos: every sample picture that ships inside scikit-image, scikit-learn and
matplotlib (photos, micrographs, textures, documents, logos), except scikit-image's cat
"chelsea", which is checked the other way. `--non-pets DIR` adds a folder of other non-pet
pictures as a row of its own (benchmarks/debian_photos.py makes one from Debian's packages).
The thresholds are fitted on validation pets alone (`catdog calibrate`). `--curve` refits them
at a range of budgets (the share of validation pets given up) and draws what each costs and
catches: test pets answered "unknown" against non-pets answered "unknown". Prints tables and
writes benchmarks/results/unknown.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catdog.data import run_data  # noqa: E402
from catdog.inference.answers import is_unknown  # noqa: E402
from catdog.inference.predictor import Predictor, expand_paths  # noqa: E402
from catdog.training.calibrate import fit_thresholds  # noqa: E402

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


BUDGETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)


RULES = {"two thresholds (p_pet, pet_energy)": ("p_pet", "pet_energy"), "learned pet_score": ("pet_score",)}


def tradeoff(fitted_on: list[dict], scored_sets: list[tuple[str, list[dict]]]) -> list[dict]:
    """Per rule the model can use and per budget: thresholds fitted on the validation pets' scores, then
    each set's share answered "unknown"."""
    points = []
    for rule, names in RULES.items():
        if not all(name in fitted_on[0] for name in names):
            continue  # no learned score in this model.json
        for budget in BUDGETS:
            thresholds = fit_thresholds({n: [s[n] for s in fitted_on] for n in names}, budget)
            point = {"rule": rule, "budget": budget, "thresholds": thresholds}
            for name, scores in scored_sets:
                point[name] = sum(is_unknown(s, thresholds) for s in scores) / len(scores)
            points.append(point)
    return points


def plot(points: list[dict], non_pet_sets: list[str], pets: str, current: float, out: Path) -> None:
    """Non-pets caught against test pets given up: a line per rule and non-pet set; the model's budget circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for rule in dict.fromkeys(p["rule"] for p in points):
        for name, style in zip(non_pet_sets, ("o-", "s--", "^:")):
            line_points = [p for p in points if p["rule"] == rule]
            x, y = [100 * p[pets] for p in line_points], [100 * p[name] for p in line_points]
            (line,) = ax.plot(x, y, style, label=f"{rule}: {name}", markersize=4)
            at = min(line_points, key=lambda p: abs(p["budget"] - current))
            ax.plot(100 * at[pets], 100 * at[name], "o", markersize=10, mfc="none", color=line.get_color())
    save_curve(figure, ax, out, f"Unknown trade-off: thresholds fitted on validation pets (circled: budget {current:.2%})",
               2.5)


def save_curve(figure, ax, out: Path, title: str, xlim: float) -> None:
    """The trade-off axes labelled and titled, written to `out` (benchmarks/unknown_kinds.py draws one too)."""
    ax.set(xlabel="test cats and dogs answered unknown (%)", ylabel="non-pets answered unknown (%)", xlim=(0, xlim),
           title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"trade-off curve: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder or .keras (default: the shipped model)")
    parser.add_argument("--run", help="run folder whose test split to use (default: --model)")
    parser.add_argument("--non-pets", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of pictures that show neither cats nor dogs (repeatable)")
    parser.add_argument("--curve", type=Path, metavar="PNG",
                        help="also sweep the budget (thresholds refitted on the validation split) and draw the curve")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unknown.json")
    args = parser.parse_args()
    predictor = Predictor(args.model, unknown=True)
    non_pets, pets = sample_photos()
    run = Path(args.run or args.model)
    test, val = ([str(e.path) for e in run_data.split(run, name)] for name in ("test", "val"))
    rows = []
    sets = [("non-pet sample photos", non_pets, True)]
    fitted_on = Path(predictor.meta.get("pet_score_fit", {}).get("folder", "")).expanduser().resolve()
    sets += [(f"non-pets in {folder.name}/" + (" (the learned score's own)" if folder.resolve() == fitted_on else ""),
              [str(folder)], True) for folder in args.non_pets]
    sets += [("pet sample photos", pets, False), ("test split cats and dogs", test, False)]
    scored = {name: list(predictor.score_paths(expand_paths(paths))) for name, paths, _ in sets}
    for name, paths, non_pet in sets:
        records = [predictor.record(s) for s in scored[name]]
        unknown_ = [r for r in records if r.get("label") == "unknown"]
        missed = [Path(r["path"]).name for r in records if r.get("label") != "unknown"]
        rows.append(dict(set=name, images=len(records), unknown=len(unknown_), unknown_rate=len(unknown_) / len(records),
                         missed=missed if non_pet else None))
    print("unknown when", " or ".join(f"{k} < {v:.4g}" for k, v in predictor.unknown_thresholds.items()))
    print("| set | images | answered unknown | share |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['set']} | {r['images']} | {r['unknown']} | {r['unknown_rate']:.1%} |")
    for r in rows:
        if r["missed"] is not None:
            print(f"{r['set']} answered cat or dog:", ", ".join(r["missed"]) or "none")
    result = dict(thresholds=predictor.unknown_thresholds, rows=rows)
    if args.curve:
        curve_sets = [s for s in sets if s[2]] + [sets[-1]]
        val_scores = [s.pet for s in predictor.score_paths(val) if s.error is None]
        points = tradeoff(val_scores, [(name, [s.pet for s in scored[name] if s.error is None])
                                       for name, _, _ in curve_sets])
        names = [name for name, _, _ in curve_sets]
        print("\n| rule | budget (validation pets) | " + " | ".join(names) + " |")
        print("| --- | --- |" + " --- |" * len(names))
        for p in points:
            print(f"| {p['rule']} | {p['budget']:.2%} | " + " | ".join(f"{p[n]:.1%}" for n in names) + " |")
        plot(points, names[:-1], names[-1], predictor.meta.get("unknown_budget", 0.005), args.curve)
        result["tradeoff"] = points
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
