"""A model bundle loaded onto a device, ready for `inference.generate`.

    model = load_model(bundle_dir, device="auto")     # float16 on CUDA, float32 on the CPU
    model.vertex_count, model.channels, model.factored

Factored output (inference.py's docstring): a vertex model whose decoder ends in a linear map
has offsets that are exactly `coefficients @ model.output_basis()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bundle import PREPROCESSOR_FILE, Bundle, load_weights, read_bundle
from .errors import BAD_REQUEST, DEVICE_UNAVAILABLE, MODEL_INVALID, Wav2SemError, reason
from .models.talker import SpeechToFace
from .template import Template

PRECISIONS = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class LoadedModel:
    bundle: Bundle
    net: SpeechToFace
    device: torch.device
    dtype: torch.dtype
    feature_extractor: object | None = None
    key: tuple = field(default=())
    _output_basis: np.ndarray | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.bundle.config.fps

    @property
    def vertex_count(self) -> int:
        return self.bundle.template.vertex_count

    @property
    def subjects(self) -> tuple[str, ...]:
        return self.bundle.config.subjects

    @property
    def template(self) -> Template:
        return self.bundle.template

    @property
    def output(self) -> str:
        """"vertices" (the model predicts offsets) or "blendshapes" (it predicts channel weights)."""
        return self.bundle.config.output_type

    @property
    def channels(self) -> tuple[str, ...]:
        """The blendshape channel names, in the weights' column order; () for a vertex model."""
        return self.bundle.config.channels

    @property
    def predicts_weights(self) -> bool:
        return bool(self.channels)

    @property
    def factored(self) -> bool:
        """Offsets linear in R per-frame coefficients (module docstring): a vertex model whose
        decoder offers `decode_features`, the rows its linear output map `vertice_map_r` reads.
        A subclass that redefines `decode` without `decode_features` beside it (another decoder
        on FaceFormer's parts) is not factored: the inherited features would not be its output's."""
        net = self.net
        return (not self.predicts_weights and callable(getattr(net, "decode_features", None))
                and isinstance(getattr(net, "vertice_map_r", None), torch.nn.Linear)
                and _defining_class(type(net), "decode") is _defining_class(type(net), "decode_features"))

    def output_basis(self) -> np.ndarray:
        """(R, V, 3) float32, R = feature_dim + 1: the output map's weights, one row per
        decoder feature, then its bias; offsets = coefficients @ basis. Computed once."""
        if not self.factored:
            raise ValueError(f"the model {self.bundle.config.name} has no factored output")
        if self._output_basis is None:
            out_map = self.net.vertice_map_r
            with torch.no_grad():
                rows = torch.cat([out_map.weight.t(), out_map.bias.unsqueeze(0)]).float().cpu().numpy()
            self._output_basis = np.ascontiguousarray(rows.reshape(len(rows), self.vertex_count, 3))
        return self._output_basis


def _defining_class(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return devices


def resolve_device(device: str | None) -> torch.device:
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Wav2SemError(DEVICE_UNAVAILABLE, "CUDA was requested but no CUDA GPU is available to this backend; use device 'auto' or 'cpu'.")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise Wav2SemError(BAD_REQUEST, f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda'.")


def load_model(path: str | Path | None = None, device: str | None = "auto",
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Read a bundle and put it on a device. `dtype`: None = float16 on CUDA, float32 on the
    CPU; tests pass float16 on the CPU to run exactly the casts CUDA runs. Feature
    extraction and position biases stay float32 either way. Blocks; any thread."""
    if dtype is not None and dtype not in PRECISIONS:
        raise Wav2SemError(BAD_REQUEST, f"Unsupported precision {dtype}; use one of {[str(p) for p in PRECISIONS]}.")
    bundle = read_bundle(path)
    dev = resolve_device(device)
    net = load_weights(bundle)
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    net = net.to(dev).to_precision(dtype).eval()
    extractor = None
    if bundle.has_preprocessor:
        from transformers import AutoFeatureExtractor

        try:
            extractor = AutoFeatureExtractor.from_pretrained(str(bundle.directory), local_files_only=True)
        except Exception as exc:  # transformers raises many types (OSError, ValueError, JSON errors)
            raise Wav2SemError(MODEL_INVALID, f"{bundle.directory / PREPROCESSOR_FILE} is not a valid feature-extractor "
                                              f"config ({reason(exc)}); fix or remove it.") from exc
    return LoadedModel(bundle, net, dev, dtype, extractor, key=(str(bundle.directory.resolve()), str(dev)))

