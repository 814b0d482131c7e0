"""How a take reaches a mesh, and a blendshape model's weights on the character's own face
keys. No bpy; pure numpy, any thread.

Modes, decided from model_info and the mesh before any generate is sent:
- KEYS: a blendshape (ARKit) model and a mesh with face keys (ARKit-named or visemes, stored
  with the object or matched by name) for the model's channels: the take animates those
  keys and adds none. The weights are resampled to the scene fps, scaled per group (jaw,
  lips, upper face) and solved onto the keys the mesh has (key_solve.solve_keys: a full set
  is a copy; a partial set or visemes a least-squares fit through the model's blendshapes,
  the lips region weighted 11 times the rest).
- CHANNELS: a blendshape model and a mesh with the template's vertex count but no face
  keys: one new key per channel, curves = the weights (mapping.prepare_channel_take).
- OFFSETS: a vertex (FaceFormer) model on the template mesh: COMPACT / PER_FRAME as before.
Blendshape models never need offsets (`generate` with `offsets: false`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import face_keys, key_solve, mapping
from .protocol import ModelInfo

KEYS = "KEYS"
CHANNELS = "CHANNELS"
OFFSETS = "OFFSETS"
DEFAULT_STRENGTHS = dict(key_solve.DEFAULT_STRENGTHS)   # jaw 1, lips 1, upper face 0: eyes and brows left alone


@dataclass(frozen=True)
class Plan:
    mode: str
    bindings: tuple[face_keys.KeyBinding, ...] = ()
    auto_matched: bool = False      # bindings matched by name now, not stored with the object
    problem: str | None = None      # the sentence refusing the mesh (MESH_MISMATCH)


def bindings_for(key_names: Sequence[str], stored: Iterable[tuple[str, str]] = ()) -> tuple[list[face_keys.KeyBinding], bool]:
    """The object's stored (source, key) rows whose key still exists; when none do, the keys
    matched by name. Returns (bindings, matched_now)."""
    present = set(key_names)
    kept = [face_keys.KeyBinding(key=key, source=source) for source, key in stored if key and key in present]
    if kept:
        return kept, False
    return list(face_keys.find_face_keys(list(key_names))), True


def _no_face_keys(mesh_name: str) -> str:
    return (f"{mesh_name} has no ARKit-named face shape keys (jawOpen, mouthClose, ...) or viseme keys "
            "(viseme_aa, ... or A, I, U, E, O)")


def plan_take(info: ModelInfo, mesh_name: str, vertex_count: int, key_names: Sequence[str],
              stored: Iterable[tuple[str, str]] = (), strengths: Mapping[str, float] | None = None) -> Plan:
    """Which mode this mesh gets from this model, or the sentence that refuses it."""
    bindings, auto = bindings_for(key_names, stored)
    template_count = info.vertex_count
    if info.predicts_weights:
        usable = face_keys.select_bindings(info.channels, bindings)
        if usable:
            if not key_solve.driven_bindings(info.channels, bindings, strengths):
                return Plan(KEYS, tuple(bindings), auto, _all_silenced(mesh_name, usable))
            if not info.blendshapes:
                return Plan(KEYS, tuple(bindings), auto, _no_blendshapes(info))
            return Plan(KEYS, tuple(bindings), auto)
        if vertex_count == template_count:
            return Plan(CHANNELS, problem=None if info.blendshapes else _no_blendshapes(info))
        return Plan(CHANNELS, problem=(
            f"{_no_face_keys(mesh_name)}, and {vertex_count} vertices where the model's template has "
            f"{template_count}; add ARKit shape keys (Faceit, Character Creator, ReadyPlayerMe and most "
            "exporters make them) or viseme keys, or use the template mesh."))
    problem = mapping.vertex_count_problem(template_count, vertex_count, mesh_name)
    if problem and bindings:
        problem = (f"{mesh_name} has {vertex_count} vertices but the model's template has {template_count}, and "
                   f"the model '{info.name}' predicts vertex offsets, not ARKit weights, so it cannot drive the "
                   "face keys the mesh has; choose a blendshape (ARKit) model, such as the default, or use the "
                   "template mesh.")
    return Plan(OFFSETS, problem=problem)


def _no_blendshapes(info: ModelInfo) -> str:
    return (f"The model '{info.name}' predicts blendshape weights but the backend sent no blendshapes; "
            "reinstall the backend or choose another model.")


def _all_silenced(mesh_name: str, usable: Sequence[face_keys.KeyBinding]) -> str:
    names = ", ".join(b.key for b in usable[:3]) + (", ..." if len(usable) > 3 else "")
    return (f"The face keys of {mesh_name} ({names}) are all in groups whose strength is 0; raise the Jaw, Lips "
            "or Upper Face strength in the Lip Sync panel.")


# --- weights -> the character's keys ---------------------------------------------------

@dataclass(frozen=True)
class KeyTake:
    """Per-frame values of the keys a take drives; frame i plays at scene frame start + i."""
    keys: tuple[str, ...]            # shape-key names, one per column
    sources: tuple[str, ...]         # the channel or viseme each key stands for
    values: np.ndarray               # (N, M) float32 in [0, 1]
    kind: str                        # face_keys.character_kind: "full", "partial" or "visemes"

    @property
    def frames(self) -> int:
        return int(len(self.values))


def prepare_key_take(weights: np.ndarray, channels: Sequence[str], model_fps: float, target_fps: float,
                     bindings: Sequence[face_keys.KeyBinding], blendshapes: np.ndarray,
                     strengths: Mapping[str, float] | None = None, intensity: float = 1.0,
                     lips: np.ndarray | None = None, mesh_name: str = "The mesh",
                     landmarks: Mapping[str, int] | None = None) -> KeyTake:
    """Model weights (T, K) at model fps -> values of the driven keys (N, M) at scene fps.

    Keys of groups whose strength is 0, and keys for channels the model does not predict,
    are not driven (they keep their values and curves)."""
    channels = tuple(channels)
    mapping.check_weights(weights, len(channels))
    if blendshapes.shape[:1] != (len(channels),) or blendshapes.ndim != 3:
        raise mapping.MappingError(f"The model's blendshapes have shape {blendshapes.shape} for {len(channels)} "
                                   "channels; the model bundle is broken, choose another model.")
    resampled = mapping.resample(np.asarray(weights, dtype=np.float32), model_fps, target_fps)
    if intensity != 1.0:
        resampled = resampled * np.float32(intensity)
    regions = {"lips": np.asarray(lips)} if lips is not None else None
    # The lip-centre landmarks make a partial set keep the lips' opening (sealed on m/b/p):
    # without them a character lacking mouthClose sealed 101 of 319 m/b/p, with them 319.
    solution = key_solve.solve_keys(resampled, channels, bindings, blendshapes, strengths=strengths, regions=regions,
                                    landmarks=landmarks)
    if not solution.keys:
        raise mapping.MappingError(_all_silenced(mesh_name, face_keys.select_bindings(channels, bindings) or bindings))
    kind = face_keys.character_kind(channels, bindings)
    return KeyTake(solution.keys, solution.sources, np.ascontiguousarray(solution.values, dtype=np.float32), kind)
