"""Test-split accuracy, log loss, "unknown" rates, training time and speed of trained runs, as one table,
then the test images each run gets wrong or gives up, worst first.

    pip install -e ".[bench]"     # for the non-pet column: sample photos of scikit-image and others
    python benchmarks/accuracy.py runs/scratch-128 runs/mobilenet-224 runs/lite0-224 --tta runs/lite0-224

Each run is evaluated on its own held-out test split (never used for training or for choosing
anything). "Pets unknown" is the share of test cats and dogs answered "unknown"; "non-pets
unknown" the share of the non-pet sample photos that are (benchmarks/unknown.py; empty without
`.[bench]`). The error list is where the next improvement starts: each wrong or "unknown"
answer with its scores. Prints Markdown and writes benchmarks/results/accuracy.json, keeping
the rows of runs measured before (`--fresh` drops them).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catdog.evaluation.evaluate import evaluate, read_predictions  # noqa: E402
from catdog.inference.predictor import Predictor  # noqa: E402

SCORES = ("p_dog", "logit", "dog_odds", "p_pet", "pet_energy", "pet_score")


def non_pet_rate(run: Path) -> float | None:
    """Share of the non-pet sample photos answered "unknown"; None without a detector or `.[bench]`."""
    try:
        from unknown import sample_photos  # benchmarks/unknown.py, beside this script
        non_pets, _ = sample_photos()
    except ImportError:
        return None
    predictor = Predictor(run)
    if not predictor.unknown:
        return None
    answers = [r.get("label") for r in predictor.predict_paths(non_pets)]
    return sum(a == "unknown" for a in answers) / len(answers)


def mistakes(run: Path, tta: bool) -> list[dict]:
    """Test images answered wrongly or "unknown", the most confidently wrong first."""
    rows = read_predictions(run / f"predictions_test{'_tta' if tta else ''}.csv")
    wrong = [r for r in rows if r.get("answer") and r["answer"] != r["label"]]

    def confidence_in_error(r):
        p_label = r["p_dog"] if r["label"] == "dog" else 1 - r["p_dog"]
        return (r["answer"] == "unknown", p_label)  # wrong answers first, the surest of them first

    return [{"path": r["path"], "label": r["label"], "answer": r["answer"],
             **{k: round(r[k], 4) for k in SCORES if r.get(k) is not None}}
            for r in sorted(wrong, key=confidence_in_error)]


def row(run: Path, tta: bool) -> dict:
    metrics = evaluate(run, "test", tta=tta)
    meta = json.loads((run / "model.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return dict(
        run=run.name, model=config["model"], image_size=config["image_size"], tta=tta,
        fine_tuned_layers=config["fine_tune_layers"] if config["model"] != "scratch" else None,
        blend=meta.get("blend"), test_images=metrics["n"], accuracy=metrics["accuracy"],
        log_loss=metrics["log_loss"], ece=metrics["ece"], ece_uncalibrated=metrics["ece_uncalibrated"],
        pets_unknown=metrics.get("unknown_rate"), non_pets_unknown=non_pet_rate(run) if not tta else None,
        train_minutes=round(meta["train_seconds"] / 60, 1), predict_images_per_second=metrics["images_per_second"],
        errors=mistakes(run, tta),
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, evaluated as they are")
    parser.add_argument("--tta", nargs="*", type=Path, default=[], help="run folders, evaluated with flip TTA")
    parser.add_argument("--show", type=int, default=15, help="errors to print per run (all go to the JSON)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy.json")
    parser.add_argument("--fresh", action="store_true", help="drop the rows already in --out instead of keeping them")
    args = parser.parse_args()
    new = [row(run, False) for run in args.runs] + [row(run, True) for run in args.tta]
    # Rows of runs measured before (and not again now) stay, so the table compares old and new.
    kept = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else []
    rows = [r for r in kept if (r["run"], r["tta"]) not in {(n["run"], n["tta"]) for n in new}] + new
    print("| run | model | px | TTA | test images | accuracy | log loss | ECE (raw -> calibrated) "
          "| pets unknown | non-pets unknown | train min | predict img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['model']} | {r['image_size']} | {'flip' if r['tta'] else '-'} | {r['test_images']} "
              f"| {r['accuracy']:.2%} | {r['log_loss']:.4f} | {r['ece_uncalibrated']:.4f} -> {r['ece']:.4f} "
              f"| {_share(r.get('pets_unknown'))} | {_share(r.get('non_pets_unknown'))} "
              f"| {r['train_minutes']} | {r['predict_images_per_second']} |")
    for r in new:
        shown = r["errors"][:args.show]
        print(f"\n{r['run']}{' (flip TTA)' if r['tta'] else ''}: {len(r['errors'])} test images wrong or "
              f"given up{f', the first {len(shown)}' if len(shown) < len(r['errors']) else ''}:")
        print("| file | label | answer | " + " | ".join(SCORES) + " |")
        print("| --- | --- | --- |" + " --- |" * len(SCORES))
        for e in shown:
            print(f"| {Path(e['path']).name} | {e['label']} | {e['answer']} | "
                  + " | ".join(str(e.get(k, "-")) for k in SCORES) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
