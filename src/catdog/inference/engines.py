"""`catdog predict`'s front: the inputs, read as they are needed, answered here or on Ray Data.

    >>> from catdog.inference.engines import predict
    >>> for record in predict(["photos/", "s3://bucket/more/"], engine="ray", workers=2):
    ...     print(record)   # {"path": "photos/a.jpg", "label": "cat", "p_dog": 0.0123, ...}

`engine="local"` (the default) is one `Predictor` in this process; `engine="ray"` an actor pool
on Ray Data (`catdog.inference.ray_engine`; `pip install 'catdog[ray]'`). For the same inputs
both give the same records, byte for byte, errors included, in input order (or, on Ray with
`order="completion"`, batch by batch as they finish). Records are yielded as they come, and
locally the inputs too are read as needed: a list of a million photos costs the memory of a
few batches (the Ray driver reads the list once, to cut it into batches, then lets it go).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from catdog import console
from catdog.errors import CatdogError, DataError, InputsFailed, UsageError
from catdog.inference.predictor import Predictor, chunked, expand_paths
from catdog.inference.records import Tally

ENGINES = ("local", "ray")
ORDERS = ("input", "completion")


class Records:
    """The records `predict` yields, as they come; `total` is how many inputs there are, where known."""

    def __init__(self, records: Iterator[dict], total: int | None = None):
        self._records, self.total = records, total

    def __iter__(self) -> Iterator[dict]:
        return self._records


def predict(paths: Iterable[str | os.PathLike] = (), *, from_list: str | os.PathLike | None = None,
            model: str | os.PathLike | None = None, runtime: str = "auto", batch_size: int = 64,
            tta: bool = False, unknown: bool | None = None, engine: str = "local", workers: int | None = None,
            order: str = "input", shard: tuple[int, int] | None = None, explain: str | os.PathLike | None = None
            ) -> Records:
    """One record per input, as `catdog predict` prints them (its flags are these arguments).

    `paths` are files, folders, globs or URIs (`expand_paths`); `from_list` a file (or "-",
    stdin) with one path or URI per line, taken as written. `shard=(i, n)` keeps inputs k with
    k mod n == i. `workers` is Ray's actor count (default: one per CPU, of this machine or of
    the cluster at $RAY_ADDRESS). Everything that can be checked is
    checked here, before any picture is read: the model is loaded (in this process, also for
    Ray) and Ray is imported; Ray starts when the first record is asked for.
    """
    _check(engine, order, workers, explain)
    if engine == "ray":
        from catdog.inference import ray_engine

        ray_engine.import_ray()
    inputs, total = _inputs(paths, from_list)
    if shard:
        index, count = shard
        inputs = itertools.islice(inputs, index, None, count)
        total = None if total is None else len(range(index, total, count))
    predictor = Predictor(model, batch_size=batch_size, tta=tta, unknown=unknown, runtime=runtime)
    if engine == "ray":
        return Records(_on_ray(inputs, _actor_args(predictor, model, runtime, unknown), workers,
                               order == "input"), total)
    records = (predictor.record(scored) for scored in predictor.score_paths(inputs))
    if explain:
        from catdog.inference.gradcam import save_overlays

        records = save_overlays(records, predictor.path, explain)
    return Records(records, total)


def _check(engine: str, order: str, workers: int | None, explain) -> None:
    if engine not in ENGINES:
        raise UsageError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if order not in ORDERS:
        raise UsageError(f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
    if workers is not None and engine != "ray":
        raise UsageError("--workers goes with --engine ray (plain predict is one process on every core)")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers: expected 1 or more, got {workers}")
    if explain and engine != "local":
        raise UsageError("--explain needs --engine local (Grad-CAM runs the Keras model in this process)")


def _inputs(paths: Iterable, from_list) -> tuple[Iterator[str], int | None]:
    """The inputs in order and, where known without reading a list file, their number."""
    expanded = expand_paths(paths)
    if from_list is None:
        return iter(expanded), len(expanded)
    if str(from_list) == "-":
        return itertools.chain(expanded, _lines(sys.stdin)), None
    if os.path.isdir(from_list):
        raise DataError(f"--from-list {from_list}: is a folder; expected a file with one path or URI per line")
    try:
        listing = open(from_list, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115  (closed when read)
    except OSError as error:
        raise DataError(f"--from-list {from_list}: {error.strerror or error}") from None
    return itertools.chain(expanded, _read_closing(listing)), None


def _read_closing(listing) -> Iterator[str]:
    with listing:
        yield from _lines(listing)


def _lines(stream) -> Iterator[str]:
    """One path or URI per line, as written (no globbing, no folder expansion); blank lines skipped."""
    for line in stream:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def _actor_args(predictor: Predictor, model, runtime: str, unknown: bool | None) -> dict:
    """What each Ray actor builds its `Predictor` from: the file this one resolved, by absolute path
    (the shipped model by name, each node having its own install), so every actor runs the same model."""
    path = predictor.path
    if model is not None:
        model, runtime = str(Path(path).absolute()), "keras" if path.suffix != ".tflite" else "tflite"
    return dict(model=model, runtime=runtime, batch_size=predictor.batch_size, tta=predictor.tta, unknown=unknown)


def _on_ray(inputs: Iterator[str], predictor_args: dict, workers: int | None, ordered: bool) -> Iterator[dict]:
    from catdog.inference import ray_engine

    # Ray's own log lines (its C++ core's too) are held back while it runs; shown if it fails.
    with console.quiet_stderr(discard=(CatdogError,)), ray_engine.session(workers) as (workers, threads):
        batches = chunked(inputs, predictor_args["batch_size"])
        for records in ray_engine.answer_batches(batches, predictor_args, workers, threads, ordered):
            yield from records


def parse_max_errors(text: str | int | None) -> int | float:
    """`--max-errors`: a count ("5"), or a share of the inputs ("0.1%"); None is 0 (any error fails)."""
    if text is None:
        return 0
    value = str(text).strip()
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= (1 if value.endswith("%") else math.inf) or number != number:
        raise UsageError(f"--max-errors: expected a count (0, 5) or a share of the inputs (0.1%), got {text!r}")
    return number


def check_failures(tally: Tally, max_errors: int | float = 0) -> str | None:
    """Raises InputsFailed (exit 1) when more inputs failed than `max_errors` allows (a count, or a
    share of the inputs as `parse_max_errors` gives it); returns the note to show when some failed
    within that, None when none failed."""
    if not tally.failed:
        return None
    allowed = max_errors if isinstance(max_errors, int) else math.floor(max_errors * tally.records)
    what = f"{tally.failed} of {tally.records} file(s) could not be read"
    if tally.failed > allowed:
        beyond = f", more than --max-errors {_shown(max_errors)} allows" if max_errors else ""
        raise InputsFailed(f"{what}{beyond} (first: {tally.first_error})")
    return f"{what}, within --max-errors {_shown(max_errors)} (first: {tally.first_error})"


def _shown(max_errors: int | float) -> str:
    return str(max_errors) if isinstance(max_errors, int) else f"{max_errors * 100:g}%"
