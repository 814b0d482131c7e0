"""Fit Face's Blender side in Blender 5.0 (bpy module), without the real fit: the mesh file
from a placed head, keys written from known world-space deltas (local space, in place on a
refit, curves kept, the user's keys refused), the W2S_ empties, the mouth interior's drivers,
and the operator against tests/fake_fit_backend.py (NO_FACE, errors and cancel change nothing)."""
from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest

from bpy_helpers import PACKAGE, REPO, assert_fully_same, bpy, full_snapshot

FAKE_FIT = REPO / "tests" / "fake_fit_backend.py"
LANDMARKS = ("nose_tip", "upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right",
             "chin", "eye_outer_left", "eye_inner_left", "eye_inner_right", "eye_outer_right")
DROP_M = 0.01                            # the fake's jawOpen


def module(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


def fcurves(action):
    return module("scene.versions").action_fcurves(action)


def place(obj, location=(0.3, -0.2, 1.4), rotation=(0.2, -0.1, 0.7), scale=(1.5, 1.5, 1.5), parent=None):
    obj.location, obj.rotation_euler, obj.scale = location, rotation, scale
    if parent is not None:
        obj.parent = parent
    bpy.context.view_layer.update()
    return obj


def grid_head(name="Head", size=6):
    """A (size x size) vertex sheet standing up (X across, Z up), quads plus one triangle fan
    row, so polygons of two sizes; metres."""
    xs, zs = np.meshgrid(np.linspace(-0.1, 0.1, size), np.linspace(0.0, 0.25, size))
    verts = np.column_stack([xs.ravel(), np.zeros(xs.size), zs.ravel()])
    faces = []
    for r in range(size - 1):
        for c in range(size - 1):
            a = r * size + c
            if r == 0:
                faces += [(a, a + 1, a + size + 1), (a, a + size + 1, a + size)]
            else:
                faces.append((a, a + 1, a + size + 1, a + size))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def coords(block) -> np.ndarray:
    out = np.empty(len(block.data) * 3, np.float32)
    block.data.foreach_get("co", out)
    return out.reshape(-1, 3).astype(np.float64)


def world(obj, local: np.ndarray) -> np.ndarray:
    matrix = np.array(obj.matrix_world)
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def write(objects, deltas, names=("jawOpen", "mouthClose")):
    fit_mesh = module("scene.fit_mesh")
    gathered = fit_mesh.gather(objects)
    undo = []
    written = fit_mesh.write_keys(objects, gathered, list(names), np.asarray(deltas, np.float32), undo)
    fit_mesh.remove_stale(written)
    return gathered, written


def random_deltas(rng, count, vertices):
    return rng.normal(scale=0.003, size=(count, vertices, 3))


@pytest.fixture
def fake_fit(tmp_path, monkeypatch):
    """Point the add-on at the fake fit backend in `mode`; returns the request log's path."""
    log = tmp_path / "requests.jsonl"

    def use(mode: str = "ok"):
        wrapper = tmp_path / f"fake-fit-{mode}"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_FIT} {mode} --log {log}\n")
        wrapper.chmod(0o755)
        monkeypatch.setenv("WAV2SEM_PYTHON", str(wrapper))
        return log
    yield use
    module("core.client").POOL.close()


def refused(words: str, **kwargs) -> None:
    """Fit Face ends CANCELLED with an error report (the bpy module raises it) saying `words`."""
    with pytest.raises(RuntimeError, match=words):
        bpy.ops.wav2sem.fit_face(**kwargs)


def requests(log) -> list[dict]:
    import json
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- the mesh file ---------------------------------------------------------------------

