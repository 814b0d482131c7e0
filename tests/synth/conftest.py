"""Shared fixtures for the synthetic-corpus tests (no bpy, no GPU)."""
from __future__ import annotations

import shutil

import pytest

from wav2sem.synth.head import build_head
from wav2sem.synth.motion import default_rig


def espeak_available() -> bool:
    try:
        from wav2sem.synth.tts.espeak import EspeakEngine
        EspeakEngine.get()
        return True
    except Exception:
        return False


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed (make system-deps)")
needs_festival = pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed (make system-deps)")


@pytest.fixture(scope="session")
def head():
    return build_head()


@pytest.fixture(scope="session")
def rig():
    return default_rig()
