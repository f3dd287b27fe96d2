"""`catdog launch --workers N -- train --distributed ...`: N local workers, as a cluster would run them.

Each worker is the same `catdog` command with its own TF_CONFIG (127.0.0.1 ports). Their output
is streamed with a `[worker i]` prefix on stderr; the chief's standard output (the run path) is
passed through on stdout once it succeeds. A worker that dies takes its peers' collectives with
it, so the group is stopped and started again (at most `retries` times), each start resuming
from the run's last checkpoint. A group that stopped itself after SIGTERM to a worker (every
worker checkpointed at the same step, then exited with EXIT_RESTART, 75) is started again as
well, and that is not a failure: it does not count against `retries`. Ctrl-C stops every worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from catdog.config import ConfigError
from catdog.errors import EXIT_RESTART
from catdog.training.clusters import worker_config

STOP_GRACE_S = 10.0
CHECKPOINT_GRACE_S = 120.0  # after a preemption, for the other workers to finish saving


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _pump(stream, prefix: str, sink, keep: list[str] | None) -> None:
    for line in stream:
        if keep is not None:
            keep.append(line)
        else:
            sink.write(f"{prefix}{line}")
            sink.flush()


def _start(command: list[str], workers: int, host: str) -> tuple[list[subprocess.Popen], list[str], list[threading.Thread]]:
    hosts = [f"{host}:{port}" for port in free_ports(workers, host)]
    procs, chief_out, threads = [], [], []
    for i in range(workers):
        env = {**os.environ, "TF_CONFIG": worker_config(hosts, i)}
        proc = subprocess.Popen([sys.executable, "-m", "catdog.cli", *command], env=env, text=True, bufsize=1,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        procs.append(proc)
        print(f"[launch] worker {i} pid {proc.pid} at {hosts[i]}", file=sys.stderr, flush=True)
        # The chief's stdout is the command's result; everything else is log, prefixed.
        streams = [(proc.stderr, None), (proc.stdout, chief_out if i == 0 else None)]
        for stream, keep in streams:
            thread = threading.Thread(target=_pump, args=(stream, f"[worker {i}] ", sys.stderr, keep), daemon=True)
            thread.start()
            threads.append(thread)
    return procs, chief_out, threads


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _first_failure(procs: list[subprocess.Popen]) -> int | None:
    """Waits until every worker has exited cleanly (None) or one has failed (its index)."""
    while any(p.poll() is None for p in procs):
        failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
        if failed is not None:
            return failed
        time.sleep(0.2)
    return next((i for i, p in enumerate(procs) if p.returncode != 0), None)


def _wait(procs: list[subprocess.Popen], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)


def launch(command: list[str], workers: int = 2, retries: int = 3, host: str = "127.0.0.1") -> int:
    """Runs `catdog <command>` as `workers` TF_CONFIG workers; returns 0 when all finish cleanly.

    A group stopped by a preemption (a worker exits with EXIT_RESTART once every worker has
    checkpointed) is started again without counting against `retries`, which are for failures.
    """
    if workers < 1:
        raise ConfigError(f"--workers: expected 1 or more, got {workers}")
    if not command:
        raise ConfigError("nothing to launch: give a catdog command after --, e.g. -- train --distributed name=x")
    failures = 0
    while True:
        procs, chief_out, threads = _start(command, workers, host)
        try:
            failed = _first_failure(procs)
        except KeyboardInterrupt:
            _stop(procs)
            print("[launch] interrupted: every worker stopped", file=sys.stderr)
            return 130
        if failed is None:
            for thread in threads:
                thread.join()
            sys.stdout.write("".join(chief_out))
            return 0
        code = procs[failed].returncode
        if code == EXIT_RESTART:  # its peers are saving the same step: let them finish
            _wait(procs, CHECKPOINT_GRACE_S)
        _stop(procs)
        for thread in threads:
            thread.join(timeout=5)
        if code == 2:  # a usage or config error: running it again cannot help
            print(f"[launch] worker {failed} exited with {code} (usage or config error)", file=sys.stderr)
            return 2
        if code == EXIT_RESTART:
            print(f"[launch] worker {failed} exited with {code}: the group was preempted and checkpointed; "
                  f"restarting the group", file=sys.stderr, flush=True)
            continue
        failures += 1
        if failures > retries:
            print(f"[launch] worker {failed} exited with {code}; no retries left", file=sys.stderr)
            return 1
        print(f"[launch] worker {failed} exited with {code}; restarting the group "
              f"({failures} of {retries} restarts)", file=sys.stderr, flush=True)
