"""Where a worker learns its cluster: `TF_CONFIG`, or Slurm's variables inside `srun`, turned into one.

    TF_CONFIG='{"cluster": {"worker": ["node0:2222", "node1:2222"]}, "task": {"type": "worker", "index": 0}}'

Kubernetes (an Indexed Job, a JobSet), Vertex AI and SageMaker set `TF_CONFIG`; `catdog launch`
sets it for local workers. Slurm does not: inside `srun`, each task has `SLURM_PROCID`, and the
step's nodes and tasks per node (`SLURM_STEP_NODELIST`, `SLURM_STEP_TASKS_PER_NODE`), from
which `tf_config` builds the same thing. Task k on a node listens on `CATDOG_PORT + k`
(default 12345), and ranks go node by node, as `srun`'s default block distribution places them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from catdog.config import ConfigError

DEFAULT_PORT = 12345  # the first task's port on each Slurm node; CATDOG_PORT overrides it


@dataclass(frozen=True)
class Worker:
    index: int  # 0 is the chief
    count: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_config(hosts: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` among `hosts` ("host:port", worker 0 the chief)."""
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def tf_config(env: Mapping[str, str] = os.environ) -> str:
    """`TF_CONFIG` as given, else built from Slurm's variables; a ConfigError when there is neither."""
    if env.get("TF_CONFIG"):
        return env["TF_CONFIG"]
    if "SLURM_PROCID" in env:
        return _from_slurm(env)
    raise ConfigError("--distributed needs TF_CONFIG (the cluster and this worker's task), or to run as a "
                      "task of Slurm's srun; `catdog launch --workers N -- train ...` sets it for local workers")


def worker_from_env(env: Mapping[str, str] = os.environ) -> Worker:
    """This process's place in the cluster (`tf_config`): "chief" tasks first, then "worker" ones."""
    text = tf_config(env)
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        return Worker(order.index((task["type"], int(task["index"]))), len(order))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError('TF_CONFIG: expected {"cluster": {"worker": ["host:port", ...]}, '
                          f'"task": {{"type": "worker", "index": N}}}} ({error})') from None


def _from_slurm(env: Mapping[str, str]) -> str:
    try:
        nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
        per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env["SLURM_TASKS_PER_NODE"])
        port, rank = int(env.get("CATDOG_PORT", DEFAULT_PORT)), int(env["SLURM_PROCID"])
    except (KeyError, ValueError) as error:
        raise ConfigError(f"Slurm: cannot tell this task's cluster from SLURM_* variables ({error}); "
                          f"run inside srun, or set TF_CONFIG") from None
    if len(per_node) == 1:
        per_node *= len(nodes)  # "2": two tasks on every node
    if len(per_node) != len(nodes) or not 0 <= rank < sum(per_node):
        raise ConfigError(f"Slurm: {len(nodes)} node(s) and tasks per node {per_node} do not place "
                          f"SLURM_PROCID={rank}")
    hosts = [f"{node}:{port + k}" for node, count in zip(nodes, per_node, strict=True) for k in range(count)]
    return worker_config(hosts, rank)


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list: "node[01-03,07],login1" -> node01, node02, node03, node07, login1."""
    hosts = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", text.strip()):
        parts = re.split(r"\[([^\]]*)\]", item)  # text, ranges, text, ranges, ..., text
        choices = [[part] if i % 2 == 0 else _expand_ranges(part) for i, part in enumerate(parts)]
        hosts += ["".join(combination) for combination in itertools.product(*choices)]
    if not hosts:
        raise ValueError(f"empty host list {text!r}")
    return hosts


def _expand_ranges(text: str) -> list[str]:
    """"01-03,07" -> ["01", "02", "03", "07"]: zero padding kept as the lower bound writes it."""
    out = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += [str(n).zfill(len(low)) for n in range(int(low), int(high or low) + 1)]
    return out


def tasks_per_node(text: str) -> list[int]:
    """Slurm's tasks per node: "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise ValueError(f"tasks per node {text!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts
