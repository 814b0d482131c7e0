"""Templates in every supported format, and reference pickles through the restricted unpickler."""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

from wav2sem.errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from wav2sem.template import Template

VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], dtype=np.float32) * 0.1


def test_npy(tmp_path):
    np.save(tmp_path / "t.npy", VERTS.astype(np.float64))
    t = Template.load(tmp_path / "t.npy")
    assert t.vertices.dtype == np.float32 and t.vertex_count == 5
    np.testing.assert_allclose(t.vertices, VERTS)
    np.save(tmp_path / "flat.npy", VERTS.reshape(-1))          # flat (V*3,) arrays are accepted too
    np.testing.assert_allclose(Template.load(tmp_path / "flat.npy").vertices, VERTS)


def _triangles(faces) -> set:
    """Triangles up to rotation (the same winding), for comparing triangulated quads."""
    return {min((a, b, c), (b, c, a), (c, a, b)) for a, b, c in np.asarray(faces).tolist()}


def test_obj_with_quads_and_texture_indices(tmp_path):
    lines = ["# a pyramid", "o thing"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in VERTS]
    lines += ["vt 0 0", "vt 1 0", "vn 0 0 1", "f 1/1/1 2/2/1 3/1/1 4/2/1", "f 1//1 2//1 5//1", "f 2 3 5"]
    (tmp_path / "t.obj").write_text("\n".join(lines) + "\n")
    t = Template.load(tmp_path / "t.obj")
    np.testing.assert_allclose(t.vertices, VERTS, atol=1e-6)
    assert _triangles(t.faces) == _triangles([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]])


def test_obj_keeps_unused_vertices_and_order_across_objects_and_materials(tmp_path):
    """Vertex i of the file is vertex i of the template, even where no face uses it, faces
    come first in another order, or several objects and materials split the file."""
    far = np.array([[5, 5, 5], [9, 9, 9]], np.float32)
    verts = np.concatenate([far[:1], VERTS, far[1:]])
    lines = ["mtllib none.mtl", "o A"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts[:4]]
    lines += ["o B"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts[4:]]
    lines += ["usemtl skin", "f 6 3 2", "o C", "usemtl lips", "f 2 3 4 5"]
    (tmp_path / "t.obj").write_text("\n".join(lines) + "\n")
    t = Template.load(tmp_path / "t.obj")
    assert t.vertex_count == 7
    np.testing.assert_allclose(t.vertices, verts, atol=1e-6)
    assert _triangles(t.faces) == _triangles([[5, 2, 1], [1, 2, 3], [1, 3, 4]])


def test_ascii_ply(tmp_path):
    header = ["ply", "format ascii 1.0", "comment test", "element vertex 5", "property float x", "property float y",
              "property float z", "element face 2", "property list uchar int vertex_indices", "end_header"]
    body = [f"{x} {y} {z}" for x, y, z in VERTS] + ["4 0 1 2 3", "3 0 1 4"]
    (tmp_path / "t.ply").write_text("\n".join(header + body) + "\n")
    t = Template.load(tmp_path / "t.ply")
    np.testing.assert_allclose(t.vertices, VERTS, atol=1e-6)
    assert _triangles(t.faces) == _triangles([[0, 1, 2], [0, 2, 3], [0, 1, 4]])


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_ply_written_by_trimesh_keeps_every_vertex_in_order(tmp_path, encoding):
    """VOCA's FLAME_sample.ply is binary little-endian; vertices no face uses stay, in order."""
    import trimesh

    rng = np.random.default_rng(4)
    verts = rng.normal(size=(50, 3)).astype(np.float32)
    faces = np.array([[40, 3, 7], [7, 3, 12], [0, 1, 2]])          # most vertices unused, indices unsorted
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    (tmp_path / "t.ply").write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding=encoding))
    assert (b"binary_little_endian" in (tmp_path / "t.ply").read_bytes()[:200]) == (encoding == "binary")
    t = Template.load(tmp_path / "t.ply")
    np.testing.assert_allclose(t.vertices, verts, atol=1e-6 if encoding == "ascii" else 0)
    assert t.faces.tolist() == faces.tolist()


def test_vertex_only_ply_and_broken_meshes(tmp_path):
    import trimesh

    cloud = trimesh.PointCloud(VERTS)
    (tmp_path / "points.ply").write_bytes(cloud.export(file_type="ply"))
    t = Template.load(tmp_path / "points.ply")
    np.testing.assert_allclose(t.vertices, VERTS, atol=1e-7)
    assert t.faces is None
    (tmp_path / "cut.ply").write_bytes((tmp_path / "points.ply").read_bytes()[:-20])
    (tmp_path / "empty.obj").write_text("# nothing\n")
    (tmp_path / "noise.ply").write_bytes(np.random.default_rng(0).bytes(500))
    for name in ("cut.ply", "empty.obj", "noise.ply"):
        with pytest.raises(Wav2SemError) as info:
            Template.load(tmp_path / name)
        assert info.value.code == MODEL_INVALID and name in info.value.message, name
        assert "\n" not in info.value.message


