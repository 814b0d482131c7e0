"""Factored output: a vertex model whose decoder ends in a linear map sends (T, R) coefficients
of an (R, V, 3) basis instead of dense (T, V, 3) offsets (inference.py, serve `factors`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from w2s_helpers import ServerProcess, speechlike

# coefficients @ basis against the dense offsets, relative to their peak: the same float32
# products in another order (float32: ~1e-7; half precision: the output map's fp16 rounding)
EXACT_RTOL = 1e-5
HALF_RTOL = 2e-3


def reconstruct(coefficients: np.ndarray, basis: np.ndarray) -> np.ndarray:
    r, v, _ = basis.shape
    return (coefficients.astype(np.float64) @ basis.reshape(r, -1)).reshape(len(coefficients), v, 3)


def assert_factors_match(model, clip, rtol=EXACT_RTOL):
    from wav2sem.inference import generate

    dense = generate(model, clip)
    factored = generate(model, clip, factors=True, offsets=False)
    assert dense.coefficients is None                        # only when asked
    assert factored.offsets is None and factored.coefficients.dtype == np.float32
    basis = model.output_basis()
    assert basis.shape == (model.net.config.feature_dim + 1, model.vertex_count, 3)
    assert factored.coefficients.shape == (dense.frames, len(basis))
    np.testing.assert_array_equal(factored.coefficients[:, -1], 1.0)          # the bias row's coefficient
    peak = np.abs(dense.offsets).max()
    assert peak > 1e-3                                       # the tiny model really moves the face
    np.testing.assert_allclose(reconstruct(factored.coefficients, basis), dense.offsets, atol=rtol * peak, rtol=0)
    return dense, factored


@pytest.fixture(scope="module")
def clip():
    return speechlike(2.0, seed=5)


def test_faceformer_factors_equal_the_dense_offsets(tiny_model, clip):
    from wav2sem.inference import generate

    assert tiny_model.factored
    dense, factored = assert_factors_match(tiny_model, clip)
    both = generate(tiny_model, clip, factors=True)          # offsets too: the same array as without factors
    np.testing.assert_array_equal(both.offsets, dense.offsets)
    np.testing.assert_array_equal(both.coefficients, factored.coefficients)


def test_pair_alignment_factors(tiny_model_pair, clip):
    assert_factors_match(tiny_model_pair, clip)


def test_direct_decoder_factors(tmp_path, clip):
    from wav2sem.bundle import BundleConfig, build_model, save_bundle
    from wav2sem.loaded_model import load_model
    from wav2sem.models.faceformer import DecoderConfig
    from wav2sem.testing import grid_template

    encoder = {"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 16, "gru_layers": 1}}
    config = BundleConfig(name="direct-random", arch="direct", fps=30.0, subjects=("s0",), encoder=encoder,
                          semantic=None, decoder=DecoderConfig(vertex_count=200, n_subjects=1, feature_dim=16))
    torch.manual_seed(3)
    net = build_model(config)
    torch.nn.init.normal_(net.vertice_map_r.weight, std=0.05)
    torch.nn.init.normal_(net.vertice_map_r.bias, std=0.01)
    model = load_model(save_bundle(tmp_path / "direct", config, net, grid_template(200)), "cpu")
    assert model.factored
    assert_factors_match(model, clip)


def test_half_precision_factors_stay_close(tiny_bundle, clip):
    from wav2sem.loaded_model import load_model

    assert_factors_match(load_model(tiny_bundle, "cpu", dtype=torch.float16), clip, HALF_RTOL)


def test_model_without_factors_keeps_the_dense_path(tiny_bundle, clip):
    """A decoder without `decode_features` (e.g. one whose output goes through a nonlinear
    decoder) is not factored: factors=True gives the dense offsets only."""
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.models.faceformer import FaceFormer

    class NoFactors(FaceFormer):
        decode_features = None

    model = load_model(tiny_bundle, "cpu")
    model.net.__class__ = NoFactors
    assert not model.factored
    with pytest.raises(ValueError, match="no factored output"):
        model.output_basis()
    result = generate(model, clip, factors=True, offsets=False)
    assert result.coefficients is None
    assert result.offsets.shape == (result.frames, model.vertex_count, 3) and np.abs(result.offsets).max() > 1e-3


def test_a_subclass_with_its_own_decode_is_not_factored(tiny_bundle):
    """A decoder built on FaceFormer that redefines `decode` (a nonlinear output, say) does not
    inherit factors that are no longer its output's; restating `decode_features` opts back in."""
    from wav2sem.loaded_model import load_model
    from wav2sem.models.faceformer import FaceFormer

    class OwnDecode(FaceFormer):
        def decode(self, memory, style, n_frames, on_frame=None):
            return torch.tanh(super().decode(memory, style, n_frames, on_frame))

    class OwnBoth(OwnDecode):           # linear again, and says so
        decode = FaceFormer.decode
        decode_features = FaceFormer.decode_features

    model = load_model(tiny_bundle, "cpu")
    model.net.__class__ = OwnDecode
    assert not model.factored
    model.net.__class__ = OwnBoth
    assert model.factored


