"""How often "unknown" is answered, per kind of non-pet picture, by the shipped rule and the others measured.

    python benchmarks/non_pets.py ~/non-pets           # the pictures: OUT/{fit,eval}/KIND/
    python benchmarks/unknown_kinds.py --non-pets ~/non-pets --data ../shared/datasets/dogs-vs-cats/train.zip \\
        [--model runs/NAME] [--features] [--curve docs/unknown-tradeoff.png]

Every rule's thresholds are fitted on the validation pets at the model's budget (a rule that
learns from non-pets learns from the fitting part, and the Debian 146 in it, alone); the
evaluation part is only scored. Leave-one-kind-out: a rule that learns from non-pets is fitted
again without one kind's fitting pictures and scored on that kind's evaluation pictures. Pets
come from the Kaggle split the model was trained with (`--run`, or `--data` split as `catdog
prepare` splits it: seed "catdog-v1", 10% validation, 10% test). `--features` adds rules on the
ImageNet side's pooled features (`imagenet_view`) against those of the training pets (all of
them, or `--train-pets N`): the k-th nearest neighbour's cosine similarity, the nearest of
512 / 1,024 / 2,048 k-means prototypes of them (what `unknown_prototypes` puts in a model), the
Mahalanobis distance to their mean; each alone and beside the shipped pet_score (unknown if
either says so, the two thresholds sharing the budget), and k-NN as a third input of the learned
score. `--cache FILE.npz` keeps every set's scores and features for the next run. Prints tables,
writes benchmarks/results/unknown_kinds.json and, with --curve, the trade-off per kind.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catdog.inference.answers import pet_score, pet_score_inputs  # noqa: E402
from catdog.training.calibrate import fit_pet_score, fit_thresholds  # noqa: E402
from catdog.training.prototypes import fit_prototypes  # noqa: E402

KINDS = ("animals", "people", "food", "objects", "scenes", "drawings")
Scores = Mapping[str, np.ndarray]  # score name -> (N,) array, for one set of pictures
# A rule: (validation pets' scores, fitting non-pets' scores, budget) -> a function that flags "unknown".
Rule = Callable[[Scores, Scores, float], Callable[[Scores], np.ndarray]]


def thresholded(names: Sequence[str], learned: bool = False) -> Rule:
    """A rule: thresholds on `names`, all fitted on the validation pets at one budget (`fit_thresholds`);
    `learned` first replaces p_pet and pet_energy by the pet_score learned against the fitting non-pets."""

    def fit(pets: Scores, non_pets: Scores, budget: float):
        spec = fit_pet_score(pets, non_pets, budget)[0] if learned else None

        def scores(s: Scores) -> dict:
            return {**({"pet_score": pet_score(s, spec)} if spec else {}), **{n: s[n] for n in names}}

        thresholds = fit_thresholds(scores(pets), budget)
        return lambda s: flags(scores(s), thresholds)

    fit.learns_from_non_pets = learned
    return fit


def flags(scores: Scores, thresholds: Mapping[str, float]) -> np.ndarray:
    """(N,) bool: True where any score is below its threshold (`catdog.inference.answers.is_unknown`, vectorised)."""
    return np.any([np.asarray(scores[name]) < t for name, t in thresholds.items()], axis=0)


def shipped_scores(s: Scores, meta: Mapping) -> dict:
    """The scores model.json's thresholds are on (pet_score, pet_similarity, ...), from raw scores `s`."""
    return {name: pet_score(s, meta["pet_score"]) if name == "pet_score" else s[name]
            for name in meta["unknown_thresholds"]}


def as_shipped(meta: Mapping) -> Rule:
    """The rule that model.json holds, applied as `Predictor` applies it."""

    def fit(pets, non_pets, budget):
        return lambda s: flags(shipped_scores(s, meta), meta["unknown_thresholds"])

    fit.learns_from_non_pets = False
    return fit


def rates(flagged: np.ndarray) -> float:
    return float(np.mean(flagged)) if len(flagged) else float("nan")


def merged(sets: Sequence[Scores]) -> dict:
    """One set of scores from several (the names they all have)."""
    names = set.intersection(*(set(s) for s in sets))
    return {name: np.concatenate([np.asarray(s[name]) for s in sets]) for name in names}


