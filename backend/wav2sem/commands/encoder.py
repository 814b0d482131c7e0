"""`wav2sem encoder whisper [--source DIR|NAME] -o DIR`: a faster-whisper model (a folder or an
installed package) -> a transformers-format folder (models/whisper_convert.py)."""
from __future__ import annotations

import argparse

from ..errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from ..models.whisper_convert import DEFAULT_PACKAGED, PACKAGED_MODELS     # numpy, no torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="encoder_kind", metavar="KIND", required=True)
    p = sub.add_parser("whisper", help="faster-whisper model (folder or installed package) -> "
                                       "transformers-format folder")
    p.add_argument("--source", default=None,
                   help=f"faster-whisper folder, or a packaged model name {sorted(PACKAGED_MODELS)} "
                        f"(default: {DEFAULT_PACKAGED})")
    p.add_argument("-o", "--output", required=True, help="folder to write (config.json + model.safetensors)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--encoder-only", action="store_true", help="leave out the decoder (wav2sem uses only the encoder)")


def run(args: argparse.Namespace) -> int:
    from ..models.ct2_reader import CT2FormatError
    from ..models.whisper_convert import convert_whisper

    try:
        out = convert_whisper(args.source, args.output, dtype=args.dtype, encoder_only=args.encoder_only)
    except (FileNotFoundError, FileExistsError) as exc:
        raise Wav2SemError(MODEL_NOT_FOUND, str(exc)) from exc
    except (CT2FormatError, ValueError) as exc:
        raise Wav2SemError(MODEL_INVALID, str(exc)) from exc
    print(out)
    return 0