def test_mesh_file_is_world_space_rest_positions_and_blenders_polygons(scene, addon, tmp_path):
    head = place(grid_head())
    teeth = place(grid_head("Teeth", 3), location=(0.0, 0.05, 0.02), rotation=(0, 0, 0.3), scale=(1, 1, 1),
                  parent=head)
    head.shape_key_add(name="Basis", from_mix=False)
    basis = head.data.shape_keys.reference_key
    moved = coords(basis) + [0.0, 0.0, 0.05]          # the Basis differs from the mesh: the Basis counts
    basis.data.foreach_set("co", moved.astype(np.float32).ravel())
    smile = head.shape_key_add(name="Smile", from_mix=False)
    smile.value = 1.0                                 # a key at 1 must not leak into the rest positions
    smile.data.foreach_set("co", (moved + 0.02).astype(np.float32).ravel())

    gathered = module("scene.fit_mesh").gather([head, teeth])
    path = tmp_path / "mesh.npz"
    gathered.save(str(path))
    with np.load(path) as data:
        assert data["vertices"].dtype == np.float64 and data["loop_totals"].dtype == np.int32
        assert data["loop_vertices"].dtype == np.int32 and data["object_ids"].dtype == np.int32
        vertices, totals, loops, ids = (data[k] for k in ("vertices", "loop_totals", "loop_vertices", "object_ids"))
    count = len(head.data.vertices)
    np.testing.assert_allclose(vertices[:count], world(head, moved), atol=1e-6)
    np.testing.assert_allclose(vertices[count:], world(teeth, coords_of_mesh(teeth)), atol=1e-6)
    assert ids.tolist() == [0] * count + [1] * len(teeth.data.vertices)
    expected = [list(p.vertices) for p in head.data.polygons] + \
               [[v + count for v in p.vertices] for p in teeth.data.polygons]
    polygons = np.split(loops, np.cumsum(totals)[:-1])
    assert [p.tolist() for p in polygons] == expected and sorted(set(totals.tolist())) == [3, 4]


def coords_of_mesh(obj) -> np.ndarray:
    out = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", out)
    return out.reshape(-1, 3).astype(np.float64)


def test_interior_objects_by_name_or_picked_from_the_heads_children(scene, addon):
    fit_mesh = module("scene.fit_mesh")
    head = grid_head()
    picked = [place(grid_head(n, 2), parent=head) for n in ("LowerTeeth", "tongue_geo", "Gums.001", "Hat")]
    deeper = place(grid_head("MouthInside", 2), parent=picked[0])        # any depth below the head
    place(grid_head("Teeth_other_head", 2))                               # not the head's
    found = {o.name for o in fit_mesh.interior_objects(head, "")}
    assert found == {"LowerTeeth", "tongue_geo", "Gums.001", deeper.name}
    assert [o.name for o in fit_mesh.interior_objects(head, " Hat , LowerTeeth,Hat")] == ["Hat", "LowerTeeth"]
    errors = module("core.errors")
    for names, words in (("Nope", "no object named 'Nope'"), ("Head", "not the head itself")):
        with pytest.raises(errors.UserError, match=words):
            fit_mesh.interior_objects(head, names)


# --- writing keys ----------------------------------------------------------------------

def test_keys_take_world_deltas_into_local_space_relative_to_the_basis(scene, addon):
    rng = np.random.default_rng(1)
    head = place(grid_head())
    deltas = random_deltas(rng, 2, len(head.data.vertices))
    gathered, written = write([head], deltas)
    key = head.data.shape_keys
    assert [b.name for b in key.key_blocks] == ["Basis", "jawOpen", "mouthClose"]
    assert list(key["wav2sem_fitted"]) == ["jawOpen", "mouthClose"] and written.objects == ("Head",)
    rest = coords(key.reference_key)
    for index, name in enumerate(("jawOpen", "mouthClose")):
        block = key.key_blocks[name]
        assert block.relative_key == key.reference_key and block.value == 0.0
        # The key at 1 moves each vertex by exactly the world-space delta.
        np.testing.assert_allclose(world(head, coords(block)) - world(head, rest), deltas[index], atol=1e-6)
    np.testing.assert_allclose(gathered.vertices, world(head, rest), atol=1e-6)


def test_refit_rewrites_keys_in_place_and_takes_curves_still_point_at_them(scene, addon):
    rng = np.random.default_rng(2)
    head = place(grid_head())
    count = len(head.data.vertices)
    write([head], random_deltas(rng, 2, count))
    key = head.data.shape_keys
    smile = head.shape_key_add(name="Smile", from_mix=False)          # the user's own key, after the fit
    smile.data.foreach_set("co", (coords(key.reference_key) + 0.01).astype(np.float32).ravel())
    jaw = key.key_blocks["jawOpen"]
    jaw.slider_max, jaw.value, jaw.mute = 2.0, 0.25, True
    action, _, curves = module("scene.versions").new_shape_key_action("LipSync_take", key)
    curve = curves.new('key_blocks["jawOpen"].value')
    curve.keyframe_points.insert(1, 0.5)
    smile_before, basis_before = coords(smile), coords(key.reference_key)

    deltas = random_deltas(rng, 2, count)
    _, written = write([head], deltas)
    assert written.replaced == 2
    assert [b.name for b in key.key_blocks] == ["Basis", "jawOpen", "mouthClose", "Smile"]   # same places
    assert key.key_blocks["jawOpen"] == jaw and (jaw.slider_max, jaw.value, jaw.mute) == (2.0, 0.25, True)
    assert key.path_resolve(curve.data_path) == 0.25                  # the take's curve still resolves
    np.testing.assert_allclose(world(head, coords(jaw)) - world(head, basis_before), deltas[0], atol=1e-6)
    np.testing.assert_array_equal(coords(smile), smile_before)
    np.testing.assert_array_equal(coords(key.reference_key), basis_before)
    # A refit that makes fewer keys removes the ones only the earlier fit made.
    _, written = write([head], deltas[:1], names=("jawOpen",))
    assert [b.name for b in key.key_blocks] == ["Basis", "jawOpen", "Smile"]
    assert list(key["wav2sem_fitted"]) == ["jawOpen"]


