"""Start-up of the backend the add-on talks to: what it imports, and its thread setting
(`--threads auto|N`; docs/DESIGN.md "Threads and processes", results/startup.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from w2s_helpers import SUBPROCESS_ENV, run_wav2sem, run_wav2sem_inprocess, speechlike, write_audio

REPO = Path(__file__).resolve().parents[2]
MODEL_03 = REPO / "results" / "default_model" / "model_0.3"

# What `wav2sem serve` runs for a generate: its module, then the model load and one generate.
SERVE_PATH = r"""
import sys
from wav2sem import serve
from wav2sem.audio import load_audio
from wav2sem.inference import configure_threads, generate, load_model
configure_threads(None)
model = load_model(sys.argv[1] or None, "cpu")
result = generate(model, load_audio(sys.argv[2]), offsets=False)
assert result.frames > 0
heavy = sorted(m for m in ("transformers", "scipy", "librosa", "sklearn") if m in sys.modules)
print("HEAVY", heavy)
assert "transformers" not in sys.modules, "transformers was imported"
"""


@pytest.mark.parametrize("model", ["default", "0.3"])
def test_the_serve_path_imports_no_transformers(model, audio_dir):
    if model == "0.3" and not (MODEL_03 / "config.json").is_file():
        pytest.skip("model 0.3 (log-mel encoder) is not in results/default_model/")
    clip = write_audio(audio_dir / "import_check.wav", speechlike(2.0, seed=5))
    done = subprocess.run([sys.executable, "-c", SERVE_PATH, "" if model == "default" else str(MODEL_03), str(clip)],
                          capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HEAVY []" in done.stdout, done.stdout


@pytest.mark.parametrize("value", ["bad", "0", "-2", "1.5", "999"])
def test_serve_refuses_a_bad_thread_count_in_one_sentence(value):
    done = run_wav2sem("serve", "--threads", value, timeout=60)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("wav2sem serve: error: argument --threads:") and "'auto' or a whole number" in last, last
    assert "Traceback" not in done.stderr


def test_infer_refuses_a_bad_thread_count(speech_wav, tmp_path):
    done = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "x.npy", "--threads", "many")
    assert done.returncode == 2 and "argument --threads: 'many' is not a thread count" in done.stderr
    assert not (tmp_path / "x.npy").exists()


@pytest.fixture
def thread_policy():
    """Put the process's thread policy and torch's thread count back afterwards."""
    from wav2sem import inference

    saved, threads = inference._THREADS, torch.get_num_threads()
    yield inference
    inference._THREADS = saved
    torch.set_num_threads(threads)


def test_auto_threads_one_thread_except_a_long_encoder_pass_on_idle_cores(thread_policy, monkeypatch):
    inference = thread_policy
    inference._THREADS = None
    assert inference.encoder_threads(60.0) is None                     # unconfigured (library use): untouched
    inference.configure_threads(None)
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(inference, "idle_cores", lambda: 7.5)
    assert inference.encoder_threads(10.0) is None                     # a short clip: one thread
    assert inference.encoder_threads(60.0) == inference.AUTO_MAX_THREADS
    monkeypatch.setattr(inference, "idle_cores", lambda: 2.4)
    assert inference.encoder_threads(60.0) == 2
    monkeypatch.setattr(inference, "idle_cores", lambda: 1.2)          # a busy machine: one thread
    assert inference.encoder_threads(600.0) is None
    inference.configure_threads(3)                                      # a fixed count is kept everywhere
    assert torch.get_num_threads() == 3 and inference.encoder_threads(600.0) is None


def test_generate_puts_the_thread_count_back_after_the_encoder_pass(thread_policy, monkeypatch, tiny_model):
    inference = thread_policy
    inference.configure_threads(None)
    monkeypatch.setattr(inference, "AUTO_ENCODER_MIN_S", 1.0)
    monkeypatch.setattr(inference, "idle_cores", lambda: 2.0)
    seen = []
    encode = inference._encode_windows
    monkeypatch.setattr(inference, "_encode_windows", lambda *a: seen.append(torch.get_num_threads()) or encode(*a))
    result = inference.generate(tiny_model, speechlike(2.0, seed=3))
    assert result.frames > 0 and seen == [2] and torch.get_num_threads() == 1


def test_idle_cores_is_a_number():
    from wav2sem.inference import idle_cores

    assert isinstance(idle_cores(), float) and idle_cores() <= len(os.sched_getaffinity(0))
