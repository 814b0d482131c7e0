"""`wav2sem serve`: the JSON-lines backend server on stdin/stdout (used by the add-on)."""
from __future__ import annotations

import argparse

from ..cli import add_threads_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="default model bundle folder (else $WAV2SEM_MODEL, else the embedded default)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default device")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..serve.transport import serve_stdio

    return serve_stdio(args.model, args.device, args.threads)
