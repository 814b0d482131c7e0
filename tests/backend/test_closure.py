"""Lip closure: the gap metric, its use in eval and validation, the training pieces aimed at it
(cosine schedule, audio perturbation, the utterance-level log-mel norm) and the real-speech
word report."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wav2sem import metrics
from wav2sem.synth.timing import PhoneSegment


def test_lip_gap_is_the_height_of_the_upper_lip_centre_above_the_lower():
    rest = np.zeros((4, 3), np.float32)
    rest[1] = (0.0, 0.01, 0.0)                       # upper lip 10 mm above the lower (vertex 2)
    offsets = np.zeros((4, 4, 3), np.float32)
    offsets[1, 1, 1] = -0.01                         # frame 1: closed
    offsets[2, 2, 2] = 0.003                         # frame 2: lower lip 3 mm in front: still 10 mm open
    offsets[3, 2, 1] = 0.012                         # frame 3: lower lip pressed 2 mm past the upper
    gap = metrics.lip_gap(offsets, rest, upper=1, lower=2)
    np.testing.assert_allclose(gap, [0.01, 0.0, 0.01, -0.002], atol=1e-7)


def test_phone_gap_extrema_look_one_frame_either_side_of_the_phone():
    gap = np.array([5, 5, 5, 4, 0.2, 5, 9, 12, 9, 5], float)
    phones = [PhoneSegment("m", "M", 3 / 30, 4 / 30), PhoneSegment("aa", "AA", 6 / 30, 8 / 30),
              PhoneSegment("s", "S", 0.0, 0.05)]
    assert metrics.phone_gap_extrema(gap, phones, 30.0, metrics.BILABIALS, use_min=True) == [0.2]
    assert metrics.phone_gap_extrema(gap, phones, 30.0, metrics.BILABIALS, use_min=True, slack=0) == [4.0]
    assert metrics.phone_gap_extrema(gap, phones, 30.0, metrics.OPEN_VOWELS, use_min=False) == [12.0]


def test_cosine_schedule_runs_from_lr_down_to_the_floor():
    from wav2sem.train.animation import learning_rate

    recipe = {"lr": 1e-3, "epochs": 5, "lr_schedule": "cosine", "lr_min_ratio": 0.1}
    rates = [learning_rate(recipe, e) for e in range(5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(type(r) is float for r in rates)      # goes into checkpoints read with weights_only=True
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert learning_rate({"lr": 2e-3, "epochs": 5}, 3) == 2e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate({**recipe, "lr_schedule": "step"}, 0)


def test_perturbation_adds_a_noise_floor_and_is_off_without_settings():
    from wav2sem.train.augmentation import perturber

    assert perturber(None, np.random.default_rng(0)) is None
    tone = np.zeros(16000, np.float32)
    tone[8000:] = np.sin(np.arange(8000) * 0.2)       # half a second of silence, then sound
    perturb = perturber({"noise_prob": 1.0, "snr_db": [20, 20], "tilt_prob": 0.0}, np.random.default_rng(0))
    out = perturb(tone)
    assert out.shape == tone.shape and out.dtype == np.float32
    silence_rms = np.sqrt(np.mean(out[:8000] ** 2))
    assert silence_rms > 0 and 20 * np.log10(np.sqrt(np.mean(tone ** 2)) / silence_rms) == pytest.approx(20, abs=0.5)
    assert not np.array_equal(perturb(tone), out)    # fresh noise each call


def test_utterance_norm_keeps_loudness_that_the_frame_norm_removes():
    from wav2sem.models.logmel import LogMelConfig, LogMelEncoder

    rng = np.random.default_rng(0)
    burst = rng.standard_normal(1600).astype(np.float32)
    clip = torch.from_numpy(np.concatenate([burst, 0.01 * burst]))[None]    # the same sound, 40 dB quieter
    for norm, same in (("frame", True), ("utterance", False), ("frame+energy", False)):
        with torch.no_grad():
            mel = LogMelEncoder(LogMelConfig(n_mels=40, input_norm=norm)).log_mel(clip)[0]
        loud, quiet = mel[3:7].mean(0), mel[13:17].mean(0)
        assert torch.allclose(loud, quiet, atol=1e-3) == same, norm
        if norm == "frame+energy":      # the spectral shape as "frame", plus a loudness channel 40 dB apart
            assert mel.shape[1] == 41 and torch.allclose(loud[:40], quiet[:40], atol=1e-3)
            assert float(loud[40] - quiet[40]) == pytest.approx(4.0 / (8.0 / 2), abs=0.05)
    with pytest.raises(ValueError, match="input_norm"):
        LogMelEncoder(LogMelConfig(input_norm="clip"))


def test_real_speech_word_analysis():
    from wav2sem.train.real_speech import analyse, bilabial_positions, interior_dip, word_of

    assert word_of(Path("pizzeria_salami.ogg"), drop_prefix=True) == "salami"
    assert word_of(Path("Front_Left.wav"), drop_prefix=False) == "front left"
    assert bilabial_positions("salami") == [4] and bilabial_positions("sphynx") == [] and bilabial_positions("ball") == [0]
    speech = np.ones(9, bool)
    assert interior_dip(np.array([1, 8, 9, 4, 0.5, 3, 10, 6, 1.0]), speech) == 0.5
    assert interior_dip(np.array([1, 2, 10, 2, 1.0]), speech) is None             # one open peak: no interior
    audio = np.zeros(16000, np.float32)
    audio[4000:12000] = np.sin(np.arange(8000) * 0.3)
    result = analyse("salami", np.array([1, 1, 1, 8, 9, 0.4, 10, 1, 1, 1.0]), audio)
    assert result.medial_bilabial and result.dip_mm == pytest.approx(0.4) and result.silence_mm == 1.0


@pytest.mark.slow
def test_real_speech_report_on_spoken_words(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    words = tmp_path / "words"
    words.mkdir()
    for word in ("salami", "oregano", "hat"):
        subprocess.run(["espeak-ng", "-w", str(words / f"food_{word}.wav"), word], check=True, timeout=60)
    (words / "notes.txt").write_text("not audio")
    out = tmp_path / "report" / "words"
    done = subprocess.run([sys.executable, "-m", "wav2sem.train.real_speech", str(words), "--drop-prefix", "--out", str(out),
                           "--mouths", "salami,hat"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert [w["word"] for w in report["words"]] == ["hat", "oregano", "salami"]
    assert report["summary"]["words"] == 3 and report["summary"]["medial_bilabial_words"] <= 1
    assert all(w["widest_mm"] > w["silence_mm"] for w in report["words"])    # the default model opens on speech
    assert out.with_name(out.name + ".png").stat().st_size > 10_000
    assert (out.parent / "words_mouths.png").stat().st_size > 10_000
    empty = subprocess.run([sys.executable, "-m", "wav2sem.train.real_speech", str(tmp_path / "report"), "--out",
                            str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "no .wav/.ogg/.flac files" in empty.stderr
