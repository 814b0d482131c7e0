"""The neutral face a model animates: vertices, faces, vertex regions and landmarks.

On disk (`template.npz`, see docs/DESIGN.md):
  vertices          (V, 3) float32, model units (metres for FLAME-like heads)
  faces             (F, 3) int32, optional (polygons are triangulated or quads split)
  region_<name>     int32 vertex indices, e.g. region_lips (for LVE), region_upper_face (FDD)
  landmark_names    (L,) unicode
  landmark_indices  (L,) int32 vertex indices
  blendshape_names  (K,) unicode, optional: the channels of a blendshape (e.g. ARKit) model
  blendshape_deltas (K, V, 3) float32: each channel's displacement at weight 1, template units
A template with blendshapes turns per-frame weights (T, K) into offsets (T, V, 3) by
`offsets_from_weights`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError, reason

LANDMARK_NAMES = (
    "upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right",
    "chin", "nose_tip", "brow_left", "brow_right",
)


@dataclass
class Template:
    vertices: np.ndarray                       # (V, 3) float32
    faces: np.ndarray | None = None            # (F, 3) int32
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks: dict[str, int] = field(default_factory=dict)
    blendshape_names: tuple[str, ...] = ()
    blendshape_deltas: np.ndarray | None = None  # (K, V, 3) float32

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise Wav2SemError(MODEL_INVALID, f"template vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces is not None:
            self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        self.regions = {k: np.asarray(v, dtype=np.int32) for k, v in self.regions.items()}
        self.landmarks = {k: int(v) for k, v in self.landmarks.items()}
        self.blendshape_names = tuple(str(n) for n in self.blendshape_names)
        if self.blendshape_deltas is not None or self.blendshape_names:
            deltas = np.ascontiguousarray(self.blendshape_deltas if self.blendshape_deltas is not None
                                          else np.zeros((0,) + self.vertices.shape), dtype=np.float32)
            if deltas.shape != (len(self.blendshape_names),) + self.vertices.shape:
                raise Wav2SemError(MODEL_INVALID, f"template blendshape_deltas must have shape (K, V, 3) = "
                                                  f"({len(self.blendshape_names)}, {self.vertex_count}, 3), got {deltas.shape}")
            if len(set(self.blendshape_names)) != len(self.blendshape_names):
                raise Wav2SemError(MODEL_INVALID, "template blendshape_names must be unique")
            if not np.isfinite(deltas).all():
                raise Wav2SemError(MODEL_INVALID, "template blendshape_deltas must be finite numbers")
            self.blendshape_deltas = deltas
        if not np.isfinite(self.vertices).all():
            raise Wav2SemError(MODEL_INVALID, "template vertices must be finite numbers; this template has NaN or infinite ones")
        indices = {"faces": self.faces, **{f"region {k}": v for k, v in self.regions.items()},
                   **{f"landmark {k}": np.array([v]) for k, v in self.landmarks.items()}}
        for name, idx in indices.items():
            if idx is not None and idx.size and (idx.min() < 0 or idx.max() >= self.vertex_count):
                raise Wav2SemError(MODEL_INVALID, f"template {name} points past its {self.vertex_count} vertices "
                                                  f"(index {int(idx.min()) if idx.min() < 0 else int(idx.max())})")

    @property
    def vertex_count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def has_blendshapes(self) -> bool:
        return bool(self.blendshape_names)

    def offsets_from_weights(self, weights: np.ndarray) -> np.ndarray:
        """Per-frame channel weights (T, K) -> offsets (T, V, 3) float32 (template units)."""
        assert self.blendshape_deltas is not None, "this template has no blendshapes"
        weights = np.asarray(weights, dtype=np.float32)
        k = len(self.blendshape_names)
        flat = weights.reshape(-1, k) @ self.blendshape_deltas.reshape(k, -1)
        return flat.reshape(weights.shape[:-1] + self.vertices.shape)

    def with_channels(self, names: tuple[str, ...] | list[str]) -> "Template":
        """The same template keeping only the named blendshapes, in the order given."""
        index = {n: i for i, n in enumerate(self.blendshape_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise Wav2SemError(MODEL_INVALID, f"template has no blendshape {missing[0]!r}")
        assert self.blendshape_deltas is not None
        deltas = self.blendshape_deltas[[index[n] for n in names]]
        return Template(self.vertices, self.faces, dict(self.regions), dict(self.landmarks), tuple(names), deltas)

    @property
    def lip_centres(self) -> tuple[int, int] | None:
        """(upper, lower) lip-centre vertex indices, or None when the template lacks them."""
        lm = self.landmarks
        return (lm["upper_lip_center"], lm["lower_lip_center"]) if {"upper_lip_center", "lower_lip_center"} <= set(lm) else None

    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {"vertices": self.vertices}
        if self.faces is not None:
            arrays["faces"] = self.faces
        for name, idx in self.regions.items():
            arrays[f"region_{name}"] = idx
        names = list(self.landmarks)
        arrays["landmark_names"] = np.array(names, dtype=np.str_)
        arrays["landmark_indices"] = np.array([self.landmarks[n] for n in names], dtype=np.int32)
        if self.blendshape_names:
            assert self.blendshape_deltas is not None
            arrays["blendshape_names"] = np.array(self.blendshape_names, dtype=np.str_)
            arrays["blendshape_deltas"] = self.blendshape_deltas
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path, subject: str | None = None) -> "Template":
        """Load a template from .npz (ours), .npy (V,3), .obj, .ply (ASCII or binary) or templates.pkl.

        For a reference `templates.pkl` (subject -> (V,3) array) give `subject`, or the
        first subject is used. The pickle is read with a restricted unpickler.
        """
        path = Path(path)
        if not path.is_file():
            raise Wav2SemError(MODEL_NOT_FOUND, f"Template file not found: {path}.")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npz":
                return cls._from_npz(path)
            if suffix == ".npy":
                return cls(np.load(path, allow_pickle=False).reshape(-1, 3))
            if suffix in (".obj", ".ply"):
                return cls(*_read_mesh(path))
            if suffix == ".pkl":
                from .safe_pickle import safe_load
                table = safe_load(path)
                if isinstance(table, dict):
                    if subject is None:
                        subject = sorted(table)[0]
                    if subject not in table:
                        raise Wav2SemError(MODEL_INVALID, f"Subject {subject!r} is not in {path.name}; it has {sorted(table)}.")
                    return cls(np.asarray(table[subject]).reshape(-1, 3))
                return cls(np.asarray(table).reshape(-1, 3))
        except Wav2SemError as exc:
            if path.name in exc.message:
                raise
            raise Wav2SemError(exc.code, f"Template {path}: {exc.message}; give the template the model was made with.") from exc
        except Exception as exc:  # corrupt or foreign file
            raise Wav2SemError(MODEL_INVALID, f"Could not read template {path.name} ({reason(exc)}); "
                                              "give an intact .npz, .npy, .obj, .ply or templates.pkl.") from exc
        raise Wav2SemError(MODEL_INVALID, f"Unsupported template format {suffix!r}; use .npz, .npy, .obj, .ply or .pkl.")

    @classmethod
    def _from_npz(cls, path: Path) -> "Template":
        with np.load(path, allow_pickle=False) as data:
            if "vertices" not in data:
                raise Wav2SemError(MODEL_INVALID, f"{path.name} has no 'vertices' array.")
            regions = {k[len("region_"):]: data[k] for k in data.files if k.startswith("region_")}
            landmarks = {}
            if "landmark_names" in data:
                landmarks = dict(zip(data["landmark_names"].tolist(), data["landmark_indices"].tolist()))
            faces = data["faces"] if "faces" in data else None
            names: tuple[str, ...] = ()
            deltas = None
            if "blendshape_names" in data:
                names = tuple(data["blendshape_names"].tolist())
                deltas = data["blendshape_deltas"] if "blendshape_deltas" in data else None
            return cls(data["vertices"], faces, regions, landmarks, names, deltas)


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (in file order, unused ones kept) and triangles of an .obj or .ply, ASCII or
    binary, read with trimesh. Several objects or materials in one file share its vertex list."""
    import trimesh

    loaded = trimesh.load(str(path), process=False, maintain_order=True, skip_materials=True)
    parts = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    if not parts or len(parts[0].vertices) == 0:
        raise ValueError("it holds no vertices")
    vertices = np.asarray(parts[0].vertices)
    if any(not np.array_equal(np.asarray(p.vertices), vertices) for p in parts[1:]):
        raise ValueError("its objects do not share one vertex list; export the head as one object")
    faces = [np.asarray(p.faces) for p in parts if len(getattr(p, "faces", ()))]
    return vertices, (np.concatenate(faces) if faces else None)
