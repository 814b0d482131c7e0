"""`wav2sem serve` run as an unprivileged user (these tests run as root, whom permissions do
not stop; see unprivileged.py): an audio file it may not read and an output folder it may
not write are each one sentence with their code, never INTERNAL or a traceback."""
from __future__ import annotations

import shutil

import pytest

import w2s_helpers
from unprivileged import open_folder, python_as_nobody, unprivileged_env  # noqa: F401  (fixture)
from w2s_helpers import ServerProcess


@pytest.fixture
def server_as_nobody(open_folder, monkeypatch):
    from wav2sem.testing import write_tiny_bundle

    prefix = python_as_nobody()
    bundle = write_tiny_bundle(open_folder / "bundle", seed=3)
    monkeypatch.setattr(w2s_helpers, "wav2sem_cmd", lambda *args: [*prefix, "-m", "wav2sem", *map(str, args)])
    server = ServerProcess("--model", bundle, env=unprivileged_env())
    yield server
    server.close()


def test_server_as_a_user_on_unreadable_audio_and_a_read_only_folder(server_as_nobody, open_folder, speech_wav):
    locked = shutil.copy(speech_wav, open_folder / "locked.wav")
    (open_folder / "locked.wav").chmod(0o600)
    _, final = server_as_nobody.request("generate", {"audio": str(locked)}, timeout=120)
    assert final["type"] == "error" and final["error"]["code"] == "AUDIO_UNREADABLE", final
    assert "permission denied" in final["error"]["message"] and "locked.wav" in final["error"]["message"]

    readable = shutil.copy(speech_wav, open_folder / "speech.wav")
    (open_folder / "speech.wav").chmod(0o644)
    folder = open_folder / "read_only"
    folder.mkdir(mode=0o755)
    _, final = server_as_nobody.request("generate", {"audio": str(readable), "output": str(folder / "take.npy")},
                                        timeout=120)
    assert final["type"] == "error" and final["error"]["code"] == "OUTPUT_UNWRITABLE", final
    assert "read_only" in final["error"]["message"] and list(folder.iterdir()) == []
    # the server still serves: a writable output works
    _, final = server_as_nobody.request("generate", {"audio": str(readable)}, timeout=120)
    assert final["type"] == "result", final
