"""Official reference checkpoints -> our model, by key mapping (one place for every mapping).

- FaceFormer `vocaset.pth` / `biwi.pth`: plain state dicts in our top-level names already;
  only the weight-norm naming of the positional conv differs between transformers versions.
- Wav2Sem weights: `FeatureExtractor.*`, `FeatureProjection.*`, `Encoder.*` (optionally under
  `Wav2Bert.`, with the fusion layer as `bert_feature_map`), mapped onto transformers'
  Wav2Vec2Model names so the library implementation runs them.
Checkpoints are read with `torch.load(weights_only=True)`: tensors only, no code execution.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from .reasons import reason

# Old (torch.nn.utils.weight_norm) vs new (parametrizations) names of a weight-normed conv.
_WEIGHT_NORM = {
    "pos_conv_embed.conv.weight_g": "pos_conv_embed.conv.parametrizations.weight.original0",
    "pos_conv_embed.conv.weight_v": "pos_conv_embed.conv.parametrizations.weight.original1",
}
_WAV2SEM_PREFIXES = {
    "FeatureExtractor.": "feature_extractor.",
    "FeatureProjection.": "feature_projection.",
    "Encoder.": "encoder.",
}
WAV2SEM_HOST_PREFIX = "Wav2Bert."
WAV2SEM_FUSION_PREFIX = "bert_feature_map."
OPTIONAL_KEYS = ("audio_encoder.masked_spec_embed",)  # training-only; present in some checkpoints


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth / .pth.tar (plain, or under 'state_dict') or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise Wav2SemError(MODEL_NOT_FOUND, f"Checkpoint not found: {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:     # what weights_only raises for anything but tensors and containers
        raise Wav2SemError(MODEL_INVALID, f"Refused to load checkpoint {path.name}: it holds Python objects, not only "
                                          "tensors, and unpickling them could run code; give a plain state dict.") from exc
    except Exception as exc:
        raise Wav2SemError(MODEL_INVALID, f"Cannot read checkpoint {path.name} ({reason(exc)}); "
                                          "the file is damaged or not a PyTorch checkpoint.") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Wav2SemError(MODEL_INVALID, f"{path.name} does not contain a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix


def rename_weight_norm(state: dict[str, torch.Tensor], expected_keys) -> dict[str, torch.Tensor]:
    """Translate weight_g/weight_v <-> parametrizations.* to whatever the model expects."""
    expected = set(expected_keys)
    out = {}
    for key, value in state.items():
        new = key
        for old_suffix, new_suffix in _WEIGHT_NORM.items():
            if key.endswith(old_suffix) and key not in expected:
                new = key[: -len(old_suffix)] + new_suffix
            elif key.endswith(new_suffix) and key not in expected:
                new = key[: -len(new_suffix)] + old_suffix
        out[new] = value
    return out


def map_wav2sem_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Reference Wav2Sem keys -> (Wav2Vec2Model state, fusion Linear state).

    Accepts the standalone encoder (`FeatureExtractor.*` ...) or a host-model checkpoint
    (`Wav2Bert.*` + `bert_feature_map.*`, other host keys ignored)."""
    has_host_prefix = any(k.startswith(WAV2SEM_HOST_PREFIX) for k in state)
    encoder, fusion = {}, {}
    for key, value in state.items():
        if key.startswith(WAV2SEM_FUSION_PREFIX):
            fusion[key[len(WAV2SEM_FUSION_PREFIX):]] = value
            continue
        if has_host_prefix:
            if not key.startswith(WAV2SEM_HOST_PREFIX):
                continue
            key = key[len(WAV2SEM_HOST_PREFIX):]
        for old, new in _WAV2SEM_PREFIXES.items():
            if key.startswith(old):
                encoder[new + key[len(old):]] = value
                break
        else:
            encoder[key] = value  # left as is: reported as unexpected if it does not fit
    return encoder, fusion


def fit_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
              optional=()) -> dict[str, torch.Tensor]:
    """`state` renamed to the `expected` keys, checked strictly (MODEL_INVALID names missing,
    unexpected and misshapen keys). Keys in `optional` may be absent (expected's value is
    kept) or extra (dropped)."""
    from .bundle import check_state_dict

    state = rename_weight_norm(state, expected)
    state = {k: v for k, v in state.items() if k in expected or k not in optional}
    for key in optional:
        if key in expected and key not in state:
            state[key] = expected[key]
    check_state_dict(expected, state, source)
    return state


def load_faceformer_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load an official FaceFormer state dict (audio encoder + decoder) strictly into `model`.
    Wav2Sem keys in the same file (`Wav2Bert.*`, `bert_feature_map.*`) go to the semantic parts."""
    state = read_checkpoint(path)
    semantic_keys = [k for k in state if k.startswith((WAV2SEM_HOST_PREFIX, WAV2SEM_FUSION_PREFIX))]
    host = {k: v for k, v in state.items() if k not in semantic_keys}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(("semantic_encoder.", "semantic_fusion."))}
    model.load_state_dict(fit_state(expected, host, str(path), optional=OPTIONAL_KEYS), strict=False)
    if semantic_keys and model.has_semantic:
        load_wav2sem_weights(model, {k: state[k] for k in semantic_keys}, str(path))


def load_wav2sem_weights(model: torch.nn.Module, state_or_path, source: str | None = None) -> None:
    """Load reference-named Wav2Sem weights into model.semantic_encoder (+ semantic_fusion
    when the checkpoint carries `bert_feature_map`)."""
    if not isinstance(state_or_path, dict):
        source = str(state_or_path)
        state_or_path = read_checkpoint(state_or_path)
    encoder_state, fusion_state = map_wav2sem_state(state_or_path)
    encoder = model.semantic_encoder
    encoder.load_state_dict(fit_state(encoder.state_dict(), encoder_state, f"{source} (Wav2Sem encoder)",
                                      optional=("masked_spec_embed",)))
    if fusion_state:
        fusion = model.semantic_fusion
        fusion.load_state_dict(fit_state(fusion.state_dict(), fusion_state, f"{source} (bert_feature_map)"))
