"""Matrix tier "server": `wav2sem serve` on bad lines, bad requests and faults. One long-lived
server (conftest `server`) answers most cases; the fault cases (EOF, SIGTERM, kill -9) start
their own."""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from matrix_helpers import ENV, Server, assert_one_sentence, assert_user_error, listing, out_folder, speechlike, \
    write_audio
from matrix_inputs import AUDIO_CASES, BUNDLE_CASES, FAIL, FAIL_OR_FINITE, OK_WARNING, broken_bundle


def matrix(case: str, expected: str):
    return pytest.mark.matrix("server", case, expected)


@pytest.fixture(scope="module")
def speech(matrix_dir) -> Path:
    return write_audio(matrix_dir / "server_speech.wav", speechlike(1.0))


@pytest.fixture
def clean_workdir(live_server, serve_tmp):
    """The server's temporary folder must not gain files from a failed request."""
    before = listing(serve_tmp)
    yield
    new = set(listing(serve_tmp)) - set(before)
    assert all("/model-" in p for p in new), f"left in the serve temp folder: {sorted(new)}"


def generate(server: Server, sound, timeout: float = 60, **params) -> dict:
    return server.final("generate", {"audio": str(sound), "device": "cpu"} | params, timeout)


def message_of(final: dict) -> str:
    return final["error"]["message"] if final["type"] == "error" else f"result: {final['data'].get('frames')} frames"


# ----- lines that are not requests ---------------------------------------------------------------
BAD_LINES = [
    ("garbage line", b"hello there, backend"),
    ("a JSON array", b'[{"id": 1, "op": "hello"}]'),
    ("a JSON string", b'"generate"'),
    ("100,000-deep nested array", b"[" * 100_000 + b"]" * 100_000),
    ("invalid UTF-8 bytes", b'{"id": "u1", "op": "hello", "params": {"x": "\xff\xfe\xc3("}}'),
    ("a 10 MB line that never closes", b'{"id": "big", "op": "hello", "params": {"pad": "' + b"x" * 10_000_000),
    ("id that is an object", b'{"id": {"a": 1}, "op": "hello"}'),
    ("id that is a 5,000-digit integer", b'{"id": ' + b"7" * 5000 + b', "op": "hello"}'),
    ("params that is a list", b'{"id": "p1", "op": "generate", "params": [1, 2]}'),
]


@pytest.mark.parametrize("name,line", [pytest.param(n, l, id=n, marks=matrix(f"line: {n}", "one error, serves on"))
                                       for n, l in BAD_LINES])
def test_bad_line(name, line, live_server, clean_workdir, seen):
    live_server.send_bytes(line)
    answers = live_server.probe()
    seen("; ".join(str(m.get("error", m).get("message", m))[:150] for m in answers) or "no answer")
    assert len(answers) == 1, f"expected one answer to the line, got {len(answers)}: {answers}"
    assert answers[0]["type"] == "error", answers[0]
    assert_user_error(answers[0]["error"])


@matrix("unknown op", "BAD_REQUEST naming the op")
def test_unknown_op(live_server, seen):
    error = live_server.error("dance")
    seen(assert_user_error(error, "dance", codes=("BAD_REQUEST",)))


@matrix("cancel of an unknown id", "result found=false")
def test_cancel_unknown(live_server, seen):
    final = live_server.final("cancel", {"target": "never-sent"})
    seen(final)
    assert final["type"] == "result" and final["data"] == {"target": "never-sent", "found": False}, final


# ----- bad generate requests ---------------------------------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"generate: audio {c.name}", c.expected))
                                  for c in AUDIO_CASES if not c.needs_permissions])
