"""Festival (Debian `festival` + voices) with phone timings from the utterance's segments.

Festival starts in a fraction of a second but loading a voice costs more, so a batch of
sentences for one voice is synthesised by one `festival -b script.scm` run that saves a
RIFF wave and `utt.save.segs` (end time of each phone, radio phone set) per sentence.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import soundfile as sf

from ...errors import Wav2SemError
from ..phonemes import normalise
from ..timing import PhoneSegment
from . import TTS_UNAVAILABLE, SpeechClip

log = logging.getLogger(__name__)

# voice -> (festival voice directory, Debian package)
VOICES = {
    "kal_diphone": ("english/kal_diphone", "festvox-kallpc16k"),
    "ked_diphone": ("english/ked_diphone", "festvox-kdlpc16k"),
    "cmu_us_slt_arctic_hts": ("us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}
VOICE_ROOT = Path("/usr/share/festival/voices")
TIMEOUT_S = 600


def check_voice(voice: str) -> None:
    """Raise a Wav2SemError naming the Debian package if festival or the voice is missing."""
    if voice not in VOICES:
        raise Wav2SemError(TTS_UNAVAILABLE, f"Unknown festival voice {voice!r}; use one of {sorted(VOICES)}.")
    if shutil.which("festival") is None:
        raise Wav2SemError(TTS_UNAVAILABLE, "festival is not installed; install the Debian package festival "
                                            "(apt-get install festival).")
    folder, package = VOICES[voice]
    if not (VOICE_ROOT / folder).is_dir():
        raise Wav2SemError(TTS_UNAVAILABLE, f"The festival voice {voice} is missing; install the Debian package "
                                            f"{package} (apt-get install {package}).")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize_batch(texts: Sequence[str], voice: str, duration_stretch: Sequence[float] | None = None) -> list[SpeechClip]:
    """Speak each text with one festival voice. Blocks (one festival process for the batch).

    duration_stretch: per text, festival's Duration_Stretch (> 1 is slower speech).
    """
    check_voice(voice)
    stretches = list(duration_stretch) if duration_stretch is not None else [1.0] * len(texts)
    with tempfile.TemporaryDirectory(prefix="wav2sem-festival-") as tmp:
        work = Path(tmp)
        lines = [f"(voice_{voice})"]
        for i, (text, stretch) in enumerate(zip(texts, stretches)):
            lines += [f"(Parameter.set 'Duration_Stretch {float(stretch):.4f})",
                      f"(set! utt (Utterance Text {_scheme_string(text)}))",
                      "(utt.synth utt)",
                      f"(utt.save.wave utt {_scheme_string(str(work / f'{i}.wav'))} 'riff)",
                      f"(utt.save.segs utt {_scheme_string(str(work / f'{i}.segs'))})"]
        script = work / "batch.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        proc = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=TIMEOUT_S)
        clips = []
        for i, text in enumerate(texts):
            wav, segs = work / f"{i}.wav", work / f"{i}.segs"
            if not wav.is_file() or not segs.is_file():
                raise Wav2SemError(TTS_UNAVAILABLE, f"festival ({voice}) failed on {text!r}: "
                                                    f"{proc.stderr.strip()[-300:] or 'no output'}.")
            audio, sr = sf.read(wav, dtype="float32", always_2d=True)
            clips.append(SpeechClip(audio.mean(axis=1), int(sr), read_segs(segs, len(audio) / sr), text))
        return clips


def read_segs(path: Path, duration: float) -> list[PhoneSegment]:
    """Parse `utt.save.segs` ("#" then "end_time 100 phone" lines) into contiguous segments."""
    out: list[PhoneSegment] = []
    start = 0.0
    body = path.read_text(encoding="utf-8", errors="replace").split("#", 1)[-1]
    for line in body.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        end, symbol = float(parts[0]), parts[2]
        if end > start:
            out.append(PhoneSegment(symbol, normalise(symbol, "festival"), start, end))
            start = end
    if duration > start + 1e-3:
        out.append(PhoneSegment("pau", "SIL", start, duration))
    return out
