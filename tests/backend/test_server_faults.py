"""`wav2sem serve` under faults, as real subprocesses: garbage on stdin, signals mid-take,
end of input, colliding ids, non-ASCII paths in a C locale, queues, `hello` while busy.

Each server gets its own TMPDIR, so what it leaves behind can be checked."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from w2s_helpers import SUBPROCESS_ENV, ServerProcess, speechlike, wav2sem_cmd, write_audio


@pytest.fixture(scope="module")
def slow_bundle(bundle_dir):
    """A FaceFormer bundle whose decoder takes seconds on a long clip (for mid-take faults)."""
    from wav2sem.testing import write_tiny_bundle

    path = bundle_dir / "slow_faults"
    if not path.exists():
        write_tiny_bundle(path, vertex_count=4000, feature_dim=256, semantic=False, seed=9)
    return path


@pytest.fixture(scope="module")
def long_wav(audio_dir):
    return write_audio(audio_dir / "faults_sixty.wav", speechlike(60.0, seed=61))


@pytest.fixture(scope="module")
def short_wav(audio_dir):
    return write_audio(audio_dir / "faults_short.wav", speechlike(0.6, seed=62))


def server_in(tmp: Path, *args) -> ServerProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    return ServerProcess(*args, env={**SUBPROCESS_ENV, "TMPDIR": str(tmp)})


def serve_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("wav2sem-serve-*"))


def wait_for_decoding(srv: ServerProcess, rid) -> None:
    while True:
        msg = srv.wait_for(rid, timeout=180, until=("progress", "result", "error"))[1]
        assert msg["type"] == "progress", f"generate ended before decoding: {msg}"
        if msg["stage"] == "decode":
            return


# ----- garbage lines -------------------------------------------------------------------------
GARBAGE = [   # (what, line, the id of the error)
    ("deep nesting", b"[" * 100_000 + b"\n", None),
    ("deep object nesting", b'{"id": 1, "op": "hello", "params": ' + b'{"a": ' * 50_000 + b"\n", None),
    ("5000-digit id", b'{"id": ' + b"7" * 5000 + b', "op": "hello"}\n', None),
    ("invalid utf-8", b'{"id": "\xff\xfe", "op": "hello"}\n', None),
    ("lone surrogate escape", b'{"id": "x", "op": "\\ud800hello"}\n', "x"),
    ("10 MB line", b"x" * 10_000_000 + b"\n", None),
    ("nan id", b'{"id": NaN, "op": "cancel", "params": {"target": NaN}}\n', None),
]


def test_garbage_lines_each_get_bad_request_and_the_server_keeps_serving(tiny_bundle, tmp_path):
    srv = server_in(tmp_path / "tmp", "--model", tiny_bundle)
    try:
        for name, line, error_id in GARBAGE:
            srv.send_bytes(line)
            msg = srv.wait_for(error_id, timeout=60)[1]
            assert msg["type"] == "error" and msg["error"]["code"] == "BAD_REQUEST", (name, msg)
            assert "Traceback" not in msg["error"]["message"]
        # a 10 MB request that is valid JSON is answered too
        srv.send_raw(json.dumps({"id": "big", "op": "hello", "params": {"pad": "y" * 10_000_000}}))
        assert srv.wait_for("big", timeout=60)[1]["type"] == "result"
        assert srv.result("hello", timeout=60)["protocol"] == 1
        assert srv.proc.poll() is None
    finally:
        srv.close()
    assert srv.bad_lines == []


def test_cancel_of_an_unknown_id_answers_found_false(tiny_bundle, tmp_path):
    srv = server_in(tmp_path / "tmp", "--model", tiny_bundle)
    try:
        assert srv.result("cancel", {"target": "nobody"}) == {"target": "nobody", "found": False}
    finally:
        srv.close()


# ----- ids and queues ------------------------------------------------------------------------
def test_ids_that_differ_only_in_punctuation_get_their_own_offsets(tiny_bundle, short_wav, speech_wav, tmp_path):
    srv = server_in(tmp_path / "tmp", "--model", tiny_bundle, "--device", "cpu")
    try:
        srv.send("generate", {"audio": str(speech_wav), "semantic": False}, id="a.b")
        srv.send("generate", {"audio": str(short_wav), "semantic": False}, id="a_b")
        first = srv.wait_for("a.b", timeout=120)[1]
        second = srv.wait_for("a_b", timeout=120)[1]
        assert first["type"] == second["type"] == "result", (first, second)
        assert first["data"]["offsets"] != second["data"]["offsets"]
        assert np.load(first["data"]["offsets"]).shape[0] == first["data"]["frames"]
        assert np.load(second["data"]["offsets"]).shape[0] == second["data"]["frames"]
        assert first["data"]["frames"] != second["data"]["frames"]
    finally:
        srv.close()


def test_fifty_queued_requests_are_all_answered_in_order(tiny_bundle, short_wav, tmp_path):
    srv = server_in(tmp_path / "tmp", "--model", tiny_bundle, "--device", "cpu")
    try:
        ids = [srv.send("generate", {"audio": str(short_wav), "semantic": False}) for _ in range(50)]
        finals = []
        deadline = time.monotonic() + 300
        while len(finals) < 50:
            msg = srv.next_message(max(1.0, deadline - time.monotonic()))
            if msg["type"] in ("result", "error"):
                finals.append(msg)
        assert [m["id"] for m in finals] == ids
        assert all(m["type"] == "result" for m in finals), [m for m in finals if m["type"] != "result"][:2]
        assert len({m["data"]["offsets"] for m in finals}) == 50
    finally:
        srv.close()


def test_hello_is_answered_while_a_generate_runs(slow_bundle, long_wav, tmp_path):
    srv = server_in(tmp_path / "tmp", "--model", slow_bundle, "--device", "cpu")
    try:
        assert srv.result("hello", timeout=60)["protocol"] == 1         # torch imported, model not loaded
        rid = srv.send("generate", {"audio": str(long_wav)})
        wait_for_decoding(srv, rid)
        hello = srv.send("hello")
        order = []
        deadline = time.monotonic() + 120
        while hello not in order:
            msg = srv.next_message(max(1.0, deadline - time.monotonic()))
            if msg["type"] in ("result", "error"):
                order.append(msg["id"])
        assert order == [hello], f"hello was answered only after the generate: {order}"
        srv.result("cancel", {"target": rid})
        assert srv.wait_for(rid, timeout=60)[1]["error"]["code"] == "CANCELLED"
    finally:
        srv.close()


# ----- end of input --------------------------------------------------------------------------
def test_end_of_input_lets_queued_work_finish(tiny_bundle, speech_wav, short_wav, tmp_path):
    """`echo <generate> | wav2sem serve`: the generate is answered, not cancelled."""
    out = tmp_path / "piped.npy"
    lines = [json.dumps({"id": 1, "op": "generate", "params": {"audio": str(speech_wav), "output": str(out)}}),
             json.dumps({"id": 2, "op": "generate", "params": {"audio": str(short_wav), "semantic": False}})]
    proc = subprocess.run(wav2sem_cmd("serve", "--model", tiny_bundle), input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=300,
                          env={**SUBPROCESS_ENV, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    finals = [m for m in map(json.loads, proc.stdout.splitlines()) if m["type"] in ("result", "error")]
    assert [(m["id"], m["type"]) for m in finals] == [(1, "result"), (2, "result")], finals
    assert np.load(out).shape[0] == finals[0]["data"]["frames"]
    assert serve_folders(tmp_path) == []


# ----- encodings -----------------------------------------------------------------------------
def test_non_ascii_audio_path_in_a_c_locale(tiny_bundle, speech_wav, tmp_path):
    folder = tmp_path / "Aufnahmen_äöü"
    folder.mkdir()
    audio = folder / "Sprache_äöü_日本.wav"
    shutil.copy(speech_wav, audio)
    out = folder / "Ausgabe_日本.npy"
    env = {**SUBPROCESS_ENV, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "latin-1",
           "TMPDIR": str(tmp_path)}
    request = {"id": "ü", "op": "generate", "params": {"audio": str(audio), "output": str(out), "semantic": False}}
    proc = subprocess.run(wav2sem_cmd("serve", "--model", tiny_bundle),
                          input=(json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8"),
                          capture_output=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    finals = [m for m in map(json.loads, proc.stdout.decode("utf-8").splitlines()) if m["type"] != "progress"]
    assert len(finals) == 1 and finals[0]["type"] == "result", finals
    assert finals[0]["id"] == "ü" and finals[0]["data"]["offsets"] == str(out)
    assert out.is_file()


# ----- signals mid-take ----------------------------------------------------------------------
def test_sigterm_mid_generate_exits_cleanly_and_leaves_nothing(slow_bundle, long_wav, tmp_path):
    tmp, outputs = tmp_path / "tmp", tmp_path / "outputs"
    outputs.mkdir()
    srv = server_in(tmp, "--model", slow_bundle, "--device", "cpu")
    try:
        rid = srv.send("generate", {"audio": str(long_wav), "output": str(outputs / "take.npy")})
        wait_for_decoding(srv, rid)
        assert len(serve_folders(tmp)) == 1
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait_exit(60) == 0
    finally:
        srv.close()
    assert list(outputs.iterdir()) == []
    assert serve_folders(tmp) == []


def test_kill_9_mid_generate_is_cleaned_by_the_next_start(slow_bundle, long_wav, short_wav, tmp_path):
    tmp, outputs = tmp_path / "tmp", tmp_path / "outputs"
    outputs.mkdir()
    srv = server_in(tmp, "--model", slow_bundle, "--device", "cpu")
    try:
        rid = srv.send("generate", {"audio": str(long_wav), "output": str(outputs / "take.npy")})
        wait_for_decoding(srv, rid)
        srv.proc.kill()
        srv.proc.wait(timeout=30)
    finally:
        srv.close()
    assert len(serve_folders(tmp)) == 1                       # kill -9 cannot be handled...
    assert [p for p in outputs.iterdir()] == []
    again = server_in(tmp, "--model", slow_bundle, "--device", "cpu")
    try:
        assert again.result("hello", timeout=60)["protocol"] == 1
        folders = serve_folders(tmp)
        assert len(folders) == 1 and str(again.proc.pid) in folders[0].name   # ...the next start cleans
    finally:
        again.close()
    assert serve_folders(tmp) == []


def test_stale_partial_files_beside_an_output_are_removed(tiny_bundle, short_wav, tmp_path):
    """A partial file a killed backend left beside an output (recognisable prefix, its pid) goes
    at the next write into that folder; another live process's partial file stays."""
    from wav2sem.outputs import PARTIAL_PREFIX

    outputs = tmp_path / "outputs"
    outputs.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = outputs / f"{PARTIAL_PREFIX}{dead.pid}-take.npy"
    stale.write_bytes(b"\x93NUMPY partial")
    alive = outputs / f"{PARTIAL_PREFIX}{os.getpid()}-other.npy"
    alive.write_bytes(b"\x93NUMPY in progress")
    srv = server_in(tmp_path / "tmp", "--model", tiny_bundle, "--device", "cpu")
    try:
        srv.result("generate", {"audio": str(short_wav), "output": str(outputs / "take.npy"), "semantic": False},
                   timeout=120)
    finally:
        srv.close()
    assert sorted(p.name for p in outputs.iterdir()) == sorted(["take.npy", alive.name])