def test_npz_round_trip_keeps_regions_and_landmarks(tmp_path):
    original = Template(VERTS, np.array([[0, 1, 2], [0, 2, 3]]), {"lips": [1, 2], "upper_face": np.array([3, 4])},
                        {"nose_tip": 4, "chin": np.int64(0)})
    original.save(tmp_path / "t.npz")
    loaded = Template.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded.vertices, VERTS)
    np.testing.assert_array_equal(loaded.faces, [[0, 1, 2], [0, 2, 3]])
    assert set(loaded.regions) == {"lips", "upper_face"}
    np.testing.assert_array_equal(loaded.regions["lips"], [1, 2])
    assert loaded.regions["lips"].dtype == np.int32
    assert loaded.landmarks == {"nose_tip": 4, "chin": 0}
    # and the npz is readable without pickle (what the add-on does)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as data:
        assert {"vertices", "faces", "region_lips", "region_upper_face", "landmark_names", "landmark_indices"} <= set(data.files)


def test_template_errors(tmp_path):
    with pytest.raises(Wav2SemError) as info:
        Template.load(tmp_path / "missing.npy")
    assert info.value.code == MODEL_NOT_FOUND
    (tmp_path / "t.stl").write_text("solid x")
    with pytest.raises(Wav2SemError) as info:
        Template.load(tmp_path / "t.stl")
    assert info.value.code == MODEL_INVALID and ".stl" in info.value.message
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    with pytest.raises(Wav2SemError) as info:
        Template.load(tmp_path / "bad.npy")
    assert info.value.code == MODEL_INVALID


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_templates_pkl_dict_of_arrays(tmp_path, protocol):
    table = {"FaceTalk_B": VERTS + 1, "FaceTalk_A": VERTS.astype(np.float64)}
    (tmp_path / "templates.pkl").write_bytes(pickle.dumps(table, protocol=protocol))
    from wav2sem.safe_pickle import safe_load

    loaded = safe_load(tmp_path / "templates.pkl")
    assert set(loaded) == set(table)
    np.testing.assert_array_equal(loaded["FaceTalk_B"], VERTS + 1)
    t = Template.load(tmp_path / "templates.pkl", subject="FaceTalk_B")
    np.testing.assert_allclose(t.vertices, VERTS + 1)
    first = Template.load(tmp_path / "templates.pkl")        # no subject: the first in sorted order
    np.testing.assert_allclose(first.vertices, VERTS)
    with pytest.raises(Wav2SemError) as info:
        Template.load(tmp_path / "templates.pkl", subject="nobody")
    assert info.value.code == MODEL_INVALID and "FaceTalk_A" in info.value.message


class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class LocalClass:                     # a harmless-looking custom class is refused too
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("make", [
    lambda m: {"FaceTalk_A": VERTS, "evil": SystemPayload(m)},
    lambda m: [EvalPayload(m)],
    lambda m: {"x": LocalClass()},
])
def test_malicious_pickles_are_refused_and_do_not_run(tmp_path, make):
    from wav2sem.safe_pickle import safe_load

    marker = tmp_path / "marker"
    data = pickle.dumps(make(marker), protocol=2)
    path = tmp_path / "templates.pkl"
    path.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError):
        safe_load(path)
    with pytest.raises(pickle.UnpicklingError):
        safe_load(data)
    with pytest.raises(Wav2SemError) as info:
        Template.load(path)
    assert info.value.code == MODEL_INVALID
    assert not marker.exists(), "the pickle payload ran"


def test_hand_written_global_opcode_is_refused(tmp_path):
    """A raw GLOBAL/REDUCE payload (protocol 0, no helper classes): subprocess.Popen."""
    from wav2sem.safe_pickle import safe_load

    marker = tmp_path / "marker2"
    payload = b"csubprocess\ncheck_call\n((Vtouch\nV" + str(marker).encode() + b"\nltR."
    with pytest.raises(pickle.UnpicklingError):
        safe_load(payload)
    assert not marker.exists()
    # control: the same bytes through the plain unpickler do run (the payload is live)
    pickle.loads(payload)
    assert marker.exists()


def test_template_with_nan_vertices_or_out_of_range_indices_is_refused(tmp_path):
    bad_vertices = VERTS.copy()
    bad_vertices[2, 1] = np.nan
    for name, kwargs in (("nan vertices", dict(vertices=bad_vertices)),
                         ("region index", dict(vertices=VERTS, regions={"lips": [1, 5]})),
                         ("negative region index", dict(vertices=VERTS, regions={"lips": [-1]})),
                         ("landmark index", dict(vertices=VERTS, landmarks={"chin": 9})),
                         ("face index", dict(vertices=VERTS, faces=np.array([[0, 1, 7]])))):
        with pytest.raises(Wav2SemError) as info:
            Template(**kwargs)
        assert info.value.code == MODEL_INVALID, name
        assert "\n" not in info.value.message


class _TerabyteArray:
    """Pickles as numpy's array constructor asked for an 8 TiB array: a few bytes of header."""

    def __reduce__(self):
        return np.core.multiarray._reconstruct, (np.ndarray, (2**43,), b"b")


@pytest.mark.parametrize("value,words", [(_TerabyteArray(), ["8796093022208 bytes"]),
                                         ("vertices", ["str", "not an array"]),
                                         ([[0.0, 1.0], [2.0]], ["list", "not an array"])])
def test_templates_pkl_with_a_huge_header_or_a_non_array_is_one_sentence(tmp_path, value, words):
    from wav2sem.dataset import load_templates_pkl

    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps({"FaceTalk_A": VERTS, "FaceTalk_B": value}, protocol=2))
    with pytest.raises(Wav2SemError) as info:
        load_templates_pkl(path)
    assert info.value.code == MODEL_INVALID and "templates.pkl" in info.value.message
    for word in words:
        assert word in info.value.message
