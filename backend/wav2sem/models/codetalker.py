"""CodeTalker (CVPR 2023), the host model of the Wav2Sem release, at inference.

Stage 2 is FaceFormer's decoder (same torch layers, periodic ALiBi bias, alignment, periodic
positions; cached_decoder.py) predicting, per frame, `codes_per_frame` codes of stage 1's
motion codebook instead of vertex offsets; stage 1 (motion_vq.py) decodes the codes to motion.
Top-level names are the official stage-2 checkpoint's (`audio_encoder`, `audio_feature_map`,
`vertice_map`, `PPE`, `transformer_decoder`, `feat_map`, `learnable_style_emb`), so it loads
strictly; stage 1 lives under `motion` (checkpoints.py maps the official names onto it).
Wav2Sem's parts and the one place of the fusion are SpeechToFace's (talker.py).

The official predict(), which this equals (tests/backend/test_codetalker.py):
- frame t's decoder output -> `feat_map` -> codes, each snapped to its nearest codebook entry;
- the next frame's input is `vertice_map`(motion of frame t) + style + position, where that
  motion is the last frame of stage 1 decoding the codes of frames 0..t *together*: stage 1
  is not causal (instance norm over the sequence, unmasked attention), so each fed-back frame
  re-decodes the whole prefix: O(T^2) work in all, which equality forbids avoiding;
- the result is stage 1 decoding all frames' codes at once.
What this adds (MotionVQConfig): any length (the bias and positions are computed for any T,
the official code stops at 600 frames); `window`: codes beyond that many frames are decoded in
windows cross-faded over a quarter of a window, and the fed-back prefix never exceeds it;
`feedback_window` N > 0: only the last N frames' codes are re-decoded for the feedback, so the
cost grows linearly with T (an approximation; its measured difference is in
results/codetalker_official.md). Stage 2 runs one cached row per frame (cached_decoder.py)
instead of re-running the whole prefix, which keeps the output equal.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .cached_decoder import CachedDecoderLayers, PeriodicPositionalEncoding, reference_decoder_pass
from .motion_vq import MotionCodebook, MotionDecoder, MotionVQConfig
from .talker import DecoderConfig, SpeechToFace


class MotionVQ(nn.Module):
    """Stage 1's inference half: the codebook and the decoder."""

    def __init__(self, config: MotionVQConfig, output_dim: int):
        super().__init__()
        self.codebook = MotionCodebook(config)
        self.decoder = MotionDecoder(config, output_dim)


