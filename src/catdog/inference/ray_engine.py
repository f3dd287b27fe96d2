"""`catdog predict --engine ray`: the inputs as a Ray Data dataset, answered by a pool of actors.

    >>> with session(workers=2) as (workers, threads):   # a local Ray, or the cluster at $RAY_ADDRESS
    ...     for records in answer_batches(batches, {"model": None}, workers, threads):
    ...         ...                                      # one list of records per batch, in input order

The driver cuts the inputs into the batches plain `predict` forms (`batch_size` paths each, in
input order); each batch is one row of a Ray dataset. `map_batches` hands rows to an actor
pool, one `Predictor` per actor loaded once, which answers a batch with `Predictor.score_chunks`
and `Predictor.record`: the code and the batches of plain `predict`, so the same records, to
the byte. Rows come back in input order (or as they finish) and are written as they come.

Faults: Ray Data's actor pool restarts an actor that dies and runs its unfinished batches
again, so each input is answered once. Without `$RAY_ADDRESS`, a local Ray is started for the
run (127.0.0.1 only, no dashboard, a small object store, a temporary folder) and stopped after
it, leaving no process; with it, that cluster is joined and left running. Ray is imported only
here, and only for `--engine ray`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from catdog import console
from catdog.errors import UsageError
from catdog.inference.predictor import Predictor

OBJECT_STORE_BYTES = 256 * 2**20  # batches of paths and of records: a few kB each
# Set before Ray is imported for a local start: the node's address is 127.0.0.1 (Ray then binds
# its servers to loopback only; this is the switch Ray keeps for one-machine use on macOS and
# Windows), and no usage statistics are sent. Ray also reads its token settings at import.
LOCAL_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Test hook, read by the driver: "N:FILE" makes the first actor to create FILE exit after N batches.
KILL_AFTER_VARIABLE = "CATDOG_TEST_KILL_ACTOR_AFTER"


def import_ray():
    """Ray, with Ray Data loaded; a UsageError naming the extra where it is not installed."""
    address = os.environ.get("RAY_ADDRESS")
    if "ray" not in sys.modules and not address:
        for key, value in LOCAL_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        if not _has_auth_settings():  # a token of its own, or Ray would write one to ~/.ray
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    elif "ray" not in sys.modules and _host(address) in ("127.0.0.1", "localhost", "::1"):
        # A cluster on this machine's loopback: this driver must not trade 127.0.0.1 for its network address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # noqa: F401  (pyarrow and pandas come with it)
    except ImportError as error:
        raise UsageError(f"--engine ray needs Ray Data, which is not installed here ({error}): "
                         f"pip install 'catdog[ray]'") from None
    return ray


@contextlib.contextmanager
def session(workers: int | None = None) -> Iterator[tuple[int, int]]:
    """Ray for the block, yielding (actors, CPUs per actor): the caller's own `ray.init()`, the
    cluster at $RAY_ADDRESS, or a local one.

    `workers` defaults to one actor per CPU. On a cluster each actor takes one CPU; a local Ray
    shares this machine's cores among its actors (`workers=1`: one actor on all of them, as
    plain `predict` runs) and gets its own temporary folder (removed after; kept and named in
    the error if the run fails, for its logs).
    """
    ray = import_ray()
    with _cluster_errors_on_stderr(ray):
        yield from _session(ray, workers)


@contextlib.contextmanager
def _cluster_errors_on_stderr(ray) -> Iterator[None]:
    """Ray's driver prints the errors its cluster pushes ("(raylet) A worker died ...") to sys.stdout,
    which here carries records only: they go to stderr, with Ray's other lines."""
    worker = ray._private.worker
    original = worker.print_to_stdstream

    def to_stderr(data: dict, ignore_prefix: bool):
        return original({**data, "is_err": True}, ignore_prefix)

    worker.print_to_stdstream = to_stderr
    try:
        yield
    finally:
        worker.print_to_stdstream = original


