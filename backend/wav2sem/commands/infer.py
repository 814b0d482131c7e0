"""`wav2sem infer AUDIO -o OUT.npy`: offsets (T, V, 3) float32 in template coordinates."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import BAD_REQUEST, Wav2SemError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", help="speech file (wav, flac, ogg, mp3; any rate and channels)")
    parser.add_argument("-o", "--output", required=True, help="output .npy: (frames, vertices, 3) float32")
    parser.add_argument("--model", help="model bundle folder (default: $WAV2SEM_MODEL, else the embedded default)")
    parser.add_argument("--subject", default=None,
                        help="speaking style: a subject name or index, or a blend like 'A:0.7,B:0.3'")
    parser.add_argument("--no-semantic", action="store_true", help="switch the Wav2Sem module off (ablation)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def parse_subject(text: str | None):
    """'3' -> '3'; 'A:0.7,B:0.3' -> {'A': 0.7, 'B': 0.3} (weights are checked by generate)."""
    if text is None or ":" not in text:
        return text
    blend = {}
    for part in text.split(","):
        name, _, weight = part.rpartition(":")
        try:
            blend[name.strip()] = float(weight)
        except ValueError:
            raise Wav2SemError(BAD_REQUEST, f"--subject {text!r}: the blend weight {weight!r} is not a number; "
                                            "write NAME:WEIGHT,NAME:WEIGHT, e.g. 0:0.7,1:0.3.") from None
    return blend


class _StderrProgress:
    """One status line on stderr, rewritten in place when stderr is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        line = f"{stage:>6} {fraction * 100:5.1f}%  {message}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(len(self.last)))
            sys.stderr.flush()
        elif fraction >= 1.0 and line != self.last:
            print(line, file=sys.stderr)
        self.last = line

    def close(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    from ..audio import load_audio
    from ..inference import generate, load_model
    from ..outputs import check_output_path, save_npy_atomic

    check_output_path(args.output)               # before any slow work
    waveform = load_audio(args.audio)
    model = load_model(args.model, args.device)
    progress = _StderrProgress()
    try:
        result = generate(model, waveform, subject=parse_subject(args.subject), semantic=not args.no_semantic,
                          progress=progress)
    finally:
        progress.close()
    save_npy_atomic(args.output, result.offsets)
    duration = waveform.shape[0] / 16000
    print(f"wrote {args.output}: {result.offsets.shape[0]} frames x {result.offsets.shape[1]} vertices at "
          f"{result.fps:g} fps from {duration:.2f} s of audio in {result.seconds:.2f} s "
          f"(model {model.bundle.config.name}, {model.device})", file=sys.stderr)
    return 0
