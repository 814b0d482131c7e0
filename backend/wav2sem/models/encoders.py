"""Speech encoders: transformers audio models built offline from a config or a local folder,
and their frame-rate alignment to the motion frame rate as FaceFormer does it.

An encoder "spec" is what a bundle's config.json stores: {"type": "wav2vec2"|"hubert"|"wavlm"|"whisper",
"config": <the transformers config as a dict>}. Weights come from the bundle's safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError

CONV_FEATURE_RATE = 50  # Hz: wav2vec 2.0 / HuBERT / WavLM conv features at 16 kHz (stride 320)
TRANSFORMERS_TYPES = ("wav2vec2", "hubert", "wavlm")
ENCODER_TYPES = (*TRANSFORMERS_TYPES, "logmel", "whisper")       # what a spec's "type" may be


def _classes(kind: str):
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig,
                              WavLMModel)

    table = {
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
        "hubert": (HubertConfig, HubertModel),
        "wavlm": (WavLMConfig, WavLMModel),
    }
    if kind not in table:
        raise Wav2SemError(MODEL_INVALID, f"Unknown speech encoder type {kind!r}; expected one of {sorted(table)}.")
    return table[kind]


def build_encoder(spec: dict) -> nn.Module:
    """An encoder with random weights from a spec (weights are loaded after): a transformers
    audio model, or our compact log-mel encoder (type "logmel")."""
    if spec["type"] == "logmel":
        from .logmel import LogMelConfig, LogMelEncoder

        return LogMelEncoder(LogMelConfig(**spec["config"])).eval()
    if spec["type"] == "whisper":   # our own module (models/whisper.py): no transformers import
        from .whisper import build_whisper_encoder

        return build_whisper_encoder(spec["config"])
    config_cls, model_cls = _classes(spec["type"])
    config = config_cls(**spec["config"])
    model = model_cls(config)
    return model.eval()


def encoder_spec_from_directory(directory: str | Path) -> dict:
    """Read a local Hugging Face-format encoder folder's config.json into a spec (offline)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise Wav2SemError(MODEL_NOT_FOUND, f"No config.json in speech-encoder folder {directory}; give a local Hugging Face-format folder.")
    config = json.loads(config_path.read_text())
    kind = config.get("model_type", "")
    if kind == "whisper":
        from .whisper import whisper_encoder_spec

        return whisper_encoder_spec(config)
    if kind not in TRANSFORMERS_TYPES:
        raise Wav2SemError(MODEL_INVALID, f"{config_path} describes a {config.get('model_type')!r} model; wav2vec2, hubert, wavlm or whisper is needed.")
    config_cls, _ = _classes(kind)
    return {"type": kind, "config": _config_to_dict(config_cls.from_pretrained(directory, local_files_only=True))}


def load_pretrained_encoder(directory: str | Path) -> tuple[nn.Module, dict]:
    """Load encoder weights from a local Hugging Face folder (never the network)."""
    spec = encoder_spec_from_directory(directory)
    if spec["type"] == "whisper":
        from .whisper import load_whisper_encoder

        return load_whisper_encoder(directory)
    _, model_cls = _classes(spec["type"])
    try:
        model = model_cls.from_pretrained(directory, local_files_only=True)
    except OSError as exc:
        raise Wav2SemError(MODEL_NOT_FOUND, f"Could not load encoder weights from {directory}: {exc}") from exc
    return model.eval(), spec


def _config_to_dict(config) -> dict:
    """A transformers config as plain JSON data, minus bookkeeping keys."""
    data = config.to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"):
        data.pop(key, None)
    return data


def encoder_input(encoder: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    """The waveform in the dtype a transformers encoder's conv stack runs in (our log-mel
    encoder takes float32 audio whatever its dtype: its front end stays float32)."""
    if hasattr(encoder, "encode_aligned"):
        return waveform
    return waveform.to(next(encoder.parameters()).dtype)


def conv_feature_count(encoder: nn.Module, n_samples: int) -> int:
    """Number of 50 Hz conv frames the encoder produces for `n_samples` samples."""
    length = n_samples
    for kernel, stride in zip(encoder.config.conv_kernel, encoder.config.conv_stride):
        length = (length - kernel) // stride + 1
    return max(int(length), 0)


def memory_frame_count(encoder: nn.Module, n_samples: int, fps: float, alignment: str) -> int:
    """Length of the aligned feature sequence (the decoder memory) for a clip."""
    if hasattr(encoder, "memory_frame_count"):
        return encoder.memory_frame_count(n_samples, fps, alignment)
    n = conv_feature_count(encoder, n_samples)
    if alignment == "pair":
        return n - n % 2
    return int(n / CONV_FEATURE_RATE * fps)


def encode_aligned(encoder: nn.Module, waveform: torch.Tensor, fps: float, alignment: str,
                   n_frames: int | None = None) -> torch.Tensor:
    """Frame-level speech features at the decoder's memory rate.

    waveform: (1, S) normalised 16 kHz audio. Conv features (50 Hz) are aligned before the
    feature projection and transformer, as FaceFormer does:
      interpolate: linear, align_corners=True, to int(N / 50 * fps) frames (VOCASET, 30 fps);
      pair: an odd last feature is dropped; frame i <-> features 2i, 2i+1 (BIWI, 25 fps).
    `n_frames` (training): the ground-truth motion length to align to, as the reference does.
    Returns (1, M, hidden).
    """
    if hasattr(encoder, "encode_aligned"):
        return encoder.encode_aligned(waveform, fps, alignment, n_frames)
    features = encoder.feature_extractor(encoder_input(encoder, waveform))  # (1, C, N)
    n = features.shape[-1]
    if alignment == "pair":
        keep = n - n % 2 if n_frames is None else min(n - n % 2, 2 * n_frames)
        features = features[..., :keep]
    else:
        size = n_frames or max(int(n / CONV_FEATURE_RATE * fps), 1)
        features = F.interpolate(features, size=size, mode="linear", align_corners=True)
    features = features.transpose(1, 2)                                     # (1, M, C)
    projected = encoder.feature_projection(features)
    if isinstance(projected, tuple):  # wav2vec2 / wavlm return (hidden, normed conv features)
        projected = projected[0]
    out = encoder.encoder(projected)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