def by_kind(rule: Rule, pets: Scores, fit: Mapping[str, Scores], evaluation: Mapping[str, Scores],
            budget: float) -> dict[str, float]:
    """The share of each kind's evaluation pictures flagged by `rule` fitted on all the fitting non-pets."""
    flagged = rule(pets, merged(list(fit.values())), budget)
    return {kind: rates(flagged(scores)) for kind, scores in evaluation.items()}


def leave_one_kind_out(rule: Rule, pets: Scores, fit: Mapping[str, Scores], evaluation: Mapping[str, Scores],
                       budget: float) -> dict[str, float]:
    """Per kind: the rule fitted on the other kinds' fitting pictures, scored on this kind's evaluation pictures."""
    return {kind: rates(rule(pets, merged([s for k, s in fit.items() if k != kind]), budget)(scores))
            for kind, scores in evaluation.items()}


def neighbour_similarity(train_features: np.ndarray, k: int) -> Callable[[Scores], dict]:
    """scores -> {"similarity": (N,)}: the cosine similarity of each picture's features to its k-th nearest training pet."""
    reference = train_features / np.linalg.norm(train_features, axis=1, keepdims=True)

    def similarity(s: Scores) -> dict:
        x = np.asarray(s["features"], np.float32)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return {"similarity": np.sort(x @ reference.T, axis=1)[:, -k]}

    return similarity


def neighbours(train_features: np.ndarray, k: int) -> Rule:
    """A rule: `neighbour_similarity`, thresholded."""
    return _without_non_pets(neighbour_similarity(train_features, k))


def beside_pet_score(similarity: Callable[[Scores], dict], meta: Mapping) -> Rule:
    """A rule: a feature score and the model's own pet_score, "unknown" if either is below its threshold
    (both refitted on the validation pets at one quantile level, so they share the budget)."""
    return _without_non_pets(lambda s: {**similarity(s), "pet_score": pet_score(s, meta["pet_score"])})


def learned_with(similarity: Callable[[Scores], dict]) -> Rule:
    """A rule: the learned pet_score with a feature score as a third input, refitted on the fitting non-pets."""
    from sklearn.linear_model import LogisticRegression

    def fit(pets, non_pets, budget):
        def inputs(s):
            return np.column_stack([pet_score_inputs(s), *similarity(s).values()])

        x = np.vstack([inputs(pets), inputs(non_pets)])
        y = np.r_[np.ones(len(pets["p_pet"])), np.zeros(len(non_pets["p_pet"]))]
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, y)

        def scores(s):
            return {"learned": model.decision_function(inputs(s))}

        thresholds = fit_thresholds(scores(pets), budget)
        return lambda s: flags(scores(s), thresholds)

    fit.learns_from_non_pets = True
    return fit


def mahalanobis(train_features: np.ndarray, shrink: float = 1e-3) -> Rule:
    """A rule: minus the Mahalanobis distance of the features to the training pets' mean (one shared covariance)."""
    x = np.asarray(train_features, np.float64)
    mean, covariance = x.mean(axis=0), np.cov(x, rowvar=False)
    precision = np.linalg.inv(covariance + shrink * np.trace(covariance) / len(mean) * np.eye(len(mean)))

    def closeness(s: Scores) -> dict:
        centred = np.asarray(s["features"], np.float64) - mean
        return {"closeness": -np.einsum("ni,ij,nj->n", centred, precision, centred)}

    return _without_non_pets(closeness)


def _without_non_pets(scores: Callable[[Scores], dict]) -> Rule:
    def fit(pets, non_pets, budget):
        thresholds = fit_thresholds(scores(pets), budget)
        return lambda s: flags(scores(s), thresholds)

    fit.learns_from_non_pets = False
    return fit


PROTOTYPES = (512, 1024, 2048)


def rules(meta: Mapping, train_features: np.ndarray | None = None, prototypes: Sequence[int] = PROTOTYPES,
          seed: int = 0) -> dict[str, Rule]:
    """The rules measured; the feature-space ones where training pets' features are given."""
    measured = {
        "two thresholds (p_pet, pet_energy)": thresholded(["p_pet", "pet_energy"]),
        "learned pet_score, refitted on the fitting part": thresholded([], learned=True),
    }
    if meta.get("unknown_thresholds"):
        measured = {"as shipped (model.json)": as_shipped(meta), **measured}
    if train_features is None:
        return measured
    n = len(train_features)
    for k in (1, 5):
        near = neighbour_similarity(train_features, k)
        measured[f"k-NN, k={k}, {n} training pets"] = _without_non_pets(near)
        if meta.get("pet_score"):
            measured[f"k-NN, k={k}, or the shipped pet_score"] = beside_pet_score(near, meta)
        measured[f"learned score of p_pet, pet_energy and k-NN k={k}"] = learned_with(near)
    for count in prototypes:
        nearest = neighbour_similarity(fit_prototypes(train_features, count, seed), 1)
        measured[f"nearest of {count} prototypes"] = _without_non_pets(nearest)
        if meta.get("pet_score"):
            measured[f"nearest of {count} prototypes, or the shipped pet_score"] = beside_pet_score(nearest, meta)
    measured["feature Mahalanobis"] = mahalanobis(train_features)
    return measured


