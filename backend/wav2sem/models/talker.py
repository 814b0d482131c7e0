"""What every speech-to-face model here shares: the speech encoder, the Wav2Sem semantic
encoder and fusion layer, the speaking-style embedding and the output map to vertex offsets.
Subclasses add a decoder: FaceFormer (autoregressive, reference names) or Direct.

Attribute names follow the reference FaceFormer (`audio_encoder`, `audio_feature_map`,
`obj_vector`, `vertice_map_r`); the Wav2Sem parts are `semantic_encoder` and
`semantic_fusion` (the reference's `bert_feature_map`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .encoders import build_encoder

ALIGN_INTERPOLATE = "interpolate"  # VOCASET: conv features linearly resampled to the motion fps
ALIGN_PAIR = "pair"                # BIWI: motion frame i <-> conv features 2i and 2i+1


@dataclass(frozen=True)
class DecoderConfig:
    vertex_count: int
    n_subjects: int
    feature_dim: int = 64
    period: int = 30
    n_heads: int = 4
    n_layers: int = 1
    ff_dim: int | None = None  # default 2 * feature_dim, as in the reference
    alignment: str = ALIGN_INTERPOLATE


class SpeechToFace(nn.Module):
    def __init__(self, config: DecoderConfig, encoder_spec: dict, semantic_spec: dict | None = None):
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.audio_encoder = build_encoder(encoder_spec)
        audio_dim = self.audio_encoder.config.hidden_size
        self.audio_feature_map = nn.Linear(audio_dim, d)
        self.vertice_map_r = nn.Linear(d, config.vertex_count * 3)
        nn.init.zeros_(self.vertice_map_r.weight)  # as the reference: training starts at the template
        nn.init.zeros_(self.vertice_map_r.bias)
        self.obj_vector = nn.Linear(config.n_subjects, d, bias=False)
        self.semantic_encoder = None
        self.semantic_fusion = None
        if semantic_spec is not None:
            self.semantic_encoder = build_encoder(semantic_spec)
            self.semantic_fusion = nn.Linear(self.semantic_encoder.config.hidden_size, audio_dim)

    @property
    def has_semantic(self) -> bool:
        return self.semantic_encoder is not None

    def style_embedding(self, subject_weights: torch.Tensor) -> torch.Tensor:
        """(n_subjects,) weights (a one-hot, or a blend of two subjects) -> (1, 1, d)."""
        w = subject_weights.to(self.obj_vector.weight)
        return self.obj_vector(w.view(1, -1)).unsqueeze(1)

    def semantic_vector(self, waveform: torch.Tensor) -> torch.Tensor:
        """Wav2Sem sentence vector for one utterance, after the fusion layer: (1, audio_dim).

        The fusion Linear is applied here at inference exactly as in training (the reference
        release skips it at inference, a train/inference mismatch we do not repeat).
        """
        assert self.semantic_encoder is not None and self.semantic_fusion is not None
        hidden = self.semantic_encoder(waveform).last_hidden_state   # (1, N, H_sem)
        return self.semantic_fusion(hidden.mean(dim=1))               # (1, H_audio)

    def decode(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int,
               on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """memory (1, S, d), style (1, 1, d) -> offsets (1, T, V*3) (inference)."""
        raise NotImplementedError

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """memory (B, S, d), style (B, 1, d), target (B, T, V*3) -> offsets (B, T, V*3) (training)."""
        raise NotImplementedError
