"""Install Backend: a virtual environment with the backend carried in the add-on, no bpy.

The steps run as subprocesses on one worker thread whose only job is to run them and put
their output lines on a queue; the main thread (a modal operator, or a loop in background
mode) calls `poll()` and shows progress. The failure message says what to do.
"""
from __future__ import annotations

import logging
import queue
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .client import managed_python

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
BACKEND_SOURCE_DIR = "backend_src"     # inside the add-on: pyproject.toml + backend/wav2sem
_NETWORK_HINTS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                  "No matching distribution found", "Could not find a version that satisfies",
                  "Network is unreachable", "ConnectionError", "Read timed out")


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class InstallPlan:
    base_python: str          # interpreter that creates the venv (Blender's own by default)
    venv_dir: str
    source_dir: str           # folder with pyproject.toml
    pip_args: tuple[str, ...] = ()
    check_imports: tuple[str, ...] = ("wav2sem", "torch", "numpy", "transformers")

    def commands(self) -> list[tuple[str, list[str]]]:
        venv_python = str(managed_python(self.venv_dir))
        return [
            ("Creating the virtual environment", [self.base_python, "-m", "venv", "--clear", self.venv_dir]),
            ("Installing the backend and its dependencies (torch is large: this can take minutes)",
             [venv_python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
              *self.pip_args, self.source_dir]),
            ("Checking the backend", [venv_python, "-c", f"import {', '.join(self.check_imports)}; "
                                      "print('wav2sem', wav2sem.__version__, 'is installed')"]),
        ]


def python_version(python: str, timeout: float = 30.0) -> tuple[int, int]:
    """(major, minor) of an interpreter; raises InstallError if it cannot run. Blocking."""
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=timeout, check=True).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise InstallError(f"{python} does not run as a Python interpreter ({exc}); choose another one.") from exc


def explain_failure(step: str, returncode: int, output: Sequence[str]) -> str:
    text = "\n".join(output)
    if any(hint in text for hint in _NETWORK_HINTS):
        return ("pip could not download the backend's dependencies (no network, or no wheels for this Python); "
                "connect to the internet and click Install Backend again, or set Backend Python to an existing "
                "environment.")
    if "No module named venv" in text or "ensurepip is not" in text:
        return "This Python cannot create virtual environments (no venv/ensurepip); choose another Python."
    tail = " | ".join(line.strip() for line in output[-4:] if line.strip())
    return f"{step} failed (exit code {returncode}): {tail}"


class Installer:
    """Runs an InstallPlan on a worker thread. Main thread: start(), poll(), cancel()."""

    def __init__(self, plan: InstallPlan):
        self.plan = plan
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []          # main-thread copy, filled by poll()
        self.step = ""
        self.error: str | None = None
        self.done = False
        self._proc: subprocess.Popen[str] | None = None
        self._cancelled = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Validates the Python (blocking, < 1 s), then starts the worker. Raises InstallError."""
        version = python_version(self.plan.base_python)
        if version < MIN_PYTHON:
            raise InstallError(f"{self.plan.base_python} is Python {version[0]}.{version[1]}; the backend needs "
                               f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer: choose another interpreter.")
        if not (Path(self.plan.source_dir) / "pyproject.toml").is_file():
            raise InstallError(f"The backend source is missing from the add-on ({self.plan.source_dir}); "
                               "reinstall the add-on from its zip.")
        self._thread = threading.Thread(target=self._run, daemon=True, name="wav2sem-install")
        self._thread.start()

    def _run(self) -> None:
        for step, command in self.plan.commands():
            self.lines.put(f"== {step}")
            log.info("install: %s", " ".join(command))
            output: list[str] = []
            try:
                self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, text=True, errors="replace")
            except OSError as exc:
                self.error = f"{step} failed: {exc}"
                break
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                output.append(line.rstrip())
                self.lines.put(line.rstrip())
            returncode = self._proc.wait()
            if self._cancelled:
                self.error = "Install Backend was cancelled."
                break
            if returncode != 0:
                self.error = explain_failure(step, returncode, output)
                break
        self.done = True

    def poll(self) -> list[str]:
        """New output lines since the last call (main thread)."""
        new: list[str] = []
        try:
            while True:
                new.append(self.lines.get_nowait())
        except queue.Empty:
            pass
        for line in new:
            if line.startswith("== "):
                self.step = line[3:]
        self.output.extend(new)
        return new

    @property
    def finished(self) -> bool:
        return self.done and self.lines.empty()

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def wait(self) -> None:
        """Block until the worker ends (background mode)."""
        if self._thread is not None:
            self._thread.join()
        self.poll()
