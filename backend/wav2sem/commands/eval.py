"""`wav2sem eval`: LVE, FDD and MVE of a bundle on a corpus split, minimal-pair lip error and
lip closure (train/evaluate.py), printed as JSON.

    wav2sem eval --model BUNDLE --corpus corpus/synth-1h [--split test] [--no-semantic] [-o result.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model bundle folder (default: the embedded default)")
    parser.add_argument("--corpus", required=True, help="corpus folder with ground-truth motion")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--no-semantic", action="store_true", help="switch the Wav2Sem module off")
    parser.add_argument("--limit", type=int, help="evaluate only the first N clips")
    parser.add_argument("--coupling", action="store_true",
                        help="also measure feature-space coupling of minimal-set words (needs espeak-ng)")
    parser.add_argument("-o", "--output", help="write the result as JSON here")


def run(args: argparse.Namespace) -> int:
    from ..metrics import CLOSED_MM
    from ..train.evaluate import evaluate

    result = evaluate(args.model, args.corpus, args.split, not args.no_semantic, args.limit)
    if args.coupling:
        from ..loaded_model import load_model
        from ..train.coupling import minimal_set_coupling

        result.update(minimal_set_coupling(load_model(args.model, "cpu")))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(f"LVE {result['lve']:.3e}  FDD {result['fdd']:.3e}  MVE {result['mve']:.3e}  "
          f"minimal-pair LVE {result['minimal_pair_lve']:.3e}  ({result['sequences']} clips)", file=sys.stderr)
    if "bilabial_phones" in result:
        print(f"m/b/p: median smallest lip gap {result['bilabial_gap_mm_median']:.2f} mm "
              f"(ground truth {result['bilabial_gap_mm_median_gt']:.2f}), closed below {CLOSED_MM:g} mm in "
              f"{100 * result['bilabial_closed_fraction']:.0f} % (ground truth {100 * result['bilabial_closed_fraction_gt']:.0f} %) "
              f"of {result['bilabial_phones']}; open vowels: median widest gap {result['open_vowel_gap_mm_median']:.1f} mm "
              f"(ground truth {result['open_vowel_gap_mm_median_gt']:.1f})", file=sys.stderr)
    return 0
