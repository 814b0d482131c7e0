"""Where one Wav2Sem sentence vector ends and the next begins.

The semantic encoder was trained on single sentences: a clip up to MAX_UTTERANCE_S gets one
vector over the whole clip (as in the reference); longer audio is cut at pauses into
utterances of at most that length, and where there is no pause, into equal windows.
Energy-based pause detection is written here because it is a few lines of numpy; a VAD
library would add a dependency for no better result on clean speech.
"""
from __future__ import annotations

import numpy as np

MAX_UTTERANCE_S = 20.0   # s, longest span given one sentence vector
FRAME_S = 0.02           # s, energy analysis frame
MIN_PAUSE_S = 0.25       # s, a quieter stretch at least this long counts as a pause
PAUSE_DB = -35.0         # dB below the loud (95th-percentile) frame energy


def utterance_spans(waveform: np.ndarray, sample_rate: int, max_s: float = MAX_UTTERANCE_S) -> list[tuple[int, int]]:
    """Split (S,) audio into [start, end) sample spans, each at most `max_s` long."""
    n = waveform.shape[0]
    max_len = int(max_s * sample_rate)
    if n <= max_len:
        return [(0, n)]
    cut_candidates = _pause_centres(waveform, sample_rate)
    spans: list[tuple[int, int]] = []
    start = 0
    while n - start > max_len:
        usable = [c for c in cut_candidates if start < c <= start + max_len and c - start >= sample_rate]
        if usable:
            end = usable[-1]                       # the latest pause that keeps the span short enough
            spans.append((start, end))
        else:                                      # no pause: equal windows over the rest of this stretch
            next_pause = next((c for c in cut_candidates if c > start + max_len), n)
            pieces = int(np.ceil((next_pause - start) / max_len))
            edges = np.linspace(start, next_pause, pieces + 1).astype(int)
            spans.extend(zip(edges[:-1].tolist(), edges[1:].tolist()))
            end = int(edges[-1])
        start = end
    if start < n:
        if spans and n - start < sample_rate and n - spans[-1][0] <= max_len:      # a sliver at the end joins the previous span
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((start, n))
    return spans


def _pause_centres(waveform: np.ndarray, sample_rate: int) -> list[int]:
    hop = int(FRAME_S * sample_rate)
    n_frames = waveform.shape[0] // hop
    if n_frames == 0:
        return []
    frames = waveform[: n_frames * hop].reshape(n_frames, hop)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    quiet = energy_db < np.percentile(energy_db, 95) + PAUSE_DB
    centres = []
    min_frames = int(MIN_PAUSE_S / FRAME_S)
    i = 0
    while i < n_frames:
        if quiet[i]:
            j = i
            while j < n_frames and quiet[j]:
                j += 1
            if j - i >= min_frames:
                centres.append(((i + j) // 2) * hop)
            i = j
        else:
            i += 1
    return centres