@pytest.mark.parametrize("user_key, shown", [("jawOpen", "'jawOpen'"), ("MouthPressLeft", "'MouthPressLeft' (for mouthPress_L)"),
                                            ("browInnerUp", "'browInnerUp' (for browInnerUp_L)")])
def test_a_key_the_fit_did_not_make_refuses_the_fit(scene, addon, user_key, shown, fake_fit):
    log = fake_fit("ok")
    head = grid_head()
    head.shape_key_add(name="Basis", from_mix=False)
    head.shape_key_add(name=user_key, from_mix=False)
    head.shape_key_add(name="viseme_aa", from_mix=False)               # visemes stand for no ARKit shape
    before = full_snapshot(head, fcurves)
    refused(re.escape(f"'Head' already has the shape key {shown}, which Fit Face did not make"), object=head.name)
    assert requests(log) == []                                          # refused before any backend work
    assert_fully_same(before, full_snapshot(head, fcurves))


def test_a_failing_write_takes_back_every_change(scene, addon, monkeypatch):
    rng = np.random.default_rng(3)
    head = place(grid_head())
    teeth = place(grid_head("Teeth", 3), parent=head)
    count = len(head.data.vertices) + len(teeth.data.vertices)
    write([head], random_deltas(rng, 2, len(head.data.vertices)))      # an earlier fit, head only
    before, teeth_before = full_snapshot(head, fcurves), full_snapshot(teeth, fcurves)
    fit_mesh = module("scene.fit_mesh")

    def broken(*args):
        raise RuntimeError("driver refused")
    monkeypatch.setattr(fit_mesh, "_drive", broken)
    gathered = fit_mesh.gather([head, teeth])
    undo = []
    with pytest.raises(RuntimeError):
        fit_mesh.write_keys([head, teeth], gathered, ["jawOpen", "mouthClose", "mouthFunnel"],
                            random_deltas(rng, 3, count).astype(np.float32), undo)
    fit_mesh.rollback(undo)
    assert_fully_same(before, full_snapshot(head, fcurves))
    assert_fully_same(teeth_before, full_snapshot(teeth, fcurves))
    assert list(head.data.shape_keys["wav2sem_fitted"]) == ["jawOpen", "mouthClose"]


# --- the mouth interior ------------------------------------------------------------------

