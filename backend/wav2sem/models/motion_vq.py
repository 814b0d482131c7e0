"""CodeTalker's stage 1 at inference: the motion codebook and the decoder from codes to motion.

CodeTalker (CVPR 2023) learns a discrete motion prior: a VQ autoencoder whose codebook holds
`codebook_size` entries of `code_dim` values; every motion frame is `codes_per_frame` entries
(VOCASET 16 x 64, BIWI 8 x 128). Stage 2 predicts the codes from speech; this module turns
them back into vertex offsets. The stage-1 encoder is used only in training and is not kept.

Written from the paper and from the facts checked in the official code
(github.com/Doubiiu/CodeTalker, models/stage1_*.py, models/lib/base_models.py, quantizer.py);
the details that decide equality with it:
- decoder: (BIWI only: a linear map from the frame's codes to the width) -> one Conv1d, kernel
  5, replicate padding -> LeakyReLU(0.2) -> InstanceNorm1d over the whole sequence (no affine,
  eps 1e-5) -> Linear -> positional encoding -> pre-LN transformer layers (no final norm) ->
  Linear to V*3 (VOCASET with a bias, BIWI without);
- the positional encoding indexes its sinusoid table by the batch axis (the table is
  sequence-first, the tensors batch-first), so with one clip every frame gets position 0's
  encoding: sin 0 = 0 on even channels, cos 0 = 1 on odd ones;
- attention: q, k, v from one bias-free Linear, heads split inside each of q, k, v, scores
  scaled by the full width ** -0.5 (not the head width), no mask: every frame sees the whole
  sequence, so the decoder is not causal;
- the feed-forward's GELU is the tanh approximation;
- quantiser: squared distances computed as |z|^2 + |e|^2 - 2 z.e, the first minimum wins
  (argmin), and the output is z + (e - z) (the straight-through form, kept for its rounding).
Because of the instance norm and the unmasked attention, each frame's motion depends on every
code in the sequence it is decoded with.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 5          # the decoder conv's frames of context
NORM_EPS = 1e-5     # LayerNorm and InstanceNorm, as in the official code


@dataclass(frozen=True)
class MotionVQConfig:
    hidden_size: int = 1024
    n_layers: int = 6
    n_heads: int = 8             # not in the weights' shapes (the official configs all use 8)
    intermediate_size: int = 1536
    codebook_size: int = 256
    code_dim: int = 64
    codes_per_frame: int = 16
    input_map: bool = False      # BIWI: a Linear from codes_per_frame * code_dim to hidden_size first
    output_bias: bool = True     # VOCASET: the last Linear has a bias; BIWI: not
    norm_affine: bool = False    # the instance norm's affine parameters (official configs: off)
    negative_slope: float = 0.2
    # Decoding (codetalker.py); not sizes. 0 = the official computation.
    feedback_window: int = 0     # frames of codes re-decoded for each fed-back frame (0: the whole prefix)
    window: int = 600            # longest code sequence decoded at once; longer clips in cross-faded windows

    @property
    def frame_width(self) -> int:
        """Values per frame of codes: codes_per_frame * code_dim."""
        return self.codes_per_frame * self.code_dim

    def check(self) -> None:
        """ValueError naming the first size that cannot work."""
        if not self.input_map and self.frame_width != self.hidden_size:
            raise ValueError(f"a frame of codes ({self.codes_per_frame} x {self.code_dim}) must be as wide as the "
                             f"motion decoder ({self.hidden_size}) when there is no input map")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"motion_vq.hidden_size ({self.hidden_size}) must be a multiple of motion_vq.n_heads "
                             f"({self.n_heads})")
        if self.feedback_window < 0 or self.window < 2:
            raise ValueError("motion_vq.feedback_window must be 0 or more and motion_vq.window at least 2")


class MotionCodebook(nn.Module):
    def __init__(self, config: MotionVQConfig):
        super().__init__()
        self.code_dim = config.code_dim
        self.embedding = nn.Embedding(config.codebook_size, config.code_dim)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(..., n * code_dim) -> the same shape, each code_dim group replaced by its nearest entry."""
        flat = z.reshape(-1, self.code_dim)
        e = self.embedding.weight
        distance = (flat ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * flat @ e.t()
        chosen = e[distance.argmin(1)]
        return (flat + (chosen - flat)).view(z.shape)


class MotionDecoderLayer(nn.Module):
    """Pre-LN: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: MotionVQConfig):
        super().__init__()
        h = config.hidden_size
        self.heads = config.n_heads
        self.scale = h ** -0.5
        self.attention_norm = nn.LayerNorm(h, eps=NORM_EPS)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.attention_out = nn.Linear(h, h)
        self.mlp_norm = nn.LayerNorm(h, eps=NORM_EPS)
        self.mlp_in = nn.Linear(h, config.intermediate_size)
        self.mlp_out = nn.Linear(config.intermediate_size, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:     # (B, L, h)
        batch, length, h = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1) @ v          # (B, H, L, hd)
        x = x + self.attention_out(attention.transpose(1, 2).reshape(batch, length, h))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)), approximate="tanh"))


class MotionDecoder(nn.Module):
    """Frames of codes (B, L, codes_per_frame * code_dim) -> offsets (B, L, V*3)."""

    def __init__(self, config: MotionVQConfig, output_dim: int):
        super().__init__()
        config.check()
        h = config.hidden_size
        self.config = config
        self.input_map = nn.Linear(config.frame_width, h) if config.input_map else None
        self.conv = nn.Conv1d(h, h, KERNEL, padding=KERNEL // 2, padding_mode="replicate")
        self.norm = nn.InstanceNorm1d(h, affine=config.norm_affine, eps=NORM_EPS)
        self.embedding = nn.Linear(h, h)
        # position 0's sinusoid encoding, added to every frame (sin 0 on even, cos 0 on odd
        # channels); kept with the weights: a converted checkpoint brings its own table's row
        position = torch.zeros(h)
        position[1::2] = 1.0
        self.register_buffer("position", position)
        self.layers = nn.ModuleList(MotionDecoderLayer(config) for _ in range(config.n_layers))
        self.output_map = nn.Linear(h, output_dim, bias=config.output_bias)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, L, C) codes -> (B, L, h) before the output map. A single frame is decoded as two
        copies of itself (the instance norm needs two; the official loop does so for its first)."""
        if codes.shape[1] == 1:
            return self.features(codes.repeat(1, 2, 1))[:, :1]
        x = self.input_map(codes) if self.input_map is not None else codes
        x = self.norm(F.leaky_relu(self.conv(x.transpose(1, 2)), self.config.negative_slope)).transpose(1, 2)
        x = self.embedding(x) + self.position.to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, L, V*3)."""
        return self.output_map(self.features(codes))

    def last_frame_features(self, codes: torch.Tensor) -> torch.Tensor:
        """(1, L, C) -> the last frame's features (1, h) when decoded with all L frames."""
        return self.features(codes)[:, -1]
