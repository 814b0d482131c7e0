"""Matrix tier "cli": `wav2sem infer` and `wav2sem convert` on bad input. Most cases call the
command's `main` in this process (the CLI adds nothing but start-up time); a handful run the
real command to cover what only a process shows (exit code, stderr, encodings), the permission
cases among them, unprivileged (root reads and writes through any permission; unprivileged.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from matrix_helpers import (cli_failure, last_line, listing, out_folder, run_cli, run_inprocess, speechlike,
                            write_audio)
from matrix_inputs import AUDIO_CASES, BUNDLE_CASES, FAIL, FAIL_OR_FINITE, OK_WARNING, broken_bundle

FPS = 30.0
PERMISSION_AUDIO = [c for c in AUDIO_CASES if c.needs_permissions]


def matrix(case: str, expected: str):
    return pytest.mark.matrix("cli", case, expected)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.npy").write_bytes(b"the user's earlier file")
    return folder


@pytest.fixture(scope="module")
def speech(matrix_dir) -> Path:
    return write_audio(matrix_dir / "cli_speech.wav", speechlike(1.0))


def infer(audio, output, model, *extra, real: bool = False):
    args = ("infer", audio, "-o", output, "--model", model, "--device", "cpu", *extra)
    return run_cli(*args) if real else run_inprocess(*args)


def check_offsets(path: Path, seconds: float) -> np.ndarray:
    offsets = np.load(path)
    assert offsets.ndim == 3 and offsets.shape[2] == 3, offsets.shape
    assert abs(offsets.shape[0] - seconds * FPS) <= 2, f"{offsets.shape[0]} frames for {seconds} s"
    assert np.isfinite(offsets).all(), "non-finite offsets written"
    return offsets


def expect_failure(proc, out_dir: Path, before: dict, seen, *names: str) -> None:
    seen(last_line(proc.stderr))
    seen(cli_failure(proc, *names))
    assert listing(out_dir) == before, "the output folder changed on failure"


# ----- audio --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"infer: audio {c.name}", c.expected))
                                  for c in AUDIO_CASES if not c.needs_permissions])
def test_infer_audio(case, tiny_bundle, tmp_path, out_dir, seen):
    audio = case.make(tmp_path)
    before = listing(out_dir)
    proc = infer(audio, out_dir / "take.npy", tiny_bundle)
    if case.expect == FAIL or (case.expect == FAIL_OR_FINITE and proc.returncode != 0):
        expect_failure(proc, out_dir, before, seen, audio.name)
        return
    seen(last_line(proc.stderr))
    assert proc.returncode == 0, last_line(proc.stderr)
    check_offsets(out_dir / "take.npy", case.seconds)
    assert set(listing(out_dir)) == set(before) | {"take.npy"}, "stray files in the output folder"
    if case.expect == OK_WARNING:
        warnings = [line for line in proc.stderr.splitlines()
                    if "silent" in line.lower() and not line.startswith("wrote ")]
        assert len(warnings) == 1, f"expected one warning about silence: {proc.stderr!r}"
        seen(warnings[0])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"infer: audio {c.name}", c.expected))
                                  for c in PERMISSION_AUDIO])
def test_infer_audio_unprivileged(case, unprivileged, open_folder, tiny_bundle, seen):
    assert case.expect == FAIL, "a permission case that succeeds needs its own checks here"
    audio = case.make(open_folder)
    out = out_folder(open_folder, 0o777)
    before = listing(out)
    proc = unprivileged.run_wav2sem("infer", audio, "-o", out / "take.npy", "--model", tiny_bundle, "--device", "cpu")
    expect_failure(proc, out, before, seen, audio.name)


@matrix("infer: audio missing (real command)", "fails (one sentence, exit 1)")
def test_infer_missing_audio_real_command(tiny_bundle, tmp_path, out_dir, seen):
    before = listing(out_dir)
    proc = infer(tmp_path / "gone.wav", out_dir / "take.npy", tiny_bundle, real=True)
    expect_failure(proc, out_dir, before, seen, "gone.wav")


@matrix("infer: unicode and spaces in audio and output paths (real command)", "succeeds")
def test_infer_unicode_paths_real_command(tiny_bundle, tmp_path, seen):
    folder = tmp_path / "Dialog – ünï 台詞 out"
    folder.mkdir()
    audio = write_audio(folder / "Zeile 1 ü.wav", speechlike(1.0))
    proc = infer(audio, folder / "Ergebnis ü.npy", tiny_bundle, real=True)
    seen(last_line(proc.stderr))
    assert proc.returncode == 0, proc.stderr[-500:]
    check_offsets(folder / "Ergebnis ü.npy", 1.0)


# ----- output -------------------------------------------------------------------------------------
def _missing_folder(out: Path) -> Path:
    return out / "not_made_yet" / "take.npy"


def _onto_folder(out: Path) -> Path:
    (out / "take.npy").mkdir()
    return out / "take.npy"


OUTPUT_CASES = [("output in a missing folder", _missing_folder, "not_made_yet"),
                ("output onto a folder", _onto_folder, "take.npy")]


@pytest.mark.parametrize("name,target,names",
                         [pytest.param(*c, id=c[0], marks=matrix(f"infer: {c[0]}", "fails (OUTPUT_UNWRITABLE)"))
                          for c in OUTPUT_CASES])
def test_infer_output(name, target, names, tiny_bundle, speech, out_dir, seen):
    output = target(out_dir)
    before = listing(out_dir)
    proc = infer(speech, output, tiny_bundle)
    expect_failure(proc, out_dir, before, seen, names)


@matrix("infer: output in a read-only folder", "fails (OUTPUT_UNWRITABLE)")
def test_infer_output_read_only_unprivileged(unprivileged, open_folder, tiny_bundle, seen):
    audio = write_audio(open_folder / "speech.wav", speechlike(1.0))
    out = out_folder(open_folder, 0o555)
    before = listing(out)
    proc = unprivileged.run_wav2sem("infer", audio, "-o", out / "take.npy", "--model", tiny_bundle, "--device", "cpu")
    expect_failure(proc, out, before, seen, "out")


# ----- models and subjects ------------------------------------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"infer: {c.name}", "fails (" + " or ".join(c.codes) + ")"))
                                  for c in BUNDLE_CASES])
def test_infer_bad_bundle(case, tiny_bundle, speech, tmp_path, out_dir, seen):
    bundle = broken_bundle(tiny_bundle, case, tmp_path)
    before = listing(out_dir)
    proc = infer(speech, out_dir / "take.npy", bundle)
    expect_failure(proc, out_dir, before, seen, bundle.name)


SUBJECT_CASES = [("--subject 0:nan", "0:nan", "nan"), ("--subject nobody (unknown name)", "nobody", "nobody"),
                 ("--subject 7 (index out of range)", "7", "7")]


@pytest.mark.parametrize("name,subject,names", [pytest.param(*c, id=c[0], marks=matrix(f"infer: {c[0]}", "fails"))
                                                for c in SUBJECT_CASES])
def test_infer_bad_subject(name, subject, names, tiny_bundle, speech, out_dir, seen):
    before = listing(out_dir)
    proc = infer(speech, out_dir / "take.npy", tiny_bundle, "--subject", subject)
    expect_failure(proc, out_dir, before, seen, names)


@matrix("infer: --subject 0:abc (real command)", "fails (one sentence, exit 1)")
def test_infer_subject_weight_not_a_number_real_command(tiny_bundle, speech, out_dir, seen):
    before = listing(out_dir)
    proc = infer(speech, out_dir / "take.npy", tiny_bundle, "--subject", "0:abc", real=True)
    expect_failure(proc, out_dir, before, seen, "abc")


# ----- convert ------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create `marker`: what a hostile .pth could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def official(matrix_dir, tiny_bundle) -> dict:
    """Reference-layout inputs for `convert`: a FaceFormer state dict (the tiny bundle's
    weights, which use the reference names), a local HF encoder folder and the template."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from wav2sem.loaded_model import load_model
    from wav2sem.testing import TINY_WAV2VEC2

    folder = matrix_dir / "official"
    folder.mkdir()
    plain = matrix_dir / "plain_bundle"
    from wav2sem.testing import write_tiny_bundle

    write_tiny_bundle(plain, seed=3, semantic=False, n_subjects=8)
    torch.save(load_model(plain, "cpu").net.state_dict(), folder / "vocaset.pth")
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(folder / "encoder")
    return {"checkpoint": folder / "vocaset.pth", "encoder": folder / "encoder", "template": plain / "template.npz"}


