"""The server's operations in-process (wav2sem.serve): the audio is checked before a model
loads, at most two models stay loaded, model_info's files are never served half-written, and
every request read before the input ends is answered."""
from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from w2s_helpers import speechlike, write_audio


class Lines:
    """The `out` of an in-process Server: the protocol lines it wrote, parsed."""

    def __init__(self):
        self.lines: list[str] = []
        self._written = threading.Condition()

    def write(self, text: str) -> None:
        with self._written:
            self.lines.append(text)
            self._written.notify_all()

    def flush(self) -> None:
        pass

    def events(self, request_id=...) -> list[dict]:
        events = [json.loads(line) for line in self.lines]
        return events if request_id is ... else [e for e in events if e["id"] == request_id]

    def final(self, request_id, timeout: float = 120) -> dict:
        """Wait for the result or error event of `request_id` (the timeout only stops a hang)."""
        def answered():
            return [e for e in self.events(request_id) if e["type"] in ("result", "error")]
        with self._written:
            assert self._written.wait_for(answered, timeout), f"{request_id!r} was not answered: {self.lines[-3:]}"
        return answered()[0]


def run_requests(server, *requests: dict) -> None:
    """Hand the requests to the server and let it finish them (as at the end of its input)."""
    for request in requests:
        server.handle_line(json.dumps(request))
    server.stop(drain=True)


def server_for(bundle: Path):
    from wav2sem.serve.transport import Server

    out = Lines()
    return Server(out, str(bundle), "cpu"), out


# ----- the audio before the model ----------------------------------------------------------------
@pytest.mark.parametrize("audio,code", [("missing.wav", "AUDIO_NOT_FOUND"), ("noise.wav", "AUDIO_UNREADABLE"),
                                        ("empty.wav", "AUDIO_EMPTY"), ("short.wav", "AUDIO_TOO_SHORT")])
