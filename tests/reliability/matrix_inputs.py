"""The bad inputs of the matrix, defined once: audio files and broken model bundles. The CLI and
the server tiers run the same tables, so what the table says and what runs cannot drift apart."""
from __future__ import annotations

import json
import shutil
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from matrix_helpers import SR, speechlike, write_audio

OK, OK_WARNING, FAIL, FAIL_OR_FINITE = "succeeds", "succeeds with a warning", "fails", "fails clearly or gives finite output"


@dataclass(frozen=True)
class AudioCase:
    name: str
    make: Callable[[Path], Path]          # folder -> the audio path (may not exist)
    expect: str                           # OK, OK_WARNING, FAIL or FAIL_OR_FINITE
    codes: tuple[str, ...] = ()           # acceptable error codes when it fails
    seconds: float = 1.0                  # audio length when it succeeds (frames checked)
    needs_permissions: bool = False       # root reads through any permission: run unprivileged

    @property
    def expected(self) -> str:
        return self.expect + (f" ({' or '.join(self.codes)})" if self.codes else "")


def _speech_file(name: str, seconds: float = 1.0, sr: int = SR, channels: int = 1, **kwargs) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        signal = speechlike(seconds, sr)
        if channels > 1:
            signal = np.stack([np.roll(signal, 7 * c) for c in range(channels)], 1)
        return write_audio(folder / name, signal, sr, **kwargs)
    return make


def _signal_file(name: str, signal: Callable[[], np.ndarray], subtype: str = "FLOAT") -> Callable[[Path], Path]:
    return lambda folder: write_audio(folder / name, signal(), SR, subtype=subtype)


def _bytes_file(name: str, data: Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data())
        return path
    return make


def _wav_bytes(seconds: float) -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        handle.writeframes((speechlike(seconds) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _with_nan() -> np.ndarray:
    x = speechlike(1.0)
    x[4000] = np.nan
    return x


def _with_inf() -> np.ndarray:
    x = speechlike(1.0)
    x[4000] = np.inf
    return x


def _unreadable(folder: Path) -> Path:
    path = _speech_file("locked.wav")(folder)
    path.chmod(0)
    return path


def _missing(folder: Path) -> Path:
    return folder / "no_such_take.wav"


def _a_folder(folder: Path) -> Path:
    path = folder / "a_folder.wav"
    path.mkdir()
    return path


_rng = np.random.default_rng(23)
AUDIO_CASES = [
    AudioCase("missing file", _missing, FAIL, ("AUDIO_NOT_FOUND",)),
    AudioCase("a folder named .wav", _a_folder, FAIL, ("AUDIO_NOT_FOUND", "AUDIO_UNREADABLE")),
    AudioCase("empty file (0 bytes)", _bytes_file("empty.wav", bytes), FAIL, ("AUDIO_EMPTY",)),
    AudioCase("truncated WAV header", _bytes_file("truncated.wav", lambda: _wav_bytes(1.0)[:30]), FAIL,
              ("AUDIO_UNREADABLE", "AUDIO_EMPTY")),
    AudioCase("random bytes", _bytes_file("random.wav", lambda: _rng.bytes(20_000)), FAIL, ("AUDIO_UNREADABLE",)),
    AudioCase("text named .wav", _bytes_file("notes.wav", lambda: b"These are my notes, not a sound.\n" * 50),
              FAIL, ("AUDIO_UNREADABLE",)),
    AudioCase("0.05 s", _speech_file("short.wav", 0.05), FAIL, ("AUDIO_TOO_SHORT",)),
    AudioCase("silent", _signal_file("silent.wav", lambda: np.zeros(SR * 2, np.float32), "PCM_16"), OK_WARNING,
              seconds=2.0),
    AudioCase("DC offset", _signal_file("dc.wav", lambda: speechlike(1.0, amplitude=0.2) + 0.6), OK),
    AudioCase("clipped", _signal_file("clipped.wav", lambda: np.clip(speechlike(1.0) * 20, -1, 1), "PCM_16"), OK),
    AudioCase("white noise", _signal_file("noise.wav", lambda: _rng.uniform(-1, 1, SR).astype(np.float32)), OK),
    AudioCase("8 kHz", _speech_file("8k.wav", sr=8_000), OK),
    AudioCase("96 kHz", _speech_file("96k.wav", sr=96_000), OK),
    AudioCase("6 channels", _speech_file("six.wav", channels=6), OK),
    AudioCase("24-bit PCM", _speech_file("24bit.wav", subtype="PCM_24"), OK),
    AudioCase("float WAV with NaN", _signal_file("nan.wav", _with_nan), FAIL, ("AUDIO_UNREADABLE",)),
    AudioCase("float WAV with Inf", _signal_file("inf.wav", _with_inf), FAIL, ("AUDIO_UNREADABLE",)),
    AudioCase("float WAV with 3e38 peaks", _signal_file("huge.wav", lambda: speechlike(1.0) * 1e39), FAIL_OR_FINITE,
              ("AUDIO_UNREADABLE",)),
    AudioCase("mp3", _speech_file("speech.mp3", format="MP3"), OK),
    AudioCase("ogg", _speech_file("speech.ogg", format="OGG", subtype="VORBIS"), OK),
    AudioCase("flac", _speech_file("speech.flac", format="FLAC"), OK),
    AudioCase("unicode and spaces in the path", _speech_file("Szene 1 – ünïcødé 台詞.wav"), OK),
    AudioCase("unreadable file (chmod 000)", _unreadable, FAIL, ("AUDIO_UNREADABLE",), needs_permissions=True),
]


# ----- bundles ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleCase:
    name: str
    breaks: Callable[[Path], None] = field(repr=False)    # damages a copy of a good bundle in place
    codes: tuple[str, ...] = ("MODEL_NOT_FOUND", "MODEL_INVALID")


def _edit_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def breaks(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        changed = change(config)
        (folder / "config.json").write_text(json.dumps(config if changed is None else changed))
    return breaks


def _remove(folder: Path) -> None:
    shutil.rmtree(folder)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()


def _truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _other_template(folder: Path) -> None:
    from wav2sem.testing import grid_template

    grid_template(250, seed=5).save(folder / "template.npz")


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda config: config.__setitem__(key, value)


BUNDLE_CASES = [
    BundleCase("bundle missing", _remove),
    BundleCase("bundle folder empty", _empty),
    BundleCase("truncated model.safetensors", _truncate_weights, ("MODEL_INVALID",)),
    BundleCase("template vertex count differs from the weights", _other_template, ("MODEL_INVALID",)),
    BundleCase("config.json is not JSON", lambda f: (f / "config.json").write_text("{ not json"), ("MODEL_INVALID",)),
    BundleCase("config.json is a list", _edit_config(lambda c: [c]), ("MODEL_INVALID",)),
    BundleCase("config.json lists no subjects", _edit_config(_set("subjects", [])), ("MODEL_INVALID",)),
    BundleCase("config.json fps 0", _edit_config(_set("fps", 0)), ("MODEL_INVALID",)),
]


def broken_bundle(good: Path, case: BundleCase, folder: Path) -> Path:
    """A damaged copy of `good` named after the case (the message must name it)."""
    target = folder / ("bundle-" + "".join(c if c.isalnum() else "-" for c in case.name))
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(good, target)
    case.breaks(target)
    return target

