"""Free phone recognition (no transcript): pocketsphinx allphone search with the en-us
acoustic model and its phone bigram (en-us-phone.lm.bin). The baseline the real-voice
evaluation drives the rig with ("pocketsphinx phones mapped to mouth openness").
"""
from __future__ import annotations

import numpy as np

from ..synth.phonemes import PHONEMES
from ..synth.timing import PhoneSegment
from .align import _ALLPHONE, FRAME_S, SAMPLE_RATE, _decode, decoder, prepare_audio, tile


def recognize_phones(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[PhoneSegment]:
    """Phone segments recognised in `audio` (float32 mono), covering 0 .. duration without
    gaps: ("_", "SIL") for silence and noise, else (model phone, the same ARPAbet class).
    Raises AlignmentError for a clip under 0.1 s or a silent clip."""
    pcm, duration = prepare_audio(audio, sample_rate)
    d = decoder()
    d.activate_search(_ALLPHONE)
    _decode(d, pcm)
    segments = []
    for seg in d.seg() or ():
        start, end = seg.start_frame * FRAME_S, (seg.end_frame + 1) * FRAME_S
        phone = seg.word
        # SIL, +NSN+ (noise), +SPN+ and anything outside the rig's set are rest poses.
        if phone in PHONEMES and phone != "SIL":
            segments.append(PhoneSegment(phone, phone, start, end))
        else:
            segments.append(PhoneSegment("_", "SIL", start, end))
    return tile(segments, duration)
