"""Running `wav2sem` as an unprivileged user, for the permission cases: sessions and CI run as
root, whom file permissions do not stop. As root the command runs as nobody (setpriv), with
an interpreter nobody can execute and this environment's packages on PYTHONPATH; as any
other user it runs as that user. Files it must read live in `open_folder()`s (pytest's own
temp folders are private to root)."""
from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from w2s_helpers import SUBPROCESS_ENV

NOBODY = 65534
CHECK = "import numpy, soundfile, torch, wav2sem"


def _packages_path() -> str:
    import wav2sem

    return os.pathsep.join([str(Path(wav2sem.__file__).resolve().parents[1]), *site.getsitepackages()])


@functools.lru_cache(maxsize=None)
def _prefix() -> tuple[tuple[str, ...], str] | None:
    """(command prefix, why not) for running this environment's Python unprivileged."""
    if os.geteuid() != 0:
        return (sys.executable,), ""
    if shutil.which("setpriv") is None:
        return None, "setpriv (util-linux) is not installed"
    drop = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = dict.fromkeys(c for c in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}",
                                           f"/usr/local/bin/{version}", shutil.which(version)) if c)
    env = unprivileged_env()
    for python in candidates:
        done = subprocess.run([*drop, python, "-c", CHECK], env=env, capture_output=True, timeout=120)
        if done.returncode == 0:
            return (*drop, python), ""
    return None, (f"no {version} that the user nobody can run with this environment's packages "
                  f"(tried {', '.join(candidates)}; the repository and site-packages must be readable by all)")


def unprivileged_env() -> dict:
    return {**SUBPROCESS_ENV, "PYTHONPATH": _packages_path(), "HOME": tempfile.gettempdir()}


def python_as_nobody() -> list[str]:
    """The command prefix that runs Python unprivileged. Where that is impossible the test is
    skipped, and fails under CI (CI=true), so the permission cases can never vanish there."""
    prefix, why = _prefix()
    if prefix is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot run the permission cases as an unprivileged user: {why}")
        pytest.skip(f"cannot run as an unprivileged user: {why}")
    return list(prefix)


def run_wav2sem_as_nobody(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*python_as_nobody(), "-m", "wav2sem", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=unprivileged_env(), stdin=subprocess.DEVNULL)


@pytest.fixture
def open_folder():
    """A temp folder everyone may read and search (0o755), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="wav2sem-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
