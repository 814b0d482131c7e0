"""Half precision on the CPU: `load_model(..., dtype=torch.float16)` runs exactly the casts the
CUDA path runs (CUDA loads in float16), so CI without a GPU catches a dtype mismatch.

Feature extraction (STFT, mel filters, log, normalisation), positional encodings and ALiBi
biases stay float32 whatever the model dtype; the rest runs in float16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import speechlike


def relative_error(half: np.ndarray, full: np.ndarray) -> tuple[float, float]:
    scale = float(np.abs(full).max())
    assert scale > 1e-4, "the float32 output does not move: the comparison would mean nothing"
    return float(np.abs(half - full).max()) / scale, float(np.abs(half - full).mean()) / scale


@pytest.mark.parametrize("which", ["default", "tiny_bundle", "tiny_bundle_pair"])
def test_half_precision_generate_on_cpu_is_finite_and_close_to_float32(request, which):
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    bundle = DEFAULT_BUNDLE_DIR if which == "default" else request.getfixturevalue(which)
    wave = speechlike(3.0, seed=51)
    full = generate(load_model(bundle, "cpu"), wave, subject=1).offsets
    half_model = load_model(bundle, "cpu", dtype=torch.float16)
    assert half_model.dtype == torch.float16
    assert half_model.net.vertice_map_r.weight.dtype == torch.float16      # the bulk really is half
    half = generate(half_model, wave, subject=1).offsets
    assert half.dtype == np.float32 and half.shape == full.shape
    assert np.isfinite(half).all()
    worst, mean = relative_error(half, full)
    # measured (3 s and 25 s clips): worst 0.11-0.15% of the motion's size, mean 0.003% (default)
    # and 0.015% (tiny FaceFormer bundles); allowed: 1% worst, 0.1% mean
    assert worst < 0.01 and mean < 0.001, (worst, mean)


LOGMEL_BUNDLE = Path(__file__).resolve().parents[2] / "results" / "default_model" / "model_0.3"


@pytest.mark.parametrize("which", ["default (whisper-base)", "0.3 (log-mel)"])
def test_feature_extraction_stays_float32_in_a_half_model(which):
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR
    from wav2sem.loaded_model import load_model

    net = load_model(DEFAULT_BUNDLE_DIR if which.startswith("default") else LOGMEL_BUNDLE, "cpu",
                     dtype=torch.float16).net
    encoder = net.audio_encoder
    assert encoder.mel_filters.dtype == torch.float32 and encoder.window.dtype == torch.float32
    if hasattr(encoder, "input_norm"):                       # the log-mel encoder's LayerNorm
        assert encoder.input_norm.weight.dtype == torch.float32
    wave = torch.from_numpy(speechlike(1.0, seed=52)).unsqueeze(0)
    with torch.inference_mode():
        mel = encoder.log_mel(wave.half())
    assert mel.dtype == torch.float32 and torch.isfinite(mel).all()
    with torch.inference_mode():
        assert encoder(wave).last_hidden_state.dtype == torch.float16   # the rest runs in half


def test_faceformer_positional_table_stays_float32_in_a_half_model(tiny_bundle):
    from wav2sem.loaded_model import load_model

    net = load_model(tiny_bundle, "cpu", dtype=torch.float16).net
    assert net.PPE.pe.dtype == torch.float32
    assert net.transformer_decoder.layers[0].linear1.weight.dtype == torch.float16


def test_unsupported_dtype_is_refused(tiny_bundle):
    from wav2sem.errors import BAD_REQUEST, Wav2SemError
    from wav2sem.loaded_model import load_model

    with pytest.raises(Wav2SemError) as info:
        load_model(tiny_bundle, "cpu", dtype=torch.int8)
    assert info.value.code == BAD_REQUEST
