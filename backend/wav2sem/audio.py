"""Reading speech: any file libsndfile reads (wav, flac, ogg, mp3), any rate and channel
count -> mono float32 at 16 kHz, plus the normalisation the speech encoder expects."""
from __future__ import annotations

import logging
import stat
from pathlib import Path

import numpy as np

from .errors import AUDIO_EMPTY, AUDIO_NOT_FOUND, AUDIO_TOO_SHORT, AUDIO_UNREADABLE, Wav2SemError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000          # Hz, what every speech encoder here expects
MIN_DURATION_S = 0.1          # shorter clips cannot yield a single motion frame reliably
SILENCE_PEAK = 1e-4           # peak amplitude (full scale = 1) below which a clip counts as silent
# Limits checked on the file's header, before anything is decoded (a header that says 1 Hz
# makes a few seconds of samples hours of audio, gigabytes once resampled to 16 kHz):
MAX_DURATION_S = 3600.0       # s, one hour; its 16 kHz float32 waveform is 230 MB
MAX_DECODED_SAMPLES = 2**29   # samples of all channels at the file's own rate (2 GiB of float32;
                              # one hour of 48 kHz stereo is 0.35e9)


def load_audio(path: str | Path) -> np.ndarray:
    """Read `path` as mono float32 at 16 kHz, shape (S,). Raises Wav2SemError with one clear
    sentence for missing, empty, unreadable, too-short or too-long input (MAX_DURATION_S,
    MAX_DECODED_SAMPLES, from the header before decoding). Blocks; any thread."""
    import soundfile as sf
    import soxr

    path = Path(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise Wav2SemError(AUDIO_NOT_FOUND, f"Audio file not found: {path}. Check the path or the sound strip's file.") from None
    except (OSError, ValueError) as exc:      # permission denied, a name the file system cannot hold
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Wav2SemError(AUDIO_UNREADABLE, f"Cannot open {path.name} ({reason}); check the file's permissions "
                                             "and path.") from None
    if stat.S_ISDIR(info.st_mode):
        raise Wav2SemError(AUDIO_NOT_FOUND, f"{path} is a folder, not an audio file.")
    if info.st_size == 0:
        raise Wav2SemError(AUDIO_EMPTY, f"Audio file {path.name} is empty (0 bytes).")
    try:
        handle = open(path, "rb")       # the OS's refusal first: libsndfile would call it a "System error"
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise Wav2SemError(AUDIO_UNREADABLE, f"Cannot read {path}: {reason}; check the file's permissions.") from None
    with handle:
        try:
            with sf.SoundFile(handle) as sound:
                _check_size(path, sound.frames, sound.samplerate, sound.channels)
                data = sound.read(dtype="float32", always_2d=True)         # (S, C)
                rate = sound.samplerate
        except Wav2SemError:
            raise
        except Exception as exc:  # libsndfile raises its own error types; all mean "cannot read"
            raise Wav2SemError(
                AUDIO_UNREADABLE,
                f"Cannot read {path.name} as audio ({exc}). Use a WAV, FLAC, OGG or MP3 file.",
            ) from exc
    if data.shape[0] == 0:
        raise Wav2SemError(AUDIO_EMPTY, f"Audio file {path.name} contains no samples.")
    duration = data.shape[0] / rate
    if duration < MIN_DURATION_S:
        raise Wav2SemError(
            AUDIO_TOO_SHORT,
            f"Audio file {path.name} is {duration:.3f} s long; at least {MIN_DURATION_S} s of speech is needed.",
        )
    if not np.isfinite(data).all():
        raise Wav2SemError(AUDIO_UNREADABLE, f"Audio file {path.name} contains invalid (NaN or infinite) samples.")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0:
        # float files may exceed full scale (up to float32's 3e38): scale to it before any sum
        # can overflow; loudness is normalised away downstream anyway
        log.info("%s peaks at %.3g times full scale; scaled to full scale", path.name, peak)
        data = (data / peak).astype(np.float32)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_size(path: Path, frames: int, rate: int, channels: int) -> None:
    """Refuse, from the header, audio whose decoded or 16 kHz size is past the limits."""
    if rate > 0 and frames / rate > MAX_DURATION_S:
        raise Wav2SemError(AUDIO_UNREADABLE, f"{path.name} says it holds {frames / rate / 60:.0f} min of audio "
                                             f"({frames} samples at {rate} Hz); wav2sem reads at most "
                                             f"{MAX_DURATION_S / 60:.0f} min: cut it into shorter files.")
    if frames * channels > MAX_DECODED_SAMPLES:
        raise Wav2SemError(AUDIO_UNREADABLE, f"{path.name} holds {frames * channels} samples ({channels} channels "
                                             f"at {rate} Hz), more than the {MAX_DECODED_SAMPLES} wav2sem decodes at "
                                             "once: cut it into shorter files or convert it to mono.")


def is_silent(waveform: np.ndarray) -> bool:
    return waveform.size == 0 or float(np.max(np.abs(waveform))) < SILENCE_PEAK


def normalize(waveform: np.ndarray, feature_extractor=None) -> np.ndarray:
    """Zero mean / unit variance over the clip, as Wav2Vec2FeatureExtractor(do_normalize=True)
    does. Uses the bundle's transformers feature extractor when it has one."""
    if feature_extractor is not None:
        out = feature_extractor(waveform, sampling_rate=SAMPLE_RATE, return_tensors="np").input_values
        return np.asarray(out[0], dtype=np.float32)
    return ((waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)).astype(np.float32)
