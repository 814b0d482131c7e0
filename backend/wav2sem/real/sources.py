"""The catalogue of recorded speech in Debian packages: where each package keeps its
recordings and their transcripts, the speakers they make, the split, and audio loading.

Packages are found in roots: "/" for an installed system, or folders made with
`dpkg -x PKG.deb DIR` (a root may be such a folder or hold one such folder per package).
A package counts as present when its /usr/share/doc/<package> folder is there, so a file
is never credited to a package that did not install it. See docs/real_voices.md.
"""
from __future__ import annotations

import gzip
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import AUDIO_UNREADABLE, Wav2SemError

SAMPLE_RATE = 16000
# The aligner's languages (wav2sem.real.phonemize); recordings in others are skipped.
LANGUAGES = ("en", "fr", "it", "ru", "es", "ca", "ro", "bg", "be", "el", "da", "lt", "nl")

# The split is by whole speakers so that test and validation voices are never heard in
# training. Test: the only English recordings (tuxpaint-en: English test speech, aligned with
# the English model like every clip with its own language's) and both Spanish speakers
# (two voices of one language, neither trained on); validation: Catalan. Everyone else trains.
SPEAKER_SPLIT = {
    "tuxpaint-en": "test",
    "tuxpaint-es": "test",
    "esco-es": "test",
    "tuxpaint-ca": "val",
}
DEFAULT_SPLIT = "train"


def split_of(speaker: str) -> str:
    return SPEAKER_SPLIT.get(speaker, DEFAULT_SPLIT)


@dataclass(frozen=True)
class Recording:
    """One recorded utterance and its transcript."""

    id: str               # "<speaker>:<name>", unique and stable (name: path in the package, no suffix)
    speaker: str          # file-name safe, no "_" (corpus item ids are "<speaker>_<n>")
    language: str         # one of LANGUAGES
    source_package: str   # the Debian package that carries the audio
    path: Path
    text: str


@dataclass
class Catalogue:
    """What the roots hold: usable recordings and a count of skipped entries per reason."""

    recordings: list[Recording] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)          # (speaker, reason) -> count
    packages: dict[str, Path] = field(default_factory=dict)    # package -> root it was found in

    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.recordings})

    def skipped_by_reason(self) -> dict[str, int]:
        out: Counter = Counter()
        for (_, reason), n in self.skipped.items():
            out[reason] += n
        return dict(out)


# -- roots and packages ---------------------------------------------------------------------

def expand_roots(roots: list[Path]) -> list[Path]:
    """Each root and its immediate sub-folders that look like `dpkg -x` output (have usr/)."""
    out: list[Path] = []
    for root in roots:
        root = Path(root)
        if (root / "usr").is_dir():
            out.append(root)
        if root.is_dir() and root != Path("/"):
            out.extend(sorted(p for p in root.iterdir() if p.is_dir() and (p / "usr").is_dir()))
    unique: dict[Path, Path] = {}
    for r in out:
        unique.setdefault(r.resolve(), r)
    return list(unique.values())


def find_package(roots: list[Path], package: str) -> Path | None:
    """The first expanded root where `package` is present (its doc folder exists)."""
    for root in roots:
        if (root / "usr/share/doc" / package).is_dir():
            return root
    return None


def _files(folder: Path, suffix: str) -> Iterator[Path]:
    """Files with `suffix` under `folder`, sorted, not following symlinked folders (the
    prompt packages link digits/fr -> fr/digits)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in filenames if f.endswith(suffix))
    return iter(sorted(found))


# -- transcripts -----------------------------------------------------------------------------

def _clean(text: str, spoken_parentheses: bool = False) -> tuple[str | None, str | None]:
    """-> (text, None) or (None, reason to skip). A wholly bracketed text is non-speech
    ("[beep]", "(ahooga)"). In the Asterisk texts a bracketed part marks words that may not be
    spoken ("[tentativo di] ..."), so those entries are skipped rather than guessed at; in the
    Tux Paint translations parentheses are explanations that are read out ("Бегемот
    (гиппопотам)."), so only the brackets go (the aligner rejects a clip that leaves them out)."""
    text = " ".join(text.split())
    if not text:
        return None, "empty transcript"
    if re.fullmatch(r"[\[(][^\])]*[\])][.!]?", text):
        return None, "non-speech"
    if re.search(r"[\[\]()]", text):
        if not spoken_parentheses:
            return None, "bracketed annotation in transcript"
        text = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(re.sub(r"[\[\]()]", " ", text).split()))
    return text, None