def test_lower_teeth_keys_follow_the_heads_keys_and_still_parts_get_none(scene, addon):
    head = place(grid_head())
    lower = place(grid_head("LowerTeeth", 3), location=(0, 0.02, -0.05), rotation=(0.4, 0, 0), scale=(2, 2, 2),
                  parent=head)
    upper = place(grid_head("UpperTeeth", 3), location=(0, 0.02, 0.05), rotation=(0, 0, 0), scale=(1, 1, 1),
                  parent=head)
    n_head, n_lower, n_upper = (len(o.data.vertices) for o in (head, lower, upper))
    deltas = np.zeros((2, n_head + n_lower + n_upper, 3))
    deltas[0, n_head:n_head + n_lower] = [0.0, 0.001, -0.01]          # jawOpen: the lower teeth drop
    deltas[0, :n_head // 2, 2] = -0.01
    _, written = write([head, lower, upper], deltas)
    assert written.objects == ("Head", "LowerTeeth")                   # the upper teeth do not move
    assert upper.data.shape_keys is None
    key = lower.data.shape_keys
    assert [b.name for b in key.key_blocks] == ["Basis", "jawOpen", "mouthClose"]
    head.data.shape_keys.key_blocks["jawOpen"].value = 0.6
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    evaluated = lower.evaluated_get(depsgraph)
    assert math.isclose(evaluated.data.shape_keys.key_blocks["jawOpen"].value, 0.6, rel_tol=1e-6)
    moved = np.empty(n_lower * 3, np.float32)
    evaluated.data.vertices.foreach_get("co", moved)
    rest = coords(key.reference_key)
    np.testing.assert_allclose(world(lower, moved.reshape(-1, 3)) - world(lower, rest),
                               np.tile([0.0, 0.0006, -0.006], (n_lower, 1)), atol=1e-6)
    # Refitting keeps one driver per key.
    write([head, lower, upper], deltas)
    assert sorted(c.data_path for c in key.animation_data.drivers) == ['key_blocks["jawOpen"].value',
                                                                        'key_blocks["mouthClose"].value']


# --- the landmark empties --------------------------------------------------------------

def test_empties_keep_their_world_position_under_the_head_and_read_back(scene, addon):
    fit_landmarks = module("scene.fit_landmarks")
    head = place(grid_head())
    points = {name: (0.01 * i, -0.2 + 0.003 * i, 1.4 + 0.01 * i) for i, name in enumerate(LANDMARKS)}
    made = fit_landmarks.place(head, points, 0.3, [])
    bpy.context.view_layer.update()
    assert sorted(made) == sorted("W2S_" + n for n in LANDMARKS)
    chin = bpy.data.objects["W2S_chin"]
    assert chin.parent == head and chin["wav2sem_landmark"] == "chin" and chin.type == "EMPTY"
    back = fit_landmarks.read(head)
    for name, point in points.items():
        np.testing.assert_allclose(back[name], point, atol=1e-6)
    # The user moves one and moves the head: the empties go with the head, the read follows.
    chin.matrix_world.translation = (0.05, -0.25, 1.3)
    bpy.context.view_layer.update()
    np.testing.assert_allclose(fit_landmarks.read(head)["chin"], (0.05, -0.25, 1.3), atol=1e-6)
    # A second head's empties get .001 names and still resolve by their property.
    other = place(grid_head("Other"), location=(1, 0, 0))
    fit_landmarks.place(other, points, 0.3, [])
    bpy.context.view_layer.update()
    assert fit_landmarks.find(other)["chin"].name == "W2S_chin.001"
    # Placing again moves the existing empties instead of adding more.
    assert fit_landmarks.place(head, points, 0.3, []) == []
    bpy.data.objects.remove(bpy.data.objects["W2S_nose_tip"])
    with pytest.raises(module("core.errors").UserError, match="W2S_nose_tip"):
        fit_landmarks.read(head)


# --- the operator, against the fake fit backend ----------------------------------------

def test_fit_face_operator_writes_keys_empties_and_refits_from_moved_empties(scene, addon, fake_fit):
    log = fake_fit("ok")
    head = place(grid_head())
    teeth = place(grid_head("LowerTeeth", 3), parent=head)
    assert bpy.ops.wav2sem.fit_face(object=head.name) == {"FINISHED"}
    key = head.data.shape_keys
    assert [b.name for b in key.key_blocks] == ["Basis", "jawOpen", "mouthClose", "mouthFunnel"]
    assert teeth.data.shape_keys is not None                            # auto-picked and moved by jawOpen
    assert sorted(module("scene.fit_landmarks").find(head)) == sorted(LANDMARKS)
    sent = [r for r in requests(log) if r["op"] == "fit_face"][-1]["params"]
    assert "landmarks" not in sent and sent["include_eyes"] is False
    # Move an empty; the refit sends the empties' world positions.
    chin = bpy.data.objects["W2S_chin"]
    chin.matrix_world.translation = (0.1, -0.3, 1.2)
    assert bpy.ops.wav2sem.fit_face(object=head.name, use_existing_landmarks=True, include_eyes=True) == {"FINISHED"}
    sent = [r for r in requests(log) if r["op"] == "fit_face"][-1]["params"]
    np.testing.assert_allclose(sent["landmarks"]["chin"], (0.1, -0.3, 1.2), atol=1e-6)
    assert sent["include_eyes"] is True and "eyeBlink_L" in key.key_blocks
    # Generate's planning now sees ARKit face keys.
    bindings = module("core.face_keys").find_face_keys(module("scene.takes").user_key_names(head))
    assert {b.key for b in bindings} >= {"jawOpen", "mouthClose", "eyeBlink_L"}


@pytest.mark.parametrize("mode, words", [("internal", "boom"), ("bad", "do not match"), ("old", "Install Backend")])
def test_a_failed_fit_leaves_the_scene_as_it_was(scene, addon, fake_fit, mode, words):
    fake_fit(mode)
    head = place(grid_head())
    objects = sorted(o.name for o in bpy.data.objects)
    before = full_snapshot(head, fcurves)
    refused(words, object=head.name)
    assert sorted(o.name for o in bpy.data.objects) == objects          # no stray empties
    assert_fully_same(before, full_snapshot(head, fcurves))


def test_no_face_places_the_guess_as_empties_and_adds_no_keys(scene, addon, fake_fit):
    fake_fit("no_face")
    head = place(grid_head())
    refused(r"No face found on 'Head': move the W2S_ empties onto the face .* Use Existing Landmarks",
            object=head.name)
    assert head.data.shape_keys is None
    assert sorted(module("scene.fit_landmarks").find(head)) == sorted(LANDMARKS)
    # Fitting from the user's empties that still find no face leaves them where they are.
    chin = bpy.data.objects["W2S_chin"]
    chin.location = (0.5, 0.5, 0.5)
    bpy.context.view_layer.update()
    refused("at the W2S_ empties", object=head.name, use_existing_landmarks=True)
    assert tuple(chin.location) == (0.5, 0.5, 0.5) and head.data.shape_keys is None


def test_cancel_as_the_result_arrives_leaves_the_head_unchanged(scene, addon, fake_fit):
    fake_fit("ok")
    head = place(grid_head())
    before = full_snapshot(head, fcurves)
    fit_run = module("ops.fit_run")

    class Inputs:
        object, use_existing_landmarks, include_eyes, interior_objects = head.name, False, False, ""
    run = fit_run.FitRun(*fit_run.gather(bpy.context, Inputs()))
    try:
        while not run.job.poll(0.1):
            pass
        assert run.job.result is not None
        run.cancel_requested = True
        outcome = run.finish(bpy.context)
    finally:
        run.close()
    assert outcome.status == {"CANCELLED"} and "cancelled" in outcome.reports[0][1]
    assert_fully_same(before, full_snapshot(head, fcurves))
    assert not module("scene.fit_landmarks").find(head)


def test_refusals_before_any_backend_work(scene, addon, fake_fit):
    log = fake_fit("ok")
    head = grid_head()
    points = bpy.data.meshes.new("Points")
    points.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [])
    cloud = bpy.data.objects.new("Cloud", points)
    bpy.context.scene.collection.objects.link(cloud)
    refused("'Cloud' has no faces, only vertices", object="Cloud")
    refused("no landmark empties W2S_nose_tip, W2S_upper_lip_center", object=head.name, use_existing_landmarks=True)
    refused("no object named 'Missing'", object=head.name, interior_objects="Missing")
    refused("no object named 'Nobody'", object="Nobody")
    assert requests(log) == [] and head.data.shape_keys is None


