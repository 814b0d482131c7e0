"""FaceFormer (CVPR 2022) with the Wav2Sem semantic fusion, in the reference parameter names.

Top-level attribute names match the official `vocaset.pth` / `biwi.pth` state dicts
(`audio_encoder`, `audio_feature_map`, `vertice_map`, `PPE`, `transformer_decoder`,
`vertice_map_r`, `obj_vector`), so those load strictly. The optional Wav2Sem parts are
`semantic_encoder` (a Wav2Vec2Model) and `semantic_fusion` (the Linear layer the reference
calls `bert_feature_map`).

Two autoregressive decoders live here:
- `decode` (used for inference): keys/values cached per layer, O(T) work per frame, any length;
- `decode_reference`: the reference's full-prefix loop, kept only as the test oracle.
Because the decoder is causal and post-LN, both give the same frames.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .talker import ALIGN_INTERPOLATE, ALIGN_PAIR, DecoderConfig, SpeechToFace  # noqa: F401 (re-exported)

REFERENCE_MAX_FRAMES = 600         # the reference builds its PPE table for 600 frames


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

    Computed for any length (the reference precomputes a 600 x 600 table).
    """
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32, device=query_positions.device)
    i = query_positions.view(-1, 1).float()                               # (Q, 1)
    j = torch.arange(key_count, device=query_positions.device).view(1, -1).float()  # (1, K)
    distance = torch.floor((i - j) / period)                               # (Q, K)
    bias = -distance.unsqueeze(0) * slopes.view(-1, 1, 1)                  # (H, Q, K)
    return bias.masked_fill((j > i).unsqueeze(0), float("-inf"))


def aligned_memory_indices(frame: int, alignment: str) -> list[int]:
    """Audio-memory positions motion frame `frame` may attend to."""
    if alignment == ALIGN_PAIR:
        return [2 * frame, 2 * frame + 1]
    return [frame]


def alignment_mask(n_frames: int, n_memory: int, alignment: str, device=None) -> torch.Tensor:
    """Bool (T, S) mask for the cross-attention, True = not allowed (as in the reference)."""
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


