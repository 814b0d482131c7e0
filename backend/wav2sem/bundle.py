"""Model bundles: the one on-disk form the server, the command line and the add-on take.

A bundle is a folder (docs/DESIGN.md):
  config.json         BundleConfig below (architecture, sizes, fps, subjects, encoders)
  model.safetensors   weights in our own naming (safetensors, never pickle)
  template.npz        the neutral face (wav2sem.template.Template); for a blendshape model
                      (config "output": {"type": "blendshapes", "channels"}) also the
                      channels' displacements, in the channels' order
  preprocessor_config.json  optional transformers feature-extractor config for the audio
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .bundle_config import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, BundleConfig  # noqa: F401 (re-exported)
from .errors import MODEL_INVALID, MODEL_NOT_FOUND, OUTPUT_UNWRITABLE, Wav2SemError, reason
from .models.faceformer import FaceFormer
from .models.talker import SpeechToFace
from .safetensors_io import read_safetensors
from .skip_init import skipped_initialisation
from .template import Template

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "assets" / "default"
CONFIG_FILE, WEIGHTS_FILE, TEMPLATE_FILE, PREPROCESSOR_FILE = (
    "config.json", "model.safetensors", "template.npz", "preprocessor_config.json")
BUNDLE_FILES = frozenset((CONFIG_FILE, WEIGHTS_FILE, TEMPLATE_FILE, PREPROCESSOR_FILE))


def build_model(config: BundleConfig, source: str = "The model config", *,
                uninitialised: bool = False) -> SpeechToFace:
    """The network a config describes, with random weights. MODEL_INVALID when the encoder
    configs name sizes the libraries cannot build.

    uninitialised: parameters left as uninitialised placeholders instead (no random
    initialisation, no memory touched; see `skipped_initialisation`), for `load_weights` to
    replace with the file's tensors. Buffers are computed as usual."""
    model, _ = _build(config, source, uninitialised)
    return model


def _build(config: BundleConfig, source: str, uninitialised: bool):
    from .models.codetalker import CodeTalker
    from .models.direct import DirectDecoder

    architectures = {"faceformer": FaceFormer, "direct": DirectDecoder, "codetalker": CodeTalker}
    if config.arch not in architectures:
        raise Wav2SemError(MODEL_INVALID, f"Unknown model architecture {config.arch!r} in the bundle; "
                                          f"this backend knows {sorted(architectures)} (update wav2sem?).")
    options = {"motion_vq": config.motion_vq} if config.arch == "codetalker" else {}
    try:
        with skipped_initialisation() if uninitialised else contextlib.nullcontext() as mode:
            return architectures[config.arch](config.decoder, config.encoder, config.semantic, **options), mode
    except Wav2SemError:
        raise
    except Exception as exc:  # a config the libraries refuse (types, sizes that do not divide)
        raise Wav2SemError(MODEL_INVALID, f"{source} describes a network this backend cannot build "
                                          f"({reason(exc)}); rebuild the bundle.") from exc


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
        config = BundleConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError, OSError) as exc:      # JSON and Unicode errors are ValueErrors
        raise Wav2SemError(MODEL_INVALID, f"{directory / CONFIG_FILE} is not a valid bundle config: {reason(exc)}; "
                                          "rebuild the bundle (wav2sem convert or train).") from exc
    template = Template.load(directory / TEMPLATE_FILE)
    if template.vertex_count != config.decoder.vertex_count:
        raise Wav2SemError(
            MODEL_INVALID,
            f"The template in {directory} has {template.vertex_count} vertices but the model was built for "
            f"{config.decoder.vertex_count}; use the template the model was trained with.",
        )
    check_template_channels(template, config, str(directory))
    return Bundle(directory, config, template)


def check_template_channels(template: Template, config: BundleConfig, where: str) -> None:
    """A blendshape model's template must carry exactly its channels' displacements, in order
    (MODEL_INVALID otherwise)."""
    if not config.predicts_weights or template.blendshape_names == config.channels:
        return
    if not template.has_blendshapes:
        raise Wav2SemError(MODEL_INVALID, f"The model in {where} predicts {len(config.channels)} blendshape weights but "
                                          "its template has no blendshapes; rebuild the bundle with the template it was trained with.")
    missing = [c for c in config.channels if c not in template.blendshape_names]
    detail = (f"has no blendshape {missing[0]!r}" if missing else
              f"has {len(template.blendshape_names)} blendshapes, not exactly the model's {len(config.channels)} channels in their order")
    raise Wav2SemError(MODEL_INVALID, f"The template in {where} {detail}; "
                                      "rebuild the bundle with the template the model was trained with.")


