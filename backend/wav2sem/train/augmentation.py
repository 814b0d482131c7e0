"""On-the-fly audio perturbation for animation training.

Each epoch every clip may get fresh background noise (white, pink, brown or mains hum, at a
random SNR) and a microphone-like spectral tilt (a first-order filter), so the encoder cannot
rely on the digital silence and studio spectrum of synthetic voices: recorded speech always has
a noise floor. The noise itself is `wav2sem.synth.augment.make_noise`, the corpus's own.
With `babble_prob` a clip may also get babble: BABBLE_TALKERS other training clips summed,
at `babble_snr_db` (default `snr_db`), so that background talk in a pause is not taken for
the speaker's own speech (new in recipe 0.4).
Recipe block (absent: no perturbation):
    "augment": {"noise_prob": 0.7, "snr_db": [5, 35], "tilt_prob": 0.5, "babble_prob": 0.2,
                "babble_snr_db": [10, 30]}
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.signal import lfilter

from ..audio import SAMPLE_RATE
from ..synth.augment import NOISE_KINDS, make_noise


BABBLE_TALKERS = (3, 6)       # how many other clips make one babble (uniform, inclusive)


def perturber(settings: dict | None, rng: np.random.Generator,
              babble_pool: list[np.ndarray] | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function (N,) audio -> (N,) perturbed audio drawing from `rng`, or None when off.
    `babble_pool`: training clips to make babble from (needed when babble_prob > 0)."""
    if not settings:
        return None
    noise_prob = float(settings.get("noise_prob", 0.0))
    low, high = (float(x) for x in settings.get("snr_db", (5.0, 35.0)))
    tilt_prob = float(settings.get("tilt_prob", 0.0))
    babble_prob = float(settings.get("babble_prob", 0.0)) if babble_pool else 0.0
    b_low, b_high = (float(x) for x in settings.get("babble_snr_db", (low, high)))

    def perturb(audio: np.ndarray) -> np.ndarray:
        out = audio.astype(np.float32)
        if rng.random() < tilt_prob:
            # y[n] = x[n] - a x[n-1]: a > 0 thins the low end (small mic), a < 0 darkens it
            out = lfilter([1.0, -rng.uniform(-0.6, 0.9)], [1.0], out).astype(np.float32)
        if rng.random() < noise_prob:
            rms = np.sqrt(np.mean(out ** 2)) + 1e-9
            noise = make_noise(str(rng.choice(NOISE_KINDS)), len(out), SAMPLE_RATE, rng)
            out = out + (noise * rms * 10 ** (-rng.uniform(low, high) / 20)).astype(np.float32)
        if babble_prob and rng.random() < babble_prob:      # no draw when off: older recipes replay exactly
            rms = np.sqrt(np.mean(out ** 2)) + 1e-9
            noise = babble(babble_pool, len(out), int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)), rng)
            out = out + (noise * rms * 10 ** (-rng.uniform(b_low, b_high) / 20)).astype(np.float32)
        return out

    return perturb


def babble(pool: list[np.ndarray], n: int, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """`talkers` clips of the pool, each at unit RMS from a random start (looped), summed and
    scaled back to unit RMS. -> (n,) float32"""
    out = np.zeros(n, np.float64)
    for index in rng.choice(len(pool), size=min(talkers, len(pool)), replace=False):
        clip = pool[int(index)]
        start = int(rng.integers(len(clip)))
        piece = np.resize(np.roll(clip, -start), n).astype(np.float64)
        out += piece / (np.sqrt(np.mean(piece ** 2)) + 1e-9)
    return (out / (np.sqrt(np.mean(out ** 2)) + 1e-9)).astype(np.float32)
