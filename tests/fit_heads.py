"""Test meshes for `wav2sem.fit.fit_face`, with what is needed to judge a fit.

    head = ict_decimated()                  # FitHead
    fit_face(head.vertices, head.loop_totals, head.loop_vertices, head.object_ids)
    head.landmarks                          # hand-placed {name: (3,)} in the mesh's space
    head.truth_deltas(["jawOpen"])          # (K, V, 3) float32, in the mesh's space

Builders (each cached; treat the arrays as read-only):
  ict_decimated()   the ICT head (skin: face, head_and_neck, mouth_socket, eye sockets; the
                    gums and tongue and the teeth as islands of the same mesh; eyeballs only
                    with include_eyes) decimated by Blender's Decimate (collapse) to about a
                    third of its vertices, triangles on the right half of the face, quads on
                    the left half and the back, a few hexagons on the back of the head; in
                    Blender's axes (Z up, face towards -Y), centimetres, placed at standing
                    height. `ratio=1.0` keeps the kit's own quads (no Blender).
  ict_eyes()        ict_decimated with the eyeballs (as islands).
  ict_tilted()      the same mesh, turned 20 degrees about Z and pitched 10 degrees down.
  ict_stylised()    the ICT head warped (eyes 35% bigger, mouth 25% wider, chin 1.6 cm longer,
                    the head 6% wider), decimated differently (half the vertices), at an odd
                    scale (7.5 units per metre).
  synthetic()       the project's own procedural head (wav2sem.synth.head.build_head), its grid
                    quads rebuilt from triangle pairs (triangle fans at the poles), in
                    Blender's axes, metres.
  full_body()       ict_decimated's head on a crude body (tubes and boxes: torso, arms, legs,
                    hands, feet), about 170k vertices, metres, Blender's axes.
  cube(), uv_sphere()  not heads (fit_face should refuse them), head sized, metres.

Truth (ICT-derived heads): each vertex's closest point on the original ICT surface of the
same part group (the skin, or the island it came from: teeth, gums and tongue, an eyeball),
as an index into wav2sem.heads.ict_triangles() and barycentric coordinates; ties across the
lip seam are settled by the vertex normal (a point of the lower lip never takes the upper
lip's truth). Truth deltas are the ICT expression deltas interpolated at that point, mapped
by the stylising warp's Jacobian at the vertex's rest position (linear, so shapes still add:
warp(x + d) - warp(x) would stretch jawOpen by the longer chin, 50 mm instead of 34 at the
lips, and leave jawOpen + mouthClose 11 mm open) and by the placement (scale, rotation).

The synthetic head has no ARKit truth; its rig (wav2sem.synth.rig) gives vertex motion for
articulator poses, see `FitHead.synthetic_rig_motion`.

No bpy at import: the decimation runs Blender (the bpy module) in a subprocess with a
throw-away HOME.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FIT_LANDMARKS = ("nose_tip", "upper_lip_center", "lower_lip_center", "mouth_corner_left",
                 "mouth_corner_right", "chin", "eye_outer_left", "eye_inner_left",
                 "eye_inner_right", "eye_outer_right")

# ICT vertex picks for the landmarks, used until wav2sem.fit.reference_landmarks exists:
# the six of heads.ICT_LANDMARKS, and the eye corners where the face's eyelid margin loop
# (the vertices it shares with the eye-socket part) turns, inner = nearest the midline.
ICT_EYE_CORNERS = {"eye_outer_left": 6548, "eye_inner_left": 6588,
                   "eye_inner_right": 6630, "eye_outer_right": 6590}
SKIN_PARTS = ("face", "head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right")
INTERIOR_PARTS = ("gums_and_tongue", "teeth")
EYE_PARTS = ("eyeball_left", "eyeball_right")

# ICT (Y up, face +Z) -> Blender (Z up, face -Y): (x, y, z) -> (x, -z, y), +X stays the
# character's left.
ICT_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
LIP_SIDE_PENALTY_M = 0.01    # closest-point cost (m) of a triangle facing against the vertex


@dataclass(frozen=True, eq=False)
class FitHead:
    """A mesh for fit_face, with its hand-placed landmarks and (ICT-derived heads) truth."""

    name: str
    description: str
    vertices: np.ndarray                 # (V, 3) float64, the mesh's own space
    loop_totals: np.ndarray              # (F,) int32
    loop_vertices: np.ndarray            # (L,) int32
    object_ids: np.ndarray | None        # (V,) int32 or None (one object)
    landmarks: dict[str, np.ndarray]     # hand-placed, on the surface; {} for non-heads
    scale: float                         # mesh units per metre of the source head
    rotation: np.ndarray                 # (3, 3): mesh = scale * rotation @ source + offset
    offset: np.ndarray                   # (3,)
    kind: str                            # "ict", "synthetic" or "none"
    lips: np.ndarray                     # (V,) bool: lip vertices (for the lip error)
    back: np.ndarray                     # (V,) bool: back of the head (should stay still)
    head: np.ndarray                     # (V,) bool: vertices of the head (not of a body)
    ict_tri: np.ndarray | None = None    # (V,) int64 into heads.ict_triangles(), -1 = no truth
    ict_bary: np.ndarray | None = None   # (V, 3) float64
    source: np.ndarray | None = None     # (V, 3) float64: the vertex in the source head's frame, metres, unwarped
    warp: Callable[[np.ndarray], np.ndarray] | None = None   # source metres -> warped metres
    info: dict = field(default_factory=dict)

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    def triangles(self) -> np.ndarray:
        """(T, 3) fan triangulation of the polygons."""
        return fan_triangles(self.loop_totals, self.loop_vertices)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Mesh-space points (..., 3) -> the (warped) source head's frame, metres."""
        return (np.asarray(points, dtype=np.float64) - self.offset) @ self.rotation / self.scale

    def vector_to_source(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float64) @ self.rotation / self.scale

    def vector_to_mesh(self, vectors: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(vectors, dtype=np.float64) @ self.rotation.T

    def mm(self, length_in_mesh_units):
        """Mesh units -> millimetres of the source head."""
        return np.asarray(length_in_mesh_units) / self.scale * 1000.0

    @property
    def eye_to_mouth(self) -> float:
        """Distance (mesh units) from the middle of the eye corners to the middle of the lips."""
        lm = self.landmarks
        eyes = np.mean([lm[n] for n in FIT_LANDMARKS if n.startswith("eye_")], axis=0)
        mouth = 0.5 * (lm["upper_lip_center"] + lm["lower_lip_center"])
        return float(np.linalg.norm(eyes - mouth))

    def truth_deltas(self, names) -> np.ndarray:
        """ICT expression names -> (K, V, 3) float32 deltas in the mesh's space (0 where there
        is no truth: a body, or a non-ICT head)."""
        from wav2sem.heads import ict_arrays, ict_triangles

        if self.ict_tri is None:
            raise ValueError(f"{self.name} has no ARKit truth")
        arrays = ict_arrays()
        index = {n: i for i, n in enumerate(arrays["expression_names"].tolist())}
        has = self.ict_tri >= 0
        corners = ict_triangles()[self.ict_tri[has]]                         # (H, 3)
        bary = self.ict_bary[has]
        out = np.zeros((len(names), self.vertex_count, 3), dtype=np.float32)
        for k, name in enumerate(names):
            d = arrays["expression_deltas"][index[name]].astype(np.float64) * 0.01
            d = np.einsum("hj,hjc->hc", bary, d[corners])
            if self.warp is not None:
                d = np.einsum("hij,hj->hi", self._warp_jacobian()[has], d)
            out[k, has] = self.vector_to_mesh(d)
        return out

    def _warp_jacobian(self) -> np.ndarray:
        """(V, 3, 3) the warp's Jacobian at each vertex's rest position (central differences)."""
        cached = self.info.get("_jacobian")
        if cached is None:
            x = np.nan_to_num(self.source)
            h = 1e-5
            cols = [(self.warp(x + h * e) - self.warp(x - h * e)) / (2 * h) for e in np.eye(3)]
            cached = self.info["_jacobian"] = np.stack(cols, axis=-1)
        return cached


# --- geometry helpers -------------------------------------------------------------------

def fan_triangles(loop_totals: np.ndarray, loop_vertices: np.ndarray) -> np.ndarray:
    """Polygons (Blender's loop arrays) -> (T, 3) triangles, each polygon as a fan."""
    totals = np.asarray(loop_totals, dtype=np.int64)
    loops = np.asarray(loop_vertices, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(totals)[:-1]])
    n_tri = totals - 2
    poly = np.repeat(np.arange(len(totals)), n_tri)
    k = np.arange(n_tri.sum()) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri)
    s = starts[poly]
    return np.stack([loops[s], loops[s + k + 1], loops[s + k + 2]], axis=1)


