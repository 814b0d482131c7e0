"""`wav2sem corpus real`: build the recorded-speech corpus (see docs/real_voices.md)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..cli_progress import clip_progress
from ..errors import BAD_REQUEST, Wav2SemError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus_kind", metavar="KIND", required=True)
    real = sub.add_parser("real", help="recorded speech from Debian packages, aligned and animated by the rig",
                          description="Recorded speech from Debian packages (docs/real_voices.md): transcripts "
                                      "aligned to phones, the rig's ARKit weights as targets.")
    real.add_argument("--packages", action="append", default=[], metavar="DIR",
                      help="a folder made by `dpkg -x PKG.deb DIR`, or one holding such folders (repeatable)")
    real.add_argument("--system", action="store_true", help="also look in the installed system (/usr/share/...)")
    real.add_argument("--out", required=True, help="corpus folder (created; an existing one is resumed)")
    real.add_argument("--languages", default=None, help="comma-separated language codes, e.g. fr,it (default all)")
    real.add_argument("--max-items", type=int, default=None, help="at most this many clips per speaker")
    real.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    real.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="worker processes (default: all cores)")
    real.add_argument("--retry-rejected", action="store_true", help="align the clips rejected before again")
    real.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..real.corpus import build_real_corpus

    roots = [Path(p) for p in args.packages] + ([Path("/")] if args.system else [])
    if not roots:
        raise Wav2SemError(BAD_REQUEST, "Say where the packages are: --packages DIR (from `make real-packages`) "
                                        "and/or --system.")
    languages = [x.strip() for x in args.languages.split(",") if x.strip()] if args.languages else None
    start = time.perf_counter()
    with clip_progress("corpus real", enabled=not args.no_progress) as progress:
        info = build_real_corpus(roots, Path(args.out), languages, args.max_items, args.seed, args.workers,
                                 progress, retry_rejected=args.retry_rejected)
    elapsed = time.perf_counter() - start
    print(summary(info, args.out, elapsed), file=sys.stderr)
    return 0


def summary(info: dict, out: str, elapsed: float) -> str:
    """Items and minutes per speaker and split, rejected and skipped counts."""
    lines = [f"{'speaker':<14} {'split':<5} {'items':>6} {'min':>7} {'rejected':>8} {'skipped':>7}"]
    per_split: dict[str, list[float]] = {}
    for speaker, st in sorted(info["speaker_stats"].items(), key=lambda kv: (kv[1]["split"], kv[0])):
        lines.append(f"{speaker:<14} {st['split']:<5} {st['items']:>6} {st['seconds'] / 60:>7.1f} "
                     f"{st['rejected']:>8} {st['skipped']:>7}")
        acc = per_split.setdefault(st["split"], [0, 0.0])
        acc[0] += st["items"]
        acc[1] += st["seconds"]
    lines.append("splits: " + ", ".join(f"{s} {n} clips {sec / 60:.1f} min" for s, (n, sec) in per_split.items()))
    if info["rejected_by_reason"]:
        lines.append("rejected: " + "; ".join(f"{n} {r}" for r, n in
                                              sorted(info["rejected_by_reason"].items(), key=lambda kv: -kv[1])))
    if info["skipped_by_reason"]:
        lines.append("skipped (no usable transcript): " + ", ".join(f"{n} {r}" for r, n in
                                                                   sorted(info["skipped_by_reason"].items())))
    lines.append(f"{out}: {info['items']} clips, {info['hours'] * 60:.1f} min of speech, {elapsed:.0f} s")
    return "\n".join(lines)
