"""One frame at a time through a post-LN `nn.TransformerDecoder`, keys and values cached.

FaceFormer and CodeTalker (stage 2) share this decoder: the same torch layers, the same
periodic ALiBi self-attention bias and the same cross-attention alignment. They differ only
in what is fed back: FaceFormer's next input is an affine map of the layer output (fused,
faceformer.py), CodeTalker's goes through its quantiser and motion decoder (codetalker.py).
So the caller owns the loop and this class runs one frame:

    layers = CachedDecoderLayers(transformer_decoder, memory, n_frames, config)
    for t in range(n_frames):
        x = layers.step(t, token)          # (1, d) in, (1, d) out

Per frame only (1, d) rows are computed. Everything that does not depend on the frame's input
is prepared in the constructor: the bias rows (slices of one (H, T) table), each layer's
cross-attention keys and values of the whole memory, and, with 'interpolate' alignment (one
memory position per frame, attention weight exactly 1), the whole cross-attention output.
Keys are cached transposed (H, hd, T), values (H, T, hd), so attention is two batched products
on cache slices. Equal to the reference full-prefix loop up to rounding because the decoder is
causal and post-LN (tests/backend/test_decoder.py: 1e-4 on every frame).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .talker import ALIGN_PAIR, DecoderConfig

REFERENCE_MAX_FRAMES = 600         # the references build their PPE table for 600 frames


def alibi_slopes(n_heads: int) -> list[float]:
    """Per-head slopes of the ALiBi bias (geometric; 4 heads -> 1/4, 1/16, 1/64, 1/256)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def temporal_bias(n_heads: int, period: int, query_positions: torch.Tensor, key_count: int) -> torch.Tensor:
    """Causal periodic ALiBi bias, shape (H, Q, K): -floor((i - j) / period) * slope, -inf for j > i.

    Computed for any length (the references precompute a 600 x 600 table).
    """
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32, device=query_positions.device)
    i = query_positions.view(-1, 1).float()                               # (Q, 1)
    j = torch.arange(key_count, device=query_positions.device).view(1, -1).float()  # (1, K)
    distance = torch.floor((i - j) / period)                               # (Q, K)
    bias = -distance.unsqueeze(0) * slopes.view(-1, 1, 1)                  # (H, Q, K)
    return bias.masked_fill((j > i).unsqueeze(0), float("-inf"))