def score_sets(predictor, non_pets: Path, pets: Mapping[str, list[str]], features=None) -> dict[str, dict]:
    """{"fit/KIND" | "eval/KIND" | "val" | "test": scores} for the non-pet folders and the pet splits;
    `features(paths)` (N, C), where given, adds each set's "features"."""
    from catdog.inference.predictor import expand_paths

    folders = {f"{part}/{kind.name}": [str(kind)] for part in ("fit", "eval") for kind in sorted((non_pets / part).iterdir())}
    sets = {}
    for name, paths in {**folders, **pets}.items():
        scored = [s for s in predictor.score_paths(expand_paths(paths)) if s.error is None]
        sets[name] = {k: np.array([s.pet[k] for s in scored]) for k in scored[0].pet}
        if features:
            sets[name]["features"] = features([s.path for s in scored])
    return sets


def feature_view(model: str | None, image_size: int) -> Callable[[list[str]], np.ndarray]:
    """paths -> the ImageNet side's pooled features (N, C) of the model's Keras file."""
    from catdog.inference.model_files import resolve
    from catdog.models.builders import load_model
    from catdog.training.prototypes import pet_features

    model = load_model(resolve(model, "keras"))
    return lambda paths: pet_features(model, paths, image_size)


def pet_splits(run: str | None, data: str | None, train_pets: int = 0) -> dict[str, list[str]]:
    """{"val", "test", "train": paths} of the run's split, or of `data` split as `catdog prepare` splits it
    ("train": all, or a seeded sample of `train_pets`)."""
    from catdog.data import run_data
    from catdog.data.prepare import load_split, prepare, read_report

    sizes = {"val": 0, "test": 0, "train": train_pets}
    if run:
        return {name: [str(e.path) for e in run_data.split(run, name, size)] for name, size in sizes.items()}
    work = prepare(data)
    root = read_report(work)["root"]
    return {name: [str(e.path) for e in load_split(work / "manifest.csv", root, name, size)]
            for name, size in sizes.items()}


