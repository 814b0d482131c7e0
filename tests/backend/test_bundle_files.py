"""Model bundle files on disk: save_bundle never removes what is not a bundle and replaces a
bundle without a moment where none is complete; read_bundle / load_model refuse broken bundles
with one MODEL_INVALID sentence; a checkpoint pickle that would run code is refused unrun."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import DELETE, edit_config, run_wav2sem, speechlike, write_audio
from wav2sem.errors import MODEL_INVALID, OUTPUT_UNWRITABLE, Wav2SemError


def _assert_one_sentence(exc: Wav2SemError, code: str) -> str:
    assert exc.code == code, (exc.code, exc.message)
    assert "\n" not in exc.message and "Traceback" not in exc.message, exc.message
    assert len(exc.message) < 400, exc.message
    return exc.message


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory) -> Path:
    from wav2sem.testing import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("src") / "tiny", vertex_count=60, seed=5, semantic=False)


def _copy(source: Path, where: Path) -> Path:
    return Path(shutil.copytree(source, where))


# ----- save_bundle: never remove what is not a bundle ----------------------------------------
def test_save_bundle_refuses_a_folder_with_user_files_and_keeps_them(tmp_path, source_bundle):
    from wav2sem.bundle import load_weights, read_bundle, save_bundle

    bundle = read_bundle(source_bundle)
    net = load_weights(bundle)
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "notes.txt").write_text("mine")
    (models / "sub" / "take.blend").write_bytes(b"\x00blend")
    (models / "config.json").write_text('{"something": "else"}')
    with pytest.raises(Wav2SemError) as info:
        save_bundle(models, bundle.config, net, bundle.template)
    message = _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    assert str(models) in message and "not a model bundle" in message
    assert (models / "notes.txt").read_text() == "mine"
    assert (models / "sub" / "take.blend").read_bytes() == b"\x00blend"
    assert json.loads((models / "config.json").read_text()) == {"something": "else"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]          # no staging left beside it

    # a bundle that also holds the user's own files is not replaced either
    inside = _copy(source_bundle, tmp_path / "with_notes")
    (inside / "notes.txt").write_text("keep")
    with pytest.raises(Wav2SemError) as info:
        save_bundle(inside, bundle.config, net, bundle.template)
    assert "notes.txt" in _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    assert (inside / "notes.txt").read_text() == "keep"

    # a plain file is not replaced by a folder
    target = tmp_path / "model.bin"
    target.write_bytes(b"user data")
    with pytest.raises(Wav2SemError) as info:
        save_bundle(target, bundle.config, net, bundle.template)
    assert "not a model bundle" in _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    assert target.read_bytes() == b"user data"


def test_save_bundle_gives_normal_permissions(tmp_path, source_bundle):
    from wav2sem.bundle import load_weights, read_bundle, save_bundle

    bundle = read_bundle(source_bundle)
    old = os.umask(0o022)
    try:
        out = save_bundle(tmp_path / "b", bundle.config, load_weights(bundle), bundle.template)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_save_bundle_replaces_a_bundle_and_an_empty_folder(tmp_path, source_bundle):
    from wav2sem.bundle import load_weights, read_bundle, save_bundle
    from wav2sem.testing import write_tiny_bundle

    target = write_tiny_bundle(tmp_path / "b", vertex_count=60, seed=1, semantic=False)
    assert read_bundle(target).config.name == "tiny-random-1"
    write_tiny_bundle(target, vertex_count=60, seed=2, semantic=False)        # replaced in place
    assert read_bundle(target).config.name == "tiny-random-2"
    load_weights(read_bundle(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]                # nothing aside or staged left
    (tmp_path / "empty").mkdir()
    write_tiny_bundle(tmp_path / "empty", vertex_count=60, seed=3, semantic=False)
    assert read_bundle(tmp_path / "empty").config.name == "tiny-random-3"


def test_a_failed_replacement_leaves_the_old_bundle_complete(tmp_path, source_bundle, monkeypatch):
    """The moment of the swap fails (the new bundle cannot be renamed into place): the old
    bundle is back, complete, and nothing is left beside it."""
    import wav2sem.bundle as bundle_module
    from wav2sem.bundle import load_weights, read_bundle, save_bundle

    target = _copy(source_bundle, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    other = read_bundle(source_bundle)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.endswith(".new") and Path(dst) == target:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", replace)
    with pytest.raises(Wav2SemError) as info:
        save_bundle(target, other.config, load_weights(other), other.template)
    _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


# ----- read_bundle / load_model: one sentence for a broken bundle ----------------------------
def _edit(key, value):
    return lambda config: json.dumps(edit_config(config, key, value))


CONFIG_CASES = {
    "a list": lambda c: "[]",
    "not JSON": lambda c: "{not json",
    "empty": lambda c: "",
    "null": lambda c: "null",
    "no format": _edit("format", DELETE),
    "format_version text": _edit("format_version", "1"),
    "no subjects": _edit("subjects", DELETE),
    "empty subjects": _edit("subjects", []),
    "subjects a string": _edit("subjects", "abc"),
    "subjects numbers": _edit("subjects", [1, 2, 3]),
    "n_subjects mismatch": _edit("subjects", ["a", "b"]),
    "duplicate subjects": _edit("subjects", ["a", "a", "b"]),
    "fps 0": _edit("fps", 0),
    "fps negative": _edit("fps", -30),
    "fps NaN": lambda c: json.dumps({**c, "fps": float("nan")}),       # json writes the NaN literal
    "fps infinite": lambda c: json.dumps({**c, "fps": float("inf")}),
    "fps text": _edit("fps", "fast"),
    "fps true": _edit("fps", True),
    "no fps": _edit("fps", DELETE),
    "decoder a list": _edit("decoder", [1, 2]),
    "decoder vertex_count text": _edit("decoder.vertex_count", "60"),
    "decoder feature_dim float": _edit("decoder.feature_dim", 16.5),
    "decoder n_heads 0": _edit("decoder.n_heads", 0),
    "decoder heads do not divide": _edit("decoder.n_heads", 5),
    "decoder unknown key": _edit("decoder.depth", 3),
    "decoder alignment": _edit("decoder.alignment", "sideways"),
    "decoder ff_dim text": _edit("decoder.ff_dim", "big"),
    "encoder a string": _edit("encoder", "wav2vec2"),
    "encoder no config": _edit("encoder.config", DELETE),
    "encoder unknown type": _edit("encoder.type", "bert"),
    "semantic a number": _edit("semantic", 3),
    "name a number": _edit("name", 7),
    "arch unknown": _edit("arch", "gpt"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_broken_config_json_is_one_model_invalid_sentence(tmp_path, source_bundle, case):
    from wav2sem.bundle import read_bundle

    bundle = _copy(source_bundle, tmp_path / "bad")
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(CONFIG_CASES[case](config))
    with pytest.raises(Wav2SemError) as info:
        read_bundle(bundle)
    message = _assert_one_sentence(info.value, MODEL_INVALID)
    assert "config.json" in message


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


FILE_CASES = {
    "template truncated": ("template.npz", _truncate),
    "template random bytes": ("template.npz", lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000))),
    "template empty": ("template.npz", lambda p: p.write_bytes(b"")),
    "template a text file": ("template.npz", lambda p: p.write_text("vertices: none")),
    "template no vertices": ("template.npz", lambda p: np.savez(p, faces=np.zeros((1, 3), np.int32))),
    "template region past the vertices": ("template.npz", lambda p: np.savez(
        p, vertices=np.zeros((60, 3), np.float32), region_lips=np.array([3, 60], np.int32))),
    "template NaN vertices": ("template.npz", lambda p: np.savez(p, vertices=np.full((60, 3), np.nan, np.float32))),
    "weights truncated": ("model.safetensors", _truncate),
    "weights empty": ("model.safetensors", lambda p: p.write_bytes(b"")),
    "weights random bytes": ("model.safetensors", lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000))),
    "weights of another shape": ("model.safetensors", lambda p: __import__("safetensors.torch").torch.save_file(
        {"obj_vector.weight": torch.zeros(2, 2)}, str(p))),
    "encoder config unbuildable": ("config.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "encoder": {"type": "wav2vec2", "config": {"hidden_size": "big"}}}))),
    "preprocessor config not JSON": ("preprocessor_config.json", lambda p: p.write_text("{feature_size: 1,")),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_broken_bundle_files_are_one_model_invalid_sentence(tmp_path, source_bundle, case):
    from wav2sem.loaded_model import load_model

    bundle = _copy(source_bundle, tmp_path / "bad")
    name, damage = FILE_CASES[case]
    damage(bundle / name)
    with pytest.raises(Wav2SemError) as info:
        load_model(bundle, "cpu")
    message = _assert_one_sentence(info.value, MODEL_INVALID)
    assert name in message or "config.json" in message


def test_cli_infer_with_broken_bundles_prints_one_line(tmp_path, source_bundle):
    wav = write_audio(tmp_path / "a.wav", speechlike(0.5, seed=3))
    listed = _copy(source_bundle, tmp_path / "listed")
    (listed / "config.json").write_text("[1, 2]")
    noise = _copy(source_bundle, tmp_path / "noise")
    (noise / "model.safetensors").write_bytes(np.random.default_rng(2).bytes(4000))
    for bad, name in ((listed, "config.json"), (noise, "model.safetensors")):
        proc = run_wav2sem("infer", wav, "-o", tmp_path / "out.npy", "--model", bad, "--device", "cpu")
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("wav2sem: error:"), proc.stderr
        assert name in lines[0]
        assert not (tmp_path / "out.npy").exists()


# ----- checkpoints that would run code ------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".pth.tar"])
def test_checkpoint_pickle_that_runs_code_is_refused_unrun(tmp_path, suffix):
    import pickle

    from wav2sem.checkpoints import read_checkpoint

    marker = tmp_path / "ran"
    path = tmp_path / f"evil{suffix}"
    torch.save({"weight": torch.zeros(2), "evil": _Payload(marker)}, path)
    with pytest.raises(Wav2SemError) as info:
        read_checkpoint(path)
    message = _assert_one_sentence(info.value, MODEL_INVALID)
    assert path.name in message
    assert not marker.exists(), "the pickle payload ran"
    pickle.loads(pickle.dumps(_Payload(marker)))          # control: the payload is live
    assert marker.exists()


def test_truncated_checkpoint_is_one_sentence(tmp_path):
    from wav2sem.checkpoints import read_checkpoint

    path = tmp_path / "cut.pth"
    torch.save({"weight": torch.zeros(1000)}, path)
    _truncate(path)
    with pytest.raises(Wav2SemError) as info:
        read_checkpoint(path)
    assert path.name in _assert_one_sentence(info.value, MODEL_INVALID)


def test_bundle_under_a_file_or_a_read_only_folder_is_refused_before_work(tmp_path, source_bundle, monkeypatch):
    from wav2sem.bundle import check_bundle_target

    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(Wav2SemError) as info:
        check_bundle_target(tmp_path / "file.txt" / "deeper" / "bundle")
    assert "file.txt" in _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = os.access
    if real_access(locked, os.W_OK):        # root writes anywhere: answer as the kernel answers anyone else
        def as_another_user(path, mode, *args, **kwargs):
            if Path(path) == locked and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)
        monkeypatch.setattr(os, "access", as_another_user)
    try:
        with pytest.raises(Wav2SemError) as info:
            check_bundle_target(locked / "new" / "bundle")
        assert str(locked) in _assert_one_sentence(info.value, OUTPUT_UNWRITABLE)
    finally:
        locked.chmod(0o755)
