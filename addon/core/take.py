"""One lip-sync take without bpy: the facts it reads of the mesh, the plan (face_plan) made
once from them when model_info arrives, the generate request that plan needs, and the
prepared take of each output mode. Any thread; the bpy side (ops/lipsync_run.py) reads the
mesh into MeshFacts on the main thread and writes what prepare() returns.

Output modes (face_plan): OFFSETS -> mapping.PreparedTake from a vertex model's factors or
dense offsets; CHANNELS -> mapping.PreparedTake with one new key per ARKit channel; KEYS ->
face_plan.KeyTake on the character's own keys. The first two are written by
scene/takes.write_take, the last by scene/face_take.write_key_take.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from . import face_plan, key_solve, mapping
from .jobs import GenerateRequest
from .protocol import GenerateResult, ModelInfo

Prepared = Union[mapping.PreparedTake, face_plan.KeyTake]


@dataclass(frozen=True)
class MeshFacts:
    """What a take reads of the mesh: read once on the main thread, compared before the
    write (a mesh whose keys or vertices changed meanwhile is planned again)."""
    label: str                                   # "'Head'", as messages name it
    vertex_count: int
    key_names: tuple[str, ...]                   # the user's own shape keys (no Basis, no take keys)
    stored_rows: tuple[tuple[str, str], ...]     # (source, key) rows kept with the object
    strengths: tuple[tuple[str, float], ...]     # group -> strength (jaw, lips, upper_face)

    @property
    def strength_map(self) -> dict[str, float]:
        return dict(self.strengths)


@dataclass(frozen=True)
class TakeSettings:
    """The user's choices for the take (operator and preferences)."""
    target_fps: float
    intensity: float = 1.0
    output_mode: str = "COMPACT"                 # vertex models: COMPACT or PER_FRAME
    tolerance: float = 0.01


def plan(info: ModelInfo, mesh: MeshFacts) -> face_plan.Plan:
    return face_plan.plan_take(info, mesh.label, mesh.vertex_count, mesh.key_names, mesh.stored_rows,
                               mesh.strength_map)


def request_for(plan_: face_plan.Plan, info: ModelInfo, request: GenerateRequest,
                folder: str) -> str | GenerateRequest | None:
    """What to ask the backend for once model_info is known: the sentence that refuses the
    mesh, a changed request (a blendshape model: its weights only; a factored vertex model:
    its coefficients only), or None (the request as it is)."""
    if plan_.problem:
        return plan_.problem
    if plan_.mode == face_plan.OFFSETS:
        if not info.factored:
            return None
        return dataclasses.replace(request, offsets=False, factors=True,
                                   coefficients_output=os.path.join(folder, "coefficients.npy"))
    return dataclasses.replace(request, offsets=False, weights_output=os.path.join(folder, "weights.npy"))


def _load(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def prepare(plan_: face_plan.Plan, info: ModelInfo, result: GenerateResult, rest: np.ndarray, mesh: MeshFacts,
            settings: TakeSettings) -> Prepared:
    """The backend's result as the take of the plan's mode. `rest`: (V, 3) the mesh's rest
    positions. Raises mapping.MappingError with one sentence."""
    if plan_.problem:
        raise mapping.MappingError(plan_.problem)
    if plan_.mode == face_plan.OFFSETS:
        return _offsets_take(info, result, rest, mesh, settings)
    if result.weights is None:
        raise mapping.MappingError(f"The model '{info.name}' returned no weights for {mesh.label}; reinstall the "
                                   "backend or choose another model.")
    weights = _load(result.weights)
    channels = result.channels or info.channels
    assert info.blendshapes is not None          # else the plan refused the mesh
    blendshapes = _load(info.blendshapes)
    if plan_.mode == face_plan.KEYS:
        lips = _load(info.regions["lips"]) if "lips" in info.regions else None
        return face_plan.prepare_key_take(weights, channels, result.fps, settings.target_fps, plan_.bindings,
                                          blendshapes, mesh.strength_map, settings.intensity, lips, mesh.label,
                                          info.landmarks)
    gains = channel_gains(channels, mesh.strength_map, settings.intensity)
    return mapping.prepare_channel_take(_load(info.template), rest, blendshapes, weights, channels, result.fps,
                                        settings.target_fps, gains, mesh.label)


def channel_gains(channels: tuple[str, ...] | list[str], strengths: Mapping[str, float],
                  intensity: float) -> np.ndarray:
    """(K,) float32 per-channel scale: the group strengths times the intensity."""
    ones = np.ones((1, len(channels)), np.float32)
    return np.asarray(key_solve.apply_strengths(ones, channels, strengths), dtype=np.float32)[0] * np.float32(intensity)


def _offsets_take(info: ModelInfo, result: GenerateResult, rest: np.ndarray, mesh: MeshFacts,
                  settings: TakeSettings) -> mapping.PreparedTake:
    """A vertex model's take: from its factors when it sent them (exact, no dense array),
    else from the dense offsets (an older backend, or a model without factors)."""
    template = _load(info.template)
    if result.coefficients is not None and info.output_basis:
        return mapping.prepare_factor_take(template, rest, _load(result.coefficients), _load(info.output_basis),
                                           result.fps, settings.target_fps, settings.intensity, settings.output_mode,
                                           settings.tolerance, mesh.label)
    if result.offsets is None:
        raise mapping.MappingError(f"{mesh.label} changed while the lip sync ran; generate again.")
    return mapping.prepare_take(template, rest, _load(result.offsets), result.fps, settings.target_fps,
                                settings.intensity, settings.output_mode, settings.tolerance, mesh_name=mesh.label)


def detail(prepared: Prepared, channels: int) -> str:
    """The part of the finish message that says what the take drives."""
    if isinstance(prepared, face_plan.KeyTake):
        names = ", ".join(prepared.keys[:4]) + (", ..." if len(prepared.keys) > 4 else "")
        how = "copied from the model's channels" if prepared.kind == "full" else f"solved from {channels} channels"
        return f"{len(prepared.keys)} face keys ({names}) {how}"
    return ""