class FaceFormer(SpeechToFace):
    """The FaceFormer autoregressive transformer decoder on the shared speech-to-face parts."""

    def __init__(self, config: DecoderConfig, encoder_spec: dict, semantic_spec: dict | None = None):
        super().__init__(config, encoder_spec, semantic_spec)
        d = config.feature_dim
        self.vertice_map = nn.Linear(config.output_dim, d)           # previous frame's output -> d
        self.PPE = PeriodicPositionalEncoding(d, config.period)
        layer = nn.TransformerDecoderLayer(
            d_model=d, nhead=config.n_heads, dim_feedforward=config.ff_dim or 2 * d, batch_first=True
        )
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=config.n_layers)

    # ----- decoding ---------------------------------------------------------------------
    def decode(
        self,
        memory: torch.Tensor,
        style: torch.Tensor,
        n_frames: int,
        on_frame: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Key/value-cached autoregressive decoding.

        memory: (1, S, d) audio features after `audio_feature_map`; style: (1, 1, d).
        Returns offsets from the template, (1, T, V*3) (or weights (1, T, K) for a blendshape
        model, `config.output_channels` = K). `on_frame(t)` is called after each
        frame (progress, cancellation: it may raise).
        """
        layers = list(self.transformer_decoder.layers)
        heads = self.config.n_heads
        d = self.config.feature_dim
        head_dim = d // heads
        # Cross-attention keys/values of the whole memory, once per layer: (1, H, S, hd).
        memory_kv = []
        for layer in layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            k = F.linear(memory, w[d : 2 * d], b[d : 2 * d])
            v = F.linear(memory, w[2 * d :], b[2 * d :])
            memory_kv.append((_split_heads(k, heads), _split_heads(v, heads)))
        # Self-attention key/value caches, preallocated: (1, H, T, hd) per layer.
        self_k = [memory.new_zeros(1, heads, n_frames, head_dim) for _ in layers]
        self_v = [memory.new_zeros(1, heads, n_frames, head_dim) for _ in layers]
        outputs = []
        token = style                                                     # (1, 1, d)
        for t in range(n_frames):
            x = token + self.PPE.at(torch.tensor([t], device=memory.device)).unsqueeze(0).to(token.dtype)
            # bias row for query t over keys 0..t, in float32 (fp16 cannot count past 2048)
            bias = temporal_bias(heads, self.config.period, torch.tensor([t], device=memory.device), t + 1)
            bias = bias.unsqueeze(0).to(memory.dtype)                     # (1, H, 1, t+1)
            mem_idx = aligned_memory_indices(t, self.config.alignment)
            for li, layer in enumerate(layers):
                x = self._cached_layer_step(layer, x, t, self_k[li], self_v[li], bias, memory_kv[li], mem_idx)
            offset = self.vertice_map_r(x)                                # (1, 1, V*3)
            outputs.append(offset)
            token = self.vertice_map(offset) + style
            if on_frame is not None:
                on_frame(t)
        return torch.cat(outputs, dim=1)

    def _cached_layer_step(self, layer, x, t, cache_k, cache_v, bias, memory_kv, mem_idx):
        """One post-LN TransformerDecoderLayer for the new position t. x: (1, 1, d)."""
        d = self.config.feature_dim
        heads = self.config.n_heads
        sa = layer.self_attn
        q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).split(d, dim=-1)
        cache_k[:, :, t : t + 1] = _split_heads(k, heads)
        cache_v[:, :, t : t + 1] = _split_heads(v, heads)
        keys = cache_k[:, :, : t + 1]                                     # (1, H, t+1, hd)
        values = cache_v[:, :, : t + 1]
        attn = F.scaled_dot_product_attention(_split_heads(q, heads), keys, values, attn_mask=bias)
        x = layer.norm1(x + sa.out_proj(_merge_heads(attn)))
        ca = layer.multihead_attn
        q = F.linear(x, ca.in_proj_weight[:d], ca.in_proj_bias[:d])
        mem_k, mem_v = memory_kv
        attn = F.scaled_dot_product_attention(_split_heads(q, heads), mem_k[:, :, mem_idx], mem_v[:, :, mem_idx])
        x = layer.norm2(x + ca.out_proj(_merge_heads(attn)))
        return layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training pass: ground-truth offsets shifted by one frame as decoder input.

        memory: (B, S, d); style: (B, 1, d); target: (B, T, V*3) offsets (or (B, T, K) weights
        for a blendshape model). Returns the same shape as target.
        Frame t sees the style and frames < t, as `decode` does at inference.
        """
        batch, n_frames = target.shape[:2]
        inputs = torch.cat([style, self.vertice_map(target[:, :-1]) + style], dim=1)     # (B, T, d)
        bias = temporal_bias(self.config.n_heads, self.config.period,
                             torch.arange(n_frames, device=target.device), n_frames)
        tgt_mask = bias.repeat(batch, 1, 1).to(inputs.dtype)                            # (B*H, T, T)
        memory_mask = alignment_mask(n_frames, memory.shape[1], self.config.alignment, target.device)
        out = self.transformer_decoder(self.PPE(inputs), memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.vertice_map_r(out)

    def decode_reference(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int) -> torch.Tensor:
        """The reference inference loop (re-runs the decoder over the whole prefix for every
        frame, O(T^2) per frame). Test oracle only; returns (1, T, V*3) offsets."""
        heads, period = self.config.n_heads, self.config.period
        emb = style
        out = None
        for t in range(n_frames):
            length = emb.shape[1]
            decoder_input = self.PPE(emb)
            tgt_mask = temporal_bias(heads, period, torch.arange(length, device=memory.device), length).to(memory.dtype)
            memory_mask = alignment_mask(length, memory.shape[1], self.config.alignment, memory.device)
            out = self.transformer_decoder(decoder_input, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
            out = self.vertice_map_r(out)                                  # (1, L, V*3)
            emb = torch.cat([emb, self.vertice_map(out[:, -1:, :]) + style], dim=1)
        assert out is not None
        return out


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(1, L, d) -> (1, H, L, d / H)"""
    b, length, d = x.shape
    return x.view(b, length, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(1, H, L, hd) -> (1, L, H * hd)"""
    b, h, length, hd = x.shape
    return x.transpose(1, 2).reshape(b, length, h * hd)