def main() -> None:
    from catdog.inference.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--non-pets", type=Path, required=True, help="benchmarks/non_pets.py's folder")
    parser.add_argument("--model", help="run folder or .keras (default: the shipped model)")
    parser.add_argument("--runtime", default="keras", help="keras or tflite")
    parser.add_argument("--run", help="run folder whose splits give the pets")
    parser.add_argument("--data", help="the training data, split as `catdog prepare` does (no run folder)")
    parser.add_argument("--features", action="store_true", help="also the feature-space rules (k-NN, prototypes, "
                        "Mahalanobis)")
    parser.add_argument("--train-pets", type=int, default=0, help="the feature rules' training pets (0: all)")
    parser.add_argument("--prototypes", default=",".join(map(str, PROTOTYPES)),
                        help="k-means prototype counts to measure, comma-separated (each takes minutes)")
    parser.add_argument("--cache", type=Path, metavar="NPZ", help="every set's scores and features, kept here "
                        "and read back on the next run (same model and pictures!)")
    parser.add_argument("--curve", type=Path, metavar="PNG", help="draw the trade-off per kind")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unknown_kinds.json")
    args = parser.parse_args()
    if not (args.run or args.data):
        parser.error("--run or --data is needed for the pets")
    scoring = Predictor(args.model, meta={}, runtime=args.runtime)  # raw scores: every rule applies its own
    meta = json.loads(scoring.path.with_suffix(".json").read_text())
    budget = float(meta.get("unknown_budget", 0.003))
    sets = _read_cache(args.cache)
    if not sets:
        pets = pet_splits(args.run, args.data, args.train_pets)
        features = feature_view(args.model, scoring.image_size) if args.features else None
        train_paths = pets.pop("train")  # never scored: only the feature rules look at training pets
        train = features(train_paths) if features else None
        sets = score_sets(scoring, args.non_pets, pets, features)
        if train is not None:
            sets["train"] = {"features": train}
        if args.cache:
            np.savez(args.cache, **{f"{name}:{key}": value for name, s in sets.items() for key, value in s.items()})
    train = sets.pop("train", {}).get("features")
    fit = {name.split("/")[1]: s for name, s in sets.items() if name.startswith("fit/")}
    evaluation = {kind: sets[f"eval/{kind}"] for kind in KINDS if f"eval/{kind}" in sets}
    result = {"budget": budget, "counts": {name: len(s["p_pet"]) for name, s in sets.items()}, "rules": {}}
    if train is not None:
        result["counts"]["train"] = len(train)
    counts = [int(c) for c in args.prototypes.split(",") if c]
    for name, rule in rules(meta, train, counts).items():
        flagged = rule(sets["val"], merged(list(fit.values())), budget)
        row = {"val": rates(flagged(sets["val"])), "test": rates(flagged(sets["test"])),
               "fit": {kind: rates(flagged(s)) for kind, s in fit.items()},
               "eval": by_kind(rule, sets["val"], fit, evaluation, budget)}
        row["eval_all"] = rates(flagged(merged(list(evaluation.values()))))
        if rule.learns_from_non_pets:
            row["leave_one_kind_out"] = leave_one_kind_out(rule, sets["val"], fit, evaluation, budget)
        result["rules"][name] = row
    print_tables(result)
    if args.curve:
        plot(sets, evaluation, args.curve, meta, budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _read_cache(path: Path | None) -> dict[str, dict]:
    """The sets `--cache` kept ({} where there is none yet)."""
    if not path or not path.exists():
        return {}
    sets: dict[str, dict] = {}
    with np.load(path) as kept:
        for key in kept.files:
            name, _, score = key.partition(":")
            sets.setdefault(name, {})[score] = kept[key]
    return sets


def print_tables(result: dict) -> None:
    kinds = [k for k in KINDS if any(k in r["eval"] for r in result["rules"].values())]
    counts = result["counts"]
    print(f"budget {result['budget']:.2%} of validation pets; evaluation pictures: "
          + ", ".join(f"{k} {counts.get('eval/' + k, 0)}" for k in kinds))
    print("| rule | val pets | test pets | " + " | ".join(kinds) + " | all non-pets |")
    print("| --- |" + " --- |" * (len(kinds) + 3))
    for name, row in result["rules"].items():
        print(f"| {name} | {row['val']:.2%} | {row['test']:.2%} | " + " | ".join(f"{row['eval'][k]:.1%}" for k in kinds)
              + f" | {row['eval_all']:.1%} |")
    print("\nleave one kind out (fitted without that kind's fitting pictures):")
    for name, row in result["rules"].items():
        if "leave_one_kind_out" in row:
            print(f"| {name} | | | " + " | ".join(f"{row['leave_one_kind_out'][k]:.1%}" for k in kinds) + " | |")


BUDGETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.03)


def plot(sets: dict, evaluation: dict, out: Path, meta: Mapping, budget: float) -> None:
    """Per kind, the shipped rule's thresholds (all of them, sharing each budget) refitted at a range
    of budgets, its learned weights and prototypes kept: test pets given up against that kind's
    evaluation pictures caught."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from unknown import save_curve  # benchmarks/unknown.py, beside this script

    names = list(meta["unknown_thresholds"])

    def rule(budget: float) -> Callable[[Scores], np.ndarray]:
        thresholds = fit_thresholds(shipped_scores(sets["val"], meta), budget)
        return lambda s: flags(shipped_scores(s, meta), thresholds)

    budgets = sorted({*BUDGETS, budget})  # the model's own budget is one of the points: the one circled
    figure, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for kind, kind_scores in evaluation.items():
        points = [(rates(f(sets["test"])), rates(f(kind_scores))) for f in map(rule, budgets)]
        (line,) = ax.plot(*(100 * np.array(points).T), "o-", markersize=3, label=f"{kind} ({len(kind_scores['p_pet'])})")
        at = points[budgets.index(budget)]
        ax.plot(100 * at[0], 100 * at[1], "o", markersize=9, mfc="none", color=line.get_color())
    ax.set_ylim(bottom=50)
    save_curve(figure, ax, out, f"Unknown trade-off per kind ({' + '.join(names)}; circled: budget {budget:.2%})", 1.5)


if __name__ == "__main__":
    main()
