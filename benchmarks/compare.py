"""Run a benchmark script on this tree and on an earlier commit in the same session, and print the
ratios (this tree / the earlier commit) of every number in the tables both print.

    python benchmarks/compare.py --base HEAD~3 -- benchmarks/reconstruct.py --n 16 --no-photos

The earlier commit is checked out into a temporary git worktree and run with its own code first
on ``PYTHONPATH`` (the installed package's data files, such as the default model, are this
tree's). The two runs go one after the other on the same machine, so a ratio is the comparison to
trust where the machine's speed drifts; accuracy columns should give ratios of 1.00 within noise
for a refactoring.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tables(text: str) -> dict[tuple[str, str], str]:
    """``{(row label, column name): cell}`` of every markdown table in ``text`` (first cell = label)."""
    out: dict[tuple[str, str], str] = {}
    lines = text.splitlines() + [""]

    def separator(k: int) -> bool:
        return bool(re.match(r"^\|[-:| ]+\|$", lines[k].strip()))

    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and separator(i + 1):
            head = [c.strip() for c in line.strip().strip("|").split("|")]
            for k in range(i + 2, len(lines) - 1):
                row = lines[k]
                if not row.startswith("|") or separator(k + 1):  # the end, or the next table's header
                    break
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                for name, cell in zip(head[1:], cells[1:], strict=False):
                    out[(cells[0], name)] = cell
    return out


def number(cell: str) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?", cell.replace("**", ""))
    return float(m.group()) if m else None


def run(script: list[str], tree: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, *script], cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{script[0]} failed in {tree} (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- benchmarks/<script>.py [its arguments]")
    args = p.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        p.error("give the benchmark script after --")
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="f3k-base-") as tmp:
        base = Path(tmp) / rev
        subprocess.run(["git", "worktree", "add", "--detach", str(base), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            old = run(script, base)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    new = run(script, ROOT)
    print(new)
    a, b = tables(new), tables(old)
    print(f"# ratios this tree / {rev} ({' '.join(script)}), same machine, one run each")
    print("| row | column | this tree | base | ratio |")
    print("|---|---|---:|---:|---:|")
    for key in a:
        x, y = number(a[key]), number(b.get(key, ""))
        if x is None or y is None or key not in b:
            continue
        ratio = x / y if y else float("nan") if x else 1.0
        print(f"| {key[0]} | {key[1]} | {a[key]} | {b[key]} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
