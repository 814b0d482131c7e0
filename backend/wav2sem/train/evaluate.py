"""`wav2sem eval`: LVE, FDD and MVE (REFERENCE.md definitions) of a bundle on a corpus split,
plus lip error on minimal-pair sentences (the near-homophone contrasts Wav2Sem targets) and,
where the corpus has phone timings and the template lip landmarks, how far the lips close on
m/b/p and open on open vowels (predicted next to ground truth, in mm). Command line:
`wav2sem eval` (commands/eval.py).

Blendshape models and corpora: offsets come from the weights through the deltas, for the
vertices each measure needs (lips, upper face, the lip landmarks; MVE a few frames at a
time), so no (T, V, 3) array of a whole head is built.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .. import metrics

log = logging.getLogger(__name__)

VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def minimal_pair_words() -> set[str]:
    from ..synth.sentences import MINIMAL_SETS

    return {w for group in MINIMAL_SETS for w in group}


def consonant_frames(phonemes, fps: float, n_frames: int) -> np.ndarray:
    """Indices of frames inside consonant phones (not vowels, not silence)."""
    mask = np.zeros(n_frames, bool)
    for seg in phonemes or []:
        if seg.arpabet not in VOWELS and seg.arpabet not in ("SIL", "SP", "PAU"):
            mask[int(seg.start * fps) : int(np.ceil(seg.end * fps))] = True
    return np.nonzero(mask)[0]


def evaluate(model_dir: str | Path | None, corpus: str | Path, split: str = "test", semantic: bool = True,
             limit: int | None = None, device: str = "cpu") -> dict:
    """Per-sequence metrics averaged over the split (as the reference evaluation does)."""
    from ..dataset import open_dataset
    from ..inference import generate
    from ..loaded_model import load_model

    model = load_model(model_dir, device)
    ds = open_dataset(corpus, split=split)
    template = model.bundle.template
    if ds.template.vertex_count != template.vertex_count:
        raise ValueError(f"corpus template has {ds.template.vertex_count} vertices, model {template.vertex_count}")
    lips = template.regions.get("lips")
    upper = template.regions.get("upper_face")
    if lips is None or upper is None:
        raise ValueError("the model's template needs 'lips' and 'upper_face' regions for LVE / FDD")
    predicts_weights = model.bundle.config.predicts_weights
    words = minimal_pair_words()
    closure = ClosureStats(template)
    per_seq: dict[str, list[float]] = {"lve": [], "fdd": [], "mve": [], "minimal_pair_lve": []}
    items = ds.ids[:limit] if limit else ds.ids
    everyone = None if len(model.subjects) == 1 else {i: 1.0 for i in range(len(model.subjects))}
    for n, item_id in enumerate(items):
        item = ds.item(item_id)
        if predicts_weights:
            result = generate(model, item.audio, subject=everyone, semantic=semantic, offsets=False)
            pred = metrics.Motion(weights=result.weights, deltas=template.blendshape_deltas)
        else:
            pred = metrics.Motion(offsets=generate(model, item.audio, subject=everyone, semantic=semantic).offsets)
        gt = ground_truth_motion(item)
        t = min(pred.frames, gt.frames)
        pred, gt = pred.take(slice(0, t)), gt.take(slice(0, t))
        pred_lips, gt_lips = pred.at(lips), gt.at(lips)
        per_seq["lve"].append(metrics.lip_vertex_error(pred_lips, gt_lips, slice(None)))
        per_seq["fdd"].append(metrics.face_dynamics_deviation(pred.at(upper), gt.at(upper), slice(None)))
        per_seq["mve"].append(metrics.motion_mean_vertex_error(pred, gt))
        text_words = set(re.findall(r"[a-z']+", (item.transcript or "").lower()))
        if text_words & words and item.phonemes:
            frames = consonant_frames(item.phonemes, ds.fps, t)
            if len(frames):
                per_seq["minimal_pair_lve"].append(metrics.lip_vertex_error(pred_lips[frames], gt_lips[frames], slice(None)))
        closure.add(pred, gt, item.phonemes, ds.fps)
        if (n + 1) % 20 == 0:
            log.info("evaluated %d/%d clips", n + 1, len(items))
    summary = {k: float(np.mean(v)) if v else float("nan") for k, v in per_seq.items()}
    summary.update(sequences=len(items), minimal_pair_sequences=len(per_seq["minimal_pair_lve"]),
                   split=split, semantic=semantic and model.net.has_semantic, model=model.bundle.config.name,
                   output=model.bundle.config.output_type)
    summary.update(closure.summary())
    return summary


def ground_truth_motion(item) -> "metrics.Motion":
    """A dataset item's motion for the metrics: its weights on a blendshape corpus (offsets
    computed per region when asked), else its offsets."""
    if item.weights is not None:
        return metrics.Motion(weights=item.weights, deltas=item.blendshapes)
    return metrics.Motion(offsets=item.vertices - item.template[None])


class ClosureStats:
    """Lip gap at the extremes of m/b/p (smallest) and open vowels (largest), per phone."""

    def __init__(self, template):
        self.template = template
        self.lips = template.lip_centres
        self.values: dict[str, list[float]] = {k: [] for k in ("bilabial_pred", "bilabial_gt", "vowel_pred", "vowel_gt")}

    def add(self, pred, gt, phonemes, fps: float) -> None:
        """pred, gt: offsets (T, V, 3) or metrics.Motion."""
        if self.lips is None or not phonemes:
            return
        for name, motion in (("pred", pred), ("gt", gt)):
            if not isinstance(motion, metrics.Motion):
                motion = metrics.Motion(offsets=motion)
            gap = metrics.motion_lip_gap(motion, self.template.vertices, *self.lips) * 1000.0
            self.values[f"bilabial_{name}"] += metrics.phone_gap_extrema(gap, phonemes, fps, metrics.BILABIALS, True)
            self.values[f"vowel_{name}"] += metrics.phone_gap_extrema(gap, phonemes, fps, metrics.OPEN_VOWELS, False)

    def summary(self) -> dict:
        v = {k: np.asarray(x) for k, x in self.values.items()}
        if not len(v["bilabial_pred"]):
            return {}
        return {
            "bilabial_phones": int(len(v["bilabial_pred"])),
            "bilabial_gap_mm_median": float(np.median(v["bilabial_pred"])),
            "bilabial_gap_mm_median_gt": float(np.median(v["bilabial_gt"])),
            "bilabial_closed_fraction": float(np.mean(v["bilabial_pred"] < metrics.CLOSED_MM)),
            "bilabial_closed_fraction_gt": float(np.mean(v["bilabial_gt"] < metrics.CLOSED_MM)),
            "open_vowel_gap_mm_median": float(np.median(v["vowel_pred"])) if len(v["vowel_pred"]) else float("nan"),
            "open_vowel_gap_mm_median_gt": float(np.median(v["vowel_gt"])) if len(v["vowel_gt"]) else float("nan"),
        }
