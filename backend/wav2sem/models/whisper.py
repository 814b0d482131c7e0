"""Whisper's pretrained speech encoder as our own torch module (the network only).

`WhisperSpeechEncoder`: spec {"type": "whisper", "config": WhisperEncoderConfig fields}, with
transformers' parameter names (so a converted folder, models/whisper_convert.py, loads into
it) and a torch log-mel front end equal to WhisperFeatureExtractor's. It runs on the clip's
own length (the first N positional embeddings) rather than padding to 30 s. It sees at most
one 30 s window: longer audio is cut into overlapping, cross-faded windows by the caller
(inference._encode_windows, 20 s windows); training clips are shorter (max_seconds).
Importing it imports no transformers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .logmel import slaney_mel_filters

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160                  # 100 mel frames per second
FEATURE_RATE = 50          # Hz, encoder positions (conv2 has stride 2)
DYNAMIC_RANGE = 8.0        # log10 units kept below the clip's loudest bin, as Whisper


@dataclass
class WhisperEncoderConfig:
    num_mel_bins: int = 80
    d_model: int = 512
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    max_source_positions: int = 1500
    # False: run a clip on its own length, with the first N positional embeddings: 2x faster
    # for 5 s, but the features differ from the padded ones
    # (results/real_voices/whisper_encoder.md). True: zero-pad every clip to 30 s.
    pad_windows: bool = False

    @property
    def hidden_size(self) -> int:
        return self.d_model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WhisperEncoderConfig":
        """From our spec, or from a transformers WhisperConfig dict (its other keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def whisper_encoder_spec(config: dict) -> dict:
    return {"type": "whisper", "config": WhisperEncoderConfig.from_dict(config).to_dict()}


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class _Layer(nn.Module):
    def __init__(self, config: WhisperEncoderConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = _Attention(d, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class _ConvStem(nn.Module):
    """conv1, conv2 of an encoder, as one module (what training freezes as "feature_extractor")."""

    def __init__(self, conv1: nn.Conv1d, conv2: nn.Conv1d):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv2(F.gelu(self.conv1(mel))))


class WhisperSpeechEncoder(nn.Module):
    """Whisper's encoder: (B, S) 16 kHz audio -> (B, N, d_model) last hidden state at 50 Hz.
    Parameter names are transformers' WhisperEncoder's."""

    feature_rate = FEATURE_RATE
    float32_parts = ("window", "mel_filters")   # the front end stays float32 in a half model

    def __init__(self, config: WhisperEncoderConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        filters = slaney_mel_filters(N_FFT // 2 + 1, config.num_mel_bins, 0.0, SAMPLE_RATE / 2, SAMPLE_RATE)
        self.register_buffer("mel_filters", torch.tensor(filters, dtype=torch.float32).T, persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, d)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)

    @property
    def feature_extractor(self) -> nn.Module:
        return _ConvStem(self.conv1, self.conv2)

    @property
    def window_frames(self) -> int:
        """Mel frames of one encoder window (3000 = 30 s for Whisper)."""
        return 2 * self.config.max_source_positions

    # -- front end
    def log_mel(self, waveform: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """(B, S) -> (B, n_mels, S // 160) as WhisperFeatureExtractor computes it, each clip
        relative to its loudest bin. `pad_to` samples (480000 = Whisper's 30 s): cut or zero-pad
        to that length first, as the extractor does. Without it the frames equal those of the
        zero-padded input, also at the clip's end: the STFT sees n_fft / 2 zeros there (as
        Whisper's own padding gives) rather than reflected audio."""
        x = waveform.float()
        if pad_to is not None:
            x = F.pad(x[:, :pad_to], (0, max(pad_to - x.shape[1], 0)))
        else:
            x = F.pad(x, (0, N_FFT // 2))
        n_frames = (pad_to or waveform.shape[1]) // HOP
        spec = torch.stft(x, N_FFT, HOP, window=self.window, return_complex=True)[..., :n_frames]
        power = (spec.abs() ** 2).contiguous()
        mel = torch.matmul(self.mel_filters, power).clamp_min(1e-10).log10()
        loudest = mel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(mel, loudest - DYNAMIC_RANGE) + 4.0) / 4.0

    # -- network
    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F), F <= window_frames -> (B, ceil(F / 2), d): positions 0..N-1."""
        if mel.shape[-1] > self.window_frames:
            raise ValueError(f"{mel.shape[-1]} mel frames; one window takes at most {self.window_frames}")
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)                          # (B, N, d)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)

    def positions(self, n_mel_frames: int) -> int:
        return (n_mel_frames - 1) // 2 + 1 if n_mel_frames > 0 else 0

    def feature_count(self, n_samples: int) -> int:
        return self.positions(n_samples // HOP)

    def forward(self, waveform: torch.Tensor) -> SimpleNamespace:
        """(B, S), S <= 30 s -> .last_hidden_state (B, feature_count(S), d). With `pad_windows`
        the clip runs on a full 30 s of input (zero-padded), as Whisper was trained. Longer
        audio is the caller's to cut: inference._encode_windows cuts 20 s windows, cross-faded."""
        n_frames = waveform.shape[1] // HOP
        if n_frames > self.window_frames:
            raise ValueError(f"{waveform.shape[1] / SAMPLE_RATE:.1f} s of audio; the Whisper encoder takes at most "
                             f"{self.window_frames * HOP / SAMPLE_RATE:.0f} s at once (inference cuts longer audio "
                             f"into windows)")
        pad_to = self.window_frames * HOP if self.config.pad_windows else None
        hidden = self.encode_mel(self.log_mel(waveform, pad_to=pad_to))
        return SimpleNamespace(last_hidden_state=hidden[:, : self.positions(n_frames)])

    def memory_frame_count(self, n_samples: int, fps: float, alignment: str) -> int:
        """M = int(N50 / 50 * rate), rate = fps (or 2 * fps, even, for 'pair' alignment)."""
        rate = 2 * fps if alignment == "pair" else fps
        size = max(int(self.feature_count(n_samples) / FEATURE_RATE * rate), 1)
        return size - size % 2 if alignment == "pair" else size

    def encode_aligned(self, waveform: torch.Tensor, fps: float, alignment: str,
                       n_frames: int | None = None) -> torch.Tensor:
        """(B, S) -> (B, M, d) last hidden state, linearly interpolated (align_corners) from
        50 Hz to the decoder memory rate (or to `n_frames` motion frames)."""
        size = self.memory_frame_count(waveform.shape[1], fps, alignment)
        if n_frames is not None:
            size = 2 * n_frames if alignment == "pair" else n_frames
        hidden = self.forward(waveform).last_hidden_state
        if hidden.shape[1] == 1:      # interpolate cannot align corners of a single point
            return hidden.expand(-1, size, -1)
        return F.interpolate(hidden.transpose(1, 2), size=size, mode="linear", align_corners=True).transpose(1, 2)


def build_whisper_encoder(config: dict) -> WhisperSpeechEncoder:
    return WhisperSpeechEncoder(WhisperEncoderConfig.from_dict(config)).eval()


def load_whisper_encoder(directory: str | Path) -> tuple[WhisperSpeechEncoder, dict]:
    """The encoder of a converted (or any transformers-format) Whisper folder, float32."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("model_type") != "whisper":
        raise ValueError(f"{directory / 'config.json'} does not describe a Whisper model")
    spec = whisper_encoder_spec(config)
    encoder = build_whisper_encoder(spec["config"])
    state = load_file(str(directory / "model.safetensors"))
    for prefix in ("encoder.", "model.encoder."):     # WhisperModel / WhisperForConditionalGeneration
        picked = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
        if picked:
            break
    encoder.load_state_dict(picked, strict=True)
    return encoder.eval(), spec
