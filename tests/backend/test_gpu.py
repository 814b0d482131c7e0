"""CUDA tests: half-precision inference on the GPU against the CPU. Skipped without CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from w2s_helpers import ServerProcess, speechlike

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("which", ["tiny_bundle", "tiny_bundle_pair"])
def test_fp16_cuda_generate_close_to_cpu(request, which):
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    bundle = request.getfixturevalue(which)
    wave = speechlike(3.0, seed=41)
    cpu = generate(load_model(bundle, "cpu"), wave, subject=1).offsets
    gpu_model = load_model(bundle, "cuda")
    assert gpu_model.device.type == "cuda" and gpu_model.dtype == torch.float16
    gpu = generate(gpu_model, wave, subject=1).offsets
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    assert np.isfinite(gpu).all()
    scale = float(np.abs(cpu).max())
    assert scale > 1e-3
    # fp16 through an autoregressive loop: loose, relative to the motion's size
    assert float(np.abs(gpu - cpu).max()) < 0.1 * scale
    assert float(np.abs(gpu - cpu).mean()) < 0.02 * scale


def test_fp16_cuda_long_clip_is_finite(tiny_bundle):
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    result = generate(load_model(tiny_bundle, "cuda"), speechlike(45.0, seed=42))
    assert result.offsets.shape[0] == 1349
    assert np.isfinite(result.offsets).all()


def test_server_hello_lists_cuda_and_generates_on_it(tiny_bundle, speech_wav):
    srv = ServerProcess("--model", tiny_bundle)
    try:
        hello = srv.result("hello", timeout=120)
        assert any(d.startswith("cuda:0") for d in hello["devices"])
        data = srv.result("generate", {"audio": str(speech_wav), "device": "cuda"}, timeout=300)
        offsets = np.load(data["offsets"])
        assert np.isfinite(offsets).all() and offsets.shape[1:] == (300, 3)
    finally:
        srv.close()


def test_default_model_generates_on_cuda_close_to_cpu():
    """The embedded default (log-mel encoder): its mel filters stay float32 in the fp16 model."""
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    wave = speechlike(3.0, seed=43)
    cpu = generate(load_model(DEFAULT_BUNDLE_DIR, "cpu"), wave).offsets
    gpu_model = load_model(DEFAULT_BUNDLE_DIR, "cuda")
    assert gpu_model.dtype == torch.float16 and gpu_model.net.audio_encoder.mel_filters.dtype == torch.float32
    gpu = generate(gpu_model, wave).offsets
    assert np.isfinite(gpu).all() and gpu.shape == cpu.shape
    scale = float(np.abs(cpu).max())
    assert float(np.abs(gpu - cpu).max()) < 0.02 * scale
