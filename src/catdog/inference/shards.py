"""Batch prediction across machines: `predict --shard i/n` takes every n-th input, `merge` joins them.

Input k (in the order `predict` expands its paths: as given, folders sorted) belongs to shard
k mod n, so n machines given the same inputs (a Kubernetes Indexed Job, a Slurm array) cover
them exactly once; line j of shard i is input j*n + i, which is how `merge` restores input order.

    catdog predict photos/ --shard 0/2 > part-0.jsonl     # machine 0
    catdog predict photos/ --shard 1/2 > part-1.jsonl     # machine 1
    catdog merge part-0.jsonl part-1.jsonl > all.jsonl
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

from catdog.config import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or not 0 <= i < n:
        raise ConfigError(f"--shard: expected i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return i, n


def select(items: Sequence, index: int, count: int) -> list:
    return list(items[index::count])


def _read(path: str | os.PathLike) -> tuple[str | None, list[str]]:
    """(CSV header or None for JSON lines, the record lines) of one shard's output."""
    with open(path, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    if lines and not lines[0].lstrip().startswith("{"):
        return lines[0], lines[1:]
    return None, lines


def merge(paths: Sequence[str | os.PathLike], out: TextIO) -> int:
    """Writes the shards' records (JSON lines or CSV) to `out` in input order; returns their count.

    `paths` are the outputs of shards 0..n-1, in that order. Their lengths must be those of one
    split (each shard has as many records as shard 0, or one fewer, in order), else a shard is
    missing, truncated or given out of order, and nothing is written.
    """
    if not paths:
        raise ConfigError("merge: give the shard outputs, shard 0 first")
    shards = [_read(p) for p in paths]
    headers = {header for header, _ in shards}
    if len(headers) > 1:
        raise ConfigError(f"merge: the shards mix formats or CSV columns: {sorted(map(str, headers))}")
    lengths = [len(lines) for _, lines in shards]
    total = sum(lengths)
    for i, (path, length) in enumerate(zip(paths, lengths)):
        expected = len(range(i, total, len(paths)))
        if length != expected:
            raise ConfigError(f"{path}: {length} records, expected {expected} for shard {i}/{len(paths)} "
                             f"of {total} (a shard missing, truncated or out of order?)")
    header = headers.pop()
    if header:
        out.write(header)
    for j in range(lengths[0] if lengths else 0):
        for _, lines in shards:
            if j < len(lines):
                out.write(lines[j])
    return total
