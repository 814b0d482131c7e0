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
from wav2sem.serve import transport  # noqa: F401  (and operations, model_cache)
from wav2sem.audio import load_audio
from wav2sem.inference import generate
from wav2sem.loaded_model import load_model
from wav2sem.threads import configure_threads
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
    from wav2sem import threads

    saved, count = threads._THREADS, torch.get_num_threads()
    yield threads
    threads._THREADS = saved
    torch.set_num_threads(count)


def test_auto_threads_follow_the_idle_cores(thread_policy, monkeypatch):
    from wav2sem import cpu_idle

    policy = thread_policy
    policy._THREADS = None
    assert policy.generate_threads() is None                           # unconfigured (library use): untouched
    policy.configure_threads(None)
    assert torch.get_num_threads() == 1                                # the model loads on one thread
    for idle, count in ((7.5, policy.AUTO_MAX_THREADS), (2.0, 2), (1.8, 2), (1.6, 1), (0.3, 1), (0.0, 1)):
        monkeypatch.setattr(cpu_idle, "idle_cores", lambda idle=idle: idle)
        assert policy.generate_threads() == count, idle
    policy.configure_threads(3)                                         # a fixed count is kept everywhere
    assert torch.get_num_threads() == 3 and policy.generate_threads() is None


def test_generate_runs_on_the_idle_cores_and_puts_the_thread_count_back(thread_policy, monkeypatch, tiny_model):
    from wav2sem import cpu_idle, inference

    thread_policy.configure_threads(None)
    monkeypatch.setattr(cpu_idle, "idle_cores", lambda: 2.0)
    seen = []
    encode, decode = inference._encode_windows, tiny_model.net.decode
    monkeypatch.setattr(inference, "_encode_windows", lambda *a: seen.append(torch.get_num_threads()) or encode(*a))
    monkeypatch.setattr(tiny_model.net, "decode", lambda *a: seen.append(torch.get_num_threads()) or decode(*a))
    result = inference.generate(tiny_model, speechlike(2.0, seed=3))
    assert result.frames > 0 and seen == [2, 2] and torch.get_num_threads() == 1
    monkeypatch.setattr(cpu_idle, "idle_cores", lambda: 0.4)          # busy cores: all of it on one thread
    seen.clear()
    inference.generate(tiny_model, speechlike(2.0, seed=3))
    assert seen == [1, 1] and torch.get_num_threads() == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the measured idle cores need /proc")
def test_idle_cores_count_other_processes_and_not_this_one():
    """A real busy child process is counted, this process's own busy loop is not; both
    measured against the processes' own CPU times, so other load on the machine (a CI
    neighbour) cannot decide the outcome."""
    import time

    from wav2sem import cpu_idle

    # our own busy loop: the machine saw it, the measure of others left it out
    before = cpu_idle._read_counters()
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        pass
    after = cpu_idle._read_counters()
    wall = after[0] - before[0]
    own, machine = (after[2] - before[2]) / wall, (after[1] - before[1]) / wall
    assert own > 0.2                                                    # /proc/self/stat read right
    assert cpu_idle._others_busy(before, after) == pytest.approx(max(0.0, machine - own), abs=1e-9)
    # someone else's busy loop: counted in full
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before, child_before = cpu_idle._read_counters(), cpu_idle.process_cpu_seconds(child.pid)
        time.sleep(0.8)
        after, child_after = cpu_idle._read_counters(), cpu_idle.process_cpu_seconds(child.pid)
    finally:
        child.kill()
        child.wait()
    child_rate = (child_after - child_before) / (after[0] - before[0])
    assert child_rate > 0.2, "the child never ran"
    assert cpu_idle._others_busy(before, after) >= child_rate - 0.15
    assert 0.0 <= cpu_idle.idle_cores() <= cpu_idle.usable_cores()
    monitor = cpu_idle.IdleMonitor()
    assert monitor.other_busy_cores() is None                          # not started: nothing known
    monitor.start()
    time.sleep(cpu_idle.MIN_WINDOW_S + 0.05)
    assert monitor.other_busy_cores() is not None                      # answers at once after start
