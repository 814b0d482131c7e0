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

`decode_features` is `decode` without its last step: the (T, d) rows that the linear output
map `vertice_map_r` turns into offsets, so inference can hand the add-on those small factors
instead of (T, V, 3) offsets (inference.py, "factored output").
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .cached_decoder import (REFERENCE_MAX_FRAMES, CachedDecoderLayers, PeriodicPositionalEncoding,  # noqa: F401
                             alibi_slopes, alignment_mask, reference_decoder_pass, temporal_bias)
from .talker import ALIGN_INTERPOLATE, ALIGN_PAIR, DecoderConfig, SpeechToFace  # noqa: F401 (re-exported)


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

        Equal to `decode_reference` up to rounding (tests: 1e-4 on every frame). The layers run
        one (1, d) row per frame (cached_decoder.py); the feedback
        vertice_map(vertice_map_r(x)) + style is one d x d affine map (fused once, in float32),
        so the big output map vertice_map_r runs once, on all T frames, after the loop.
        """
        with torch.no_grad():         # inference only (a no-op inside inference_mode)
            return self.vertice_map_r(self._decode_cached(memory, style, n_frames, on_frame)).unsqueeze(0)

    def decode_features(
        self,
        memory: torch.Tensor,
        style: torch.Tensor,
        n_frames: int,
        on_frame: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """`decode` up to, not including, the output map: (1, T, d) decoder rows with
        `decode(...) == vertice_map_r(decode_features(...))`. The output is low rank by
        construction; these rows and the map's weights are its exact factors."""
        with torch.no_grad():
            return self._decode_cached(memory, style, n_frames, on_frame).unsqueeze(0)

    def _decode_cached(self, memory, style, n_frames, on_frame):
        """The cached loop; returns the decoder rows (T, d), before the output map."""
        d, dtype, device = self.config.feature_dim, memory.dtype, memory.device
        if n_frames < 1:
            return memory.new_zeros(0, d)
        layers = CachedDecoderLayers(self.transformer_decoder, memory, n_frames, self.config)
        # the fused feedback map, in float32: token = y @ w_fb.T + (b_fb + style + PPE)
        w_map, b_map = self.vertice_map.weight.float(), self.vertice_map.bias.float()
        w_fb_t = (w_map @ self.vertice_map_r.weight.float()).to(dtype).t()                  # (d, d)
        b_fb = w_map @ self.vertice_map_r.bias.float() + b_map                              # (d,)
        ppe = self.PPE.at(torch.arange(n_frames, device=device)).float()                    # (T, d)
        style_row = style.reshape(1, d).float()
        x = (style_row + ppe[:1]).to(dtype)                                                 # frame 0: the style
        addend_rows = (b_fb + style_row + ppe).to(dtype).unbind(0)                          # frames 1..T-1
        outputs = []
        for t in range(n_frames):
            if t:
                x = torch.addmm(addend_rows[t], x, w_fb_t)                                  # (1, d)
            x = layers.step(t, x)
            outputs.append(x)
            if on_frame is not None:
                on_frame(t)
        return torch.cat(outputs)                                                           # (T, d)

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training pass: ground-truth offsets shifted by one frame as decoder input.

        memory: (B, S, d); style: (B, 1, d); target: (B, T, V*3) offsets (or (B, T, K) weights
        for a blendshape model). Returns the same shape as target.
        Frame t sees the style and frames < t, as `decode` does at inference.
        """
        inputs = torch.cat([style, self.vertice_map(target[:, :-1]) + style], dim=1)     # (B, T, d)
        return self.vertice_map_r(reference_decoder_pass(self.transformer_decoder, self.PPE(inputs), memory, self.config))

    def decode_reference(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int) -> torch.Tensor:
        """The reference inference loop (re-runs the decoder over the whole prefix for every
        frame, O(T^2) per frame). Test oracle only; returns (1, T, V*3) offsets."""
        emb = style
        out = None
        for _ in range(n_frames):
            out = self.vertice_map_r(reference_decoder_pass(self.transformer_decoder, self.PPE(emb), memory, self.config))
            emb = torch.cat([emb, self.vertice_map(out[:, -1:, :]) + style], dim=1)
        assert out is not None
        return out