class CodeTalker(SpeechToFace):
    def __init__(self, config: DecoderConfig, encoder_spec: dict, semantic_spec: dict | None = None,
                 motion_vq: MotionVQConfig | None = None):
        super().__init__(config, encoder_spec, semantic_spec)
        if config.predicts_weights:
            raise ValueError("CodeTalker predicts vertex offsets, not blendshape weights")
        self.motion_config = motion = motion_vq or MotionVQConfig()
        d = config.feature_dim
        self.vertice_map = nn.Linear(config.output_dim, d)                   # fed-back motion -> d
        self.PPE = PeriodicPositionalEncoding(d, config.period)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=config.n_heads, dim_feedforward=config.ff_dim or 2 * d,
                                           batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=config.n_layers)
        self.feat_map = nn.Linear(d, motion.frame_width, bias=False)         # decoder output -> a frame of codes
        self.motion = MotionVQ(motion, config.output_dim)

    def _build_style_and_output(self, config: DecoderConfig) -> None:
        # the output map is stage 1's decoder; the style is an embedding table (official name)
        self.learnable_style_emb = nn.Embedding(config.n_subjects, config.feature_dim)

    def style_embedding(self, subject_weights: torch.Tensor) -> torch.Tensor:
        """(n_subjects,) weights -> (1, 1, d): a one-hot picks a row; two subjects blend
        their rows by their weights (the official style interpolation)."""
        table = self.learnable_style_emb.weight
        return (subject_weights.to(table).view(1, -1) @ table).unsqueeze(1)

    # ----- decoding ---------------------------------------------------------------------
    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (..., d) -> frames of snapped codes (..., codes_per_frame * code_dim)."""
        return self.motion.codebook.quantize(self.feat_map(features))

    def decode(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int,
               on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """memory (1, S, d), style (1, 1, d) -> offsets (1, T, V*3). `on_frame(t)` after each
        frame (progress, cancellation: it may raise)."""
        with torch.no_grad():         # inference only (a no-op inside inference_mode)
            return self._decode(memory, style, n_frames, on_frame)

    def _decode(self, memory, style, n_frames, on_frame):
        if n_frames < 1:
            return memory.new_zeros(1, 0, self.config.output_dim)
        motion = self.motion_config
        reach = min(motion.feedback_window or motion.window, motion.window)   # codes re-decoded per fed-back frame
        layers = CachedDecoderLayers(self.transformer_decoder, memory, n_frames, self.config)
        ppe = self.PPE.at(torch.arange(n_frames, device=memory.device)).to(memory.dtype)   # (T, d)
        style_row = style.reshape(1, -1).to(memory.dtype)
        codes = memory.new_zeros(1, n_frames, motion.frame_width)
        x = style_row + ppe[:1]
        for t in range(n_frames):
            codes[0, t] = self.quantize(layers.step(t, x))[0]
            if t + 1 < n_frames:
                fed_back = self.motion.decoder.output_map(
                    self.motion.decoder.last_frame_features(codes[:, max(0, t + 1 - reach): t + 1]))   # (1, V*3)
                x = self.vertice_map(fed_back) + style_row + ppe[t + 1: t + 2]
            if on_frame is not None:
                on_frame(t)
        return self.decode_codes(codes)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(1, T, C) codes -> (1, T, V*3): at once up to `window` frames (the official
        computation), else in windows overlapping by a quarter, linearly cross-faded."""
        window = self.motion_config.window
        n = codes.shape[1]
        decoder = self.motion.decoder
        if n <= window:
            return decoder.decode(codes)
        overlap = max(1, window // 4)
        hop = window - overlap
        starts = list(range(0, n - overlap, hop))
        out = codes.new_zeros(1, n, self.config.output_dim)
        total = codes.new_zeros(n)
        for i, start in enumerate(starts):
            end = min(start + window, n)                # the last window is longer than the overlap
            piece = decoder.decode(codes[:, start:end])
            w = codes.new_ones(end - start)
            ramp = torch.linspace(0, 1, overlap + 2, device=codes.device, dtype=codes.dtype)[1:-1]
            if i > 0:
                w[:overlap] = ramp[: end - start]
            if end < n:
                w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
            out[0, start:end] += piece[0] * w.unsqueeze(1)
            total[start:end] += w
        return out / total.clamp_min(1e-12).view(1, -1, 1)

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The official training pass: ground-truth offsets shifted by one frame as the input,
        all frames' codes decoded at once. memory (B, S, d), style (B, 1, d), target (B, T, V*3)."""
        inputs = torch.cat([style, self.vertice_map(target[:, :-1]) + style], dim=1)
        out = reference_decoder_pass(self.transformer_decoder, self.PPE(inputs), memory, self.config)
        return self.motion.decoder.decode(self.quantize(out))

    def decode_reference(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int) -> torch.Tensor:
        """The official inference loop (the whole prefix through stage 2 and stage 1 for every
        frame). Test oracle only; (1, T, V*3)."""
        emb = style
        out = None
        for t in range(n_frames):
            out = reference_decoder_pass(self.transformer_decoder, self.PPE(emb), memory, self.config)
            codes = self.quantize(out)
            if t + 1 < n_frames:
                motion = self.motion.decoder.decode(codes)[:, -1:]
                emb = torch.cat([emb, self.vertice_map(motion) + style], dim=1)
        assert out is not None
        return self.motion.decoder.decode(self.quantize(out))
