"""`wav2sem synth`: generate the synthetic speech-to-face corpus (see docs/synth.md)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..cli_progress import clip_progress
from ..errors import BAD_REQUEST, Wav2SemError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="corpus folder (created; an existing one is resumed)")
    parser.add_argument("--hours", type=float, required=True, help="hours of speech to generate (estimated)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all cores)")
    parser.add_argument("--engines", default="espeak,festival",
                        help="comma-separated TTS engines: espeak, festival (default both)")
    parser.add_argument("--head", choices=("ict", "synthetic"), default="ict",
                        help="ict (default): ARKit weights on the ICT FaceKit head (weights_npy/); "
                             "synthetic: vertex positions on the project's own head (vertices_npy/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..synth.corpus import check_engines, generate

    if not args.hours > 0:
        raise Wav2SemError(BAD_REQUEST, "--hours must be a positive number of hours, e.g. --hours 1.")
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    check_engines(engines)      # fail before any output, naming the Debian package to install
    start = time.perf_counter()
    with clip_progress("synth", enabled=not args.no_progress) as progress:
        info = generate(args.out, args.hours, args.seed, args.workers, engines, progress, head=args.head)
    elapsed = time.perf_counter() - start
    print(f"{args.out}: {info['items']} clips, {info['hours'] * 60:.1f} min of speech, "
          f"splits {info['splits']}, {elapsed:.0f} s", file=sys.stderr)
    return 0
