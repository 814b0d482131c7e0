"""`wav2sem serve` as a real subprocess, driven over stdin/stdout (protocol in docs/DESIGN.md).

Every wait has a timeout (ServerProcess), so a hang fails instead of blocking the suite."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import SR, ServerProcess, run_wav2sem_inprocess, speechlike, write_audio

STAGES = {"load", "encode", "decode"}


@pytest.fixture(scope="module")
def server(tiny_bundle):
    srv = ServerProcess("--model", tiny_bundle, "--device", "cpu")
    yield srv
    srv.close()
    assert srv.bad_lines == [], f"non-protocol lines on stdout: {srv.bad_lines[:5]}"


@pytest.fixture(scope="module")
def big_bundle(bundle_dir):
    """A bundle whose decoder takes a few seconds on 60 s of audio (for cancellation)."""
    from wav2sem.testing import write_tiny_bundle

    return write_tiny_bundle(bundle_dir / "big", vertex_count=4000, feature_dim=256, semantic=False, seed=9)


def assert_alive(server: ServerProcess):
    data = server.result("hello", timeout=30)
    assert data["protocol"] == 1


def check_progress(events, stages_to_check=("load", "encode", "decode")):
    assert all(e["type"] == "progress" for e in events), events
    for e in events:
        assert e["stage"] in STAGES and 0.0 <= e["fraction"] <= 1.0 and isinstance(e["message"], str), e
    for stage in stages_to_check:
        fractions = [e["fraction"] for e in events if e["stage"] == stage]
        assert fractions == sorted(fractions), f"{stage}: {fractions}"


def test_hello(server):
    data = server.result("hello", timeout=60)
    from wav2sem import __version__

    assert data["protocol"] == 1
    assert data["version"] == __version__
    assert data["torch"] == torch.__version__
    assert isinstance(data["devices"], list) and data["devices"][0] == "cpu"
    assert data["threads"] == "auto"                   # no --threads: the automatic choice


def test_serve_with_one_thread_answers_hello_and_generate(tiny_bundle, speech_wav):
    srv = ServerProcess("--model", tiny_bundle, "--device", "cpu", "--threads", "1")
    try:
        hello = srv.result("hello", timeout=60)
        assert hello["protocol"] == 1 and hello["threads"] == 1
        events, final = srv.request("generate", {"audio": str(speech_wav)}, timeout=120)
        assert final["type"] == "result", final
        offsets = np.load(final["data"]["offsets"], allow_pickle=False)
        assert offsets.shape == (final["data"]["frames"], 300, 3) and np.isfinite(offsets).all()
        check_progress(events)
    finally:
        srv.close()
    assert srv.proc.returncode == 0 and srv.bad_lines == []


def test_model_info(server, tiny_bundle):
    from wav2sem.bundle import read_bundle

    bundle = read_bundle(tiny_bundle)
    data = server.result("model_info", {}, timeout=60)
    assert data["name"] == "tiny-random-0" and data["fps"] == 30.0 and data["vertex_count"] == 300
    assert data["subjects"] == ["subject_0", "subject_1", "subject_2"]
    template = np.load(data["template"], allow_pickle=False)
    assert template.shape == (300, 3) and template.dtype == np.float32
    np.testing.assert_array_equal(template, bundle.template.vertices)
    assert data["faces"] is None                       # the grid template has no faces
    assert set(data["regions"]) == {"lips", "upper_face"}
    for name, path in data["regions"].items():
        idx = np.load(path, allow_pickle=False)
        assert idx.ndim == 1 and np.issubdtype(idx.dtype, np.integer)
        np.testing.assert_array_equal(idx, bundle.template.regions[name])
        assert idx.min() >= 0 and idx.max() < 300
    assert data["landmarks"] == bundle.template.landmarks
    assert data["output"] == "vertices" and data["channels"] == [] and data["blendshapes"] is None


def test_generate_progress_then_result_equal_to_infer(server, tiny_bundle, speech_wav, tmp_path):
    out = tmp_path / "server.npy"
    events, final = server.request("generate", {"audio": str(speech_wav), "output": str(out), "subject": 1},
                                   timeout=120)
    assert final["type"] == "result", final
    data = final["data"]
    assert data["offsets"] == str(out)
    check_progress(events, ("load", "decode"))
    assert {e["stage"] for e in events} >= {"encode", "decode"}
    assert events[-1]["stage"] == "decode" and events[-1]["fraction"] == 1.0
    offsets = np.load(out, allow_pickle=False)
    assert offsets.dtype == np.float32
    assert offsets.shape == (data["frames"], data["vertex_count"], 3) == (offsets.shape[0], 300, 3)
    assert data["fps"] == 30.0 and data["model"] == "tiny-random-0" and data["seconds"] > 0
    assert data["weights"] is None and data["channels"] == []          # a vertex model
    cli = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "cli.npy", "--model", tiny_bundle,
                                "--subject", "1")
    assert cli.returncode == 0, cli.stderr
    np.testing.assert_allclose(offsets, np.load(tmp_path / "cli.npy"), atol=1e-5, rtol=0)
    assert np.abs(offsets).max() > 1e-3


def test_generate_without_semantic_progress_is_monotonic(server, speech_wav):
    events, final = server.request("generate", {"audio": str(speech_wav), "semantic": False}, timeout=120)
    assert final["type"] == "result", final
    check_progress(events)
    assert Path(final["data"]["offsets"]).is_file()     # default output: the server's temporary folder


def test_models_stay_loaded(server, tiny_bundle, bundle_dir, speech_wav):
    copy = bundle_dir / "tiny_sem_copy_for_load_test"
    if not copy.exists():
        shutil.copytree(tiny_bundle, copy)
    params = {"audio": str(speech_wav), "model": str(copy)}
    first_events, first = server.request("generate", params, timeout=120)
    second_events, second = server.request("generate", params, timeout=120)
    assert first["type"] == second["type"] == "result"
    assert [e["fraction"] for e in first_events if e["stage"] == "load"] == [0.0, 1.0]
    assert [e for e in second_events if e["stage"] == "load"] == []
    info = server.result("model_info", {"model": str(copy)})
    assert info["directory"] == str(copy)
    np.testing.assert_array_equal(np.load(first["data"]["offsets"]), np.load(second["data"]["offsets"]))


def test_cancel_long_generate(server, big_bundle, audio_dir, tmp_path):
    clip = write_audio(audio_dir / "sixty.wav", speechlike(60.0, seed=31))
    out = tmp_path / "cancelled.npy"
    rid = server.send("generate", {"audio": str(clip), "model": str(big_bundle), "output": str(out)})
    events = []
    while True:   # wait for the first decode progress event
        msg = server.wait_for(rid, timeout=120, until=("progress", "result", "error"))[1]
        assert msg["type"] == "progress", f"generate ended before decoding: {msg}"
        events.append(msg)
        if msg["stage"] == "decode":
            break
    cancel_events, cancel_reply = server.request("cancel", {"target": rid}, timeout=30)
    assert cancel_reply["type"] == "result" and cancel_reply["data"] == {"target": rid, "found": True}
    more, final = server.wait_for(rid, timeout=60)
    assert final["type"] == "error", final
    assert final["error"]["code"] == "CANCELLED"
    last = (more or events)[-1]
    assert last["stage"] == "decode" and last["fraction"] < 1.0
    assert not out.exists()
    assert not list(tmp_path.glob(".*"))
    assert_alive(server)
    _, unknown = server.request("cancel", {"target": "no-such-request"})
    assert unknown["data"] == {"target": "no-such-request", "found": False}


@pytest.mark.parametrize("line,code,request_id", [
    ("this is not json", "BAD_REQUEST", None),
    ('{"id": 1, "op": "hello"', "BAD_REQUEST", None),
    ("[1, 2, 3]", "BAD_REQUEST", None),
    ('{"id": "u1", "op": "fly"}', "BAD_REQUEST", "u1"),
    ('{"id": "u2"}', "BAD_REQUEST", "u2"),
    ('{"id": "p1", "op": "generate", "params": "audio.wav"}', "BAD_REQUEST", "p1"),
    ('{"id": "p2", "op": "generate", "params": ["audio.wav"]}', "BAD_REQUEST", "p2"),
    ('{"id": "g1", "op": "generate", "params": {}}', "BAD_REQUEST", "g1"),
    ('{"id": "g2", "op": "generate", "params": {"audio": "/no/such/file.wav"}}', "AUDIO_NOT_FOUND", "g2"),
    ('{"id": "g3", "op": "generate", "params": {"audio": "AUDIO", "device": "tpu"}}', "BAD_REQUEST", "g3"),
    ('{"id": "g4", "op": "generate", "params": {"audio": "AUDIO", "output": "/tmp/x.txt"}}', "BAD_REQUEST", "g4"),
    ('{"id": "g5", "op": "generate", "params": {"audio": "AUDIO", "semantic": "yes"}}', "BAD_REQUEST", "g5"),
    ('{"id": "g6", "op": "generate", "params": {"audio": "AUDIO", "subject": "nobody"}}', "BAD_REQUEST", "g6"),
    ('{"id": "m1", "op": "model_info", "params": {"model": "/no/such/bundle"}}', "MODEL_NOT_FOUND", "m1"),
    ('{"id": "n1", "op": "generate", "params": {"audio": "AUDIO", "device": 0}}', "BAD_REQUEST", "n1"),
    ('{"id": "n2", "op": "generate", "params": {"audio": "AUDIO", "model": 5}}', "BAD_REQUEST", "n2"),
    ('{"id": "n3", "op": "generate", "params": {"audio": "AUDIO", "output": 7}}', "BAD_REQUEST", "n3"),
    ('{"id": "n4", "op": "model_info", "params": {"model": 5}}', "BAD_REQUEST", "n4"),
    ('{"id": "n5", "op": "model_info", "params": {"device": ["cpu"]}}', "BAD_REQUEST", "n5"),
    ('{"id": "n6", "op": "generate", "params": {"audio": 12}}', "BAD_REQUEST", "n6"),
    ('{"id": "s1", "op": "generate", "params": {"audio": "AUDIO", "subject": {"0": "x"}}}', "BAD_REQUEST", "s1"),
    ('{"id": "s2", "op": "generate", "params": {"audio": "AUDIO", "subject": {"0": NaN}}}', "BAD_REQUEST", "s2"),
    ('{"id": "s3", "op": "generate", "params": {"audio": "AUDIO", "subject": {"0": Infinity, "1": 1}}}', "BAD_REQUEST", "s3"),
    ('{"id": "s4", "op": "generate", "params": {"audio": "AUDIO", "subject": {"0": true}}}', "BAD_REQUEST", "s4"),
])
def test_bad_requests_get_errors_and_server_keeps_serving(server, speech_wav, line, code, request_id):
    server.send_raw(line.replace("AUDIO", str(speech_wav)))
    if request_id is None:
        msg = server.wait_for(None, timeout=30)[1]
    else:
        msg = server.wait_for(request_id, timeout=60)[1]
    assert msg["type"] == "error" and msg["id"] == request_id
    assert msg["error"]["code"] == code
    assert isinstance(msg["error"]["message"], str) and msg["error"]["message"]
    assert_alive(server)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA exists here")
def test_cuda_without_cuda(server, speech_wav):
    _, msg = server.request("generate", {"audio": str(speech_wav), "device": "cuda"})
    assert msg["type"] == "error" and msg["error"]["code"] == "DEVICE_UNAVAILABLE"
    assert_alive(server)


def test_all_stdout_lines_were_json(server):
    assert server.raw_lines, "nothing was read"
    assert server.bad_lines == []


def test_non_scalar_request_id_does_not_kill_the_server(tiny_bundle):
    """An id the server cannot use as a key (a JSON array/object) must give an error, not a crash."""
    srv = ServerProcess("--model", tiny_bundle)
    try:
        srv.send_raw('{"id": [1], "op": "hello"}')
        srv.send_raw('{"id": {"a": 1}, "op": "cancel", "params": {"target": [2]}}')
        data = srv.result("hello", timeout=60)
        assert data["protocol"] == 1
        assert srv.proc.poll() is None, f"server exited: {srv.stderr[-2000:]}"
    finally:
        srv.close()


def test_shutdown_ends_with_exit_0_and_cleans_up(tiny_bundle, speech_wav):
    srv = ServerProcess("--model", tiny_bundle)
    try:
        _, final = srv.request("generate", {"audio": str(speech_wav), "semantic": False}, timeout=120)
        temp_output = Path(final["data"]["offsets"])
        assert temp_output.is_file()
        _, reply = srv.request("shutdown", timeout=30)
        assert reply["type"] == "result"
        assert srv.wait_exit(15) == 0
        assert not temp_output.parent.exists()          # the server's temporary folder is removed
        assert srv.bad_lines == []
    finally:
        srv.close()


def test_end_of_stdin_ends_with_exit_0(tiny_bundle):
    srv = ServerProcess("--model", tiny_bundle)
    try:
        assert srv.result("hello", timeout=60)["protocol"] == 1
        srv.proc.stdin.close()
        assert srv.wait_exit(15) == 0
    finally:
        srv.close()


# ----- cancel at every stage (in-process Server: the cancel lands at an exact moment) --------
class CancelWhenWritten:
    """The `out` of an in-process Server: when the server writes the progress event `trigger`
    (stage, message start, least fraction), a `cancel` for that request arrives on the reading side, as if
    Esc had been pressed at that instant."""

    def __init__(self, trigger):
        self.trigger = trigger
        self.lines: list[dict] = []
        self.server = None
        self.fired = False
        self.cancel_thread = None

    def write(self, text: str) -> None:
        import json
        import threading
        import time

        msg = json.loads(text)
        self.lines.append(msg)
        stage, start, fraction = self.trigger
        if (not self.fired and msg.get("type") == "progress" and msg["stage"] == stage
                and msg["message"].startswith(start) and msg["fraction"] >= fraction):
            self.fired = True
            cancel = json.dumps({"id": "esc", "op": "cancel", "params": {"target": msg["id"]}})
            self.cancel_thread = threading.Thread(target=self.server.handle_line, args=(cancel,), daemon=True)
            self.cancel_thread.start()
            time.sleep(0.5)          # the cancel is set; its reply waits for this write to end

    def flush(self) -> None:
        pass

    def wait_for_the_cancel_reply(self, timeout: float = 60) -> None:
        """The cancel's reply may come after the generate's error: its handle_line returns
        once the reply is written, so join it before the server stops (the timeout only
        stops a hang)."""
        assert self.cancel_thread is not None, f"the trigger {self.trigger} never came: {self.lines}"
        self.cancel_thread.join(timeout)
        assert not self.cancel_thread.is_alive(), "the cancel was never answered"


@pytest.mark.parametrize("which", ["default", "tiny"])
@pytest.mark.parametrize("trigger", [("encode", "speech features done", 0.0), ("encode", "semantic vectors done", 0.0),
                                     ("decode", "frame", 1.0)])     # the last frame: after it, only the result
def test_cancel_is_honoured_at_every_stage(which, trigger, tiny_bundle, speech_wav, tmp_path):
    import time

    from wav2sem.bundle import DEFAULT_BUNDLE_DIR
    from wav2sem.serve.transport import Server

    out = CancelWhenWritten(trigger)
    server = Server(out, str(DEFAULT_BUNDLE_DIR if which == "default" else tiny_bundle), "cpu")
    out.server = server
    output = tmp_path / "take.npy"
    try:
        server.handle_line('{"id": "g", "op": "generate", "params": {"audio": "%s", "output": "%s"}}'
                           % (speech_wav, output))
        deadline = time.monotonic() + 120
        while not any(m["id"] == "g" and m["type"] in ("result", "error") for m in out.lines):
            assert time.monotonic() < deadline, out.lines[-3:]
            time.sleep(0.05)
        out.wait_for_the_cancel_reply()
    finally:
        server.stop()
    final = [m for m in out.lines if m["id"] == "g" and m["type"] in ("result", "error")]
    assert len(final) == 1 and final[0]["type"] == "error" and final[0]["error"]["code"] == "CANCELLED", final
    assert [m["data"] for m in out.lines if m["id"] == "esc"] == [{"target": "g", "found": True}]
    assert list(tmp_path.iterdir()) == []