def load_weights(bundle: Bundle) -> SpeechToFace:
    """Build the network and load model.safetensors strictly, naming missing/unexpected keys.

    The network is built with its parameters uninitialised (`build_model(uninitialised=True)`)
    and the file's tensors become its parameters (`load_state_dict(assign=True)`): no random
    initialisation, and the weights are held once, not twice. Each tensor is read from the
    file straight into torch's own (64-byte aligned) memory (`read_safetensors`), as a normally
    built network held it: safetensors' own loader hands out views of a memory-mapped file at
    unaligned addresses, whose pages would count as a second copy while the file is read, and
    on which vectorised kernels take other paths (outputs would differ in the last bits).
    Tensors stored in another dtype than the network's (the float16 parts
    `save_bundle(half_prefixes=...)` writes) are cast to it, as copying them into a normally
    built network did."""
    weights = bundle.directory / WEIGHTS_FILE
    model, placeholders = _build(bundle.config, str(bundle.directory / CONFIG_FILE), uninitialised=True)
    expected = model.state_dict()
    state = read_safetensors(weights, lambda shapes: check_state_dict(expected, shapes, source=str(weights)),
                             {key: value.dtype for key, value in expected.items()})
    model.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if placeholders.holds(t)]
    if left:   # a parameter the file did not replace: a bug, never silent
        raise Wav2SemError(MODEL_INVALID, f"Loading {weights} left {len(left)} tensors uninitialised "
                                          f"(e.g. {', '.join(left[:4])}); this backend cannot use the bundle.")
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


def _is_bundle(directory: Path) -> bool:
    try:
        data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT


def check_bundle_target(directory: str | Path) -> Path:
    """Refuse, before any slow work, a bundle destination that holds anything but a bundle
    (OUTPUT_UNWRITABLE): a file, a folder of other things, or a bundle with the user's own
    files inside. An empty folder or a plain bundle may be replaced."""
    directory = Path(directory)
    if directory.is_dir():
        entries = sorted(p.name for p in directory.iterdir())
        others = [name for name in entries if name not in BUNDLE_FILES]
        if entries and not _is_bundle(directory):
            raise Wav2SemError(OUTPUT_UNWRITABLE, f"{directory} exists and is not a model bundle; choose a new folder name.")
        if others:
            raise Wav2SemError(OUTPUT_UNWRITABLE, f"{directory} is a model bundle but also holds other files "
                                                  f"({', '.join(others[:3])}); move them out or choose a new folder name.")
    elif directory.exists() or directory.is_symlink():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"{directory} exists and is not a model bundle; choose a new folder name.")
    ancestor = directory.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Cannot write the model bundle {directory}: {ancestor} is not a writable "
                                              "folder; choose another place.")
    return directory


def _sibling(directory: Path, tag: str) -> Path:
    """A fresh hidden folder next to `directory` (on the same file system, so renames are
    atomic), made with os.mkdir's normal permissions (0o777 less the umask)."""
    while True:
        path = directory.with_name(f".{directory.name}-{uuid.uuid4().hex[:8]}.{tag}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_into_place(staging: Path, directory: Path) -> None:
    """Rename the finished `staging` folder to `directory`. An old bundle there is renamed
    aside first and deleted last, so at every moment one complete bundle exists; if the new
    one cannot be put in place, the old one is put back."""
    if not (directory.exists() or directory.is_symlink()):
        os.replace(staging, directory)
        return
    aside = staging.with_suffix(".old")
    os.replace(directory, aside)
    try:
        os.replace(staging, directory)
    except BaseException:
        os.replace(aside, directory)
        raise
    if aside.is_symlink():
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)


def save_bundle(directory: str | Path, config: BundleConfig, model: torch.nn.Module, template: Template,
                preprocessor_config: dict | None = None, half_prefixes: tuple[str, ...] = ()) -> Path:
    """Write a bundle atomically: into a hidden sibling folder, then renamed into place. Never
    removes anything but an earlier bundle (see check_bundle_target). Floating-point weights
    whose names start with one of `half_prefixes` are stored as float16 (a frozen pretrained
    encoder whose source weights are float16, e.g. whisper-base from its CTranslate2 package:
    half the size, nothing lost); loading casts them to the model's dtype."""
    from safetensors.torch import save_file

    directory = check_bundle_target(directory)
    if template.vertex_count != config.decoder.vertex_count:
        raise Wav2SemError(MODEL_INVALID, f"Template has {template.vertex_count} vertices but the model expects {config.decoder.vertex_count}.")
    check_template_channels(template, config, "the bundle being written")
    staging: Path | None = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = _sibling(directory, "new")
        (staging / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        for k, v in state.items():
            if k.startswith(half_prefixes) and v.is_floating_point():
                state[k] = v.half()
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
        # safetensors writes 0600; give the weights the normal mode config.json got from open()
        os.chmod(staging / WEIGHTS_FILE, stat.S_IMODE((staging / CONFIG_FILE).stat().st_mode))
        template.save(staging / TEMPLATE_FILE)
        if preprocessor_config is not None:
            (staging / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config, indent=2) + "\n", encoding="utf-8")
        check_bundle_target(directory)           # nothing appeared there meanwhile
        _swap_into_place(staging, directory)
    except OSError as exc:
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Cannot write the model bundle {directory} ({reason(exc)}); "
                                              "choose a folder on a writable disk with free space.") from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory
