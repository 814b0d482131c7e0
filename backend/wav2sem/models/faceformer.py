"""FaceFormer (CVPR 2022) with the Wav2Sem semantic fusion, in the reference parameter names.

Top-level attribute names match the official `vocaset.pth` / `biwi.pth` state dicts
(`audio_encoder`, `audio_feature_map`, `vertice_map`, `PPE`, `transformer_decoder`,
`vertice_map_r`, `obj_vector`), so those load strictly. The optional Wav2Sem parts are
`semantic_encoder` (a Wav2Vec2Model) and `semantic_fusion` (the Linear layer the reference
calls `bert_feature_map`).

Two autoregressive decoders live here:
- `decode` (used for inference): keys/values cached per layer, O(T) work per frame, any length;
  the feedback through the output layer fused into one d x d map, the output layer run once
  on all frames at the end;
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

        Equal to `decode_reference` up to rounding (tests: 1e-4 on every frame). Per frame only
        the decoder layers run, on (1, d) rows:
        - the feedback vertice_map(vertice_map_r(x)) + style is one d x d affine map (fused
          once, in float32); the big output map vertice_map_r runs once, on all T frames;
        - positional rows, ALiBi bias rows (slices of one (H, T) table) and the cross-attention
          memory of every frame are prepared before the loop. With 'interpolate' alignment a
          frame attends to one memory position, so its cross-attention output is exactly that
          position's projected value: the whole cross-attention is precomputed;
        - keys are cached transposed (H, hd, T), values (H, T, hd), so attention is two
          batched products on cache slices.
        """
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            with torch.no_grad():
                return self._decode_cached(memory, style, n_frames, on_frame)
        return self._decode_cached(memory, style, n_frames, on_frame)

    def _decode_cached(self, memory, style, n_frames, on_frame):
        config = self.config
        d, heads = config.feature_dim, config.n_heads
        hd = d // heads
        dtype, device = memory.dtype, memory.device
        if n_frames < 1:
            return memory.new_zeros(1, 0, config.output_dim)
        pair = config.alignment == ALIGN_PAIR
        needed = 2 * n_frames if pair else n_frames
        if memory.shape[1] < needed:
            raise ValueError(f"{n_frames} frames need {needed} memory positions, got {memory.shape[1]}")
        mem = memory[0, :needed]                                               # (S', d)
        layers = list(self.transformer_decoder.layers)
        scale = 1.0 / math.sqrt(hd)

        # the fused feedback map, in float32: token = y @ w_fb.T + (b_fb + style)
        w_map, b_map = self.vertice_map.weight.float(), self.vertice_map.bias.float()
        w_fb = (w_map @ self.vertice_map_r.weight.float()).to(dtype)                        # (d, d)
        b_fb = w_map @ self.vertice_map_r.bias.float() + b_map                              # (d,)
        ppe = self.PPE.at(torch.arange(n_frames, device=device)).float()                    # (T, d)
        style_row = style.reshape(1, d).float()
        first = (style_row + ppe[:1]).to(dtype)                                             # frame 0: the style
        addend = (b_fb + style_row + ppe).to(dtype)                                         # frames 1..T-1
        w_fb_t = w_fb.t()
        # bias rows: row t over keys 0..t is table[:, :, T-1-t:], distance t-j counted down to 0
        table = temporal_bias(heads, config.period, torch.tensor([n_frames - 1], device=device), n_frames)
        table = table.to(dtype)                                                             # (H, 1, T)

        steps = []
        for layer in layers:
            if layer.norm_first:
                raise NotImplementedError("the cached decoder is written for post-LN layers (as FaceFormer's)")
            sa, ca = layer.self_attn, layer.multihead_attn
            keys_t = memory.new_zeros(heads, hd, n_frames)                                  # (H, hd, T)
            values = memory.new_zeros(heads, n_frames, hd)                                  # (H, T, hd)
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
            if pair:      # frame t <-> positions 2t, 2t+1
                mem_k = F.linear(mem, w_ca[d:2 * d], b_ca[d:2 * d])
                step["mem_k_t"] = mem_k.view(n_frames, 2, heads, hd).permute(0, 2, 3, 1).contiguous().unbind(0)  # (H, hd, 2) each
                step["mem_v"] = mem_v.view(n_frames, 2, heads, hd).permute(0, 2, 1, 3).contiguous().unbind(0)    # (H, 2, hd) each
                step["w_q_t"], step["b_q"] = w_ca[:d].t(), b_ca[:d]
                step["w_co_t"], step["b_co"] = ca.out_proj.weight.t(), ca.out_proj.bias
            else:         # one position: its attention weight is exactly 1
                step["cross"] = F.linear(mem_v, ca.out_proj.weight, ca.out_proj.bias).unbind(0)   # (d,) each
            steps.append(step)

        addend_rows = addend.unbind(0)
        outputs = []
        shape = (d,)
        x = first
        for t in range(n_frames):
            if t:
                x = torch.addmm(addend_rows[t], x, w_fb_t)                                  # (1, d)
            n = t + 1
            for s in steps:
                q, k, v = torch.addmm(s["b_in"], x, s["w_in_t"]).view(3, heads, 1, hd).unbind(0)
                s["key_slots"][t].copy_(k)
                s["value_slots"][t].copy_(v)
                scores = torch.baddbmm(table.narrow(2, n_frames - n, n), q, s["keys_t"].narrow(2, 0, n),
                                       alpha=scale)                                         # (H, 1, t+1)
                attn = torch.bmm(torch.softmax(scores, dim=-1), s["values"].narrow(1, 0, n))  # (H, 1, hd)
                h = torch.addmm(s["b_o"], attn.view(1, d), s["w_o_t"]).add_(x)
                (w1, b1, e1), (w2, b2, e2), (w3, b3, e3) = s["norms"]
                x = F.layer_norm(h, shape, w1, b1, e1)
                if pair:
                    q = torch.addmm(s["b_q"], x, s["w_q_t"]).view(heads, 1, hd)
                    w = torch.softmax(torch.bmm(q, s["mem_k_t"][t]).mul_(scale), dim=-1)    # (H, 1, 2)
                    h = torch.addmm(s["b_co"], torch.bmm(w, s["mem_v"][t]).view(1, d), s["w_co_t"]).add_(x)
                else:
                    h = x + s["cross"][t]
                x = F.layer_norm(h, shape, w2, b2, e2)
                h = torch.addmm(s["b_2"], s["activation"](torch.addmm(s["b_1"], x, s["w_1_t"])), s["w_2_t"]).add_(x)
                x = F.layer_norm(h, shape, w3, b3, e3)
            outputs.append(x)
            if on_frame is not None:
                on_frame(t)
        return self.vertice_map_r(torch.cat(outputs)).unsqueeze(0)                          # (1, T, V*3)

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

