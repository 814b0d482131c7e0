"""The key/value-cached decoder against the reference full-prefix loop, and the reference
constructions (temporal bias, periodic positional encoding) written independently here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wav2sem.models.faceformer import (ALIGN_INTERPOLATE, ALIGN_PAIR, DecoderConfig, FaceFormer, alibi_slopes,
                                       alignment_mask, temporal_bias)
from wav2sem.testing import tiny_encoder_spec

VERTICES = 12


def make_model(alignment: str, period: int, n_layers: int, feature_dim: int = 8, seed: int = 0) -> FaceFormer:
    torch.manual_seed(seed)
    config = DecoderConfig(vertex_count=VERTICES, n_subjects=3, feature_dim=feature_dim, period=period,
                           n_layers=n_layers, alignment=alignment)
    model = FaceFormer(config, tiny_encoder_spec())
    # the output layer is zero-initialised as in the reference: give it weights so the
    # autoregressive feedback (vertice_map(previous output)) actually carries information
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.5)
    torch.nn.init.normal_(model.vertice_map_r.bias, std=0.1)
    return model.eval()


def memory_and_style(model: FaceFormer, n_frames: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    d = model.config.feature_dim
    n_memory = 2 * n_frames if model.config.alignment == ALIGN_PAIR else n_frames
    memory = torch.randn(1, n_memory, d, generator=g)
    style = model.style_embedding(torch.tensor([0.0, 1.0, 0.0]))
    return memory, style


CASES = [
    # (alignment, period, layers, frames)
    (ALIGN_INTERPOLATE, 30, 1, 1),
    (ALIGN_INTERPOLATE, 30, 1, 45),
    (ALIGN_INTERPOLATE, 30, 2, 75),
    (ALIGN_PAIR, 25, 1, 2),
    (ALIGN_PAIR, 25, 1, 60),
    (ALIGN_PAIR, 25, 2, 90),
]


@pytest.mark.parametrize("alignment,period,layers,frames", CASES)
def test_cached_decode_equals_reference_loop(alignment, period, layers, frames):
    model = make_model(alignment, period, layers)
    memory, style = memory_and_style(model, frames)
    with torch.inference_mode():
        fast = model.decode(memory, style, frames)
        slow = model.decode_reference(memory, style, frames)
    assert fast.shape == slow.shape == (1, frames, VERTICES * 3)
    assert torch.isfinite(fast).all()
    # outputs are not trivially zero / constant, so the comparison means something
    assert fast.abs().mean() > 0.05
    if frames > 1:
        assert (fast[0, 1:] - fast[0, :-1]).abs().max() > 1e-3
    per_frame = (fast - slow).abs().amax(dim=2)[0]
    assert float(per_frame.max()) < 1e-4, f"worst frame {int(per_frame.argmax())}: {float(per_frame.max())}"


def test_cached_decode_equals_reference_loop_600_frames():
    """The full reference length (600 frames, 20 s at 30 fps), where the reference PPE
    table and bias were built for; every frame within 1e-4."""
    model = make_model(ALIGN_INTERPOLATE, 30, 1, feature_dim=8, seed=3)
    memory, style = memory_and_style(model, 600, seed=4)
    with torch.inference_mode():
        fast = model.decode(memory, style, 600)
        slow = model.decode_reference(memory, style, 600)
    per_frame = (fast - slow).abs().amax(dim=2)[0]
    assert per_frame.shape == (600,)
    assert float(per_frame.max()) < 1e-4, f"worst frame {int(per_frame.argmax())}: {float(per_frame.max())}"
    assert fast.abs().mean() > 0.05


def test_decode_on_frame_callback_sees_every_frame_and_can_stop():
    model = make_model(ALIGN_INTERPOLATE, 30, 1)
    memory, style = memory_and_style(model, 20)
    seen = []
    with torch.inference_mode():
        model.decode(memory, style, 20, on_frame=seen.append)
    assert seen == list(range(20))

    class Stop(Exception):
        pass

    def stop_at_5(t):
        if t == 5:
            raise Stop

    with pytest.raises(Stop), torch.inference_mode():
        model.decode(memory, style, 20, on_frame=stop_at_5)


def test_decode_past_reference_length_is_finite_and_periodic_ppe():
    model = make_model(ALIGN_INTERPOLATE, 30, 1, seed=5)
    memory, style = memory_and_style(model, 700, seed=6)
    with torch.inference_mode():
        out = model.decode(memory, style, 700)
    assert out.shape == (1, 700, VERTICES * 3)
    assert torch.isfinite(out).all()
    assert out[0, 600:].abs().mean() > 0.01          # still moving after the reference limit


def reference_bias(n_heads: int, period: int, length: int) -> torch.Tensor:
    """Independent construction from REFERENCE.md: slopes 1/4, 1/16, 1/64, 1/256 for 4 heads;
    value -floor((i - j) / period) * slope for j <= i, -inf above the diagonal."""
    assert n_heads == 4
    slopes = [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    out = np.empty((n_heads, length, length), dtype=np.float64)
    for h, s in enumerate(slopes):
        for i in range(length):
            for j in range(length):
                out[h, i, j] = -math.floor((i - j) / period) * s if j <= i else -np.inf
    return torch.from_numpy(out).float()


@pytest.mark.parametrize("period,length", [(30, 95), (25, 80), (3, 10)])
def test_temporal_bias_matches_reference_construction(period, length):
    assert alibi_slopes(4) == pytest.approx([1 / 4, 1 / 16, 1 / 64, 1 / 256])
    ours = temporal_bias(4, period, torch.arange(length), length)
    expected = reference_bias(4, period, length)
    assert ours.shape == (4, length, length)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(ours[finite], expected[finite], atol=1e-7)
    # spot values: same period block -> 0; one period back -> -slope
    assert float(ours[0, period, 0]) == pytest.approx(-0.25)
    assert float(ours[3, period - 1, 0]) == 0.0
    assert float(ours[1, 2 * period, 0]) == pytest.approx(-2 / 16)


def test_temporal_bias_rows_for_arbitrary_query_positions():
    """A row for query 700 (past the reference's 600 x 600 table) continues the formula."""
    row = temporal_bias(4, 30, torch.tensor([700]), 701)[:, 0]
    j = torch.arange(701).float()
    expected = -torch.floor((700 - j) / 30).unsqueeze(0) * torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256]).view(4, 1)
    assert torch.allclose(row, expected)


