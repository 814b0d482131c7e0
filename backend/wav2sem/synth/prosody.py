"""Prosody at the motion frame rate (energy, pitch) and the brow curve that follows it.

The pitch tracker is a plain normalised-autocorrelation estimator (hand-written: numpy and
scipy have none, and a voiced/unvoiced contour at 30 fps is all the brows need).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

WINDOW_S = 0.04              # analysis window (s)
F0_RANGE_HZ = (70.0, 400.0)
VOICING_THRESHOLD = 0.45     # normalised autocorrelation peak


def _frames(audio: np.ndarray, sr: int, n_frames: int, fps: float) -> np.ndarray:
    """Windows centred on the frame times k / fps. -> (n_frames, W) float64 (Hann-weighted)."""
    width = int(WINDOW_S * sr)
    padded = np.pad(audio.astype(np.float64), (width, width + int(sr / fps) * 2))
    starts = (np.arange(n_frames) * sr / fps).astype(int) + width - width // 2
    idx = starts[:, None] + np.arange(width)[None, :]
    return padded[idx] * np.hanning(width)[None, :]


def energy_db(audio: np.ndarray, sr: int, n_frames: int, fps: float) -> np.ndarray:
    """RMS level per frame in dB full scale. -> (n_frames,)"""
    frames = _frames(audio, sr, n_frames, fps)
    return 10.0 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)


def pitch_hz(audio: np.ndarray, sr: int, n_frames: int, fps: float) -> np.ndarray:
    """Fundamental frequency per frame in Hz, 0 where unvoiced. -> (n_frames,)"""
    frames = _frames(audio, sr, n_frames, fps)
    width = frames.shape[1]
    spectrum = np.fft.rfft(frames, n=2 * width, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :width]            # (T, W)
    lag_lo, lag_hi = int(sr / F0_RANGE_HZ[1]), min(int(sr / F0_RANGE_HZ[0]), width - 1)
    # Normalise by the overlap length so long lags are not penalised.
    norm = acf[:, lag_lo:lag_hi] / (acf[:, :1] + 1e-12) * (width / (width - np.arange(lag_lo, lag_hi)))
    best = np.argmax(norm, axis=1)
    peak = norm[np.arange(len(norm)), best]
    f0 = sr / (best + lag_lo)
    loud = energy_db(audio, sr, n_frames, fps) > -45.0
    return np.where((peak > VOICING_THRESHOLD) & loud, f0, 0.0)


def brow_curve(audio: np.ndarray, sr: int, n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Brow raise 0..1 per frame: rises with pitch above the speaker's median and with loudness,
    plus slow random drift and occasional brow flashes. -> (n_frames,)"""
    f0 = pitch_hz(audio, sr, n_frames, fps)
    level = energy_db(audio, sr, n_frames, fps)
    voiced = f0 > 0
    pitch_z = np.zeros(n_frames)
    if voiced.sum() >= 3:
        semitones = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
        pitch_z[voiced] = semitones / 3.0                                   # +3 semitones -> 1
        pitch_z = np.interp(np.arange(n_frames), np.where(voiced)[0], pitch_z[voiced])
    loudness = np.clip((level - level.max() + 30.0) / 30.0, 0.0, 1.0)       # 0 at -30 dB from peak
    drift = gaussian_filter1d(rng.standard_normal(n_frames), sigma=fps * 0.4) * 3.0
    raw = 0.35 * np.clip(pitch_z, 0, None) + 0.25 * loudness + 0.15 * drift
    for _ in range(rng.poisson(n_frames / fps / 4.0)):                      # ~ one flash per 4 s
        centre = rng.integers(n_frames)
        raw += 0.5 * np.exp(-0.5 * ((np.arange(n_frames) - centre) / (0.12 * fps)) ** 2)
    gain = rng.uniform(0.5, 1.0)
    return np.clip(gaussian_filter1d(raw, sigma=fps * 0.08) * gain, 0.0, 1.0)
