"""`wav2sem infer AUDIO -o OUT.npy`: offsets (T, V, 3) float32 in template coordinates.

A blendshape model also writes its weights (T, K) float32 (`--weights-out`, default
OUT.weights.npy beside the offsets, or AUDIO_STEM.weights.npy here with `--no-offsets`) and
their channel names beside them (`<weights stem>.json`: channels, fps, frames, model)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..cli import add_threads_argument
from ..errors import BAD_REQUEST, Wav2SemError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", help="speech file (wav, flac, ogg, mp3; any rate and channels)")
    parser.add_argument("-o", "--output", help="output .npy: (frames, vertices, 3) float32 (needed unless --no-offsets)")
    parser.add_argument("--model", help="model bundle folder (default: $WAV2SEM_MODEL, else the embedded default)")
    parser.add_argument("--subject", default=None,
                        help="speaking style: a subject name or index, or a blend like 'A:0.7,B:0.3'")
    parser.add_argument("--no-semantic", action="store_true", help="switch the Wav2Sem module off (ablation)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads_argument(parser)
    parser.add_argument("--weights-out", metavar="PATH.npy",
                        help="blendshape models: where the weights (frames, channels) float32 go (default: "
                             "OUTPUT.weights.npy, or AUDIO_STEM.weights.npy with --no-offsets); the channel "
                             "names go beside it in a .json of the same stem")
    parser.add_argument("--no-offsets", action="store_true",
                        help="blendshape models: write only the weights, not the (large) vertex offsets")


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


def weights_path(args: argparse.Namespace) -> Path:
    if args.weights_out:
        return Path(args.weights_out)
    if args.output and not args.no_offsets:
        out = Path(args.output)
        return out.with_name(f"{out.stem}.weights.npy")
    return Path(f"{Path(args.audio).stem}.weights.npy")


def channels_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


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
    from ..inference import generate
    from ..loaded_model import load_model
    from ..threads import configure_threads
    from ..outputs import check_output_path, commit_all, discard_partials, write_partial, write_partial_json

    if not args.output and not args.no_offsets:
        raise Wav2SemError(BAD_REQUEST, "Give the output file with -o OUT.npy (or --no-offsets to write only a "
                                        "blendshape model's weights).")
    write_offsets = not args.no_offsets
    if write_offsets:
        check_output_path(args.output)           # before any slow work
    waveform = load_audio(args.audio)
    configure_threads(getattr(args, "threads", None))      # before the model load, which runs faster on one
    model = load_model(args.model, args.device)
    weights_out = None
    if model.predicts_weights:
        weights_out = check_output_path(weights_path(args))
        if write_offsets and weights_out.absolute() == Path(args.output).absolute():
            raise Wav2SemError(BAD_REQUEST, f"-o and --weights-out are the same file ({weights_out.name}); give two names.")
    elif args.no_offsets or args.weights_out:
        raise Wav2SemError(BAD_REQUEST, f"The model {model.bundle.config.name} predicts vertex offsets, not blendshape "
                                        f"weights; {'--no-offsets' if args.no_offsets else '--weights-out'} needs a "
                                        "blendshape model.")
    progress = _StderrProgress()
    try:
        result = generate(model, waveform, subject=parse_subject(args.subject), semantic=not args.no_semantic,
                          progress=progress, offsets=write_offsets)
    finally:
        progress.close()
    duration = waveform.shape[0] / 16000
    about = (f"at {result.fps:g} fps from {duration:.2f} s of audio in {result.seconds:.2f} s "
             f"(model {model.bundle.config.name}, {model.device})")
    writes = []                   # (partial, final path): all written before any is renamed
    try:
        if weights_out is not None:
            names = channels_path(weights_out)
            writes.append((write_partial(weights_out, result.weights), weights_out))
            writes.append((write_partial_json(names, {"channels": list(result.channels), "fps": result.fps,
                                                      "frames": result.frames, "model": model.bundle.config.name}),
                           names))
        if write_offsets:
            writes.append((write_partial(args.output, result.offsets), Path(args.output)))
        commit_all(writes)
    finally:
        discard_partials(writes)
    if weights_out is not None:
        print(f"wrote {weights_out}: {result.frames} frames x {len(result.channels)} blendshape weights "
              f"(channel names in {names.name}) {about}", file=sys.stderr)
    if write_offsets:
        print(f"wrote {args.output}: {result.frames} frames x {model.vertex_count} vertices {about}", file=sys.stderr)
    return 0