@pytest.mark.parametrize("period,d", [(30, 64), (25, 128), (30, 8)])
def test_ppe_buffer_shape_and_values(period, d):
    model = FaceFormer(DecoderConfig(vertex_count=4, n_subjects=2, feature_dim=d, period=period), tiny_encoder_spec())
    pe = model.PPE.pe
    assert tuple(pe.shape) == (1, period * (600 // period + 1), d)
    assert "PPE.pe" in model.state_dict()
    # a sinusoid table of length `period`, repeated
    pos = np.arange(period)[:, None]
    div = np.exp(np.arange(0, d, 2) * (-np.log(10000.0) / d))
    table = np.zeros((period, d))
    table[:, 0::2] = np.sin(pos * div)
    table[:, 1::2] = np.cos(pos * div)
    assert np.allclose(pe[0, :period].numpy(), table, atol=1e-5)
    assert torch.equal(pe[0, period : 2 * period], pe[0, :period])
    assert torch.equal(pe[0, -period:], pe[0, :period])


def test_alignment_masks():
    m = alignment_mask(4, 4, ALIGN_INTERPOLATE)
    assert torch.equal(~m, torch.eye(4, dtype=torch.bool))
    p = alignment_mask(3, 6, ALIGN_PAIR)
    allowed = torch.zeros(3, 6, dtype=torch.bool)
    for i in range(3):
        allowed[i, 2 * i] = allowed[i, 2 * i + 1] = True
    assert torch.equal(~p, allowed)


def test_cached_decode_bias_in_half_precision_is_the_float32_bias_past_frame_2048(monkeypatch):
    """fp16 cannot count past 2048 exactly: the cached decoder's self-attention bias at
    t = 3000 must still be the float32 temporal_bias row (cast to fp16 only at the end).
    The cached decoder adds the bias in torch.baddbmm (scores = bias + q k^T / sqrt(hd))."""
    model = make_model(ALIGN_INTERPOLATE, 30, 1).half()
    frames = 3001
    memory, style = memory_and_style(model, frames)
    masks = {}
    real_baddbmm = torch.baddbmm

    def spy(bias, q, k, **kwargs):
        masks[k.shape[-1] - 1] = bias
        return real_baddbmm(bias, q, k, **kwargs)

    monkeypatch.setattr(torch, "baddbmm", spy)
    with torch.inference_mode():
        out = model.decode(memory.half(), style.half(), frames)
    assert torch.isfinite(out).all()
    assert sorted(masks) == list(range(frames))          # one self-attention per frame
    used = masks[3000]
    assert used.dtype == torch.float16
    expected = temporal_bias(4, 30, torch.tensor([3000]), 3001)          # float32, (H, 1, 3001)
    assert torch.equal(used.reshape(4, 3001), expected.reshape(4, 3001).half())
    assert torch.equal(masks[5].reshape(4, 6), temporal_bias(4, 30, torch.tensor([5]), 6).reshape(4, 6).half())


@pytest.mark.parametrize("alignment", [ALIGN_INTERPOLATE, ALIGN_PAIR])
def test_cached_decode_base_size_equals_reference_loop(alignment):
    """The base-size VOCASET decoder (d 64, 4 heads, 1 layer, ff 128, 5023 vertices): the
    fused feedback matrix (vertice_map @ vertice_map_r, a sum over 15,069 products) keeps
    every frame within 1e-4 of the reference loop."""
    torch.manual_seed(7)
    config = DecoderConfig(vertex_count=5023, n_subjects=8, feature_dim=64, period=30, n_heads=4, n_layers=1,
                           alignment=alignment)
    model = FaceFormer(config, tiny_encoder_spec()).eval()
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.02)
    torch.nn.init.normal_(model.vertice_map_r.bias, std=0.002)
    frames = 40
    g = torch.Generator().manual_seed(8)
    memory = torch.randn(1, frames * (2 if alignment == ALIGN_PAIR else 1), 64, generator=g)
    style = model.style_embedding(torch.eye(8)[2])
    with torch.inference_mode():
        fast = model.decode(memory, style, frames)
        slow = model.decode_reference(memory, style, frames)
    assert fast.shape == slow.shape == (1, frames, 5023 * 3)
    assert fast.abs().mean() > 0.02 and (fast[0, 1:] - fast[0, :-1]).abs().max() > 1e-3
    per_frame = (fast - slow).abs().amax(dim=2)[0]
    assert float(per_frame.max()) < 1e-4, f"worst frame {int(per_frame.argmax())}: {float(per_frame.max())}"


@pytest.mark.parametrize("alignment", [ALIGN_INTERPOLATE, ALIGN_PAIR])
def test_cached_decode_in_half_precision_is_as_close_as_the_reference_loop_in_half(alignment):
    """fp16 (as on CUDA; the fused feedback matrix is formed in float32, then cast): the cached
    decoder's distance to the float32 reference is of the size of the fp16 reference loop's own."""
    model = make_model(alignment, 25 if alignment == ALIGN_PAIR else 30, 1, feature_dim=16, seed=9)
    frames = 50
    memory, style = memory_and_style(model, frames, seed=10)
    with torch.inference_mode():
        full = model.decode_reference(memory, style, frames)
        full_cached = model.decode(memory, style, frames)
        model.to_precision(torch.float16)
        half_cached = model.decode(memory.half(), style.half(), frames)
        half_reference = model.decode_reference(memory.half(), style.half(), frames)
    assert half_cached.dtype == torch.float16 and torch.isfinite(half_cached).all()
    assert float((full_cached - full).abs().max()) < 1e-4
    scale = float(full.abs().max())
    cached_error = float((half_cached.float() - full).abs().max()) / scale
    reference_error = float((half_reference.float() - full).abs().max()) / scale
    assert cached_error < 0.01, cached_error
    assert cached_error < 3 * reference_error + 1e-3, (cached_error, reference_error)


def test_decode_refuses_a_memory_too_short_for_the_frames():
    model = make_model(ALIGN_PAIR, 25, 1)
    memory, style = memory_and_style(model, 10)
    with pytest.raises(ValueError, match="memory positions"), torch.inference_mode():
        model.decode(memory[:, :19], style, 10)
    with torch.inference_mode():             # longer memory: the extra positions are not used
        longer = model.decode(torch.cat([memory, memory[:, :3]], 1), style, 10)
        assert torch.equal(longer, model.decode(memory, style, 10))
        assert model.decode(memory, style, 0).shape == (1, 0, VERTICES * 3)


def test_decode_keeps_autograd_off_and_the_model_unchanged():
    model = make_model(ALIGN_INTERPOLATE, 30, 1)
    memory, style = memory_and_style(model, 12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model.decode(memory, style, 12)                 # called without no_grad / inference_mode
    assert not out.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
