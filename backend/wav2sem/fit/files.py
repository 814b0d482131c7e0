"""The files of a fit (docs/DESIGN.md, "Fit Face"): the mesh the add-on sends (.npz) and the
keys the backend returns (.npz, written as a partial file and renamed), and meshes read
from .obj/.ply/.npz for `wav2sem fit`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BAD_REQUEST, Wav2SemError, reason
from ..outputs import commit_partial, write_partial_npz

MESH_ARRAYS = ("vertices", "loop_totals", "loop_vertices")


def read_mesh(path: str | Path) -> dict[str, np.ndarray]:
    """vertices, loop_totals, loop_vertices, object_ids from the add-on's .npz, or an .obj/.ply."""
    path = Path(path)
    if not path.is_file():
        raise Wav2SemError(BAD_REQUEST, f"Mesh file not found: {path}")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in MESH_ARRAYS if k not in data.files]
                if missing:
                    raise Wav2SemError(BAD_REQUEST, f"{path.name} lacks {', '.join(missing)} (see docs/DESIGN.md, Fit Face).")
                mesh = {k: data[k] for k in MESH_ARRAYS}
                mesh["object_ids"] = data["object_ids"] if "object_ids" in data.files else None
                return mesh
        except (OSError, ValueError) as exc:
            raise Wav2SemError(BAD_REQUEST, f"Cannot read the mesh file {path.name}: {reason(exc)}") from exc
    import trimesh

    try:
        loaded = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:  # trimesh raises many kinds on a bad file
        raise Wav2SemError(BAD_REQUEST, f"Cannot read the mesh file {path.name}: {reason(exc)}") from exc
    faces = np.asarray(loaded.faces, dtype=np.int64)
    return {"vertices": np.asarray(loaded.vertices, dtype=np.float64), "loop_totals": np.full(len(faces), 3),
            "loop_vertices": faces.ravel(), "object_ids": None}


def write_keys(path: str | Path, names: tuple[str, ...], deltas: np.ndarray, landmarks: dict[str, np.ndarray]) -> None:
    """names (K,), deltas (K, V, 3) float32 and the landmarks, renamed into place when complete."""
    partial = write_partial_npz(path, names=np.array(names), deltas=deltas.astype(np.float32),
                                landmark_names=np.array(list(landmarks)),
                                landmarks=np.array(list(landmarks.values()), dtype=np.float64).reshape(-1, 3))
    commit_partial(partial, path)
