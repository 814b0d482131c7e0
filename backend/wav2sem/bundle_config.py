"""A bundle's config.json (docs/DESIGN.md, "Model bundle") and its checking.

`BundleConfig.from_dict` takes the parsed JSON as found on disk and raises ValueError with a
short phrase naming the first problem; `read_bundle` turns that into one MODEL_INVALID sentence.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .models.encoders import ENCODER_TYPES
from .models.faceformer import DecoderConfig
from .models.motion_vq import MotionVQConfig
from .models.talker import ALIGN_INTERPOLATE, ALIGN_PAIR

BUNDLE_FORMAT = "wav2sem-bundle"
BUNDLE_FORMAT_VERSION = 2          # the newest this backend reads
VERTICES_FORMAT_VERSION = 1        # what a vertex-offset bundle is written as (unchanged since 1)
BLENDSHAPES_FORMAT_VERSION = 2     # a blendshape bundle: an older backend says "update wav2sem"
ARCHITECTURES = ("faceformer", "direct", "codetalker")
OUTPUT_VERTICES, OUTPUT_BLENDSHAPES = "vertices", "blendshapes"


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
    channels: tuple[str, ...] = ()      # blendshape channel names (K = decoder.output_channels), () = offsets
    motion_vq: MotionVQConfig | None = None   # CodeTalker's stage 1 (arch "codetalker" only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != self.decoder.output_channels:
            raise ValueError(f"the output lists {len(self.channels)} channels but decoder.output_channels "
                             f"is {self.decoder.output_channels}")

    @property
    def output_type(self) -> str:
        return OUTPUT_BLENDSHAPES if self.channels else OUTPUT_VERTICES

    @property
    def predicts_weights(self) -> bool:
        return bool(self.channels)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["subjects"] = list(self.subjects)
        del data["channels"]
        if self.motion_vq is None:                 # every other architecture: written exactly as before
            del data["motion_vq"]
        if not self.decoder.output_channels:       # vertex bundles: written exactly as before
            del data["decoder"]["output_channels"]
            return {"format": BUNDLE_FORMAT, "format_version": VERTICES_FORMAT_VERSION, **data}
        data["output"] = {"type": OUTPUT_BLENDSHAPES, "channels": list(self.channels)}
        return {"format": BUNDLE_FORMAT, "format_version": BLENDSHAPES_FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: object) -> "BundleConfig":
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f'it is not a wav2sem bundle config (it needs "format": "{BUNDLE_FORMAT}")')
        version = data.get("format_version", 0)
        if not _is_int(version):
            raise ValueError(f"format_version must be a whole number, not {version!r}")
        if version > BUNDLE_FORMAT_VERSION:
            raise ValueError(f"bundle format {version} is newer than this backend supports; update wav2sem")
        decoder = _decoder(data.get("decoder"))
        fps = data.get("fps")
        if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, not {fps!r}")
        subjects = data.get("subjects")
        if not isinstance(subjects, list) or not subjects or not all(isinstance(s, str) and s for s in subjects):
            raise ValueError("subjects must be a non-empty list of subject names")
        if len(set(subjects)) != len(subjects):
            raise ValueError("subjects lists a name twice")
        if len(subjects) != decoder.n_subjects:
            raise ValueError(f"it lists {len(subjects)} subjects but decoder.n_subjects is {decoder.n_subjects}")
        arch = data.get("arch", "faceformer")
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown model architecture {arch!r}; this backend knows {list(ARCHITECTURES)} (update wav2sem?)")
        semantic = data.get("semantic")
        if not isinstance(data.get("name"), str) or not isinstance(data.get("description", ""), str):
            raise ValueError("name and description must be text")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError("extra must be an object")
        channels = _output(data.get("output"), decoder)
        motion_vq = _motion_vq(data.get("motion_vq"), arch)
        return cls(name=data["name"], decoder=decoder, fps=float(fps), subjects=tuple(subjects),
                   encoder=_encoder(data.get("encoder"), "encoder"),
                   semantic=None if semantic is None else _encoder(semantic, "semantic"),
                   arch=arch, description=data.get("description", ""), extra=extra, channels=channels,
                   motion_vq=motion_vq)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decoder(data: object) -> DecoderConfig:
    if not isinstance(data, dict):
        raise ValueError("decoder must be an object")
    names = [f.name for f in fields(DecoderConfig)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"decoder has unknown fields {unknown}; known are {names}")
    for name in ("vertex_count", "n_subjects"):
        if name not in data:
            raise ValueError(f"decoder.{name} is missing")
    for name in names:
        value = data.get(name)
        if name == "alignment":
            if name in data and value not in (ALIGN_INTERPOLATE, ALIGN_PAIR):
                raise ValueError(f"decoder.alignment must be {ALIGN_INTERPOLATE!r} or {ALIGN_PAIR!r}, not {value!r}")
        elif name == "output_channels":
            if name in data and not (_is_int(value) and value >= 0):
                raise ValueError(f"decoder.output_channels must be a whole number, 0 or more, not {value!r}")
        elif name in data and not (value is None and name == "ff_dim") and not (_is_int(value) and value > 0):
            raise ValueError(f"decoder.{name} must be a positive whole number, not {value!r}")
    decoder = DecoderConfig(**data)
    if decoder.feature_dim % decoder.n_heads:
        raise ValueError(f"decoder.feature_dim ({decoder.feature_dim}) must be a multiple of decoder.n_heads ({decoder.n_heads})")
    return decoder


def _motion_vq(data: object, arch: str) -> MotionVQConfig | None:
    """CodeTalker's stage-1 sizes and decoding options (required for it, refused for others)."""
    if arch != "codetalker":
        if data is not None:
            raise ValueError(f"motion_vq belongs to a codetalker model, not to arch {arch!r}")
        return None
    if not isinstance(data, dict):
        raise ValueError("a codetalker model needs a motion_vq object (its stage-1 sizes)")
    known = {f.name: f for f in fields(MotionVQConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"motion_vq has unknown fields {unknown}; known are {sorted(known)}")
    for name, value in data.items():
        default = known[name].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = _is_number(value) and math.isfinite(value) and value >= 0
        else:
            ok = _is_int(value) and (value >= 0 if name == "feedback_window" else value > 0)
        if not ok:
            raise ValueError(f"motion_vq.{name} has an invalid value {value!r}")
    config = MotionVQConfig(**data)
    config.check()
    return config


def _output(spec: object, decoder: DecoderConfig) -> tuple[str, ...]:
    """The blendshape channel names of an "output" field ((), for vertex offsets)."""
    if spec is None:
        spec = {"type": OUTPUT_VERTICES}
    if not isinstance(spec, dict):
        raise ValueError('output must be an object {"type": "vertices"|"blendshapes", ...}')
    kind = spec.get("type")
    if kind not in (OUTPUT_VERTICES, OUTPUT_BLENDSHAPES):
        raise ValueError(f"output.type must be {OUTPUT_VERTICES!r} or {OUTPUT_BLENDSHAPES!r}, not {kind!r}")
    known = {"type"} | ({"channels"} if kind == OUTPUT_BLENDSHAPES else set())
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"output has unknown fields {unknown} for type {kind!r}; known are {sorted(known)}")
    if kind == OUTPUT_VERTICES:
        if decoder.output_channels:
            raise ValueError(f"decoder.output_channels is {decoder.output_channels} but the output is vertex offsets "
                             "(a blendshape model needs output.type \"blendshapes\" and its channels)")
        return ()
    channels = spec.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise ValueError("output.channels must be a non-empty list of channel names")
    if len(set(channels)) != len(channels):
        duplicate = next(c for c in channels if channels.count(c) > 1)
        raise ValueError(f"output.channels lists {duplicate!r} twice")
    if len(channels) != decoder.output_channels:
        raise ValueError(f"output.channels lists {len(channels)} channels but decoder.output_channels is "
                         f"{decoder.output_channels}")
    return tuple(channels)


def _encoder(spec: object, key: str) -> dict:
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ValueError(f'{key} must be an object {{"type": ..., "config": {{...}}}}')
    if spec.get("type") not in ENCODER_TYPES:
        raise ValueError(f"{key}.type {spec.get('type')!r} is not one of {list(ENCODER_TYPES)}")
    return spec
