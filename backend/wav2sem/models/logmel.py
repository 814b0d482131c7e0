"""A compact speech encoder trained from scratch: log-mel front end, conv stack, GRU.

Used by the embedded default model because no pretrained wav2vec 2.0 can be had offline
here. It offers the same interface the inference code uses for transformers encoders
(`config.hidden_size`, `feature_count`, `feature_rate`, `encode_aligned`, and a forward
returning `.last_hidden_state`), so bundles, windows and Wav2Sem fusion work unchanged.
The STFT is torch's; the mel filterbank is computed here (`slaney_mel_filters`, equal to
transformers.audio_utils.mel_filter_bank with Slaney's scale and norm) because importing
transformers only for it cost about a second of every cold start.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
HOP = 160            # samples: 100 mel frames per second
N_FFT = 400          # 25 ms window
INPUT_NORMS = ("frame", "utterance", "frame+energy")
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below a clip's loudest mel bin ("utterance" norm)


@dataclass
class LogMelConfig:
    n_mels: int = 80
    conv_channels: int = 128
    hidden_size: int = 128          # output feature size
    gru_layers: int = 2
    dropout: float = 0.1
    gru_size: int | None = None     # bidirectional GRU width (default hidden_size); a Linear maps it to hidden_size
    downsample: int = 1             # average-pool factor before the GRU in `forward` (pooled uses: Wav2Sem)
    # "frame": LayerNorm across the mel bins of each frame (bundles up to 0.1). It removes each
    # frame's loudness, so pauses and lip closures are told apart only by spectral shape, which
    # worked on synthetic voices and failed on recorded ones (docs/default_model.md).
    # "utterance": log-mel relative to the clip's loudest bin, floored 80 dB below (as Whisper's
    # front end), scaled to about [-1, 1]: the energy contour survives.
    # "frame+energy": the per-frame LayerNorm plus one more input channel, the frame's log
    # energy relative to the clip's loudest frame (same scaling as "utterance").
    input_norm: str = "frame"

    def to_dict(self) -> dict:
        return asdict(self)


def _relative_to_loudest(log_values: torch.Tensor) -> torch.Tensor:
    """(B, C, F) log10 energies -> relative to each clip's maximum, floored DYNAMIC_RANGE below,
    scaled to [-1, 1]."""
    loudest = log_values.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(log_values, loudest - DYNAMIC_RANGE) - loudest) / (DYNAMIC_RANGE / 2) + 1


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, 3.0 * hz / 200.0)


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(log_step * (mels - 15.0)), 200.0 * mels / 3.0)


def slaney_mel_filters(n_freqs: int, n_mels: int, f_min: float, f_max: float, sample_rate: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular filters on Slaney's mel scale, each scaled to unit area
    (Slaney's norm: 2 / bandwidth), over the STFT's bin frequencies 0 .. sample_rate / 2."""
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_freqs)
    slopes = edges[None, :] - bins[:, None]                         # (n_freqs, n_mels + 2)
    width = np.diff(edges)
    rising = -slopes[:, :-2] / width[:-1]
    falling = slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


class LogMelEncoder(nn.Module):
    feature_rate = SAMPLE_RATE / HOP  # Hz
    # the front end (STFT window, mel filters, input normalisation) stays float32 in a
    # half-precision model (SpeechToFace.to_precision); the conv stack and GRU may be fp16
    float32_parts = ("window", "mel_filters", "input_norm")

    def __init__(self, config: LogMelConfig):
        super().__init__()
        self.config = config
        filters = slaney_mel_filters(N_FFT // 2 + 1, config.n_mels, 50.0, 7600.0, SAMPLE_RATE)   # (freq, mels)
        self.register_buffer("mel_filters", torch.tensor(filters, dtype=torch.float32).T, persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        c = config.conv_channels
        if config.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, not {config.input_norm!r}")
        self.input_norm = nn.LayerNorm(config.n_mels) if config.input_norm.startswith("frame") else None
        inputs = config.n_mels + (config.input_norm == "frame+energy")
        self.conv = nn.Sequential(
            nn.Conv1d(inputs, c, 5, padding=2), nn.GELU(),
            nn.Conv1d(c, c, 5, padding=2), nn.GELU(),
            nn.Conv1d(c, c, 3, padding=1), nn.GELU(),
        )
        gru_size = config.gru_size or config.hidden_size
        self.gru = nn.GRU(c, gru_size // 2, num_layers=config.gru_layers, batch_first=True,
                          bidirectional=True, dropout=config.dropout if config.gru_layers > 1 else 0.0)
        self.out_proj = nn.Linear(gru_size, config.hidden_size) if gru_size != config.hidden_size else nn.Identity()
        self.out_norm = nn.LayerNorm(config.hidden_size)

    def feature_count(self, n_samples: int) -> int:
        return n_samples // HOP + 1            # centred STFT

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, F100, n_mels) log-mel energies, float32 whatever the model dtype."""
        spec = torch.stft(waveform.float(), N_FFT, HOP, window=self.window, return_complex=True)
        power = spec.abs() ** 2                                                          # (B, freq, F)
        mel = torch.matmul(self.mel_filters, power).clamp_min(1e-10).log10()             # (B, mels, F)
        if self.config.input_norm == "utterance":
            return _relative_to_loudest(mel).transpose(1, 2)
        out = self.input_norm(mel.transpose(1, 2))                                       # (B, F, mels)
        if self.config.input_norm == "frame+energy":
            energy = torch.matmul(self.mel_filters.sum(0), power).clamp_min(1e-10).log10()  # (B, F)
            out = torch.cat([out, _relative_to_loudest(energy[:, None]).transpose(1, 2)], dim=2)
        return out

    def _frames(self, mel: torch.Tensor, size: int | None) -> torch.Tensor:
        x = self.conv(mel.transpose(1, 2).to(self.conv[0].weight.dtype))                 # (B, C, F)
        if size is not None:
            x = F.interpolate(x, size=size, mode="linear", align_corners=True)
        elif self.config.downsample > 1:
            x = F.avg_pool1d(x, self.config.downsample, ceil_mode=True)
        x, _ = self.gru(x.transpose(1, 2))
        return self.out_norm(self.out_proj(x))                                           # (B, M, H)

    def forward(self, waveform: torch.Tensor) -> SimpleNamespace:
        """Features at the mel rate / downsample (100 Hz by default), as transformers
        encoders return theirs."""
        return SimpleNamespace(last_hidden_state=self._frames(self.log_mel(waveform), None))

    def memory_frame_count(self, n_samples: int, fps: float, alignment: str) -> int:
        """M = int(F100 / 100 * rate), rate = fps (or 2 * fps, even, for 'pair' alignment)."""
        rate = 2 * fps if alignment == "pair" else fps
        size = max(int(self.feature_count(n_samples) / self.feature_rate * rate), 1)
        return size - size % 2 if alignment == "pair" else size

    def encode_aligned(self, waveform: torch.Tensor, fps: float, alignment: str,
                       n_frames: int | None = None) -> torch.Tensor:
        """(B, S) -> (B, M, H) at the decoder memory rate (or aligned to `n_frames` motion frames)."""
        size = self.memory_frame_count(waveform.shape[1], fps, alignment)
        if n_frames is not None:
            size = 2 * n_frames if alignment == "pair" else n_frames
        return self._frames(self.log_mel(waveform), size)
