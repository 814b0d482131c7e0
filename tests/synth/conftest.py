"""Shared fixtures for the synthetic-corpus tests (no bpy, no GPU). Helpers: synth_helpers.py."""
from __future__ import annotations

import pytest

from wav2sem.synth.head import build_head
from wav2sem.synth.motion import default_rig


@pytest.fixture(scope="session")
def head():
    return build_head()


@pytest.fixture(scope="session")
def rig():
    return default_rig()
