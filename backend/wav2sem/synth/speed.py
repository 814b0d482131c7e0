"""Measure corpus generation speed: python -m wav2sem.synth.speed [--hours 0.1] [--workers 2] [--head ict] [--out FILE]

Generates a corpus of the given size in a temporary folder, prints a table row (wall time,
real-time factor, extrapolated time for one hour, disk use) and appends it to FILE.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .corpus import generate

HEADER = ("| date (UTC) | requested h | speech min | clips | workers | cores | load avg | wall s | "
          "speech s per wall s | 1 h extrapolated (min) | MB per speech min |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|\n")


def measure(hours: float, workers: int, seed: int = 0, head: str = "ict") -> dict:
    folder = Path(tempfile.mkdtemp(prefix="wav2sem-speed-"))
    try:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        info = generate(folder, hours, seed, workers, head=head)
        wall = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    speech_s = info["hours"] * 3600
    return {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "hours": hours, "head": head, "speech_min": speech_s / 60,
            "clips": info["items"], "workers": workers, "cores": os.cpu_count(), "load": load, "wall_s": wall,
            "rtf": speech_s / wall, "hour_min": 3600 / (speech_s / wall) / 60, "mb_per_min": size_mb / (speech_s / 60)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--head", choices=("ict", "synthetic"), default="ict")
    parser.add_argument("--out", default="results/synth/speed.txt")
    args = parser.parse_args(argv)
    r = measure(args.hours, args.workers, head=args.head)
    row = (f"| {r['date']} | {r['hours']} ({r['head']}) | {r['speech_min']:.1f} | {r['clips']} | {r['workers']} | {r['cores']} | "
           f"{r['load']:.1f} | {r['wall_s']:.1f} | {r['rtf']:.1f} | {r['hour_min']:.1f} | {r['mb_per_min']:.0f} |\n")
    out = Path(args.out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"Corpus generation speed ({platform.processor() or platform.machine()}, "
                       f"python -m wav2sem.synth.speed)\n\n" + HEADER)
    with out.open("a") as f:
        f.write(row)
    print(HEADER + row, end="")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
