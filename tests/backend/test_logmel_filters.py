"""The log-mel encoder's own mel filterbank equals transformers' (Slaney scale and norm), so
models trained with the old one load and run unchanged, and transformers is not imported."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wav2sem.models.logmel import N_FFT, SAMPLE_RATE, slaney_mel_filters


@pytest.mark.parametrize("n_mels", [40, 80, 128])
def test_slaney_filters_equal_transformers(n_mels):
    from transformers.audio_utils import mel_filter_bank

    theirs = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=50.0,
                             max_frequency=7600.0, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    ours = slaney_mel_filters(N_FFT // 2 + 1, n_mels, 50.0, 7600.0, SAMPLE_RATE)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_loading_and_running_the_default_model_imports_no_transformers():
    code = ("import sys, numpy as np; from wav2sem.inference import generate; from wav2sem.loaded_model import load_model; "
            "from wav2sem.bundle import DEFAULT_BUNDLE_DIR; m = load_model(DEFAULT_BUNDLE_DIR, 'cpu'); "
            "generate(m, np.random.default_rng(0).normal(size=16000).astype('float32') * 0.1, offsets=False); "
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
