"""espeak-ng through libespeak-ng (ctypes), with phoneme events from the synth callback.

The `espeak-ng --pho` command line output needs MBROLA, which Debian does not ship for
English, so the library is driven directly: `espeak_Initialize` with
espeakINITIALIZE_PHONEME_EVENTS makes the synth callback report every phoneme with its
sample position. The library keeps global state: one voice per process at a time, not
thread-safe (each corpus worker process has its own copy). Its synthesiser also carries
state from one utterance to the next (e.g. the pitch flutter phase), so the same text can
come out a few samples different depending on what was spoken before; to make every clip
depend only on its own settings, each utterance is synthesised in a forked child of a
process whose library was initialised but has not spoken yet.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pickle

import numpy as np

from ...errors import Wav2SemError
from ..phonemes import normalise
from ..timing import PhoneSegment
from . import TTS_UNAVAILABLE, SpeechClip

log = logging.getLogger(__name__)

# The eight English voices of espeak-ng (espeak-ng --voices=en, MBROLA ones excluded).
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029", "en-us-nyc")
# Voice variants (espeak-ng-data/voices/!v): male, female and character variants.
# Human-sounding voice variants (espeak-ng-data/voices/!v; robots, whisper and effects left out).
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
            "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Storm", "adam", "anika",
            "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward",
            "edward2", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
            "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
            "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_CHARS_UTF8 = 1
_INSTALL_HINT = "install the Debian packages espeak-ng and libespeak-ng1 (apt-get install espeak-ng libespeak-ng1)"


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakEngine:
    """One process-wide libespeak-ng instance. `synthesize` blocks; call from one thread."""

    _instance: "EspeakEngine | None" = None

    @classmethod
    def get(cls) -> "EspeakEngine":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self._lib = ctypes.CDLL(name)
        except OSError as exc:
            raise Wav2SemError(TTS_UNAVAILABLE, f"The espeak-ng library is missing; {_INSTALL_HINT}.") from exc
        self.sample_rate = int(self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 500, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT))
        if self.sample_rate <= 0:
            raise Wav2SemError(TTS_UNAVAILABLE, f"espeak-ng could not start (no voice data?); {_INSTALL_HINT}.")
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: the library holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._events.append((events[i].sample, events[i].id.string.decode("ascii", "replace")))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str = "en-us", variant: str | None = None,
                   rate_wpm: int = 175, pitch: int = 50, pitch_range: int = 50) -> SpeechClip:
        """Speak `text`; rate in words per minute (80..450), pitch and range 0..100.

        Blocks. Runs in a forked child (fresh synthesiser state, see the module docstring);
        the result depends only on the arguments.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak, send the result, leave without running any cleanup
            status = 0
            try:
                os.close(read_fd)
                try:
                    result: object = self._synthesize_here(text, voice, variant, rate_wpm, pitch, pitch_range)
                except Wav2SemError as exc:
                    result = exc
                with os.fdopen(write_fd, "wb") as pipe:
                    pickle.dump(result, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:  # noqa: BLE001 - the child must never return into the caller
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise Wav2SemError(TTS_UNAVAILABLE, f"espeak-ng failed on {text!r} (voice {voice}); {_INSTALL_HINT}.")
        # Our own child wrote these bytes a moment ago, so unpickling them is safe.
        result = pickle.loads(data)
        if isinstance(result, Wav2SemError):
            raise result
        assert isinstance(result, SpeechClip)
        return result

    def _synthesize_here(self, text: str, voice: str, variant: str | None, rate_wpm: int, pitch: int,
                         pitch_range: int) -> SpeechClip:
        """Speak in this process (changes the library state; see `synthesize`)."""
        name = voice if not variant else f"{voice}+{variant}"
        if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise Wav2SemError(TTS_UNAVAILABLE, f"espeak-ng has no voice {name!r}; {_INSTALL_HINT}.")
        for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        audio = (pcm.astype(np.float32) / 32768.0)                          # (N,)
        return SpeechClip(audio, self.sample_rate, self._segments(len(audio)), text)

    def _segments(self, n_samples: int) -> list[PhoneSegment]:
        """Phoneme events (start sample, symbol) -> contiguous segments covering the clip."""
        sr = self.sample_rate
        events = sorted(self._events)
        out: list[PhoneSegment] = []
        if not events or events[0][0] > 0:
            out.append(PhoneSegment("_", "SIL", 0.0, (events[0][0] if events else n_samples) / sr))
        for k, (start, symbol) in enumerate(events):
            end = events[k + 1][0] if k + 1 < len(events) else n_samples
            if end > start:
                out.append(PhoneSegment(symbol, normalise(symbol, "espeak"), start / sr, end / sr))
        return out