def polygons_to_loops(polygons) -> tuple[np.ndarray, np.ndarray]:
    """A list of vertex index sequences -> (loop_totals, loop_vertices) int32."""
    totals = np.array([len(p) for p in polygons], dtype=np.int32)
    loops = np.concatenate([np.asarray(p, dtype=np.int32) for p in polygons]) if polygons else np.zeros(0, np.int32)
    return totals, loops


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, unit length (0 for loose vertices)."""
    tri = vertices[triangles]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(vertices)
    for j in range(3):
        np.add.at(out, triangles[:, j], n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(length, 1e-30)


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (..., 3) of the point of triangle (a, b, c) closest to p (Ericson,
    Real-Time Collision Detection 5.1.5), all arrays (..., 3)."""
    def dot(u, v):
        return np.einsum("...i,...i->...", u, v)

    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    tiny = 1e-30
    shape = p.shape[:-1]
    u = np.zeros(shape)
    v = np.zeros(shape)
    w = np.zeros(shape)
    # Inside the face.
    denom = np.where(np.abs(va + vb + vc) > tiny, va + vb + vc, tiny)
    v = vb / denom
    w = vc / denom
    u = 1.0 - v - w
    # Edge regions, then vertex regions (vertex regions win where they apply).
    def put(mask, uu, vv, ww):
        nonlocal u, v, w
        u = np.where(mask, uu, u)
        v = np.where(mask, vv, v)
        w = np.where(mask, ww, w)

    t = d2 / np.where(np.abs(d2 - d6) > tiny, d2 - d6, tiny)          # edge ac
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), 1 - t, 0 * t, t)
    t = d1 / np.where(np.abs(d1 - d3) > tiny, d1 - d3, tiny)          # edge ab
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), 1 - t, t, 0 * t)
    den = (d4 - d3) + (d5 - d6)
    t = (d4 - d3) / np.where(np.abs(den) > tiny, den, tiny)           # edge bc
    put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 0 * t, 1 - t, t)
    one, zero = np.ones(shape), np.zeros(shape)
    put((d6 >= 0) & (d5 <= d6), zero, zero, one)                       # vertex c
    put((d3 >= 0) & (d4 <= d3), zero, one, zero)                       # vertex b
    put((d1 <= 0) & (d2 <= 0), one, zero, zero)                        # vertex a
    return np.stack([u, v, w], axis=-1)


