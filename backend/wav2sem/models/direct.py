"""A non-autoregressive decoder: each frame's offsets straight from the aligned speech
features (plus style), through a small temporal conv stack.

Chosen for the embedded default model by measurement (docs/default_model.md): trained with
teacher forcing on our corpus, the autoregressive FaceFormer decoder learnt to copy its
previous frame and ignored the audio, while this one follows the speech. It is also one
pass over the clip instead of one step per frame.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .talker import ALIGN_PAIR, DecoderConfig, SpeechToFace

KERNEL = 5   # frames of temporal context per conv layer (on top of the encoder's GRU)


class DirectDecoder(SpeechToFace):
    def __init__(self, config: DecoderConfig, encoder_spec: dict, semantic_spec: dict | None = None):
        super().__init__(config, encoder_spec, semantic_spec)
        d = config.feature_dim
        hidden = config.ff_dim or 2 * d
        self.head = nn.Sequential(
            nn.Conv1d(d, hidden, KERNEL, padding=KERNEL // 2), nn.GELU(),
            nn.Conv1d(hidden, d, KERNEL, padding=KERNEL // 2), nn.GELU(),
        )

    def _features(self, memory: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(B, T, d): the rows the output map turns into offsets."""
        if self.config.alignment == ALIGN_PAIR:                      # (B, 2T, d) -> (B, T, d)
            memory = memory.view(memory.shape[0], -1, 2, memory.shape[2]).mean(2)
        x = self.head((memory + style).transpose(1, 2)).transpose(1, 2)
        return x + style

    def _offsets(self, memory: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.vertice_map_r(self._features(memory, style))      # (B, T, V*3) or (B, T, K)

    def decode(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int,
               on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        out = self._offsets(memory, style)[:, :n_frames]
        if on_frame is not None:
            on_frame(n_frames - 1)
        return out

    def decode_features(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int,
                        on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """`decode` before its output map: (1, T, d) rows, `decode == vertice_map_r(these)`,
        the exact small factors of the output (inference.py, "factored output")."""
        out = self._features(memory, style)[:, :n_frames]
        if on_frame is not None:
            on_frame(n_frames - 1)
        return out

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._offsets(memory, style)[:, : target.shape[1]]    # the target is not an input here