def test_generate_audio(case, live_server, clean_workdir, tmp_path, seen):
    audio = case.make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    final = generate(live_server, audio, output=str(out / "take.npy"))
    if case.expect == FAIL or (case.expect == FAIL_OR_FINITE and final["type"] == "error"):
        seen(message_of(final))
        assert final["type"] == "error", f"expected an error, got a result: {final}"
        seen(assert_user_error(final["error"], audio.name, codes=case.codes))
        assert listing(out) == {}, "output written on failure"
        return
    seen(message_of(final))
    assert final["type"] == "result", final
    offsets = np.load(final["data"]["offsets"])
    assert np.isfinite(offsets).all(), "non-finite offsets"
    assert abs(offsets.shape[0] - case.seconds * final["data"]["fps"]) <= 2
    if case.expect == OK_WARNING:
        warnings = final["data"].get("warnings") or []
        seen(warnings)
        assert len(warnings) == 1, warnings
        assert_one_sentence(warnings[0], "silent")


BAD_PARAMS = [
    ("audio is a number", {"audio": 5}, "audio"),
    ("device is a number", {"device": 5}, "device"),
    ("device unknown", {"device": "tpu"}, "tpu"),
    ("model is a number", {"model": 5}, "model"),
    ("output is a number", {"output": 5}, "output"),
    ("output is not .npy", {"output": "take.txt"}, "take.txt"),
    ("semantic is a string", {"semantic": "yes"}, "semantic"),
    ("subject weight is a string", {"subject": {"0": "lots"}}, "lots"),
    ("subject weight is NaN", {"subject": {"0": float("nan")}}, "nan"),
    ("subject unknown", {"subject": "nobody"}, "nobody"),
    ("subject index out of range", {"subject": 99}, "99"),
]


@pytest.mark.parametrize("name,params,names", [pytest.param(*c, id=c[0], marks=matrix(f"generate: {c[0]}", "error (not INTERNAL)"))
                                               for c in BAD_PARAMS])
def test_generate_bad_param(name, params, names, live_server, clean_workdir, speech, seen):
    final = generate(live_server, speech, **params)
    seen(message_of(final))
    assert final["type"] == "error", f"expected an error, got {final}"
    seen(assert_user_error(final["error"], names))


OUTPUT_PLACES = [("output in a missing folder", lambda d: d / "not_made" / "take.npy", "not_made"),
                 ("output onto a folder", lambda d: (d / "take.npy").mkdir() or d / "take.npy", "take.npy")]


@pytest.mark.parametrize("name,place,names",
                         [pytest.param(*c, id=c[0], marks=matrix(f"generate: {c[0]}", "OUTPUT_UNWRITABLE"))
                          for c in OUTPUT_PLACES])
def test_generate_bad_output(name, place, names, live_server, clean_workdir, speech, tmp_path, seen):
    out = tmp_path / "out"
    out.mkdir()
    final = generate(live_server, speech, output=str(place(out)))
    seen(message_of(final))
    assert final["type"] == "error", final
    seen(assert_user_error(final["error"], names, codes=("OUTPUT_UNWRITABLE",)))
    assert set(listing(out)) <= {"take.npy"}


# ----- permissions: root reads and writes through any, so these run unprivileged (unprivileged.py) -----
@pytest.fixture
def unprivileged_server(unprivileged, open_folder, tiny_bundle):
    """`wav2sem serve` run unprivileged, on a copy of the tiny bundle it may read."""
    server = unprivileged.start_server(Server, "--model", shutil.copytree(tiny_bundle, open_folder / "bundle"))
    yield server
    server.close()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"generate: audio {c.name}", c.expected))
                                  for c in AUDIO_CASES if c.needs_permissions])
def test_generate_audio_unprivileged(case, unprivileged_server, open_folder, seen):
    assert case.expect == FAIL, "a permission case that succeeds needs its own checks here"
    audio = case.make(open_folder)
    out = out_folder(open_folder, 0o777)
    before = listing(out)
    final = generate(unprivileged_server, audio, output=str(out / "take.npy"))
    seen(message_of(final))
    assert final["type"] == "error", f"expected an error, got a result: {final}"
    seen(assert_user_error(final["error"], audio.name, codes=case.codes))
    assert listing(out) == before, "the output folder changed on failure"
    unprivileged_server.probe()


