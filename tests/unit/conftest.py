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
    # A namespace-like package over addon/ so `wav2sem_lipsync.mapping` imports without
    # executing addon/__init__.py (which registers bpy classes).
    package = types.ModuleType("wav2sem_lipsync")
    package.__path__ = [str(ADDON_DIR)]  # type: ignore[attr-defined]
    sys.modules["wav2sem_lipsync"] = package


@pytest.fixture
def fake_backend_command():
    """Command line for the protocol-speaking fake backend with extra switches."""
    def command(*switches: str) -> list[str]:
        return [sys.executable, str(FAKE_BACKEND), *switches]
    return command


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
