"""The permission cases' two ways (unprivileged.py): nobody's refusals injected into a root
process are the kernel's refusals for the user nobody, and where nobody cannot reach this
environment (a clone under /root) the cases fall back to them instead of not running."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unprivileged
from unprivileged import open_folder  # noqa: F401  (fixture)
from w2s_helpers import assert_clean_failure, sine, write_audio

# What each path allows: read opens a file, create makes a new file in a folder, and
# os.access answers for both (the calls wav2sem checks and opens files with).
PROBE = """
import json, os, sys
root = sys.argv[1]
def attempt(call):
    try:
        call()
        return "ok"
    except OSError as exc:
        return os.strerror(exc.errno)
def create(folder):
    path = os.path.join(folder, "new.npy")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    os.unlink(path)
results = {}
for name in sys.argv[2:]:
    path = os.path.join(root, name)
    if name.endswith("/"):
        results[name] = [attempt(lambda: create(path)), os.access(path, os.W_OK), os.access(path, os.X_OK)]
    else:
        results[name] = [attempt(lambda: open(path, "rb").close()), os.access(path, os.R_OK), os.access(path, os.W_OK)]
print(json.dumps(results))
"""
LAYOUT = {"readable.wav": 0o644, "locked.wav": 0o600, "shut/": 0o700, "shut/inner.wav": 0o644,
          "read_only/": 0o555, "open/": 0o777, "open/mine.wav": 0o666, "missing.wav": None}


def lay_out(folder: Path) -> list[str]:
    for name, mode in LAYOUT.items():
        if mode is None:
            continue
        path = folder / name
        path.mkdir() if name.endswith("/") else path.write_bytes(b"RIFF")
    for name, mode in reversed(LAYOUT.items()):          # files before the folders that hold them
        if mode is not None:
            (folder / name).chmod(mode)
    return list(LAYOUT)


def probe(python: tuple[str, ...], folder: Path, names: list[str]) -> dict:
    done = subprocess.run([*python, "-c", PROBE, str(folder), *names], capture_output=True, text=True,
                          timeout=120, env=unprivileged.unprivileged_env())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_injected_refusals_are_the_kernels_for_nobody(open_folder):
    way = unprivileged.chosen_way()
    if isinstance(way, str) or way.injected or os.geteuid() != 0:
        pytest.skip("the user nobody cannot run here (or this is not root), so there is no kernel answer to compare with")
    names = lay_out(open_folder)
    as_nobody = probe(way.python, open_folder, names)
    injected = probe((sys.executable, str(unprivileged.REFUSALS)), open_folder, names)
    as_root = probe((sys.executable,), open_folder, names)
    assert injected == as_nobody
    assert as_nobody["locked.wav"][0] == "Permission denied" and as_nobody["read_only/"][0] == "Permission denied"
    assert as_root["locked.wav"][0] == "ok"             # root is never refused: the cases need one of the ways


def test_where_nobody_cannot_reach_this_environment_the_refusals_are_injected(open_folder, tiny_bundle, monkeypatch):
    """A clone under /root (as CI may have): the cases still run, with the refusals injected,
    and say so."""
    monkeypatch.setattr(unprivileged, "unsearchable", lambda path: Path("/root"))
    way = unprivileged._as_nobody()
    assert way.injected and "cannot search /root" in way.description, way
    path = write_audio(open_folder / "locked.wav", sine(300, 0.5, 16_000), 16_000)
    path.chmod(0o600)
    out = open_folder / "out"
    out.mkdir()
    out.chmod(0o777)
    proc = way.run_wav2sem("infer", path, "-o", out / "take.npy", "--model", tiny_bundle)
    assert_clean_failure(proc, "locked.wav", "permission denied", "permissions")
    assert list(out.iterdir()) == []