@matrix("generate: output in a read-only folder", "OUTPUT_UNWRITABLE")
def test_generate_output_read_only_unprivileged(unprivileged_server, open_folder, seen):
    speech = write_audio(open_folder / "speech.wav", speechlike(1.0))
    out = out_folder(open_folder, 0o555)
    before = listing(out)
    final = generate(unprivileged_server, speech, output=str(out / "take.npy"))
    seen(message_of(final))
    assert final["type"] == "error", final
    seen(assert_user_error(final["error"], "out", codes=("OUTPUT_UNWRITABLE",)))
    assert listing(out) == before, "the output folder changed on failure"
    unprivileged_server.probe()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"generate: {c.name}", "MODEL_NOT_FOUND or MODEL_INVALID"))
                                  for c in BUNDLE_CASES])
def test_generate_bad_bundle(case, live_server, clean_workdir, tiny_bundle, speech, tmp_path, seen):
    bundle = broken_bundle(tiny_bundle, case, tmp_path)
    final = generate(live_server, speech, model=str(bundle))
    seen(message_of(final))
    assert final["type"] == "error", final
    seen(assert_user_error(final["error"], bundle.name, codes=case.codes))


# ----- many requests -----------------------------------------------------------------------------
@matrix("ids 'a.b' and 'a_b' queued together", "two results in two different files")
def test_ids_that_sanitise_alike(live_server, matrix_dir, seen):
    one = write_audio(matrix_dir / "one.wav", speechlike(1.0, seed=1))
    two = write_audio(matrix_dir / "two.wav", speechlike(2.0, seed=2))
    live_server.send("generate", {"audio": str(one), "device": "cpu"}, id="a.b")
    live_server.send("generate", {"audio": str(two), "device": "cpu"}, id="a_b")
    first = live_server.wait_for("a.b")[1]
    second = live_server.wait_for("a_b")[1]
    seen(f"{first['data']['offsets']} / {second['data']['offsets']}")
    assert first["data"]["offsets"] != second["data"]["offsets"], "both results in one file"
    assert np.load(first["data"]["offsets"]).shape[0] == first["data"]["frames"]
    assert np.load(second["data"]["offsets"]).shape[0] == second["data"]["frames"]


@matrix("50 queued generate requests", "all answered, in order")
def test_fifty_queued(live_server, speech, seen):
    ids = [f"q{i}" for i in range(50)]
    for rid in ids:
        live_server.send("generate", {"audio": str(speech), "device": "cpu"}, id=rid)
    finals = []
    deadline = time.monotonic() + 120
    while len(finals) < 50:
        message = live_server.next_message(max(0.1, deadline - time.monotonic()))
        if message.get("id") in ids and message.get("type") in ("result", "error"):
            finals.append(message)
    seen(f"{sum(m['type'] == 'result' for m in finals)} results, order kept: {[m['id'] for m in finals] == ids}")
    assert [m["id"] for m in finals] == ids
    assert all(m["type"] == "result" for m in finals), [m for m in finals if m["type"] != "result"][:1]


# ----- faults -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_speech(matrix_dir) -> Path:
    """Long enough that a kill lands mid-take with the tiny model."""
    return write_audio(matrix_dir / "long.wav", speechlike(300.0, sr=8_000), 8_000)


@matrix("end of input with two generates queued", "both answered (result, or a plain 'dropped' error)")
def test_eof_with_queued_work(tiny_bundle, speech, tmp_path, seen):
    srv = Server("--model", tiny_bundle, env={**ENV, "TMPDIR": str(tmp_path)})
    srv.send("generate", {"audio": str(speech), "device": "cpu", "output": str(tmp_path / "one.npy")}, id="e1")
    srv.send("generate", {"audio": str(speech), "device": "cpu", "output": str(tmp_path / "two.npy")}, id="e2")
    srv.proc.stdin.close()
    finals = [srv.wait_for(rid, 120)[1] for rid in ("e1", "e2")]
    srv.close()
    seen("; ".join(m["type"] if m["type"] == "result" else m["error"]["message"] for m in finals))
    for final in finals:
        if final["type"] == "error":
            assert_user_error(final["error"])
            assert "input" in final["error"]["message"].lower(), f"not said plainly why: {final['error']}"
    left = ours(tmp_path)
    assert left <= {"one.npy", "two.npy"}, f"left behind: {sorted(left)}"