def convert(official: dict, output: Path, real: bool = False, **override):
    paths = {**official, **override}
    args = ("convert", "--checkpoint", paths["checkpoint"], "--dataset", "vocaset", "--encoder", paths["encoder"],
            "--template", paths["template"], "-o", output)
    return run_cli(*args) if real else run_inprocess(*args)


@matrix("convert: a .pth whose unpickling would run code (real command)", "fails; the code does not run")
def test_convert_refuses_code_in_a_pickle(official, tmp_path, seen):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    torch.save({"weights": _Payload(marker)}, hostile)
    assert not marker.exists()
    proc = convert(official, tmp_path / "bundle", real=True, checkpoint=hostile)
    seen(cli_failure(proc, "hostile.pth"))
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert not (tmp_path / "bundle").exists()


@matrix("convert: checkpoint missing", "fails (MODEL_NOT_FOUND)")
def test_convert_missing_checkpoint(official, tmp_path, seen):
    proc = convert(official, tmp_path / "bundle", checkpoint=tmp_path / "nowhere.pth")
    seen(cli_failure(proc, "nowhere.pth"))
    assert not (tmp_path / "bundle").exists()


@matrix("convert: -o onto an existing file", "fails; the file is unchanged")
def test_convert_onto_a_file(official, tmp_path, seen):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    proc = convert(official, target)
    seen(cli_failure(proc, "notes.txt"))
    assert target.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "stray files beside the output"


@matrix("convert: -o onto a folder of the user's files", "the user's files survive (bundle beside them or a refusal)")
def test_convert_into_a_user_folder(official, tmp_path, seen):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "other-model.txt").write_text("keep me")
    (folder / "sub").mkdir()
    (folder / "sub" / "take.npy").write_bytes(b"keep me too")
    before = listing(folder)
    proc = convert(official, folder)
    seen(last_line(proc.stderr))
    after = listing(folder)
    assert all(after.get(name) == stamp for name, stamp in before.items()), \
        f"convert removed or changed the user's files: {sorted(set(before) - set(after))}"
    if proc.returncode != 0:
        seen(cli_failure(proc, "models"))


@matrix("convert: a good conversion (control)", "succeeds")
def test_convert_control(official, tmp_path, seen):
    proc = convert(official, tmp_path / "bundle")
    seen(last_line(proc.stderr))
    assert proc.returncode == 0, last_line(proc.stderr)
    assert {p.name for p in (tmp_path / "bundle").iterdir()} >= {"config.json", "model.safetensors", "template.npz"}
    shutil.rmtree(tmp_path / "bundle")
