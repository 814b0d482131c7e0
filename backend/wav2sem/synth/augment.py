"""Audio augmentation: speed and pitch changes, mild reverberation, background noise, gain.

Speed changes resample (soxr) and so also move pitch, like Kaldi's speed perturbation;
callers scale the phone timings by 1 / speed. Pitch shifts keep the duration (sox `pitch`
effect). Reverb convolves (scipy) with a synthetic exponentially decaying room response.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass

import numpy as np
import soxr
from scipy.signal import fftconvolve

from ..errors import Wav2SemError
from .tts import TTS_UNAVAILABLE

NOISE_KINDS = ("white", "pink", "brown", "hum")


@dataclass(frozen=True)
class Augmentation:
    speed: float = 1.0                 # > 1 is faster
    pitch_cents: float = 0.0
    gain_db: float = 0.0
    reverb_rt60_s: float = 0.0         # 0: dry
    reverb_wet: float = 0.0            # 0..1 level of the reverberant part
    noise_kind: str = "none"
    noise_snr_db: float = 60.0

    def to_dict(self) -> dict:
        return asdict(self)


def random_augmentation(rng: np.random.Generator) -> Augmentation:
    """Draw mild augmentation settings (each effect on only some of the clips)."""
    return Augmentation(
        speed=float(rng.uniform(0.92, 1.08)) if rng.random() < 0.5 else 1.0,
        pitch_cents=float(rng.uniform(-150, 150)) if rng.random() < 0.3 else 0.0,
        gain_db=float(rng.uniform(-12, 3)),
        reverb_rt60_s=float(rng.uniform(0.15, 0.5)) if rng.random() < 0.3 else 0.0,
        reverb_wet=float(rng.uniform(0.1, 0.35)),
        noise_kind=str(rng.choice(NOISE_KINDS)) if rng.random() < 0.5 else "none",
        noise_snr_db=float(rng.uniform(15, 40)),
    )


def change_speed(audio: np.ndarray, sr: int, speed: float) -> np.ndarray:
    """Play `speed` times faster (duration / speed, pitch * speed). -> (N / speed,) float32"""
    if abs(speed - 1.0) < 1e-6:
        return audio
    return soxr.resample(audio, sr * speed, sr, quality="HQ").astype(np.float32)


def shift_pitch(audio: np.ndarray, sr: int, cents: float) -> np.ndarray:
    """Shift pitch by `cents`, keeping the duration (sox `pitch` effect). -> (N,) float32"""
    if abs(cents) < 1.0:
        return audio
    if shutil.which("sox") is None:
        raise Wav2SemError(TTS_UNAVAILABLE, "sox is not installed; install the Debian package sox (apt-get install sox).")
    fmt = ["-t", "raw", "-r", str(sr), "-e", "floating-point", "-b", "32", "-c", "1"]
    out = subprocess.run(["sox", *fmt, "-", *fmt, "-", "pitch", f"{cents:.1f}"], input=audio.astype("<f4").tobytes(),
                         capture_output=True, check=True, timeout=120).stdout
    shifted = np.frombuffer(out, dtype="<f4")
    fixed = np.zeros(len(audio), dtype=np.float32)
    fixed[: min(len(audio), len(shifted))] = shifted[: len(audio)]
    return fixed


def add_reverb(audio: np.ndarray, sr: int, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Mix in a synthetic room response (decaying noise, 60 dB down after rt60_s). -> (N,)"""
    if rt60_s <= 0 or wet <= 0:
        return audio
    n = int(rt60_s * sr)
    t = np.arange(n) / sr
    response = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)        # ln(1000) = 6.9078
    response[: int(0.003 * sr)] = 0.0                                       # pre-delay 3 ms
    response /= np.sqrt(np.sum(response ** 2)) + 1e-12
    tail = fftconvolve(audio, response)[: len(audio)]
    return ((1 - wet) * audio + wet * tail).astype(np.float32)


def make_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of a kind in NOISE_KINDS. -> (n,)"""
    if kind == "hum":
        base = rng.choice([50.0, 60.0])
        t = np.arange(n) / sr
        noise = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3, 5))
        noise = noise + 0.2 * rng.standard_normal(n)
    else:
        white = rng.standard_normal(n)
        if kind == "white":
            noise = white
        else:  # shape the spectrum: pink 1/f power, brown 1/f^2
            spectrum = np.fft.rfft(white)
            f = np.fft.rfftfreq(n, 1.0 / sr)
            f[0] = f[1] if n > 1 else 1.0
            spectrum /= np.sqrt(f) if kind == "pink" else f
            noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def augment(audio: np.ndarray, sr: int, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Apply pitch, reverb, noise and gain (not speed: that changes timings, see change_speed). -> (N,) float32"""
    out = shift_pitch(audio.astype(np.float32), sr, aug.pitch_cents)
    out = add_reverb(out, sr, aug.reverb_rt60_s, aug.reverb_wet, rng)
    if aug.noise_kind != "none":
        speech_rms = np.sqrt(np.mean(out ** 2)) + 1e-9
        out = out + make_noise(aug.noise_kind, len(out), sr, rng) * speech_rms * 10 ** (-aug.noise_snr_db / 20)
    out = out * 10 ** (aug.gain_db / 20)
    peak = np.max(np.abs(out)) if len(out) else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)
