"""Plain helpers for the synthetic-corpus tests (skip markers for the TTS engines)."""
from __future__ import annotations

import shutil

import pytest


def espeak_available() -> bool:
    try:
        from wav2sem.synth.tts.espeak import EspeakEngine
        EspeakEngine.get()
        return True
    except Exception:
        return False


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed (make system-deps)")
needs_festival = pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed (make system-deps)")