def read_core_sounds_text(path: Path) -> dict[str, str]:
    """core-sounds-XX.txt(.gz): lines `name: text` (name may hold a sub-folder), ";" comments."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        table = {}
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            table[name.strip()] = text.strip()
    return table


def _core_sounds_texts(roots: list[Path], language: str) -> dict[str, str] | None:
    package = f"asterisk-core-sounds-{language}"
    root = find_package(roots, package)
    if root is None:
        return None
    doc = root / "usr/share/doc" / package
    for name in (f"core-sounds-{language}.txt.gz", f"core-sounds-{language}.txt"):
        if (doc / name).is_file():
            return read_core_sounds_text(doc / name)
    return None


# -- the packages ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AsteriskVoice:
    """An Asterisk prompt set: audio files named as the core sounds, whose transcripts come
    from asterisk-core-sounds-<language> (the text package of the same language)."""

    package: str
    folder: str            # under usr/share/asterisk/sounds
    suffix: str
    speaker: str
    language: str


ASTERISK_VOICES = (
    AsteriskVoice("asterisk-core-sounds-fr-g722", "fr_CA_f_June", ".g722", "asterisk-fr", "fr"),
    AsteriskVoice("asterisk-core-sounds-it-g722", "it_IT_m_Carlo", ".g722", "asterisk-it", "it"),
    AsteriskVoice("asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", ".g722", "asterisk-ru", "ru"),
    AsteriskVoice("asterisk-prompt-fr-armelle", "fr", ".gsm", "armelle-fr", "fr"),
    AsteriskVoice("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", ".wav", "menardi-it", "it"),
    # No transcript ships with es-co; the es (Mexican) core-sounds texts are for the same
    # prompt names. Where the Colombian wording differs the aligner rejects the clip.
    AsteriskVoice("asterisk-prompt-es-co", "es", ".gsm", "esco-es", "es"),
)
# Packages that only carry transcripts (for the docs and `make real-packages`).
TEXT_PACKAGES = tuple(f"asterisk-core-sounds-{lang}" for lang in ("fr", "it", "ru", "es"))
TUXPAINT = "tuxpaint-stamps-default"
AUDIO_PACKAGES = tuple(v.package for v in ASTERISK_VOICES) + (TUXPAINT,)


def _asterisk(roots: list[Path], voice: AsteriskVoice, cat: Catalogue) -> None:
    root = find_package(roots, voice.package)
    if root is None:
        return
    cat.packages[voice.package] = root
    folder = root / "usr/share/asterisk/sounds" / voice.folder
    texts = _core_sounds_texts(roots, voice.language)
    for path in _files(folder, voice.suffix):
        name = path.relative_to(folder).with_suffix("").as_posix()
        if texts is None:
            cat.skipped[(voice.speaker, f"no asterisk-core-sounds-{voice.language} transcript package")] += 1
            continue
        if name not in texts:
            cat.skipped[(voice.speaker, "no transcript entry")] += 1
            continue
        text, why = _clean(texts[name])
        if text is None:
            cat.skipped[(voice.speaker, why)] += 1
            continue
        cat.recordings.append(Recording(f"{voice.speaker}:{name}", voice.speaker, voice.language,
                                        voice.package, path, text))


_TUX_LINE = re.compile(r"^([a-z]{2,3})(_[A-Z]{2})?(@\w+)?\.utf8=(.*)$")
_TUX_DESC = re.compile(r"^(?P<name>.+)_desc(?:_(?P<lang>[a-z]{2,3})(?:_[A-Z]{2})?)?\.ogg$")


def read_tuxpaint_text(path: Path) -> dict[str, str]:
    """A stamp's NAME.txt: the first line is English, then `LL.utf8=text` / `LL_CC.utf8=text`.
    -> language -> text (a bare LL line wins over LL_CC)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    table: dict[str, str] = {}
    if lines and not _TUX_LINE.match(lines[0]):
        table["en"] = lines[0].strip()
    regional: dict[str, str] = {}
    for line in lines[1:]:
        m = _TUX_LINE.match(line)
        if not m or m.group(3):            # "@valencia" and such are other varieties
            continue
        (regional if m.group(2) else table).setdefault(m.group(1), m.group(4).strip())
    for lang, text in regional.items():
        table.setdefault(lang, text)
    return table


