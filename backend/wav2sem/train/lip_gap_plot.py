"""Plot the lip gap of ground truth and one or more models on test clips, m/b/p shaded.

    python -m wav2sem.train.lip_gap_plot --corpus corpus/synth-1h --out lip_gap.png \\
        --model "shipped=backend/wav2sem/assets/default" --model "new=runs/default/bundle" [--clips 3]
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from .. import metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wav2sem.train.lip_gap_plot", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=BUNDLE")
    parser.add_argument("--clips", type=int, default=3, help="how many clips (the first N of the split with m/b/p)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not all("=" in m for m in args.model):
        parser.error("--model takes LABEL=BUNDLE")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..dataset import open_dataset
    from ..inference import generate
    from ..loaded_model import load_model

    ds = open_dataset(args.corpus, split=args.split)
    models = [(label, load_model(path, "cpu")) for label, _, path in (m.partition("=") for m in args.model)]
    template = ds.template
    pair = template.lip_centres
    if pair is None:
        parser.error("the corpus template has no upper_lip_center / lower_lip_center landmarks")
    with_bilabials = (it for it in (ds.item(i) for i in ds.ids)
                      if it.phonemes and any(s.arpabet in metrics.BILABIALS for s in it.phonemes))
    items = list(itertools.islice(with_bilabials, args.clips))
    fig, axes = plt.subplots(len(items), 1, figsize=(12, 2.9 * len(items)), squeeze=False)
    for ax, item in zip(axes[:, 0], items):
        gt = item.vertices - item.template[None]
        ax.plot(metrics.lip_gap(gt, template.vertices, *pair) * 1000, color="k", lw=1.8, label="ground truth")
        for label, model in models:
            pred = generate(model, item.audio, subject={i: 1.0 for i in range(len(model.subjects))}).offsets
            ax.plot(metrics.lip_gap(pred, template.vertices, *pair) * 1000, lw=1.3, label=label)
        for seg in item.phonemes:
            if seg.arpabet in metrics.BILABIALS:
                ax.axvspan(seg.start * ds.fps, seg.end * ds.fps, color="red", alpha=0.15)
        ax.axhline(metrics.CLOSED_MM, color="0.6", lw=0.6, ls=":")
        ax.set_title(f"{item.id}: {item.transcript}", fontsize=9)
        ax.set_ylabel("lip gap (mm)")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel(f"frame ({ds.fps:g} fps); red: m/b/p; dotted: {metrics.CLOSED_MM:g} mm")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
