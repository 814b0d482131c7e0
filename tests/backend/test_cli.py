"""The `wav2sem` command line as real subprocesses (python -m wav2sem ...)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from unprivileged import open_folder, unprivileged  # noqa: F401  (fixtures)
from w2s_helpers import (SR, assert_clean_failure, error_lines, run_wav2sem, run_wav2sem_inprocess, run_wav2sem_many,
                         speechlike, write_audio)

SENTINEL = b"pre-existing output: must survive a failed run"


@pytest.fixture(scope="module")
def infer_runs(tmp_path_factory, tiny_bundle, speech_wav):
    """Three successful `wav2sem infer` runs, concurrently: default, --no-semantic, a blend."""
    out = tmp_path_factory.mktemp("infer")
    runs = {
        "default": ("infer", speech_wav, "-o", out / "default.npy", "--model", tiny_bundle, "--device", "cpu"),
        "nosem": ("infer", speech_wav, "-o", out / "nosem.npy", "--model", tiny_bundle, "--no-semantic"),
        "blend": ("infer", speech_wav, "-o", out / "blend.npy", "--model", tiny_bundle,
                  "--subject", "subject_0:0.5,subject_2:0.5"),
    }
    # the default run as a real subprocess; the variants through the same entry point in-process
    procs = {"default": run_wav2sem(*runs["default"])}
    procs.update({name: run_wav2sem_inprocess(*args) for name, args in runs.items() if name != "default"})
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
    return out, procs


def test_infer_output_equals_in_process_generate(infer_runs, tiny_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    out, procs = infer_runs
    saved = np.load(out / "default.npy", allow_pickle=False)
    expected = generate(tiny_model, load_audio(speech_wav)).offsets
    assert saved.dtype == np.float32
    assert saved.ndim == 3 and saved.shape == expected.shape == (saved.shape[0], 300, 3)
    assert saved.shape[0] == int(((2.5 * SR - 400) // 320 + 1) / 50 * 30)
    np.testing.assert_allclose(saved, expected, atol=1e-5, rtol=0)
    assert np.abs(saved).max() > 1e-3
    assert procs["default"].stdout == ""            # results go to the file, messages to stderr
    assert "wrote" in procs["default"].stderr
    assert not list(out.glob(".*"))                # no temporary files left beside the output


def test_no_semantic_and_blend(infer_runs, tiny_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    out, _ = infer_runs
    default = np.load(out / "default.npy")
    nosem = np.load(out / "nosem.npy")
    blend = np.load(out / "blend.npy")
    assert nosem.shape == default.shape == blend.shape
    assert np.abs(nosem - default).max() > 1e-4
    wave = load_audio(speech_wav)
    np.testing.assert_allclose(nosem, generate(tiny_model, wave, semantic=False).offsets, atol=1e-5, rtol=0)
    np.testing.assert_allclose(blend, generate(tiny_model, wave, subject={"subject_0": 0.5, "subject_2": 0.5}).offsets,
                               atol=1e-5, rtol=0)
    assert np.abs(blend - default).max() > 1e-5


@pytest.fixture(scope="module")
def broken_inputs(tmp_path_factory, tiny_bundle, tiny_bundle_plain):
    base = tmp_path_factory.mktemp("broken")
    (base / "corrupt.wav").write_text("RIFF but not really a wave file\n" * 50)
    write_audio(base / "short.wav", speechlike(0.05, seed=1))
    write_audio(base / "ok.wav", speechlike(1.2, seed=2))
    no_weights = base / "no_weights"
    shutil.copytree(tiny_bundle, no_weights)
    (no_weights / "model.safetensors").unlink()
    mismatch = base / "mismatch"
    shutil.copytree(tiny_bundle, mismatch)
    from wav2sem.template import Template

    Template(np.zeros((299, 3), np.float32)).save(mismatch / "template.npz")
    (base / "out").mkdir()
    return base


def test_error_cases_exit_nonzero_with_one_line_and_no_output(broken_inputs, tiny_bundle):
    b = broken_inputs
    out = b / "out"
    ok = b / "ok.wav"
    cases = {
        # name: (args, output, pre-existing output?, words the message must contain)
        "missing audio": (("infer", b / "nope.wav", "--model", tiny_bundle), out / "a.npy", False, ["nope.wav"]),
        "corrupt audio": (("infer", b / "corrupt.wav", "--model", tiny_bundle), out / "b.npy", True, ["corrupt.wav"]),
        "too short": (("infer", b / "short.wav", "--model", tiny_bundle), out / "c.npy", False, ["short.wav", "0.1"]),
        "missing model": (("infer", ok, "--model", b / "no_such_bundle"), out / "d.npy", True, ["no_such_bundle"]),
        "no weights": (("infer", ok, "--model", b / "no_weights"), out / "e.npy", True, ["model.safetensors"]),
        "template mismatch": (("infer", ok, "--model", b / "mismatch"), out / "f.npy", False, ["299", "300"]),
        "missing out folder": (("infer", ok, "--model", tiny_bundle), b / "nowhere" / "g.npy", False, ["nowhere"]),
        "not npy": (("infer", ok, "--model", tiny_bundle), out / "h.txt", False, [".npy"]),
        "bad subject": (("infer", ok, "--model", tiny_bundle, "--subject", "nobody"), out / "i.npy", True, ["nobody"]),
    }
    if not torch.cuda.is_available():
        cases["no cuda"] = (("infer", ok, "--model", tiny_bundle, "--device", "cuda"), out / "j.npy", True, ["cuda"])
    # real subprocesses for a failure at each stage (audio, bundle, output path, during generate);
    # the rest through the same entry point in-process, to keep the suite fast on small machines
    in_subprocess = ["missing audio", "no weights", "missing out folder", "bad subject"]
    for args, output, preexisting, _ in cases.values():
        if preexisting:
            output.write_bytes(SENTINEL)
    procs = dict(zip(in_subprocess, run_wav2sem_many([(*cases[n][0], "-o", cases[n][1]) for n in in_subprocess])))
    for name, (args, output, _, _) in cases.items():
        if name not in procs:
            procs[name] = run_wav2sem_inprocess(*args, "-o", output)
    for name, (args, output, preexisting, words) in cases.items():
        proc = procs[name]
        try:
            assert_clean_failure(proc, *words)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
        if preexisting:
            assert output.read_bytes() == SENTINEL, f"{name}: pre-existing output was changed"
        else:
            assert not output.exists(), f"{name}: output was created"
    leftovers = sorted(p.name for p in out.iterdir() if p.read_bytes() != SENTINEL)
    assert leftovers == [], f"files left in the output folder: {leftovers}"
    assert not (b / "nowhere").exists()


def test_info_lists_bundles_and_json_parses(tiny_bundle, tiny_bundle_plain, bundle_dir):
    proc = run_wav2sem("info", "--models", tiny_bundle, bundle_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["protocol"] == 1 and info["torch"] == torch.__version__
    assert info["devices"][0] == "cpu"
    by_path = {m["path"]: m for m in info["models"]}
    entry = by_path[str(tiny_bundle)]
    assert entry == {"path": str(tiny_bundle), "name": "tiny-random-0", "fps": 30.0, "vertices": 300, "subjects": 3,
                     "wav2sem": True, "output": "vertices", "channels": []}
    # a folder of bundles lists each one
    assert by_path[str(tiny_bundle_plain)]["wav2sem"] is False
    # plain text form names the bundle too
    text = run_wav2sem_inprocess("info", "--models", tiny_bundle)
    assert text.returncode == 0 and "tiny-random-0" in text.stdout and "300 vertices" in text.stdout


def test_cli_main_uses_its_argv_not_sys_argv(monkeypatch, tiny_bundle):
    """`wav2sem.cli.main(argv)` must parse `argv`; which subcommand modules get their
    arguments must not depend on the unrelated sys.argv of the calling process."""
    from wav2sem.cli import main

    monkeypatch.setattr(sys, "argv", ["some-host", "serve"])
    try:
        code = main(["info", "--json", "--models", str(tiny_bundle)])
    except SystemExit as exc:  # argparse rejected --json: it built the parser for 'serve' only
        code = exc.code
    assert code == 0


def test_every_subcommand_lives_in_commands():
    """One place for the command line: commands/<name>.py for every subcommand, each with
    add_arguments and run; the domain code stays in its own folders."""
    import importlib

    from wav2sem.cli import SUBCOMMANDS

    for name, (module_name, _) in SUBCOMMANDS.items():
        assert module_name == f"wav2sem.commands.{name}", name
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_no_command_prints_help_and_fails():
    proc = run_wav2sem_inprocess()
    assert proc.returncode == 2 and "infer" in proc.stdout


@pytest.mark.parametrize("subject,words", [("0:abc", ["abc"]), ("0:nan", ["nan"]), ("subject_0:inf", ["inf"]),
                                           ("0:-1", ["-1"]), ("0:", ["weight"])])
def test_bad_subject_blends_on_the_command_line(tiny_bundle, speech_wav, tmp_path, subject, words):
    out = tmp_path / "blend.npy"
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", out, "--model", tiny_bundle, "--subject", subject)
    assert_clean_failure(proc, *words)
    assert not out.exists()


def test_full_disk_while_writing_is_output_unwritable(tiny_bundle, speech_wav, tmp_path, monkeypatch):
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    out = tmp_path / "full.npy"
    out.write_bytes(SENTINEL)
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", out, "--model", tiny_bundle)
    line = assert_clean_failure(proc, "full.npy", "no space left")
    assert out.read_bytes() == SENTINEL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.npy"]


def test_output_folder_that_cannot_be_written(tiny_bundle, speech_wav, unprivileged, open_folder, monkeypatch):
    """A read-only output folder: refused before any work, run as an unprivileged user (these
    tests run as root, whom permissions do not stop); and still one sentence when creating the
    file fails although the folder looks writable (root, network shares: simulated)."""
    import os
    import shutil

    folder = open_folder / "locked"
    folder.mkdir(mode=0o755)
    audio = shutil.copy(speech_wav, open_folder / "speech.wav")
    proc = unprivileged.run_wav2sem("infer", audio, "-o", folder / "a.npy", "--model", tiny_bundle)
    assert_clean_failure(proc, "not writable")

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", folder / "b.npy", "--model", tiny_bundle)
    assert_clean_failure(proc, "b.npy", "permission denied")
    assert list(folder.iterdir()) == []