def test_bad_audio_on_a_cold_server_is_refused_without_loading_the_model(audio, code, tiny_bundle, tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"RIFF this is not a sound file" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    write_audio(tmp_path / "short.wav", speechlike(0.01, seed=3))
    server, out = server_for(tiny_bundle)
    run_requests(server, {"id": "g", "op": "generate", "params": {"audio": str(tmp_path / audio)}})
    events = out.events("g")
    assert [e["type"] for e in events] == ["error"], events          # no "load" progress before it
    assert events[0]["error"]["code"] == code, events
    assert len(server.operations.models) == 0


def test_after_a_bad_audio_the_next_generate_loads_the_model(tiny_bundle, speech_wav, tmp_path):
    server, out = server_for(tiny_bundle)
    run_requests(server, {"id": 1, "op": "generate", "params": {"audio": str(tmp_path / "missing.wav")}},
                 {"id": 2, "op": "generate", "params": {"audio": str(speech_wav), "semantic": False}})
    assert [e["stage"] for e in out.events(2) if e["type"] == "progress"][:2] == ["load", "load"]
    assert out.events(2)[-1]["type"] == "result"


# ----- two models at most ------------------------------------------------------------------------
def test_the_model_cache_drops_the_least_recently_used():
    from wav2sem.serve.model_cache import ModelCache

    loads = []
    cache = ModelCache(2)

    def get(key):
        return cache.get(key, lambda: loads.append(key) or f"model {key}")

    assert [get(k) for k in "aba"] == ["model a", "model b", "model a"] and loads == ["a", "b"]
    get("c")                                  # b was used least recently
    assert cache.keys() == ["a", "c"] and len(cache) == 2
    get("b")
    assert loads == ["a", "b", "c", "b"] and cache.keys() == ["c", "b"]

    def broken():
        raise RuntimeError("no such model")

    with pytest.raises(RuntimeError):
        cache.get("d", broken)
    assert "d" not in cache and len(cache) <= 2


def test_the_server_keeps_the_two_models_used_last(tiny_bundle, tiny_bundle_plain, tiny_bundle_pair):
    server, out = server_for(tiny_bundle)
    bundles = {"A": tiny_bundle, "B": tiny_bundle_plain, "C": tiny_bundle_pair}
    run_requests(server, *({"id": i, "op": "model_info", "params": {"model": str(bundles[name])}}
                           for i, name in enumerate("ABAC")))
    assert [e["type"] for e in out.events()] == ["result"] * 4, out.events()
    held = {Path(path).name for path, _ in server.operations.models.keys()}
    assert held == {tiny_bundle.name, tiny_bundle_pair.name}          # B, used least recently, was dropped


# ----- a full temporary folder -------------------------------------------------------------------
def test_a_full_temporary_folder_is_one_sentence_and_no_half_file_is_ever_served(monkeypatch, bundle_dir):
    """np.save of the blendshapes fails half-way (ENOSPC): OUTPUT_UNWRITABLE, and the next
    model_info writes the files again instead of serving the truncated one."""
    from wav2sem.testing import write_tiny_bundle

    bundle = bundle_dir / "tiny_arkit_full_tmp"
    if not bundle.exists():
        write_tiny_bundle(bundle, blendshapes=4, seed=5)
    save = np.save

    def save_until_the_disk_is_full(file, array, *args, **kwargs):
        if Path(file).name == "blendshapes.npy":
            with open(file, "wb") as handle:
                handle.write(b"\x93NUMPY half of a header")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(file, array, *args, **kwargs)

    from wav2sem.bundle import read_bundle

    server, out = server_for(bundle)
    try:
        monkeypatch.setattr(np, "save", save_until_the_disk_is_full)
        server.handle_line(json.dumps({"id": "full", "op": "model_info"}))
        error = out.final("full")["error"]
        monkeypatch.undo()
        server.handle_line(json.dumps({"id": "again", "op": "model_info"}))
        again = out.final("again")
        assert again["type"] == "result", again
        deltas = np.load(again["data"]["blendshapes"], allow_pickle=False)
        assert [p.name for p in server.workdir.iterdir()] == [Path(again["data"]["template"]).parent.name]
    finally:
        server.stop()
    assert error["code"] == "OUTPUT_UNWRITABLE" and "traceback" not in error, error
    message = error["message"]
    assert "temporary folder" in message and "No space left on device" in message and "free" in message
    assert message.count(". ") == 0 and message.endswith(".")
    np.testing.assert_array_equal(deltas, read_bundle(bundle).template.blendshape_deltas)


# ----- several outputs, all or nothing -----------------------------------------------------------
def test_generate_leaves_no_output_when_a_later_rename_fails(monkeypatch, bundle_dir, speech_wav, tmp_path):
    """The weights are renamed into place, then renaming the offsets fails: OUTPUT_UNWRITABLE,
    and the weights already renamed are removed too, so no half result stays."""
    import os

    from wav2sem.testing import write_tiny_bundle

    bundle = bundle_dir / "tiny_arkit_commit"
    if not bundle.exists():
        write_tiny_bundle(bundle, blendshapes=4, seed=6)
    replace = os.replace

    def replace_failing_on_the_offsets(src, dst, *args, **kwargs):
        if Path(dst).name == "take.npy":
            raise OSError(errno.EIO, "Input/output error")
        return replace(src, dst, *args, **kwargs)

    params = {"audio": str(speech_wav), "output": str(tmp_path / "take.npy"),
              "weights_output": str(tmp_path / "take.weights.npy"), "semantic": False}
    server, out = server_for(bundle)
    try:
        monkeypatch.setattr(os, "replace", replace_failing_on_the_offsets)
        server.handle_line(json.dumps({"id": "half", "op": "generate", "params": params}))
        error = out.final("half")
        assert list(tmp_path.iterdir()) == []
        monkeypatch.undo()
        server.handle_line(json.dumps({"id": "whole", "op": "generate", "params": params}))
        whole = out.final("whole")
    finally:
        server.stop()
    assert error["type"] == "error" and error["error"]["code"] == "OUTPUT_UNWRITABLE", error
    assert "take.npy" in error["error"]["message"] and "Input/output error" in error["error"]["message"]
    assert whole["type"] == "result", whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.npy", "take.weights.npy"]


# ----- every request read is answered ------------------------------------------------------------
def test_a_hello_read_before_the_input_ends_is_answered(monkeypatch, tiny_bundle):
    from wav2sem.serve.operations import Operations

    answer = Operations.hello

    def slow_hello(self, params, request):
        time.sleep(0.5)                      # still answering when the input ends
        return answer(self, params, request)

    monkeypatch.setattr(Operations, "hello", slow_hello)
    server, out = server_for(tiny_bundle)
    run_requests(server, {"id": "h", "op": "hello"})
    assert [e["type"] for e in out.events("h")] == ["result"]
