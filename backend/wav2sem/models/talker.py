"""What every speech-to-face model here shares: the speech encoder, the Wav2Sem semantic
encoder and fusion layer, the speaking-style embedding and the output map to vertex offsets
(or, with `DecoderConfig.output_channels` K > 0, to K blendshape weights per frame).
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

from .encoders import build_encoder, encoder_input

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
    output_channels: int = 0   # 0: vertex offsets (V*3 per frame); K > 0: K blendshape weights per frame

    @property
    def output_dim(self) -> int:
        """Values per output frame: K channel weights, or V*3 offset coordinates."""
        return self.output_channels or self.vertex_count * 3

    @property
    def predicts_weights(self) -> bool:
        return self.output_channels > 0


class SpeechToFace(nn.Module):
    def __init__(self, config: DecoderConfig, encoder_spec: dict, semantic_spec: dict | None = None):
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.audio_encoder = build_encoder(encoder_spec)
        audio_dim = self.audio_encoder.config.hidden_size
        self.audio_feature_map = nn.Linear(audio_dim, d)
        self._build_style_and_output(config)
        self.semantic_encoder = None
        self.semantic_fusion = None
        if semantic_spec is not None:
            self.semantic_encoder = build_encoder(semantic_spec)
            self.semantic_fusion = nn.Linear(self.semantic_encoder.config.hidden_size, audio_dim)

    def _build_style_and_output(self, config: DecoderConfig) -> None:
        """The speaking-style embedding `obj_vector` and the output map `vertice_map_r`
        (FaceFormer's names). A model with other parts (CodeTalker) overrides this and
        `style_embedding`."""
        d = config.feature_dim
        self.vertice_map_r = nn.Linear(d, config.output_dim)      # offsets (V*3) or weights (K)
        nn.init.zeros_(self.vertice_map_r.weight)  # as the reference: training starts at the template
        nn.init.zeros_(self.vertice_map_r.bias)
        self.obj_vector = nn.Linear(config.n_subjects, d, bias=False)

    @property
    def has_semantic(self) -> bool:
        return self.semantic_encoder is not None

    def style_embedding(self, subject_weights: torch.Tensor) -> torch.Tensor:
        """(n_subjects,) weights (a one-hot, or a blend of two subjects) -> (1, 1, d)."""
        w = subject_weights.to(self.obj_vector.weight)
        return self.obj_vector(w.view(1, -1)).unsqueeze(1)

    def to_precision(self, dtype: torch.dtype) -> "SpeechToFace":
        """Cast to `dtype` (float16 on CUDA), keeping what any module lists in its
        `float32_parts` (buffers or submodules: mel filters, positional tables, input
        normalisation) in float32; those modules cast their results to the model dtype."""
        self.to(dtype)
        for module in self.modules():
            for name in getattr(module, "float32_parts", ()):
                part = getattr(module, name)
                if isinstance(part, nn.Module):
                    part.float()
                elif isinstance(part, torch.Tensor):
                    setattr(module, name, part.float())
        return self

    def semantic_pooled(self, waveform: torch.Tensor) -> torch.Tensor:
        """(1, S) float32 audio of one utterance -> the semantic encoder's time-mean (1, H_sem)."""
        assert self.semantic_encoder is not None
        hidden = self.semantic_encoder(encoder_input(self.semantic_encoder, waveform)).last_hidden_state
        return hidden.mean(dim=1)

    def semantic_vector(self, waveform: torch.Tensor) -> torch.Tensor:
        """Wav2Sem sentence vector for one utterance, after the fusion layer: (1, audio_dim)."""
        assert self.semantic_fusion is not None
        return self.semantic_fusion(self.semantic_pooled(waveform))

    def memory(self, speech: torch.Tensor, semantic: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder memory (B, M, d): aligned speech features (B, M, H) plus, with Wav2Sem,
        the fused semantic vector, then `audio_feature_map`. The one place where the fusion
        happens, for inference, training and evaluation alike.

        semantic: pooled semantic-encoder vectors (before fusion), (B, H_sem) one per clip or
        (B, M, H_sem) one per frame. The fusion Linear is applied at inference exactly as in
        training (the reference release skips it at inference, a mismatch we do not repeat).
        """
        dtype = self.audio_feature_map.weight.dtype
        speech = speech.to(dtype)
        if semantic is not None:
            assert self.semantic_fusion is not None
            fused = self.semantic_fusion(semantic.to(dtype))
            speech = speech + (fused.unsqueeze(1) if fused.dim() == 2 else fused)
        return self.audio_feature_map(speech)

    def decode(self, memory: torch.Tensor, style: torch.Tensor, n_frames: int,
               on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """memory (1, S, d), style (1, 1, d) -> offsets (1, T, V*3), or weights (1, T, K) for a
        blendshape model (inference)."""
        raise NotImplementedError

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """memory (B, S, d), style (B, 1, d), target (B, T, V*3) -> offsets (B, T, V*3) (training);
        for a blendshape model target and result are weights (B, T, K)."""
        raise NotImplementedError
