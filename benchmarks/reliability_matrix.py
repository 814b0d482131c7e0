"""The bad-input and fault matrix as a table: runs tests/reliability (the cases are defined
there, once) and prints and saves one row per case (tier, case, expected, outcome, message
seen) to results/reliability_matrix.md (+ .json).

    .venv/bin/python benchmarks/reliability_matrix.py [-k EXPRESSION]

Exit status: pytest's (non-zero while any case fails).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEM = ROOT / "results" / "reliability_matrix"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="select", help="only the cases matching this pytest expression")
    parser.add_argument("--output", default=str(STEM), help="table path without suffix")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "reliability")]
    if args.select:
        command += ["-k", args.select]
    env = {**os.environ, "WAV2SEM_MATRIX_RESULTS": args.output}
    code = subprocess.run(command, cwd=ROOT, env=env).returncode
    table = Path(args.output).with_suffix(".md")
    if table.is_file():
        print(table.read_text(encoding="utf-8"))
        print(f"saved {table} and {table.with_suffix('.json')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