def test_blendshape_model_is_not_factored(tmp_path, clip):
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.testing import write_tiny_bundle

    model = load_model(write_tiny_bundle(tmp_path / "arkit", blendshapes=4, seed=4), "cpu")
    assert not model.factored
    result = generate(model, clip, factors=True, offsets=False)
    assert result.coefficients is None and result.offsets is None and result.weights.shape == (result.frames, 4)


def test_silent_audio_gives_zero_coefficients(tiny_model):
    from wav2sem.inference import generate

    result = generate(tiny_model, np.zeros(16000, np.float32), factors=True, offsets=False)
    assert result.offsets is None and result.warnings
    assert result.coefficients.shape == (result.frames, len(tiny_model.output_basis()))
    assert not result.coefficients.any()                    # the rest shape, bias row included


def test_non_finite_coefficients_are_refused(tiny_model, clip, monkeypatch):
    from wav2sem.errors import MODEL_INVALID, Wav2SemError
    from wav2sem.inference import generate

    net = tiny_model.net
    monkeypatch.setattr(net, "decode_features", lambda *args, **kwargs: torch.full((1, 60, 16), float("nan")))
    with pytest.raises(Wav2SemError) as caught:
        generate(tiny_model, clip, factors=True, offsets=False)
    assert caught.value.code == MODEL_INVALID


# ----- the protocol ---------------------------------------------------------------------------
def test_server_sends_the_basis_and_coefficients(tiny_bundle, speech_wav, tmp_path):
    srv = ServerProcess("--model", tiny_bundle, "--device", "cpu")
    try:
        info = srv.result("model_info", {}, timeout=60)
        basis = np.load(info["output_basis"])
        assert basis.shape == (17, 300, 3) and basis.dtype == np.float32
        dense = srv.result("generate", {"audio": str(speech_wav)}, timeout=120)
        assert dense["coefficients"] is None                  # not asked: exactly as before
        out = tmp_path / "c.npy"
        data = srv.result("generate", {"audio": str(speech_wav), "factors": True, "offsets": False,
                                       "coefficients_output": str(out), "output": str(tmp_path / "o.npy")},
                          timeout=120)
        assert data["offsets"] is None and not (tmp_path / "o.npy").exists()
        assert data["coefficients"] == str(out) and data["weights"] is None
        coefficients = np.load(out)
        assert coefficients.shape == (data["frames"], 17)
        offsets = np.load(dense["offsets"])
        np.testing.assert_allclose(reconstruct(coefficients, basis), offsets, atol=EXACT_RTOL * np.abs(offsets).max())
        _, error = srv.request("generate", {"audio": str(speech_wav), "factors": "yes"})
        assert error["type"] == "error" and error["error"]["code"] == "BAD_REQUEST"
        _, same = srv.request("generate", {"audio": str(speech_wav), "factors": True, "output": str(out),
                                           "coefficients_output": str(out)})
        assert same["type"] == "error" and "must be different files" in same["error"]["message"]
    finally:
        srv.close()
    assert srv.bad_lines == []
