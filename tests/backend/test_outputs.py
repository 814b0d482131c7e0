"""Outputs (outputs.py): several files of one run are committed all or nothing, and each new
file gets the permissions of any new file (0o666 less the umask)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from w2s_helpers import assert_clean_failure, run_wav2sem_inprocess

K = 5      # blendshape channels of the tiny weights model


@pytest.fixture(scope="module")
def weights_bundle(bundle_dir) -> Path:
    from wav2sem.testing import write_tiny_bundle

    path = bundle_dir / "tiny_weights_outputs"
    return path if path.exists() else write_tiny_bundle(path, blendshapes=K, seed=7)


def test_infer_writes_nothing_when_the_offsets_cannot_be_written(weights_bundle, speech_wav, tmp_path, monkeypatch):
    """The weights and their JSON come before the offsets; a failure on the offsets leaves none of them."""
    real_save = np.save

    def save(handle, array, *args, **kwargs):
        if array.shape[-1] != K:                       # the offsets (T, V, 3), not the weights (T, K)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(handle, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "take.npy", "--model", weights_bundle)
    assert_clean_failure(proc, "take.npy", "no space left")
    assert list(tmp_path.iterdir()) == []


def test_infer_removes_the_renamed_outputs_when_a_later_rename_fails(weights_bundle, speech_wav, tmp_path, monkeypatch):
    """Renaming the offsets over their name fails after the weights were renamed: both go."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "take.npy":
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "take.npy", "--model", weights_bundle)
    assert_clean_failure(proc, "take.npy")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", real_replace)
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "take.npy", "--model", weights_bundle)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.npy", "take.weights.json", "take.weights.npy"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(weights_bundle, speech_wav, tmp_path, umask):
    from wav2sem.outputs import commit_partial, write_partial_npz

    old = os.umask(umask)
    try:
        proc = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "take.npy", "--model", weights_bundle)
        npz = tmp_path / "shapes.npz"
        commit_partial(write_partial_npz(npz, a=np.zeros(3)), npz)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["take.npy", "take.weights.json", "take.weights.npy", "shapes.npz"],
                                  0o666 & ~umask)
