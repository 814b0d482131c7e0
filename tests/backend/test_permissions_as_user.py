"""`wav2sem serve` run unprivileged (these tests run as root, whom permissions do not stop;
see unprivileged.py): an audio file it may not read and an output folder it may not write
are each one sentence with their code, never INTERNAL or a traceback."""
from __future__ import annotations

import shutil

import pytest

from unprivileged import open_folder, unprivileged  # noqa: F401  (fixtures)
from w2s_helpers import ServerProcess


@pytest.fixture
def unprivileged_server(unprivileged, open_folder):
    from wav2sem.testing import write_tiny_bundle

    bundle = write_tiny_bundle(open_folder / "bundle", seed=3)
    server = unprivileged.start_server(ServerProcess, "--model", bundle)
    yield server
    server.close()


def test_server_as_a_user_on_unreadable_audio_and_a_read_only_folder(unprivileged_server, open_folder, speech_wav):
    locked = shutil.copy(speech_wav, open_folder / "locked.wav")
    (open_folder / "locked.wav").chmod(0o600)
    _, final = unprivileged_server.request("generate", {"audio": str(locked)}, timeout=120)
    assert final["type"] == "error" and final["error"]["code"] == "AUDIO_UNREADABLE", final
    assert "permission denied" in final["error"]["message"] and "locked.wav" in final["error"]["message"]

    readable = shutil.copy(speech_wav, open_folder / "speech.wav")
    (open_folder / "speech.wav").chmod(0o644)
    folder = open_folder / "read_only"
    folder.mkdir(mode=0o755)
    _, final = unprivileged_server.request("generate", {"audio": str(readable), "output": str(folder / "take.npy")},
                                        timeout=120)
    assert final["type"] == "error" and final["error"]["code"] == "OUTPUT_UNWRITABLE", final
    assert "read_only" in final["error"]["message"] and list(folder.iterdir()) == []
    # the server still serves: a writable output works
    _, final = unprivileged_server.request("generate", {"audio": str(readable)}, timeout=120)
    assert final["type"] == "result", final
