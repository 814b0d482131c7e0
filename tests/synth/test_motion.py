"""Generated motion: lips close on m/b/p, open on open vowels, tuck on f/v; smooth curves."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from wav2sem.synth.check import segment_frames
from wav2sem.synth.coarticulation import Style, articulator_curves
from wav2sem.synth.motion import FPS, SAMPLE_RATE, animate
from wav2sem.synth.phonemes import SPEECH_ARTICULATORS
from wav2sem.synth.timing import PhoneSegment

from synth_helpers import needs_espeak, needs_festival

SENTENCES = ("Bob met Pam by the big map.", "My father bought five fat bats.",
             "Mom, pass the warm bread and the plum jam please.")
OPEN_VOWELS = ("AA", "AE", "AO", "AH")


def lip_gap_mm(head, verts: np.ndarray) -> np.ndarray:
    lm = head.template.landmarks
    return (verts[:, lm["upper_lip_center"], 1] - verts[:, lm["lower_lip_center"], 1]) * 1000


def check_clip(head, segments, audio, sr):
    audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32) if sr != SAMPLE_RATE else audio
    track, verts = animate(segments, audio, SAMPLE_RATE, Style(), np.random.default_rng(0))
    gap = lip_gap_mm(head, verts)
    tuck = track[:, SPEECH_ARTICULATORS.index("lower_lip_tuck")]
    seen = {"closed": 0, "open": 0, "tuck": 0}
    for seg in segments:
        k = segment_frames(seg, len(gap), FPS)
        if seg.arpabet in ("P", "B", "M"):
            assert gap[k].min() < 0.3, f"lips not closed on {seg}"
            seen["closed"] += 1
        elif seg.arpabet in OPEN_VOWELS and seg.duration > 0.09:   # shorter ones barely open in fast speech
            assert gap[k].max() > 6.0, f"mouth not open on {seg}: {gap[k].max():.1f} mm"
            seen["open"] += 1
        elif seg.arpabet in ("F", "V"):
            assert tuck[k].max() > 0.8, f"lower lip not tucked on {seg}"
            assert gap[k].min() < 3.0
            seen["tuck"] += 1
    return seen


@needs_espeak
@pytest.mark.parametrize("voice,variant,rate", [("en-us", "m3", 175), ("en-gb-x-rp", "f2", 230), ("en", None, 140)])
def test_espeak_motion_closes_and_opens(head, voice, variant, rate):
    from wav2sem.synth.tts.espeak import EspeakEngine

    seen = {"closed": 0, "open": 0, "tuck": 0}
    for text in SENTENCES:
        clip = EspeakEngine.get().synthesize(text, voice, variant, rate)
        for key, value in check_clip(head, clip.segments, clip.audio, clip.sample_rate).items():
            seen[key] += value
    assert seen["closed"] >= 12 and seen["open"] >= 5 and seen["tuck"] >= 3


@needs_festival
def test_festival_motion_closes_and_opens(head):
    from wav2sem.synth.tts.festival import synthesize_batch

    clips = synthesize_batch(list(SENTENCES), "kal_diphone")
    seen = {"closed": 0, "open": 0, "tuck": 0}
    for clip in clips:
        for key, value in check_clip(head, clip.segments, clip.audio, clip.sample_rate).items():
            seen[key] += value
    assert seen["closed"] >= 12 and seen["open"] >= 5 and seen["tuck"] >= 3


def _segments(spec: str, duration: float = 0.1) -> list[PhoneSegment]:
    out, t = [], 0.0
    for phone in spec.split():
        out.append(PhoneSegment(phone.lower(), phone, t, t + duration))
        t += duration
    return out


def test_coarticulation_anticipates_and_carries_over():
    """Not step functions: rounding for W starts before W and fades after it."""
    segs = _segments("SIL IY IY W IY IY SIL", 0.1)                       # W from 0.3 to 0.4 s
    curves = articulator_curves(segs, 21, 30.0)
    rnd = curves[:, SPEECH_ARTICULATORS.index("lip_round")]
    t = np.arange(21) / 30.0
    assert rnd[np.argmin(abs(t - 0.35))] > 0.8
    assert 0.1 < rnd[np.argmin(abs(t - 0.25))] < 0.8                       # anticipation, 50 ms before
    assert 0.05 < rnd[np.argmin(abs(t - 0.45))] < 0.8                      # carry-over, 50 ms after
    assert np.abs(np.diff(curves, axis=0)).max() < 0.6                     # no jumps between frames


def test_bilabial_dominates_open_vowel_context():
    segs = _segments("AA AA M AA AA", 0.08)
    curves = articulator_curves(segs, 14, 30.0)
    close = curves[:, SPEECH_ARTICULATORS.index("lip_close")]
    jaw = curves[:, SPEECH_ARTICULATORS.index("jaw_open")]
    centre = int(round(0.2 * 30))
    assert close[centre] > 0.85 and close[1] < 0.1
    assert jaw[1] > 0.6 and jaw[centre] < jaw[1]


def test_style_gains_scale_targets():
    segs = _segments("SIL AA SIL", 0.2)
    base = articulator_curves(segs, 18, 30.0)
    wide = articulator_curves(segs, 18, 30.0, Style(jaw_gain=1.1))
    j = SPEECH_ARTICULATORS.index("jaw_open")
    np.testing.assert_allclose(wide[:, j], np.clip(base[:, j] * 1.1, 0, 1))
