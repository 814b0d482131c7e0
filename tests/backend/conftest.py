"""Shared fixtures for the backend tests: tiny random bundles, loaded models, real audio files.
Plain helpers (audio generators, CLI runners, ServerProcess) live in w2s_helpers.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import speechlike, write_audio


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _thread_policy_kept_to_its_test():
    """A test that runs `wav2sem infer` or `serve` in this process sets the process's thread
    policy (threads.configure_threads); put it back, so that later library calls keep one
    thread instead of following the machine's idle cores (which would change their output
    in the last float bits from run to run)."""
    from wav2sem import threads

    policy, count = threads._THREADS, torch.get_num_threads()
    yield
    threads._THREADS = policy
    torch.set_num_threads(count)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_wav(audio_dir) -> Path:
    """2.5 s of speech-like audio, 16 kHz mono WAV."""
    return write_audio(audio_dir / "speech.wav", speechlike(2.5, seed=1))


@pytest.fixture(scope="session")
def speech_wav_44k_stereo(audio_dir) -> Path:
    left = speechlike(2.0, sr=44_100, seed=2)
    right = speechlike(2.0, sr=44_100, seed=3)
    return write_audio(audio_dir / "speech_44k.wav", np.stack([left, right], 1), 44_100)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def tiny_bundle(bundle_dir) -> Path:
    """Random tiny bundle WITH Wav2Sem, VOCASET-style (30 fps, interpolate), 3 subjects, 300 vertices."""
    from wav2sem.testing import write_tiny_bundle

    return write_tiny_bundle(bundle_dir / "tiny_sem", seed=0, semantic=True)


@pytest.fixture(scope="session")
def tiny_bundle_plain(bundle_dir) -> Path:
    """Random tiny bundle WITHOUT Wav2Sem."""
    from wav2sem.testing import write_tiny_bundle

    return write_tiny_bundle(bundle_dir / "tiny_plain", seed=1, semantic=False)


@pytest.fixture(scope="session")
def tiny_bundle_pair(bundle_dir) -> Path:
    """Random tiny bundle, BIWI-style (25 fps, pair alignment), with Wav2Sem."""
    from wav2sem.testing import write_tiny_bundle

    return write_tiny_bundle(bundle_dir / "tiny_pair", seed=2, semantic=True, alignment="pair")


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle):
    from wav2sem.loaded_model import load_model

    return load_model(tiny_bundle, "cpu")


@pytest.fixture(scope="session")
def tiny_model_plain(tiny_bundle_plain):
    from wav2sem.loaded_model import load_model

    return load_model(tiny_bundle_plain, "cpu")


@pytest.fixture(scope="session")
def tiny_model_pair(tiny_bundle_pair):
    from wav2sem.loaded_model import load_model

    return load_model(tiny_bundle_pair, "cpu")