def alignment_mask(n_frames: int, n_memory: int, alignment: str, device=None) -> torch.Tensor:
    """Bool (T, S) mask for the cross-attention, True = not allowed (as in the references)."""
    t = torch.arange(n_frames, device=device).view(-1, 1)
    s = torch.arange(n_memory, device=device).view(1, -1)
    allowed = (s // 2 == t) if alignment == ALIGN_PAIR else (s == t)
    return ~allowed


class PeriodicPositionalEncoding(nn.Module):
    """Sinusoids of length `period`, repeated. Buffer `pe` has the reference shape
    (1, period * (600 // period + 1), d); positions past it wrap around (the table is periodic)."""

    float32_parts = ("pe",)   # kept float32 in a half-precision model (SpeechToFace.to_precision)

    def __init__(self, d_model: int, period: int, max_seq_len: int = REFERENCE_MAX_FRAMES):
        super().__init__()
        self.period = period
        position = torch.arange(period, dtype=torch.float32).unsqueeze(1)             # (P, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(period, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        repeats = max_seq_len // period + 1
        self.register_buffer("pe", pe.unsqueeze(0).repeat(1, repeats, 1))            # (1, P*R, d)

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Encodings for integer positions, shape (len(positions), d)."""
        return self.pe[0, positions % self.period]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d)
        if x.shape[1] <= self.pe.shape[1]:       # the reference: a slice of the stored table
            return x + self.pe[:, : x.shape[1]].to(x.dtype)
        positions = torch.arange(x.shape[1], device=x.device)
        return x + self.at(positions).unsqueeze(0).to(x.dtype)


class CachedDecoderLayers:
    def __init__(self, decoder: nn.TransformerDecoder, memory: torch.Tensor, n_frames: int, config: DecoderConfig):
        """memory: (1, S, d) after the audio feature map; S >= T (2T for 'pair' alignment)."""
        d, heads = config.feature_dim, config.n_heads
        hd = d // heads
        self.d, self.heads, self.hd, self.n_frames = d, heads, hd, n_frames
        self.pair = pair = config.alignment == ALIGN_PAIR
        needed = 2 * n_frames if pair else n_frames
        if memory.shape[1] < needed:
            raise ValueError(f"{n_frames} frames need {needed} memory positions, got {memory.shape[1]}")
        mem = memory[0, :needed]                                               # (S', d)
        self.scale = 1.0 / math.sqrt(hd)
        # bias rows: row t over keys 0..t is table[:, :, T-1-t:], distance t-j counted down to 0
        table = temporal_bias(heads, config.period, torch.tensor([n_frames - 1], device=memory.device), n_frames)
        self.table = table.to(memory.dtype)                                    # (H, 1, T)
        self.steps = [self._prepare(layer, mem) for layer in decoder.layers]

    def _prepare(self, layer: nn.TransformerDecoderLayer, mem: torch.Tensor) -> dict:
        if layer.norm_first:
            raise NotImplementedError("the cached decoder is written for post-LN layers (as FaceFormer's and CodeTalker's)")
        d, heads, hd, n_frames = self.d, self.heads, self.hd, self.n_frames
        sa, ca = layer.self_attn, layer.multihead_attn
        keys_t = mem.new_zeros(heads, hd, n_frames)                                     # (H, hd, T)
        values = mem.new_zeros(heads, n_frames, hd)                                     # (H, T, hd)
        step = {
            "w_in_t": sa.in_proj_weight.t(), "b_in": sa.in_proj_bias,
            "w_o_t": sa.out_proj.weight.t(), "b_o": sa.out_proj.bias,
            "keys_t": keys_t, "values": values,
            # frame t's cache slots as (H, 1, hd) views, written in place
            "key_slots": keys_t.view(heads, 1, hd, n_frames).unbind(3),
            "value_slots": values.view(heads, n_frames, 1, hd).unbind(1),
            "norms": [(n.weight, n.bias, n.eps) for n in (layer.norm1, layer.norm2, layer.norm3)],
            "w_1_t": layer.linear1.weight.t(), "b_1": layer.linear1.bias,
            "w_2_t": layer.linear2.weight.t(), "b_2": layer.linear2.bias,
            "activation": layer.activation,
        }
        w_ca, b_ca = ca.in_proj_weight, ca.in_proj_bias
        mem_v = F.linear(mem, w_ca[2 * d:], b_ca[2 * d:])                                # (S', d)
        if self.pair:      # frame t <-> positions 2t, 2t+1
            mem_k = F.linear(mem, w_ca[d:2 * d], b_ca[d:2 * d])
            step["mem_k_t"] = mem_k.view(n_frames, 2, heads, hd).permute(0, 2, 3, 1).contiguous().unbind(0)  # (H, hd, 2) each
            step["mem_v"] = mem_v.view(n_frames, 2, heads, hd).permute(0, 2, 1, 3).contiguous().unbind(0)    # (H, 2, hd) each
            step["w_q_t"], step["b_q"] = w_ca[:d].t(), b_ca[:d]
            step["w_co_t"], step["b_co"] = ca.out_proj.weight.t(), ca.out_proj.bias
        else:              # one position: its attention weight is exactly 1
            step["cross"] = F.linear(mem_v, ca.out_proj.weight, ca.out_proj.bias).unbind(0)   # (d,) each
        return step

    def step(self, t: int, x: torch.Tensor) -> torch.Tensor:
        """Frame t's decoder output (1, d) from its input token x (1, d) (positional
        encoding included); frames 0..t-1 must have been stepped before."""
        heads, hd, scale, pair, table, n_frames = self.heads, self.hd, self.scale, self.pair, self.table, self.n_frames
        shape = (self.d,)
        n = t + 1
        for s in self.steps:
            q, k, v = torch.addmm(s["b_in"], x, s["w_in_t"]).view(3, heads, 1, hd).unbind(0)
            s["key_slots"][t].copy_(k)
            s["value_slots"][t].copy_(v)
            scores = torch.baddbmm(table.narrow(2, n_frames - n, n), q, s["keys_t"].narrow(2, 0, n),
                                   alpha=scale)                                         # (H, 1, t+1)
            attn = torch.bmm(torch.softmax(scores, dim=-1), s["values"].narrow(1, 0, n))  # (H, 1, hd)
            h = torch.addmm(s["b_o"], attn.view(1, -1), s["w_o_t"]).add_(x)
            (w1, b1, e1), (w2, b2, e2), (w3, b3, e3) = s["norms"]
            x = F.layer_norm(h, shape, w1, b1, e1)
            if pair:
                q = torch.addmm(s["b_q"], x, s["w_q_t"]).view(heads, 1, hd)
                w = torch.softmax(torch.bmm(q, s["mem_k_t"][t]).mul_(scale), dim=-1)    # (H, 1, 2)
                h = torch.addmm(s["b_co"], torch.bmm(w, s["mem_v"][t]).view(1, -1), s["w_co_t"]).add_(x)
            else:
                h = x + s["cross"][t]
            x = F.layer_norm(h, shape, w2, b2, e2)
            h = torch.addmm(s["b_2"], s["activation"](torch.addmm(s["b_1"], x, s["w_1_t"])), s["w_2_t"]).add_(x)
            x = F.layer_norm(h, shape, w3, b3, e3)
        return x


def reference_decoder_pass(decoder: nn.TransformerDecoder, inputs: torch.Tensor, memory: torch.Tensor,
                           config: DecoderConfig) -> torch.Tensor:
    """The references' whole-prefix pass: inputs (B, L, d) (positions added) -> (B, L, d),
    with the causal periodic bias and the alignment mask. Training and the test oracles."""
    batch, length = inputs.shape[:2]
    bias = temporal_bias(config.n_heads, config.period, torch.arange(length, device=inputs.device), length)
    tgt_mask = bias.repeat(batch, 1, 1).to(inputs.dtype)                               # (B*H, L, L)
    memory_mask = alignment_mask(length, memory.shape[1], config.alignment, inputs.device)
    return decoder(inputs, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
