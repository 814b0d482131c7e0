"""Model bundles: the one on-disk form the server, the command line and the add-on take.

A bundle is a folder (docs/DESIGN.md):
  config.json         BundleConfig below (architecture, sizes, fps, subjects, encoders)
  model.safetensors   weights in our own naming (safetensors, never pickle)
  template.npz        the neutral face (wav2sem.template.Template)
  preprocessor_config.json  optional transformers feature-extractor config for the audio
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from .models.faceformer import DecoderConfig, FaceFormer
from .models.talker import SpeechToFace
from .template import Template

BUNDLE_FORMAT = "wav2sem-bundle"
BUNDLE_FORMAT_VERSION = 1
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "assets" / "default"
CONFIG_FILE, WEIGHTS_FILE, TEMPLATE_FILE, PREPROCESSOR_FILE = (
    "config.json", "model.safetensors", "template.npz", "preprocessor_config.json")


@dataclass(frozen=True)
class BundleConfig:
    name: str
    decoder: DecoderConfig
    fps: float
    subjects: tuple[str, ...]
    encoder: dict                       # {"type", "config"} (see models/encoders.py)
    semantic: dict | None = None        # same form, or None for a model without Wav2Sem
    arch: str = "faceformer"
    description: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["subjects"] = list(self.subjects)
        return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "BundleConfig":
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError("config.json is not a wav2sem bundle config")
        if data.get("format_version", 0) > BUNDLE_FORMAT_VERSION:
            raise ValueError(f"bundle format {data['format_version']} is newer than this backend supports; update wav2sem")
        return cls(
            name=data["name"], decoder=DecoderConfig(**data["decoder"]), fps=float(data["fps"]),
            subjects=tuple(data["subjects"]), encoder=data["encoder"], semantic=data.get("semantic"),
            arch=data.get("arch", "faceformer"), description=data.get("description", ""), extra=data.get("extra", {}),
        )


def build_model(config: BundleConfig) -> SpeechToFace:
    from .models.direct import DirectDecoder

    architectures = {"faceformer": FaceFormer, "direct": DirectDecoder}
    if config.arch not in architectures:
        raise Wav2SemError(MODEL_INVALID, f"Unknown model architecture {config.arch!r} in the bundle; "
                                          f"this backend knows {sorted(architectures)} (update wav2sem?).")
    return architectures[config.arch](config.decoder, config.encoder, config.semantic)


@dataclass
class Bundle:
    directory: Path
    config: BundleConfig
    template: Template

    @property
    def has_preprocessor(self) -> bool:
        return (self.directory / PREPROCESSOR_FILE).is_file()


def resolve_bundle_dir(path: str | Path | None) -> Path:
    """The bundle folder to use: the given one, else $WAV2SEM_MODEL, else the embedded default."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get("WAV2SEM_MODEL")
    if env:
        return Path(env).expanduser()
    return DEFAULT_BUNDLE_DIR


def read_bundle(path: str | Path | None = None) -> Bundle:
    """Read and check a bundle's config and template (not the weights). Blocks; any thread."""
    directory = resolve_bundle_dir(path)
    if not directory.is_dir():
        if directory == DEFAULT_BUNDLE_DIR:
            raise Wav2SemError(MODEL_NOT_FOUND, "No model was given and the embedded default model is missing; pass a model bundle folder.")
        raise Wav2SemError(MODEL_NOT_FOUND, f"Model folder not found: {directory}.")
    for name in (CONFIG_FILE, WEIGHTS_FILE, TEMPLATE_FILE):
        if not (directory / name).is_file():
            raise Wav2SemError(MODEL_INVALID, f"Model folder {directory} has no {name}; it is not a complete wav2sem model bundle.")
    try:
        config = BundleConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise Wav2SemError(MODEL_INVALID, f"{directory / CONFIG_FILE} is not a valid bundle config: {exc}.") from exc
    template = Template.load(directory / TEMPLATE_FILE)
    if template.vertex_count != config.decoder.vertex_count:
        raise Wav2SemError(
            MODEL_INVALID,
            f"The template in {directory} has {template.vertex_count} vertices but the model was built for "
            f"{config.decoder.vertex_count}; use the template the model was trained with.",
        )
    return Bundle(directory, config, template)


def load_weights(bundle: Bundle) -> SpeechToFace:
    """Build the network and load model.safetensors strictly, naming missing/unexpected keys."""
    from safetensors.torch import load_file

    model = build_model(bundle.config)
    try:
        state = load_file(str(bundle.directory / WEIGHTS_FILE))
    except Exception as exc:
        raise Wav2SemError(MODEL_INVALID, f"Cannot read {bundle.directory / WEIGHTS_FILE}: {exc}.") from exc
    check_state_dict(model.state_dict(), state, source=str(bundle.directory / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_state_dict(expected: dict, state: dict, source: str) -> None:
    """Raise MODEL_INVALID naming missing, unexpected and wrongly shaped keys of `state`
    against the `expected` state dict."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} keys of the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise Wav2SemError(MODEL_INVALID, f"Weights in {source} do not fit the model: " + "; ".join(parts) + ".")


def save_bundle(directory: str | Path, config: BundleConfig, model: torch.nn.Module, template: Template,
                preprocessor_config: dict | None = None) -> Path:
    """Write a bundle atomically: into a temporary sibling folder, then renamed into place."""
    from safetensors.torch import save_file

    directory = Path(directory)
    if template.vertex_count != config.decoder.vertex_count:
        raise Wav2SemError(MODEL_INVALID, f"Template has {template.vertex_count} vertices but the model expects {config.decoder.vertex_count}.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
        template.save(staging / TEMPLATE_FILE)
        if preprocessor_config is not None:
            (staging / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