def closest_points(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                   normals: np.ndarray | None = None, candidates: int = 24,
                   side_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest point on a triangle mesh for each point: (triangle index (N,), barycentric (N, 3),
    distance (N,)). With `normals` (N, 3), triangles facing away from a point's normal cost
    `side_penalty` more (settles which side of a thin gap a point belongs to). Candidates are
    the triangles whose centroids are nearest (plus those of the nearest vertex's ring)."""
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64)
    tri = vertices[triangles]                                            # (T, 3, 3)
    centroid = tri.mean(axis=1)
    k = min(candidates, len(triangles))
    _, cand = cKDTree(centroid).query(points, k=k)
    cand = cand.reshape(len(points), k)
    # Add the triangles around the nearest vertex (large triangles' centroids can be far).
    _, near_v = cKDTree(vertices).query(points)
    ring = _vertex_triangles(triangles, len(vertices), near_v, width=12)
    cand = np.concatenate([cand, ring], axis=1)
    a, b, c = (tri[cand, j] for j in range(3))
    bary = closest_on_triangles(points[:, None], a, b, c)                # (N, C, 3)
    q = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    dist = np.linalg.norm(q - points[:, None], axis=-1)
    cost = dist.copy()
    if normals is not None and side_penalty > 0:
        fn = np.cross(b - a, c - a)
        facing = np.einsum("nci,ni->nc", fn, normals)
        cost = cost + side_penalty * (facing < 0)
    best = np.argmin(cost, axis=1)
    rows = np.arange(len(points))
    return cand[rows, best], bary[rows, best], dist[rows, best]


def _vertex_triangles(triangles: np.ndarray, n_vertices: int, which: np.ndarray, width: int) -> np.ndarray:
    """For each vertex in `which`, up to `width` triangles using it (padded by repeats)."""
    flat = triangles.ravel()
    order = np.argsort(flat, kind="stable")
    tri_of = order // 3
    counts = np.bincount(flat, minlength=n_vertices)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n = np.maximum(counts[which], 1)
    j = np.arange(width)[None, :] % n[:, None]
    idx = np.minimum(start[which][:, None] + j, len(order) - 1)
    return tri_of[idx]


def project_to_surface(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """The closest surface point for each point (N, 3)."""
    t, bary, _ = closest_points(points, vertices, triangles)
    return np.einsum("nj,njc->nc", bary, vertices[triangles[t]])


def _placement(scale: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """Rotation source (Y up, face +Z) -> mesh: to Blender's axes, pitched about X (face
    down for > 0), then turned about Z (face towards +X for > 0)."""
    p, y = np.radians(pitch_deg), np.radians(yaw_deg)
    pitch = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    yaw = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return yaw @ pitch @ ICT_TO_BLENDER


# --- ICT reference ----------------------------------------------------------------------

def reference_landmarks_m() -> dict[str, np.ndarray]:
    """Landmark positions on the ICT head, metres (wav2sem.fit.reference_landmarks when it
    exists; else the vertex picks above)."""
    try:
        from wav2sem.fit import reference_landmarks
    except ImportError:
        from wav2sem.heads import ICT_LANDMARKS, ict_arrays

        p = ict_arrays()["neutral"].astype(np.float64) * 0.01
        picks = {**{n: ICT_LANDMARKS[n] for n in FIT_LANDMARKS if n in ICT_LANDMARKS}, **ICT_EYE_CORNERS}
        return {n: p[picks[n]].copy() for n in FIT_LANDMARKS}
    return {n: np.asarray(v, dtype=np.float64) for n, v in reference_landmarks().items()}


def _part_slices() -> dict[str, tuple[int, int]]:
    from wav2sem.heads import ict_arrays

    a = ict_arrays()
    return {n: (int(s), int(e)) for n, (s, e) in zip(a["part_names"].tolist(), a["part_ranges"])}


@functools.lru_cache(maxsize=None)
def _ict_groups(include_eyes: bool) -> tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray], ...]:
    """The ICT head as separate objects: (name, vertex indices into the kit, vertices in metres,
    polygons (F, 4) local indices, -1 pads triangles). Skin first."""
    from wav2sem.heads import ict_arrays

    a = ict_arrays()
    parts = _part_slices()
    groups = [("skin", SKIN_PARTS)] + [(n, (n,)) for n in INTERIOR_PARTS]
    if include_eyes:
        groups += [(n, (n,)) for n in EYE_PARTS]
    out = []
    faces = a["faces"]
    for name, members in groups:
        idx = np.concatenate([np.arange(*parts[m]) for m in members])
        inside = np.zeros(len(a["neutral"]), bool)
        inside[idx] = True
        rows = faces[inside[np.where(faces >= 0, faces, faces[:, :1])].all(axis=1)]
        local = np.full(len(a["neutral"]), -1)
        local[idx] = np.arange(len(idx))
        polys = np.where(rows >= 0, local[np.where(rows >= 0, rows, 0)], -1)
        out.append((name, idx, a["neutral"][idx].astype(np.float64) * 0.01, polys))
    return tuple(out)


def ict_kit_vertices(include_eyes: bool = False) -> np.ndarray:
    """The kit's vertex index of each vertex of an undecimated (ratio=1) ICT-derived mesh."""
    return np.concatenate([g[1] for g in _ict_groups(include_eyes)])


@functools.lru_cache(maxsize=None)
def _ict_triangle_groups() -> dict[str, np.ndarray]:
    """Indices into heads.ict_triangles() of each group's triangles."""
    from wav2sem.heads import ict_triangles

    tris = ict_triangles()
    parts = _part_slices()
    out = {}
    for name, members in [("skin", SKIN_PARTS)] + [(n, (n,)) for n in INTERIOR_PARTS + EYE_PARTS]:
        inside = np.zeros(tris.max() + 1, bool)
        for m in members:
            inside[slice(*parts[m])] = True
        out[name] = np.where(inside[tris].all(axis=1))[0]
    return out


@functools.lru_cache(maxsize=1)
def _ict_lip_vertices() -> np.ndarray:
    from wav2sem.heads import ict_head

    return ict_head(None).regions["lips"]


# --- Blender decimation -----------------------------------------------------------------

_DECIMATE_SCRIPT = textwrap.dedent("""
    import sys, math
    import numpy as np
    import bpy, bmesh

    src, dst, ratio, mix = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
    bpy.ops.wm.read_factory_settings(use_empty=True)
    data = np.load(src)
    out = {}
    for i in range(int(data["count"])):
        verts, polys = data[f"v{i}"], data[f"f{i}"]
        mesh = bpy.data.meshes.new(f"o{i}")
        mesh.from_pydata(verts.tolist(), [], [[int(x) for x in row if x >= 0] for row in polys])
        mesh.update()
        obj = bpy.data.objects.new(f"o{i}", mesh)
        bpy.context.scene.collection.objects.link(obj)
        mod = obj.modifiers.new("decimate", "DECIMATE")
        mod.decimate_type = "COLLAPSE"
        mod.ratio = ratio
        mod.use_collapse_triangulate = True
        graph = bpy.context.evaluated_depsgraph_get()
        done = bpy.data.meshes.new_from_object(obj.evaluated_get(graph))
        bm = bmesh.new()
        bm.from_mesh(done)
        if mix and i == 0:
            # Quads on the character's left half and on the back of the head; triangles on
            # the right half of the face.
            sel = [f for f in bm.faces if f.calc_center_median().x > 0.0 or f.calc_center_median().z < 0.02]
            bmesh.ops.join_triangles(bm, faces=sel, cmp_seam=False, cmp_sharp=False, cmp_uvs=False,
                                     cmp_vcols=False, cmp_materials=False,
                                     angle_face_threshold=math.radians(60.0),
                                     angle_shape_threshold=math.radians(60.0))
            # Hexagons: edges between two quads on the back of the head, no face touched twice.
            used, pick = set(), []
            for e in bm.edges:
                if len(e.link_faces) != 2:
                    continue
                f0, f1 = e.link_faces
                c = (f0.calc_center_median() + f1.calc_center_median()) / 2
                if len(f0.verts) == 4 and len(f1.verts) == 4 and c.z < 0.0 and c.y > -0.06:
                    if f0.index in used or f1.index in used:
                        continue
                    # Only where the hexagon stays convex (or straight) at the edge's ends.
                    corner = [sum(l.calc_angle() for f in (f0, f1) for l in f.loops if l.vert == v)
                              for v in e.verts]
                    if max(corner) > math.radians(180.0):
                        continue
                    used.update((f0.index, f1.index))
                    pick.append(e)
            bm.faces.index_update()
            bmesh.ops.dissolve_edges(bm, edges=pick, use_verts=False, use_face_split=False)
        bm.to_mesh(done)
        bm.free()
        n = len(done.vertices)
        co = np.empty(n * 3, dtype=np.float64)
        done.vertices.foreach_get("co", co)
        totals = np.empty(len(done.polygons), dtype=np.int32)
        done.polygons.foreach_get("loop_total", totals)
        loops = np.empty(len(done.loops), dtype=np.int32)
        done.loops.foreach_get("vertex_index", loops)
        out[f"v{i}"], out[f"t{i}"], out[f"l{i}"] = co.reshape(n, 3), totals, loops
    np.savez(dst, **out)
""")


def _blender_decimate(groups, ratio: float, mix: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Decimate each (vertices, polygons) with Blender in a subprocess. -> [(verts, totals, loops)]"""
    with tempfile.TemporaryDirectory(prefix="fit_heads_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays = {"count": np.array(len(groups))}
        for i, (verts, polys) in enumerate(groups):
            arrays[f"v{i}"], arrays[f"f{i}"] = verts, polys
        np.savez(src, **arrays)
        env = {**os.environ, "HOME": tmp}
        result = subprocess.run([sys.executable, "-c", _DECIMATE_SCRIPT, str(src), str(dst), repr(ratio),
                                 "1" if mix else "0"], env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not dst.exists():
            raise RuntimeError(f"Blender decimation failed ({result.returncode}):\n{result.stderr[-3000:]}")
        with np.load(dst) as data:
            return [(data[f"v{i}"], data[f"t{i}"], data[f"l{i}"]) for i in range(len(groups))]


@functools.lru_cache(maxsize=None)
def _ict_mesh(ratio: float, include_eyes: bool, mix: bool):
    """The ICT head's objects, decimated (ratio < 1) or as shipped, in ICT metres, joined:
    (vertices, loop_totals, loop_vertices, group name per vertex, group names)."""
    groups = _ict_groups(include_eyes)
    if ratio >= 1.0:
        pieces = []
        for _, _, verts, polys in groups:
            polygons = [row[row >= 0] for row in polys]
            pieces.append((verts, *polygons_to_loops(polygons)))
    else:
        pieces = _blender_decimate([(g[2], g[3]) for g in groups], ratio, mix)
    verts, totals, loops, owner = [], [], [], []
    base = 0
    for gi, (v, t, l) in enumerate(pieces):
        verts.append(v)
        totals.append(t)
        loops.append(l + base)
        owner.append(np.full(len(v), gi))
        base += len(v)
    return (np.concatenate(verts), np.concatenate(totals).astype(np.int32),
            np.concatenate(loops).astype(np.int32), np.concatenate(owner), tuple(g[0] for g in groups))


@functools.lru_cache(maxsize=None)
def _ict_truth(ratio: float, include_eyes: bool, mix: bool):
    """(ict_tri (V,), ict_bary (V, 3), distance (V,) metres) for _ict_mesh(...)."""
    from wav2sem.heads import ict_triangles

    verts, totals, loops, owner, names = _ict_mesh(ratio, include_eyes, mix)
    kit = ict_triangles()
    kit_verts = _ict_neutral_m()
    normals = vertex_normals(verts, fan_triangles(totals, loops))
    tri = np.full(len(verts), -1, dtype=np.int64)
    bary = np.zeros((len(verts), 3))
    dist = np.zeros(len(verts))
    groups = _ict_triangle_groups()
    for gi, name in enumerate(names):
        sel = np.where(owner == gi)[0]
        allowed = groups[name]
        t, b, d = closest_points(verts[sel], kit_verts, kit[allowed], normals[sel],
                                 side_penalty=LIP_SIDE_PENALTY_M)
        tri[sel], bary[sel], dist[sel] = allowed[t], b, d
    return tri, bary, dist


@functools.lru_cache(maxsize=1)
def _ict_neutral_m() -> np.ndarray:
    from wav2sem.heads import ict_arrays

    return ict_arrays()["neutral"].astype(np.float64) * 0.01


def _ict_head(name: str, description: str, *, ratio: float, include_eyes: bool, mix: bool, scale: float,
              yaw_deg: float, pitch_deg: float, offset, warp: Callable | None = None) -> FitHead:
    from wav2sem.heads import ict_triangles

    verts_m, totals, loops, owner, names = _ict_mesh(ratio, include_eyes, mix)
    tri, bary, dist = _ict_truth(ratio, include_eyes, mix)
    rotation = _placement(scale, yaw_deg, pitch_deg)
    offset = np.asarray(offset, dtype=np.float64)
    shaped = warp(verts_m) if warp is not None else verts_m
    vertices = scale * shaped @ rotation.T + offset
    # Lips: the kit's lip region at the vertex's closest point (largest barycentric weight).
    nearest = ict_triangles()[tri, np.argmax(bary, axis=1)]
    lip_set = np.zeros(len(_ict_neutral_m()), bool)
    lip_set[_ict_lip_vertices()] = True
    lips = lip_set[nearest] & (owner == 0)
    # Back of the head: behind z = -5 cm and above the neck, where no ICT shape moves (< 0.02 mm).
    back = (owner == 0) & (verts_m[:, 2] < -0.05) & (verts_m[:, 1] > -0.07)
    triangles = fan_triangles(totals, loops)
    ref = reference_landmarks_m()
    ref_pts = np.stack([ref[n] for n in FIT_LANDMARKS])
    ref_pts = warp(ref_pts) if warp is not None else ref_pts
    skin_tris = triangles[(owner[triangles] == 0).all(axis=1)]
    on_surface = project_to_surface(scale * ref_pts @ rotation.T + offset, vertices, skin_tris)
    landmarks = {n: on_surface[i] for i, n in enumerate(FIT_LANDMARKS)}
    info = {"ratio": ratio, "include_eyes": include_eyes, "groups": names,
            "group_vertices": np.bincount(owner).tolist(),
            "truth_distance_mm_max": float(dist.max() * 1000),
            "truth_distance_mm_p99": float(np.percentile(dist, 99) * 1000)}
    return FitHead(name, description, vertices, totals, loops, None, landmarks, scale, rotation, offset, "ict",
                   lips, back, np.ones(len(vertices), bool), tri, bary, verts_m, warp, info)


# --- builders ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def ict_decimated(ratio: float = 0.35, include_eyes: bool = False, mix: bool = True, scale: float = 100.0,
                  yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                  offset: tuple[float, float, float] = (12.0, -30.0, 160.0)) -> FitHead:
    """(a) The ICT head (no eyeballs unless include_eyes) at another topology, Blender's axes,
    centimetres by default (scale = units per metre), offset from the origin."""
    desc = (f"ICT head decimated to {ratio:.0%} of the faces (Blender collapse), "
            f"{'with' if include_eyes else 'without'} eyeballs, teeth and gums as islands, "
            f"Z up / face -Y, {scale:g} units per metre")
    return _ict_head("ict_decimated", desc, ratio=ratio, include_eyes=include_eyes, mix=mix, scale=scale,
                     yaw_deg=yaw_deg, pitch_deg=pitch_deg, offset=offset)


@functools.lru_cache(maxsize=None)
def ict_eyes() -> FitHead:
    """ict_decimated with the eyeballs (islands of the same mesh, decimated alike)."""
    head = ict_decimated(include_eyes=True)
    return _renamed(head, "ict_eyes", head.description)


@functools.lru_cache(maxsize=None)
def ict_tilted(yaw_deg: float = 20.0, pitch_deg: float = 10.0) -> FitHead:
    """ict_decimated's mesh turned about Z (yaw_deg) and pitched face-down (pitch_deg)."""
    head = ict_decimated(yaw_deg=yaw_deg, pitch_deg=pitch_deg)
    return _renamed(head, "ict_tilted", head.description + f", turned {yaw_deg:g} deg, pitched {pitch_deg:g} deg")


def _renamed(head: FitHead, name: str, description: str) -> FitHead:
    import dataclasses

    return dataclasses.replace(head, name=name, description=description)


# Stylising warp (ICT metres, Y up, face +Z).
STYLE_EYE_GAIN = 0.35        # radial scale at each eye's centre
STYLE_EYE_RADIUS = 0.03      # Gaussian radius (m) of the eye enlargement
STYLE_MOUTH_GAIN = 0.25      # horizontal scale at the mouth
STYLE_CHIN_DROP = 0.016      # metres the chin moves down
STYLE_WIDTH = 1.06           # the whole head wider


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def style_warp(p: np.ndarray) -> np.ndarray:
    """The stylised head's warp: bigger eye regions, wider mouth, longer chin, wider head."""
    p = np.asarray(p, dtype=np.float64)
    q = p.copy()
    for side in (-1.0, 1.0):
        centre = np.array([side * 0.0325, 0.035, 0.075])
        r = p - centre
        g = np.exp(-np.sum(r * r, axis=-1) / STYLE_EYE_RADIUS ** 2)
        q += STYLE_EYE_GAIN * g[..., None] * r
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    front = _smoothstep(0.0, 0.08, z)
    mouth = np.exp(-((y + 0.034) / 0.022) ** 2) * front
    q[..., 0] += STYLE_MOUTH_GAIN * mouth * x
    below = _smoothstep(-0.036, -0.07, y)
    q[..., 1] -= STYLE_CHIN_DROP * below * _smoothstep(-0.02, 0.06, z)
    q[..., 0] *= STYLE_WIDTH
    return q


@functools.lru_cache(maxsize=None)
def ict_stylised(ratio: float = 0.5, scale: float = 7.5,
                 offset: tuple[float, float, float] = (-0.4, 0.2, 12.0)) -> FitHead:
    """(c) The ICT head warped by style_warp, decimated to `ratio`, at an odd scale."""
    desc = (f"ICT head stylised (eyes x{1 + STYLE_EYE_GAIN:g}, mouth x{1 + STYLE_MOUTH_GAIN:g} wide, "
            f"chin {STYLE_CHIN_DROP * 100:g} cm longer, head x{STYLE_WIDTH:g} wide), decimated to {ratio:.0%}, "
            f"Z up / face -Y, {scale:g} units per metre")
    return _ict_head("ict_stylised", desc, ratio=ratio, include_eyes=False, mix=True, scale=scale,
                     yaw_deg=0.0, pitch_deg=0.0, offset=offset, warp=style_warp)


# Synthetic head: eye corners picked by eye on Workbench renders (front and 30-degree close-ups):
# the ends of the eye opening, where the socket's rim meets the eyeball (the head has no lids),
# (x, y, z) metres in the head's own frame (Y up, face +Z), projected onto the surface.
SYNTH_EYE_CORNERS = {"eye_outer_left": (0.0455, 0.025, 0.076), "eye_inner_left": (0.0195, 0.0245, 0.081),
                     "eye_inner_right": (-0.0195, 0.0245, 0.081), "eye_outer_right": (-0.0455, 0.025, 0.076)}
# Chin as on the ICT head: midline, the most forward point below the mentolabial fold.
SYNTH_CHIN_SEARCH_Y = (-0.115, -0.080)


def _synth_quads(faces: np.ndarray) -> list[list[int]]:
    """The synthetic head's triangle pairs (consecutive faces of one grid quad) -> quads;
    the pole fans stay triangles."""
    polygons = []
    n = len(faces)
    i = 0
    while i < n:
        t0 = faces[i]
        if i + 1 < n:
            t1 = faces[i + 1]
            shared = [v for v in t0 if v in t1]
            if len(shared) == 2:
                # t0 = (p, s0, s1) in order with the shared edge s0 -> s1 ... rotate so t0 ends on the shared edge.
                k = [j for j in range(3) if t0[j] not in shared][0]
                a, b, c = t0[k], t0[(k + 1) % 3], t0[(k + 2) % 3]        # edge b -> c is shared
                other = [v for v in t1 if v not in shared][0]
                polygons.append([int(a), int(b), int(other), int(c)])
                i += 2
                continue
        polygons.append([int(v) for v in t0])
        i += 1
    return polygons


@functools.lru_cache(maxsize=None)
def synthetic(scale: float = 1.0, offset: tuple[float, float, float] = (0.0, 0.05, 1.62)) -> FitHead:
    """(b) The project's procedural head, quads and pole triangles, Blender's axes."""
    from wav2sem.synth.head import build_head

    hm = build_head()
    t = hm.template
    src = t.vertices.astype(np.float64)
    polygons = _synth_quads(t.faces)
    totals, loops = polygons_to_loops(polygons)
    rotation = _placement(scale)
    offset_a = np.asarray(offset, dtype=np.float64)
    vertices = scale * src @ rotation.T + offset_a
    tris = fan_triangles(totals, loops)
    own = {n: src[t.landmarks[n]] for n in ("upper_lip_center", "lower_lip_center", "mouth_corner_left",
                                            "mouth_corner_right", "nose_tip")}
    mid = np.where((np.abs(src[:, 0]) < 1e-6) & (src[:, 1] > SYNTH_CHIN_SEARCH_Y[0])
                   & (src[:, 1] < SYNTH_CHIN_SEARCH_Y[1]) & (src[:, 2] > 0))[0]
    own["chin"] = src[mid[np.argmax(src[mid, 2])]]
    eyes = project_to_surface(np.array(list(SYNTH_EYE_CORNERS.values())), src, tris)
    own.update(dict(zip(SYNTH_EYE_CORNERS, eyes)))
    landmarks = {n: scale * own[n] @ rotation.T + offset_a for n in FIT_LANDMARKS}
    lips = np.zeros(len(src), bool)
    lips[t.regions["lips"]] = True
    back = np.abs(hm.azimuth) > np.radians(110)
    desc = f"wav2sem.synth.head.build_head() ({len(src)} vertices), quads + pole triangles, Z up / face -Y, {scale:g} units per metre"
    return FitHead("synthetic", desc, vertices, totals, loops, None, landmarks, scale, rotation, offset_a,
                   "synthetic", lips, back, np.ones(len(src), bool), info={"source": "wav2sem.synth.head"})


def synthetic_rig_motion(head: FitHead, poses: np.ndarray) -> np.ndarray:
    """Articulator poses (P, len(rig.ARTICULATORS)) -> the synthetic rig's vertex offsets from
    rest (P, V, 3) in the mesh's space (for a head built by synthetic())."""
    from wav2sem.synth.head import build_head

    hm = build_head()
    rig = _synth_rig()
    moved = rig.apply(poses).astype(np.float64) - hm.template.vertices.astype(np.float64)[None]
    return head.vector_to_mesh(moved)


@functools.lru_cache(maxsize=1)
def _synth_rig():
    from wav2sem.synth.head import build_head
    from wav2sem.synth.rig import Rig

    return Rig.for_head(build_head())


# Crude body (metres, Blender's axes): the ICT neck's lower end (y = -0.193 on the kit) sits
# 2 cm inside the torso's top.
BODY_HEAD_OFFSET = (0.0, 0.0, 1.62)


def _tube(p0, p1, r0, r1, segments: int, rings: int, squash: float = 1.0):
    """A capped tube from p0 to p1 (radius r0 -> r1, the cross-section an ellipse squashed
    along the second axis), quads and two n-gon caps, outward facing."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = p1 - p0
    length = np.linalg.norm(axis)
    w = axis / length
    helper = np.array([0.0, 1.0, 0.0]) if abs(w[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, w)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    t = np.linspace(0.0, 1.0, rings)
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    radius = r0 + (r1 - r0) * t
    ring_pts = (p0 + t[:, None] * axis)[:, None, :] + radius[:, None, None] * (
        np.cos(a)[None, :, None] * u + squash * np.sin(a)[None, :, None] * v)
    verts = ring_pts.reshape(-1, 3)
    idx = np.arange(rings * segments).reshape(rings, segments)
    i0, i1 = idx[:-1], idx[1:]
    j0, j1 = i0, np.roll(i0, -1, axis=1)
    k0, k1 = i1, np.roll(i1, -1, axis=1)
    quads = np.stack([j0, j1, k1, k0], axis=-1).reshape(-1, 4)   # u x v = w: this winding faces out
    polys = [list(q) for q in quads]
    polys.append(list(idx[0][::-1]))
    polys.append(list(idx[-1]))
    return verts, polys


def _box(centre, size, divisions: int):
    """A box of quads, `divisions` per edge, outward facing. -> (verts, polys)"""
    n = divisions
    g = np.linspace(-0.5, 0.5, n + 1)
    verts, polys = [], []
    base = 0
    for axis in range(3):
        for sign in (-1.0, 1.0):
            a1, a2 = [k for k in range(3) if k != axis]
            uu, vv = np.meshgrid(g, g, indexing="ij")
            pts = np.zeros((n + 1, n + 1, 3))
            pts[..., axis] = 0.5 * sign
            pts[..., a1], pts[..., a2] = uu, vv
            verts.append(pts.reshape(-1, 3))
            idx = base + np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
            q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
            # Normal of (e_a1, e_a2) winding is +axis for a right-handed cyclic order.
            right = (a1 - axis) % 3 == 1
            if (sign > 0) != right:
                q = q[:, ::-1]
            polys.extend(q.tolist())
            base += (n + 1) ** 2
    verts = np.concatenate(verts)
    # Weld the shared edges.
    key = np.round(verts * 1e6).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(first)
    remap = np.empty(len(first), dtype=np.int64)
    remap[order] = np.arange(len(first))
    welded = verts[first[order]]
    polys = [[int(remap[inverse[v]]) for v in p] for p in polys]
    return welded * np.asarray(size, float) + np.asarray(centre, float), polys


def _join(pieces):
    verts, polys, base = [], [], 0
    for v, p in pieces:
        verts.append(v)
        polys.extend([[i + base for i in q] for q in p])
        base += len(v)
    return np.concatenate(verts), polys


@functools.lru_cache(maxsize=1)
def _body_pieces():
    return _join([
        _tube((0, 0, 0.93), (0, 0, 1.45), 0.17, 0.15, 200, 300, squash=0.62),    # torso
        _tube((0, 0, 1.40), (0, 0, 1.49), 0.10, 0.065, 64, 12, squash=0.9),      # neck base
        _tube((0.19, 0, 1.40), (0.42, 0, 0.90), 0.05, 0.035, 80, 240),           # arms
        _tube((-0.19, 0, 1.40), (-0.42, 0, 0.90), 0.05, 0.035, 80, 240),
        _box((0.44, 0, 0.83), (0.05, 0.09, 0.15), 16),                            # hands
        _box((-0.44, 0, 0.83), (0.05, 0.09, 0.15), 16),
        _tube((0.09, 0, 0.97), (0.10, 0, 0.08), 0.08, 0.045, 96, 320),           # legs
        _tube((-0.09, 0, 0.97), (-0.10, 0, 0.08), 0.08, 0.045, 96, 320),
        _box((0.10, -0.06, 0.035), (0.10, 0.26, 0.07), 20),                       # feet
        _box((-0.10, -0.06, 0.035), (0.10, 0.26, 0.07), 20),
    ])


@functools.lru_cache(maxsize=None)
def full_body() -> FitHead:
    """(d) ict_decimated's head (metres) on a crude body; one object, ~170k vertices."""
    import dataclasses

    head = ict_decimated(scale=1.0, offset=BODY_HEAD_OFFSET)
    body_v, body_p = _body_pieces()
    nh = head.vertex_count
    totals_b, loops_b = polygons_to_loops(body_p)
    vertices = np.concatenate([head.vertices, body_v])
    totals = np.concatenate([head.loop_totals, totals_b])
    loops = np.concatenate([head.loop_vertices, loops_b + nh]).astype(np.int32)
    nb = len(body_v)
    pad = np.zeros(nb, bool)
    ict_tri = np.concatenate([head.ict_tri, np.full(nb, -1)])
    ict_bary = np.concatenate([head.ict_bary, np.zeros((nb, 3))])
    source = np.concatenate([head.source, np.full((nb, 3), np.nan)])
    desc = f"ict_decimated's head (metres) on a crude body of tubes and boxes ({nb} body vertices), one object"
    return dataclasses.replace(head, name="full_body", description=desc, vertices=vertices, loop_totals=totals,
                               loop_vertices=loops, lips=np.concatenate([head.lips, pad]),
                               back=np.concatenate([head.back, pad]), head=np.concatenate([head.head, pad]),
                               ict_tri=ict_tri, ict_bary=ict_bary, source=source,
                               info={**head.info, "body_vertices": nb})


def _no_head(name: str, description: str, verts: np.ndarray, polys) -> FitHead:
    totals, loops = polygons_to_loops(polys)
    n = len(verts)
    none = np.zeros(n, bool)
    return FitHead(name, description, verts, totals, loops, None, {}, 1.0, np.eye(3), np.zeros(3), "none",
                   none, none, none)


@functools.lru_cache(maxsize=None)
def cube(size: float = 0.2, divisions: int = 16) -> FitHead:
    """(e) A head-sized cube of quads (divisions per edge), at standing height."""
    v, p = _box((0.0, 0.0, 1.6), (size, size, size), divisions)
    return _no_head("cube", f"cube {size:g} m, {divisions} quads per edge", v, p)


@functools.lru_cache(maxsize=None)
def uv_sphere(radius: float = 0.11, segments: int = 32, rings: int = 16) -> FitHead:
    """(e) A UV sphere as Blender makes it (quads, triangle fans at the poles)."""
    lat = np.linspace(0, np.pi, rings + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.sin(lat)[:, None] * np.cos(lon), np.sin(lat)[:, None] * np.sin(lon),
                     np.cos(lat)[:, None] * np.ones_like(lon)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([ring, [[0, 0, 1.0], [0, 0, -1.0]]]) * radius + (0.0, 0.0, 1.6)
    idx = np.arange(len(ring)).reshape(rings - 1, segments)
    top, bottom = len(ring), len(ring) + 1
    polys = []
    for r in range(rings - 2):
        for s in range(segments):
            s1 = (s + 1) % segments
            polys.append([idx[r, s], idx[r + 1, s], idx[r + 1, s1], idx[r, s1]])
    for s in range(segments):
        s1 = (s + 1) % segments
        polys.append([top, idx[0, s], idx[0, s1]])
        polys.append([bottom, idx[-1, s1], idx[-1, s]])
    return _no_head("uv_sphere", f"UV sphere r {radius:g} m, {segments} x {rings}", verts, polys)


HEADS = {"ict_decimated": ict_decimated, "ict_eyes": ict_eyes, "ict_tilted": ict_tilted, "ict_stylised": ict_stylised,
         "synthetic": synthetic, "full_body": full_body, "cube": cube, "uv_sphere": uv_sphere}


def polygon_sizes(head: FitHead) -> dict[str, int]:
    t = head.loop_totals
    return {"triangles": int((t == 3).sum()), "quads": int((t == 4).sum()), "ngons": int((t > 4).sum())}


if __name__ == "__main__":
    import time

    for name in sys.argv[1:] or list(HEADS):
        t0 = time.perf_counter()
        h = HEADS[name]()
        dt = time.perf_counter() - t0
        print(f"{name}: {h.vertex_count} vertices, {polygon_sizes(h)}, {dt:.2f} s; {h.description}; "
              f"{ {k: v for k, v in h.info.items() if 'distance' in k} }")