def _tuxpaint(roots: list[Path], cat: Catalogue) -> None:
    root = find_package(roots, TUXPAINT)
    if root is None:
        return
    cat.packages[TUXPAINT] = root
    folder = root / "usr/share/tuxpaint/stamps"
    for path in _files(folder, ".ogg"):
        if "_desc" not in path.name:
            continue                       # stamp sound effects and spoken names (no transcript)
        m = _TUX_DESC.match(path.name)
        if m is None:
            cat.skipped[("tuxpaint", "unrecognised file name")] += 1
            continue
        lang = m.group("lang") or "en"
        speaker = f"tuxpaint-{lang}"
        if lang not in LANGUAGES:
            cat.skipped[(speaker, "language without an aligner")] += 1
            continue
        txt = path.parent / f"{m.group('name')}.txt"
        if not txt.is_file():
            cat.skipped[(speaker, "no transcript file")] += 1
            continue
        text = read_tuxpaint_text(txt).get(lang)
        if not text:
            cat.skipped[(speaker, "no transcript entry")] += 1
            continue
        text, why = _clean(text, spoken_parentheses=True)
        if text is None:
            cat.skipped[(speaker, why)] += 1
            continue
        name = path.relative_to(folder).with_suffix("").as_posix()
        cat.recordings.append(Recording(f"{speaker}:{name}", speaker, lang, TUXPAINT, path, text))


def catalogue(roots: list[Path], languages: list[str] | tuple[str, ...] | None = None) -> Catalogue:
    """Every usable recording under `roots` (optionally only some languages), sorted by id."""
    expanded = expand_roots([Path(r) for r in roots])
    cat = Catalogue()
    for voice in ASTERISK_VOICES:
        _asterisk(expanded, voice, cat)
    _tuxpaint(expanded, cat)
    if languages is not None:
        wanted = set(languages)
        cat.recordings = [r for r in cat.recordings if r.language in wanted]
        cat.skipped = Counter({k: n for k, n in cat.skipped.items()
                               if k[0].rsplit("-", 1)[-1] in wanted})
    cat.recordings.sort(key=lambda r: r.id)
    return cat


# -- audio -----------------------------------------------------------------------------------

def _decode(path: Path) -> tuple[np.ndarray, int]:
    suffix = path.suffix.lower()
    if suffix == ".g722":
        import G722
        # 64 kbit/s G.722, 16 kHz linear output (the Asterisk g722 sounds).
        codec = G722.G722(16000, 64000, use_numpy=False)
        pcm = np.asarray(codec.decode(path.read_bytes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, 16000
    if suffix == ".gsm":
        # Raw GSM 06.10 frames at 8 kHz; sox decodes them.
        proc = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-c", "1", str(path),
                               "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"],
                              capture_output=True)
        if proc.returncode != 0:
            raise Wav2SemError(AUDIO_UNREADABLE, f"sox cannot decode {path}: "
                                                 f"{proc.stderr.decode(errors='replace').strip()}")
        return np.frombuffer(proc.stdout, dtype="<f4").copy(), 8000
    import soundfile as sf
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(sr)


def load_recording(rec: Recording | Path) -> np.ndarray:
    """A recording as 16 kHz mono float32 (resampled with soxr). -> (N,) float32"""
    path = rec.path if isinstance(rec, Recording) else Path(rec)
    try:
        audio, sr = _decode(path)
    except FileNotFoundError as exc:
        raise Wav2SemError(AUDIO_UNREADABLE, f"{path} is missing: {exc.strerror}.") from exc
    except (RuntimeError, OSError) as exc:       # soundfile's LibsndfileError is a RuntimeError
        raise Wav2SemError(AUDIO_UNREADABLE, f"Cannot read {path}: {exc}.") from exc
    if sr != SAMPLE_RATE:
        import soxr
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)
