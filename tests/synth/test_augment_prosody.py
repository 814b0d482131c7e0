"""Audio augmentation and the prosody features that drive the brows."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from wav2sem.synth import augment as aug
from wav2sem.synth.prosody import brow_curve, energy_db, pitch_hz

SR = 16000


def voiced(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))).astype(np.float32)


def test_pitch_tracker_finds_f0_and_silence():
    audio = np.concatenate([voiced(140.0), np.zeros(SR // 2, np.float32), voiced(220.0)])
    f0 = pitch_hz(audio, SR, 75, 30.0)
    assert np.median(f0[5:25]) == pytest.approx(140, rel=0.03)
    assert np.all(f0[35:42] == 0)
    assert np.median(f0[50:70]) == pytest.approx(220, rel=0.03)
    level = energy_db(audio, SR, 75, 30.0)
    assert level[10] > level[38] + 40


def test_brows_follow_pitch():
    rng = np.random.default_rng(0)
    low_then_high = np.concatenate([voiced(110.0, 1.5), voiced(190.0, 1.5)])
    brows = np.mean([brow_curve(low_then_high, SR, 90, 30.0, np.random.default_rng(s)) for s in range(20)], axis=0)
    assert brows[55:85].mean() > brows[5:40].mean() + 0.1
    one = brow_curve(low_then_high, SR, 90, 30.0, rng)
    assert one.shape == (90,) and 0 <= one.min() and one.max() <= 1
    assert np.abs(np.diff(one)).max() < 0.15                                 # smooth


def test_speed_change_scales_duration():
    audio = voiced(150.0, 2.0)
    assert len(aug.change_speed(audio, SR, 1.1)) == pytest.approx(len(audio) / 1.1, abs=2)
    assert len(aug.change_speed(audio, SR, 0.9)) == pytest.approx(len(audio) / 0.9, abs=2)
    f0 = pitch_hz(aug.change_speed(audio, SR, 1.1), SR, 40, 30.0)
    assert np.median(f0[5:35]) == pytest.approx(165, rel=0.03)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (make system-deps)")
def test_pitch_shift_keeps_duration():
    audio = voiced(150.0, 1.5)
    shifted = aug.shift_pitch(audio, SR, 200.0)                              # two semitones up
    assert len(shifted) == len(audio)
    assert np.median(pitch_hz(shifted, SR, 40, 30.0)[5:35]) == pytest.approx(150 * 2 ** (2 / 12), rel=0.03)


def test_noise_reverb_gain():
    rng = np.random.default_rng(1)
    audio = voiced(150.0, 1.0)
    settings = aug.Augmentation(noise_kind="pink", noise_snr_db=20.0, gain_db=-6.0)
    out = aug.augment(audio, SR, settings, rng)
    noise = out / 10 ** (-6 / 20) - audio
    snr = 10 * np.log10(np.mean(audio ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)
    wet = aug.add_reverb(audio, SR, 0.4, 0.3, rng)
    assert len(wet) == len(audio) and not np.allclose(wet, audio)
    for kind in aug.NOISE_KINDS:
        n = aug.make_noise(kind, SR, SR, rng)
        assert np.sqrt(np.mean(n ** 2)) == pytest.approx(1.0, rel=1e-3)
    loud = aug.augment(audio * 3, SR, aug.Augmentation(gain_db=6.0), rng)
    assert np.abs(loud).max() <= 0.99 + 1e-6


def test_random_augmentation_is_mild_and_seeded():
    a = [aug.random_augmentation(np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    many = [aug.random_augmentation(np.random.default_rng(s)) for s in range(200)]
    assert all(0.9 <= m.speed <= 1.1 and abs(m.pitch_cents) <= 150 and m.reverb_rt60_s <= 0.5 for m in many)
    assert 0.3 < np.mean([m.noise_kind != "none" for m in many]) < 0.7
