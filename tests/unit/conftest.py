"""Plain-pytest tier: the add-on's bpy-free modules, imported without running addon/__init__.py."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON_DIR = REPO / "addon"
FAKE_BACKEND = REPO / "tests" / "fake_backend.py"

if "wav2sem_lipsync" not in sys.modules:
    # A namespace-like package over addon/ so `wav2sem_lipsync.core.mapping` imports without
    # executing addon/__init__.py (which registers bpy classes).
    package = types.ModuleType("wav2sem_lipsync")
    package.__path__ = [str(ADDON_DIR)]  # type: ignore[attr-defined]
    sys.modules["wav2sem_lipsync"] = package


def fake_command(*switches: str) -> list[str]:
    """Command line for the protocol-speaking fake backend with extra switches."""
    return [sys.executable, str(FAKE_BACKEND), *switches]


@pytest.fixture
def fake_backend_command():
    return fake_command


@pytest.fixture
def start_fake():
    """Starts fake backends with switches; closes them after the test."""
    from wav2sem_lipsync.core.client import BackendProcess

    started: list[BackendProcess] = []

    def start(*switches: str) -> BackendProcess:
        backend = BackendProcess(sys.executable, command=fake_command(*switches))
        backend.start()
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def fake_python(tmp_path):
    """A 'Python' for the pool, which launches `PYTHON -m wav2sem serve`: a wrapper script
    that runs the fake backend with switches instead."""
    def make(*switches: str) -> str:
        wrapper = tmp_path / "python"
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(fake_command(*switches)) + "\n")
        wrapper.chmod(0o755)
        return str(wrapper)
    return make


@pytest.fixture
def wav_file(tmp_path):
    """Writes a silent-ish 16 kHz mono WAV of the given length; returns its path."""
    import wave

    import numpy as np

    def write(seconds: float = 1.0, name: str = "line.wav") -> Path:
        path = tmp_path / name
        samples = (np.sin(np.arange(int(16000 * seconds)) * 0.05) * 3000).astype("<i2")
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16000)
            wav.writeframes(samples.tobytes())
        return path
    return write