def _session(ray, workers: int | None) -> Iterator[tuple[int, int]]:
    quiet = dict(log_to_driver=False, logging_level=logging.INFO if console.is_verbose() else logging.ERROR)
    address = os.environ.get("RAY_ADDRESS")
    if ray.is_initialized() or address:
        joined = not ray.is_initialized()
        if joined:
            _check_reachable(address)
            ray.init(address=address, **quiet)
        try:
            yield workers or max(1, int(ray.cluster_resources().get("CPU", 1))), 1
        finally:
            if joined:
                ray.shutdown()  # a disconnect: the cluster is left running
        return
    cores = os.cpu_count() or 1
    workers = workers or cores  # single-threaded models, one a core: no threads waiting on each other
    threads = max(1, cores // workers)
    # Ray's own default is /tmp whatever $TMPDIR says: its socket paths must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="catdog-ray-", dir=os.environ.get("RAY_TMPDIR") or _short_temp())
    try:
        ray.init(address="local", num_cpus=max(workers * threads, cores), include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, _temp_dir=temp, **quiet)
        yield workers, threads
    except Exception as error:
        error.add_note(f"Ray's logs: {temp}")
        temp = None
        raise
    finally:
        ray.shutdown()  # stops every process it started
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def _short_temp() -> str | None:
    return "/tmp" if os.path.isdir("/tmp") else None


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]") if "://" not in address else ""


def _check_reachable(address: str) -> None:
    """RAY_ADDRESS answers (host:port), else one line now: ray.init would retry for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return  # "auto", ray://...: Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise UsageError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({error.strerror or error}); "
                         f"unset it to start a local Ray") from None


def _has_auth_settings() -> bool:
    return any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or (
        Path.home() / ".ray" / "auth_token").exists()


def answer_batches(batches: Iterable[list[str]], predictor_args: dict, workers: int, threads: int = 1,
                   ordered: bool = True) -> Iterator[list[dict]]:
    """The records of each batch of paths, answered by `workers` actors of `threads` CPUs; in order if `ordered`.

    Call inside `session`. `predictor_args` are `Predictor`'s (model, runtime, batch_size, ...).
    """
    import ray

    rows = [{"batch": k, "paths": json.dumps(batch)} for k, batch in enumerate(batches)]
    if not rows:
        return
    context = ray.data.DataContext.get_current().copy()  # a caller's own Ray keeps its settings
    context.execution_options.preserve_order = ordered
    context.enable_progress_bars = False  # catdog draws its own, on a terminal only
    context.print_on_execution_start = False
    with ray.data.DataContext.current(context):
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one batch a block
        del rows  # now in Ray's object store
        answered = dataset.map_batches(
            BatchScorer, batch_size=1, num_cpus=threads, compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs=dict(predictor_args={**predictor_args, "threads": threads}, cwd=os.getcwd(),
                                       kill_after=os.environ.get(KILL_AFTER_VARIABLE)))
        for row in answered.iter_rows():
            yield json.loads(row["records"])


class BatchScorer:
    """A Ray Data actor: one `Predictor`, loaded once; answers rows of {"batch", "paths"}.

    It works in the driver's folder (where that folder exists), so relative paths and the error
    messages that name them read as they do in plain `predict`.
    """

    def __init__(self, predictor_args: dict, cwd: str, kill_after: str | None = None):
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.predictor = Predictor(**predictor_args)
        self.kill_after, self.answered = kill_after, 0

    def __call__(self, rows: dict) -> dict:
        batches = [json.loads(text) for text in rows["paths"]]
        records = [json.dumps([self.predictor.record(s) for s in scored])
                   for scored in self.predictor.score_chunks(batches)]
        self.answered += len(batches)
        self._die_if_asked()
        return {"batch": rows["batch"], "records": records}

    def _die_if_asked(self) -> None:
        """The fault test's hook: the first actor to claim the file dies, its answers unreturned."""
        if not self.kill_after:
            return
        after, _, path = self.kill_after.partition(":")
        if self.answered >= int(after):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)