def ours(folder: Path) -> set[str]:
    """Top-level entries of a TMPDIR (less torch's compile cache)."""
    return {name.split("/")[0] for name in listing(folder)}


def _kill_mid_take(how: signal.Signals, bundle: Path, audio: Path, tmp_path: Path, seen) -> None:
    tmp = tmp_path / "tmp"
    out = tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    env = {**ENV, "TMPDIR": str(tmp)}
    srv = Server("--model", bundle, env=env)
    rid = srv.send("generate", {"audio": str(audio), "device": "cpu", "output": str(out / "take.npy")})
    deadline = time.monotonic() + 120
    while True:                       # until decoding is under way
        message = srv.next_message(max(0.1, deadline - time.monotonic()))
        if message.get("id") == rid and message.get("type") != "progress":
            raise AssertionError(f"the take ended before it could be killed: {message}")
        if message.get("stage") == "decode":
            break
    assert ours(tmp), "the server had no temporary folder to leave behind (nothing tested)"
    srv.proc.send_signal(how)
    srv.proc.wait(timeout=30)
    srv.close()
    assert listing(out) == {}, f"partial output after {how.name}: {sorted(listing(out))}"
    later = Server("--model", bundle, env=env)           # a later start cleans what is left
    assert later.final("hello", timeout=120)["type"] == "result"
    during = ours(tmp)
    later.close()
    left = sorted(ours(tmp))
    seen(f"exit {srv.proc.returncode}; temp while the next server ran: {sorted(during)[:3]}; after: {left[:3]}")
    assert not left, f"left in TMPDIR after a later start and stop: {left[:5]}"


@matrix("SIGTERM mid-take", "no partial output; a later start leaves TMPDIR clean")
def test_sigterm_mid_take(tiny_bundle, long_speech, tmp_path, seen):
    _kill_mid_take(signal.SIGTERM, tiny_bundle, long_speech, tmp_path, seen)


@matrix("kill -9 mid-take", "no partial output; a later start leaves TMPDIR clean")
def test_sigkill_mid_take(tiny_bundle, long_speech, tmp_path, seen):
    _kill_mid_take(signal.SIGKILL, tiny_bundle, long_speech, tmp_path, seen)


HOUR_LIMIT_S = 90


@matrix("one-hour file (silence with a tone), fast log-mel bundle", f"succeeds or fails clearly within {HOUR_LIMIT_S} s")
def test_one_hour(live_server, fast_bundle, tmp_path, seen):
    sr = 8_000
    t = np.arange(sr * 60) / sr
    minute = np.where((t % 10) < 2, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    path = tmp_path / "hour.wav"
    import soundfile as sf

    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as handle:
        for _ in range(60):
            handle.write(minute)
    started = time.monotonic()
    rid = live_server.send("generate", {"audio": str(path), "device": "cpu", "model": str(fast_bundle),
                                        "output": str(tmp_path / "hour.npy")})
    try:
        _, final = live_server.wait_for(rid, HOUR_LIMIT_S)
    except AssertionError:
        cancel = live_server.send("cancel", {"target": rid})
        live_server.wait_for(cancel, 30)          # its reply must not be taken for the next case's answer
        live_server.wait_for(rid, 60)
        raise AssertionError(f"no answer for one hour of audio within {HOUR_LIMIT_S} s") from None
    finally:
        path.unlink()
    seconds = time.monotonic() - started
    seen(f"{final['type']} in {seconds:.0f} s: " + (final["error"]["message"] if final["type"] == "error"
                                                     else f"{final['data']['frames']} frames"))
    if final["type"] == "error":
        assert_user_error(final["error"])
        assert not (tmp_path / "hour.npy").exists()
    else:
        assert final["data"]["frames"] == pytest.approx(3600 * final["data"]["fps"], abs=2)
        (tmp_path / "hour.npy").unlink()    # 390 MB
