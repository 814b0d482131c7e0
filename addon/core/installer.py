"""Install Backend: a virtual environment with the backend carried in the add-on, no bpy.

The new environment is built beside the working one (`<venv>.new`) and swapped in only once
it works, so a failed, cancelled or crashed install never leaves the user without a backend.
The steps run as subprocesses on one worker thread whose only job is to run them and put
their output lines on a queue; the main thread (a modal operator, or a loop in background
mode) calls `poll()` and shows progress. The failure message says what to do.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .client import managed_python
from .install_progress import PipExpectation, PipProgress, progress_bar_option
from .torch_build import TorchChoice, torch_requirement

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
BACKEND_SOURCE_DIR = "backend_src"     # inside the add-on: pyproject.toml + backend/wav2sem
_NETWORK_HINTS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                  "No matching distribution found", "Could not find a version that satisfies",
                  "Network is unreachable", "ConnectionError", "Read timed out")


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Step:
    title: str
    command: list[str]
    weight: float                          # its share of the whole install's progress bar
    pip: PipExpectation | None = None      # a pip install: progress from pip's output


@dataclass(frozen=True)
class InstallPlan:
    """The environment is built in `<venv_dir>.new` and swapped in only when it works."""
    base_python: str          # interpreter that creates the venv (Blender's own by default)
    venv_dir: str
    source_dir: str           # folder with pyproject.toml
    pip_args: tuple[str, ...] = ()
    check_imports: tuple[str, ...] = ("wav2sem", "torch", "numpy", "transformers")
    torch: TorchChoice | None = None   # from torch_build.choose_torch; None: torch comes with the rest

    @property
    def build_dir(self) -> str:
        return self.venv_dir + ".new"

    @property
    def aside_dir(self) -> str:
        return self.venv_dir + ".old"

    def steps(self, progress_bar: str = "off") -> list[Step]:
        """Everything before the swap, in the build folder. progress_bar: progress_bar_option()."""
        pip = [str(managed_python(self.build_dir)), "-m", "pip", "install", "--disable-pip-version-check",
               "--progress-bar", progress_bar, *self.pip_args]
        steps = [Step("Creating the virtual environment", [self.base_python, "-m", "venv", "--clear",
                                                          self.build_dir], 0.03)]
        if self.torch is not None and self.torch.index_url:
            steps.append(Step(f"Installing {self.torch.description}",
                              [*pip, "--index-url", self.torch.index_url, torch_requirement(self.source_dir)],
                              0.55, PipExpectation(10, 200e6)))
            steps.append(Step("Installing the backend and its dependencies", [*pip, self.source_dir], 0.35,
                              PipExpectation(30, 150e6)))
        else:
            steps.append(Step("Installing the backend and its dependencies (torch is large: this can take minutes)",
                              [*pip, self.source_dir], 0.9, PipExpectation(45, 1e9)))
        return steps

    def check_step(self) -> Step:
        """Run in the final place, after the swap: a venv must work once renamed."""
        return Step("Checking the backend", [str(managed_python(self.venv_dir)), "-c",
                                             f"import {', '.join(self.check_imports)}; "
                                             "print('wav2sem', wav2sem.__version__, 'is installed')"], 0.07)


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


def recover_interrupted_install(plan: InstallPlan) -> None:
    """Undo what a crashed install left: the old environment set aside goes back if the
    swap stopped half-way; a half-built `.new` and a leftover `.old` are removed."""
    venv, new, old = Path(plan.venv_dir), Path(plan.build_dir), Path(plan.aside_dir)
    if old.exists() and not venv.exists():
        old.rename(venv)
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)


class Installer:
    """Runs an InstallPlan on a worker thread. Main thread: start(), poll(), cancel().
    `fraction` (0..1) is how far the whole install has got."""

    def __init__(self, plan: InstallPlan):
        self.plan = plan
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []          # main-thread copy, filled by poll()
        self.step = ""
        self.error: str | None = None
        self.done = False
        self.fraction = 0.0
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
        try:
            self._install()
            self.fraction = 1.0
        except InstallError as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = (f"Install Backend could not change {Path(self.plan.venv_dir).parent} ({exc}); "
                          "close programs using the backend, free disk space and try again.")
        finally:
            shutil.rmtree(self.plan.build_dir, ignore_errors=True)
            self.done = True

    def _install(self) -> None:
        plan = self.plan
        recover_interrupted_install(plan)
        venv_step, *_ = plan.steps()
        self._run_step(venv_step, 0.0)
        bar = progress_bar_option(self._pip_version(managed_python(plan.build_dir)))
        done = venv_step.weight
        for step in plan.steps(bar)[1:]:
            self._run_step(step, done)
            done += step.weight
        self._swap_in(done)

    def _swap_in(self, done: float) -> None:
        """Old aside, new into place, check it there; the old one is deleted only when the
        new one works, else it is put back."""
        venv, new, old = Path(self.plan.venv_dir), Path(self.plan.build_dir), Path(self.plan.aside_dir)
        had_old = venv.exists()
        if had_old:
            venv.rename(old)
        try:
            new.rename(venv)
            self._run_step(self.plan.check_step(), done)
        except BaseException:
            if venv.exists():
                venv.rename(new)             # removed by _run's clean-up
            if had_old:
                old.rename(venv)
            raise
        if had_old:
            shutil.rmtree(old, ignore_errors=True)

    def _run_step(self, step: Step, done: float) -> None:
        """Runs one command, streaming its lines; raises InstallError when it fails or on cancel."""
        if self._cancelled:
            raise InstallError(CANCELLED)
        self.lines.put(f"== {step.title}")
        log.info("install: %s", " ".join(step.command))
        progress = PipProgress(step.pip) if step.pip else None
        output: list[str] = []
        try:
            self._proc = subprocess.Popen(step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True, errors="replace",
                                          **_OWN_PROCESS_GROUP)
        except OSError as exc:
            raise InstallError(f"{step.title} failed: {exc}") from exc
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip()
            output.append(line)
            self.lines.put(line)
            if progress is not None:
                self.fraction = done + step.weight * progress.feed(line)
        returncode = self._proc.wait()
        if self._cancelled:
            raise InstallError(CANCELLED)
        if returncode != 0:
            raise InstallError(explain_failure(step.title, returncode, output))
        self.fraction = done + step.weight

    @staticmethod
    def _pip_version(python: Path) -> str:
        try:
            return subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True,
                                  timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

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
        """Stops the running command and whatever it started (pip's build processes)."""
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_tree(proc)

    def wait(self) -> None:
        """Block until the worker ends (background mode)."""
        if self._thread is not None:
            self._thread.join()
        self.poll()


CANCELLED = "Install Backend was cancelled."
# Each command in its own process group, so cancel reaches pip's children too.
_OWN_PROCESS_GROUP: dict[str, Any] = ({"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
                                      if os.name == "nt" else {"start_new_session": True})


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, timeout=30)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except (OSError, subprocess.SubprocessError):
        proc.terminate()