def test_undo_takes_back_the_whole_fit(scene, addon, fake_fit):
    """bpy.ops called from Python push no undo step in the bpy module (no window), so the
    steps are pushed here around the fit; one undo must then take back keys and empties."""
    fake_fit("ok")
    head = place(grid_head())
    bpy.ops.ed.undo_push(message="before the fit")
    assert bpy.ops.wav2sem.fit_face(object=head.name) == {"FINISHED"}
    bpy.ops.ed.undo_push(message="Fit Face")
    bpy.ops.ed.undo()
    head = bpy.data.objects["Head"]
    assert head.data.shape_keys is None
    assert not [o.name for o in bpy.data.objects if o.name.startswith("W2S_")]
    bpy.ops.ed.redo()
    assert "jawOpen" in bpy.data.objects["Head"].data.shape_keys.key_blocks


def test_generate_waits_while_a_fit_runs(scene, addon):
    """A lip sync started mid-fit would plan a head that has no keys yet: it is refused, as a
    fit is while a lip sync runs."""
    head = grid_head()
    fitting = module("core.runs")._ACTIVE
    fitting.append(("Fit Face", True, object()))   # a fit in progress (what the panel reads)
    try:
        with pytest.raises(RuntimeError, match="Fit Face is running; wait for it or press Esc"):
            bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(REPO / "blend_examples" / "demo.wav"))
        assert module("ui.availability").why_cannot_generate(bpy.context) == "Fit Face is running; wait for it or press Esc."
    finally:
        fitting.clear()
    assert head.data.shape_keys is None
