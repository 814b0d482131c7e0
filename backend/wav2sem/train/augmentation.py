"""On-the-fly audio perturbation for animation training.

Each epoch every clip may get fresh background noise (white, pink, brown or mains hum, at a
random SNR) and a microphone-like spectral tilt (a first-order filter), so the encoder cannot
rely on the digital silence and studio spectrum of synthetic voices: recorded speech always has
a noise floor. The noise itself is `wav2sem.synth.augment.make_noise`, the corpus's own.
Recipe block (absent: no perturbation):
    "augment": {"noise_prob": 0.7, "snr_db": [5, 35], "tilt_prob": 0.5}
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.signal import lfilter

from ..audio import SAMPLE_RATE
from ..synth.augment import NOISE_KINDS, make_noise


def perturber(settings: dict | None, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function (N,) audio -> (N,) perturbed audio drawing from `rng`, or None when off."""
    if not settings:
        return None
    noise_prob = float(settings.get("noise_prob", 0.0))
    low, high = (float(x) for x in settings.get("snr_db", (5.0, 35.0)))
    tilt_prob = float(settings.get("tilt_prob", 0.0))

    def perturb(audio: np.ndarray) -> np.ndarray:
        out = audio.astype(np.float32)
        if rng.random() < tilt_prob:
            # y[n] = x[n] - a x[n-1]: a > 0 thins the low end (small mic), a < 0 darkens it
            out = lfilter([1.0, -rng.uniform(-0.6, 0.9)], [1.0], out).astype(np.float32)
        if rng.random() < noise_prob:
            rms = np.sqrt(np.mean(out ** 2)) + 1e-9
            noise = make_noise(str(rng.choice(NOISE_KINDS)), len(out), SAMPLE_RATE, rng)
            out = out + (noise * rms * 10 ** (-rng.uniform(low, high) / 20)).astype(np.float32)
        return out

    return perturb
