"""Mutation testing of the modules where a wrong line is silent, each against its own tests (mutmut).

    pip install -e ".[test,mutation]"
    python scripts/mutation.py                  # every module below: a table, and benchmarks/results/mutation.json
    python scripts/mutation.py split parity     # some of them
    python scripts/mutation.py --jobs 2         # mutants tested side by side (default 1: the cores are shared)

Not run by CI: it takes over an hour on 2 busy cores (the split, zip and answer modules take
minutes; the parity and upload mutants each rerun the export or server tests that reach them).
mutmut changes one line at a time and runs only the tests that call the changed function; a
mutant no test fails on "survived". Each module runs in a scratch copy of the repository (src/,
tests/, and pyproject.toml with a [tool.mutmut] table naming that module and its tests), so
mutmut's `mutants/` folder never lands in the work tree. Every survivor is listed with its diff
in the JSON, to be read: some change nothing that matters (an equivalent mutant), the others
want a test.

Two things to know. A test that runs the code in another process (`catdog serve` in
test_serve_http.py, the CLI in test_cli.py) imports the package as installed, not mutmut's
copy, so it can kill no mutant. And a mutant runs with your rights: a zip-slip guard broken by
one writes where the test's evil entry points, which is why those entries point into tmp_path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"


@dataclass(frozen=True)
class Target:
    source: str  # the file mutated
    tests: tuple[str, ...]  # the test files that guard it
    functions: tuple[str, ...] = ()  # only these functions' mutants (none: every function in the file)

    @property
    def module(self) -> str:
        return self.source.removeprefix("src/").removesuffix(".py").replace("/", ".")

    def patterns(self) -> list[str]:
        """mutmut's names for the mutants to run: `catdog.data.prepare.x__split__mutmut_3`."""
        return [f"{self.module}.x_{name}__mutmut_*" for name in self.functions]


TARGETS = {
    "split": Target("src/catdog/data/prepare.py", ("tests/test_data.py",), ("_split",)),
    "archive": Target("src/catdog/data/archive.py", ("tests/test_archive.py",)),
    "answers": Target("src/catdog/inference/answers.py", ("tests/test_calibrate.py", "tests/test_predict.py")),
    "parity": Target("src/catdog/export/parity.py", ("tests/test_export.py",)),
    # Not test_serve_http.py: it runs `catdog serve` as a process, which imports the package as
    # installed, never mutmut's copy, so it can kill no mutant (and would triple the time).
    "uploads": Target("src/catdog/serving/uploads.py", ("tests/test_serve.py",)),
}


def _toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


def _scratch(name: str, target: Target, work: Path, resume: bool = False) -> Path:
    """A copy of the repository's code and tests for one module, with mutmut's settings for it.

    `resume` keeps an earlier copy, and so the results mutmut stored in it: only the mutants
    without one run (for a run that was stopped; not after the code or the tests changed)."""
    folder = work / name
    if resume and (folder / "mutants").is_dir():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "artifacts", ".pytest_cache")
    shutil.copytree(ROOT / "src", folder / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore)
    settings = (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {_toml_list([target.source])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-n", "0"]\n'  # in mutmut's process: no xdist workers
        "use_git_change_detection = false\n"
        # Each mutant's tests run in a child forked from a server that has imported them but run no
        # TensorFlow op: a child forked from a process whose TensorFlow threads had started (mutmut's
        # default) hangs in its first op, and every export test's mutant would end as a timeout.
        'process_isolation = "forkserver"\n'
    )
    (folder / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + settings)
    shared = ROOT.parent / "shared"
    if shared.is_dir():  # tests/conftest.py looks for ../shared beside the copy mutmut runs in
        (folder / "shared").symlink_to(shared)
    return folder


def _statuses() -> dict[int, str]:
    from mutmut.__main__ import status_by_exit_code

    return dict(status_by_exit_code)


def run(name: str, target: Target, work: Path, jobs: int, resume: bool = False) -> dict:
    folder = _scratch(name, target, work, resume)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in ("CATDOG_REQUIRE_DATA", "CATDOG_REQUIRE_BROWSER"):
        env.pop(key, None)  # a mutant that makes a test skip is not killed by it, and is not an error either
    started = time.monotonic()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *target.patterns()]
    with open(folder / "mutmut.log", "w") as log:
        done = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    meta_path = folder / "mutants" / f"{target.source}.meta"
    if done.returncode != 0 or not meta_path.exists():
        tail = (folder / "mutmut.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed on {name} (exit {done.returncode}); "
                         f"the end of {folder / 'mutmut.log'}:\n{tail}")
    codes = json.loads(meta_path.read_text())["exit_code_by_key"]
    wanted = tuple(f"{target.module}.x_{f}__mutmut_" for f in target.functions)
    statuses, names = _statuses(), sorted(k for k in codes if not wanted or k.startswith(wanted))
    by_status: dict[str, list[str]] = {}
    for key in names:
        by_status.setdefault(statuses.get(codes[key], f"exit {codes[key]}"), []).append(key)
    survivors = []
    for key in by_status.get("survived", []) + by_status.get("no tests", []):
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", key], cwd=folder, env=env,
                              capture_output=True, text=True).stdout
        survivors.append({"mutant": key, "status": statuses.get(codes[key]), "diff": diff.strip()})
    return dict(module=target.source, functions=list(target.functions) or "all", tests=list(target.tests),
                command=" ".join(["python", "scripts/mutation.py", *sys.argv[1:]]),
                mutants=len(names), killed=len(by_status.get("killed", [])),
                survived=len(by_status.get("survived", [])), timeout=len(by_status.get("timeout", [])),
                no_tests=len(by_status.get("no tests", [])),
                other={k: len(v) for k, v in by_status.items()
                       if k not in ("killed", "survived", "timeout", "no tests")},
                seconds=round(seconds), survivors=survivors)


def table(results: dict[str, dict]) -> str:
    head = f"{'module':<10} {'file':<34} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7} {'no tests':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        other = f"  {r['other']}" if r["other"] else ""
        lines.append(f"{name:<10} {r['module'].removeprefix('src/catdog/'):<34} {r['mutants']:>7} {r['killed']:>6} "
                     f"{r['survived']:>8} {r['timeout']:>7} {r['no_tests']:>8}{other}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"some of: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutation",
                        help="scratch folder, one copy of the repository per module (default build/mutation)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with a stopped run in --work (only where code and tests are unchanged)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    chosen = args.modules or list(TARGETS)
    if unknown := [name for name in chosen if name not in TARGETS]:
        parser.error(f"unknown module {', '.join(unknown)}: choose from {', '.join(TARGETS)}")
    results = json.loads(args.out.read_text()).get("modules", {}) if args.out.exists() else {}
    for name in chosen:
        print(f"{name}: mutating {TARGETS[name].source} against {', '.join(TARGETS[name].tests)}", file=sys.stderr)
        results[name] = run(name, TARGETS[name], args.work, args.jobs, args.resume)
        print(f"{name}: {results[name]['killed']} of {results[name]['mutants']} killed, "
              f"{results[name]['survived']} survived, in {results[name]['seconds']} s", file=sys.stderr)
    results = {name: results[name] for name in TARGETS if name in results}
    from importlib.metadata import version

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(tool=f"mutmut {version('mutmut')}", command=" ".join(
        ["python", "scripts/mutation.py", *sys.argv[1:]]), modules=results), indent=2) + "\n")
    print(table(results))
    for name, r in results.items():
        for survivor in r["survivors"]:
            print(f"\n{name}: {survivor['mutant']} ({survivor['status']})\n{survivor['diff']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
