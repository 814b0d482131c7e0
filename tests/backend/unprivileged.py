"""Running `wav2sem` unprivileged, for the permission cases: sessions and CI run as root, whom
file permissions do not stop. Use the `unprivileged` fixture (a `Way`) and put every file
whose permissions matter in an `open_folder` (pytest's own temporary folders are private to
root).

The way is chosen once per session and said at its end:
- as a user: as root, the command runs as the user nobody (setpriv), with an interpreter
  nobody can run and this environment's packages on PYTHONPATH; as any other user, as that
  user;
- injected: where nobody cannot reach this environment (a clone under /root, as CI may have;
  no setpriv), the command runs as root with nobody's refusals injected (nobody_refusals.py:
  the PermissionError the kernel would raise, exactly where the open folders' mode bits
  refuse "others"). WAV2SEM_TEST_PERMISSIONS=injected chooses it anyway.
Only where neither works (no POSIX permissions) do the cases not run: a skip, an error under CI.
"""
from __future__ import annotations

import functools
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pytest

import w2s_helpers
from ci_policy import cannot_run
from nobody_refusals import OPEN_PREFIX
from w2s_helpers import SUBPROCESS_ENV

NOBODY = 65534
CHECK = "import numpy, soundfile, torch, wav2sem"
REFUSALS = Path(__file__).with_name("nobody_refusals.py")
FORCE_ENV = "WAV2SEM_TEST_PERMISSIONS"       # "injected": the fallback even where nobody could run
SUMMARY = "wav2sem-permissions-summary"     # the plugin that says which way they ran
ServerT = TypeVar("ServerT")


@dataclass(frozen=True)
class Way:
    """How the permission cases run: `python` is the command that starts this environment's
    Python unprivileged (before -m or -c)."""

    python: tuple[str, ...]
    injected: bool
    description: str

    def wav2sem_cmd(self, *args) -> list[str]:
        return [*self.python, "-m", "wav2sem", *map(str, args)]

    def run_wav2sem(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.wav2sem_cmd(*args), capture_output=True, text=True, timeout=timeout,
                              env=unprivileged_env(), stdin=subprocess.DEVNULL)

    def start_server(self, server_class: Callable[..., ServerT], *args) -> ServerT:
        """`wav2sem serve ARGS` run this way; server_class is w2s_helpers.ServerProcess or a subclass."""
        with pytest.MonkeyPatch.context() as patch:           # the command is read while it starts
            patch.setattr(w2s_helpers, "wav2sem_cmd", self.wav2sem_cmd)
            return server_class(*args, env=unprivileged_env())


def _packages_path() -> str:
    import wav2sem

    return os.pathsep.join([str(Path(wav2sem.__file__).resolve().parents[1]), *site.getsitepackages()])


def unprivileged_env() -> dict:
    return {**SUBPROCESS_ENV, "PYTHONPATH": _packages_path(), "HOME": tempfile.gettempdir()}


def unsearchable(path: str | Path) -> Path | None:
    """The first folder on the way to `path` (itself included if a folder) that others may not
    search, or None: the user nobody cannot reach what lies below it."""
    path = Path(path).absolute()
    for folder in [*reversed(path.parents), *([path] if path.is_dir() else [])]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def _injected(why: str) -> Way:
    return Way((sys.executable, str(REFUSALS)), True,
               f"as root with nobody's refusals injected (PermissionError; {REFUSALS.name}): {why}")


def _as_nobody() -> Way:
    """Run as nobody through setpriv, or injected where nobody cannot run this environment."""
    needed = [*(p for p in _packages_path().split(os.pathsep) if Path(p).exists()), tempfile.gettempdir()]
    blocked = {str(folder) for p in needed if (folder := unsearchable(p)) is not None}
    if blocked:
        return _injected(f"the user nobody cannot search {', '.join(sorted(blocked))}, on the way to this "
                         "environment's packages or the temporary folder")
    if shutil.which("setpriv") is None:
        return _injected("setpriv (util-linux) is not installed")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    drop = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
    candidates = dict.fromkeys(c for c in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}",
                                           f"/usr/local/bin/{version}", shutil.which(version)) if c)
    for python in candidates:
        done = subprocess.run([*drop, python, "-c", CHECK], env=unprivileged_env(), capture_output=True, timeout=120)
        if done.returncode == 0:
            return Way((*drop, python), False, f"as the user nobody (setpriv, {python})")
    return _injected(f"no {version} that the user nobody can run with this environment's packages "
                     f"(tried {', '.join(candidates)})")


@functools.lru_cache(maxsize=None)
def chosen_way() -> Way | str:
    """The way the permission cases run, or why they cannot (no POSIX permissions)."""
    if not hasattr(os, "geteuid"):
        return "file permissions here are not POSIX mode bits"
    if os.environ.get(FORCE_ENV) == "injected":
        return _injected(f"{FORCE_ENV}=injected")
    if os.geteuid() != 0:
        return Way((sys.executable,), False, f"as this user (uid {os.geteuid()}), whom permissions stop")
    return _as_nobody()


@pytest.fixture
def unprivileged(request) -> Way:
    """The way to run `wav2sem` unprivileged (said in the session's summary)."""
    way = chosen_way()
    if isinstance(way, str):
        cannot_run(f"the permission cases cannot run: {way}")
    plugins = request.config.pluginmanager
    if not plugins.has_plugin(SUMMARY):
        plugins.register(_Summary(way), SUMMARY)
    request.node.user_properties.append(("permissions", way.description))
    return way


class _Summary:
    """Says at the end of the session which way the permission cases ran."""

    def __init__(self, way: Way):
        self.way = way

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(f"permission cases ran {self.way.description}")


@pytest.fixture
def open_folder():
    """A temp folder everyone may read and search (0o755), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix=OPEN_PREFIX))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
