"""`catdog audit` against one `catdog predict` pass over the same pictures, in one session.

    python benchmarks/audit.py --data ../shared/datasets/dogs-vs-cats/train.zip

Runs, each as its own `catdog` process under /usr/bin/time (wall time and peak RSS):
1. the zip unpacked into $CATDOG_HOME, as `prepare` and the audit find it (not timed against either);
2. `catdog predict FOLDER` over the unpacked pictures (the shipped model, LiteRT, the default);
3. `catdog audit DATA` with an empty look cache (the LiteRT view already converted: its one-off
   conversion is timed on its own first);
4. the same again (every look cached), and on a copy of the folder with one picture added.
Prints a table and writes benchmarks/results/audit.json. Uses its own $CATDOG_HOME (--home).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image


def timed(args: list[str], env: dict, out=subprocess.DEVNULL) -> dict:
    """Wall seconds and peak RSS (GiB) of `catdog ARGS`."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "catdog.cli", *args, "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return dict(seconds=round(seconds, 1), peak_rss_gib=round(rss / 2**20, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--home", default="/tmp/catdog-audit-bench", help="the $CATDOG_HOME to use")
    parser.add_argument("--out", default="benchmarks/results/audit.json")
    parser.add_argument("--rows", default="audit-rows.jsonl", help="where the audit's rows go")
    args = parser.parse_args()
    env = {**os.environ, "CATDOG_HOME": args.home}
    home = Path(args.home)
    os.environ["CATDOG_HOME"] = args.home
    from catdog.audit.view import audit_home, load_view
    from catdog.data.prepare import resolve_source, source_root

    root = source_root(resolve_source(args.data))  # the zip unpacked once, as the audit and prepare find it
    pictures = sum(1 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(audit_home(), ignore_errors=True)
    started = time.perf_counter()
    key = load_view(None).key
    results = dict(pictures=pictures, cpus=os.cpu_count(), machine=platform.processor() or platform.machine(),
                   convert_view_seconds=round(time.perf_counter() - started, 1))
    results["predict"] = timed(["predict", str(root), "--format", "csv"], env)
    with open(args.rows, "w") as rows:
        results["audit_cold"] = timed(["audit", args.data], env, out=rows)
    results["audit_again"] = timed(["audit", args.data], env)
    changed = home / "changed"
    shutil.rmtree(changed, ignore_errors=True)
    shutil.copytree(root, changed, copy_function=os.link)  # hard links: the same files, another folder
    extra = next(p for p in sorted(root.rglob("cat.*.jpg")))
    with Image.open(extra) as picture:  # a new picture: its mirror image
        mirrored = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mirrored.save(changed / extra.relative_to(root).with_name("cat.added.jpg"))
    results["audit_after_a_change"] = timed(["audit", str(changed)], env)
    results["ratio_audit_to_predict"] = round(results["audit_cold"]["seconds"] / results["predict"]["seconds"], 2)
    results["view"] = key
    print(f"{pictures:,} pictures on {results['cpus']} cores (the view converted once: "
          f"{results['convert_view_seconds']} s)")
    print(f"{'run':<24} {'seconds':>8} {'img/s':>7} {'peak RSS GiB':>13}")
    for name in ("predict", "audit_cold", "audit_again", "audit_after_a_change"):
        r = results[name]
        print(f"{name:<24} {r['seconds']:>8} {pictures / r['seconds']:>7.0f} {r['peak_rss_gib']:>13}")
    print(f"audit / predict: {results['ratio_audit_to_predict']}x")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
