"""Transcript -> words -> ARPAbet phones per word, for the languages of the recorded voices.

English words come from pocketsphinx's CMU dictionary (first pronunciation); every other
word, and English words the dictionary lacks, from espeak-ng's IPA output (one
`espeak-ng -v VOICE -q --ipa` call per transcript, one word per clause so that word
boundaries survive), mapped through IPA_TO_ARPABET.

Mapping of other languages' phones onto the rig's ARPAbet set (IPA_TO_ARPABET). The rig
only moves jaw and lips, so each IPA symbol goes to the ARPAbet phone whose mouth shape
is closest, not to the one that sounds closest:

- rounding decides first: front rounded /y/ -> UW and /ʏ/ -> UH (lips as for u), /ø/ -> UH,
  /œ ɶ/ -> AO (rounded, jaw mid-open), /ɥ/ -> W (French "huit": rounded glide);
- then jaw height: /i/ IY, /ɪ e ɛ/ IH EH EH (the rig's EY is a diphthong, /e/ is not),
  /a ɑ/ AA, /æ/ AE, /ɐ ʌ ɤ/ AH, /ə ɘ ɞ/ AX, /ɨ ɯ ᵻ/ IH (unrounded close), /ɔ ɒ/ AO,
  /o/ OW, /u/ UW, /ʊ/ UH, /ɜ ɚ ɝ/ ER;
- nasal vowels lose the nasal mark (/ɔ̃ ɑ̃ ɛ̃ œ̃/ -> AO AA EH AO): the velum is invisible;
- length, stress, tone, syllabicity, dental/laminal marks, aspiration and palatalisation
  (Russian /tʲ/ -> T) are dropped: they do not change the lips or jaw enough for the rig;
- consonants by place: bilabials P B M, /β/ (Spanish "lobo", lips almost closed) -> B,
  /ɸ/ -> F, labiodentals F V and /ʋ ɱ/ -> V M; dental fricatives /θ ð/ -> TH DH (Greek,
  Spanish); sibilants /s z/ S Z; the post-alveolar and alveolo-palatal/retroflex sibilants
  /ʃ ʒ ɕ ʑ ʂ ʐ/ -> SH ZH (lips protruded), /tʃ dʒ tɕ dʑ tʂ dʐ/ -> CH JH, /ts dz/ -> T S, D Z;
- every trill, tap and approximant r (/r ɾ ɹ ɻ/) -> R; uvular /ʁ ʀ χ/ and velar /x/,
  palatal /ç/ and /h ɦ/ -> HH (lip-neutral, the lips follow the neighbours); /ɣ ɰ/ -> G,
  palatal stops /c ɟ/ and uvular /q ɢ/ -> K G (tongue body only);
- /ɲ/ -> N Y, /ʎ/ -> L Y (a palatal contact is an alveolar one plus a palatal glide),
  /ŋ ɴ/ -> NG, /ɫ ɭ ʟ/ -> L, /j ʝ/ -> Y, /w ʍ/ -> W;
- the glottal stop /ʔ/ (Danish stød, which espeak-ng also writes "?") maps to nothing: it
  has no mouth shape.

A symbol that is not in the table is logged once and skipped; it never fails a transcript.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import unicodedata
from typing import Sequence

from ..errors import BAD_REQUEST, Wav2SemError
from ..synth.tts import TTS_UNAVAILABLE

log = logging.getLogger(__name__)

# Our language codes -> espeak-ng voice (each checked against `espeak-ng --voices`).
LANGUAGES: dict[str, str] = {
    "en": "en-us", "fr": "fr", "it": "it", "ru": "ru", "es": "es", "ca": "ca", "ro": "ro", "bg": "bg",
    "be": "be", "el": "el", "da": "da", "lt": "lt", "nl": "nl", "de": "de", "pt": "pt", "pl": "pl", "uk": "uk",
}

# IPA symbol (after the marks in _DROPPED are removed) -> rig ARPAbet phones; see the docstring.
IPA_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # vowels
    "i": ("IY",), "y": ("UW",), "ɪ": ("IH",), "ʏ": ("UH",), "e": ("EH",), "ø": ("UH",), "ɛ": ("EH",),
    "œ": ("AO",), "ɶ": ("AO",), "æ": ("AE",), "a": ("AA",), "ɑ": ("AA",), "ɐ": ("AH",), "ʌ": ("AH",),
    "ɤ": ("AH",), "ə": ("AX",), "ɘ": ("AX",), "ɞ": ("AX",), "ɵ": ("UH",), "ɨ": ("IH",), "ɯ": ("IH",),
    "ᵻ": ("IH",), "ʉ": ("UW",), "ɔ": ("AO",), "ɒ": ("AO",), "o": ("OW",), "u": ("UW",), "ʊ": ("UH",),
    "ɜ": ("ER",), "ɚ": ("ER",), "ɝ": ("ER",),
    # diphthongs the rig has as one phone
    "aɪ": ("AY",), "ai": ("AY",), "aʊ": ("AW",), "au": ("AW",), "eɪ": ("EY",), "ei": ("EY",), "ɛɪ": ("EY",),
    "oʊ": ("OW",), "əʊ": ("OW",), "ɔɪ": ("OY",), "oɪ": ("OY",), "ɔʏ": ("OY",),
    # labials
    "p": ("P",), "b": ("B",), "m": ("M",), "β": ("B",), "ɸ": ("F",), "f": ("F",), "v": ("V",),
    "ʋ": ("V",), "ɱ": ("M",), "w": ("W",), "ʍ": ("W",), "ɥ": ("W",),
    # dentals, alveolars
    "θ": ("TH",), "ð": ("DH",), "t": ("T",), "d": ("D",), "n": ("N",), "s": ("S",), "z": ("Z",),
    "l": ("L",), "ɫ": ("L",), "ɭ": ("L",), "ʟ": ("L",), "ɬ": ("L",), "r": ("R",), "ɾ": ("R",),
    "ɹ": ("R",), "ɻ": ("R",), "ɽ": ("R",), "ɳ": ("N",), "ʈ": ("T",), "ɖ": ("D",),
    "ts": ("T", "S"), "dz": ("D", "Z"),
    # post-alveolar, alveolo-palatal and retroflex sibilants (lips protruded)
    "ʃ": ("SH",), "ʒ": ("ZH",), "ɕ": ("SH",), "ʑ": ("ZH",), "ʂ": ("SH",), "ʐ": ("ZH",),
    "tʃ": ("CH",), "dʒ": ("JH",), "tɕ": ("CH",), "dʑ": ("JH",), "tʂ": ("CH",), "dʐ": ("JH",),
    "ʧ": ("CH",), "ʤ": ("JH",),
    # palatals, velars, uvulars, glottals
    "j": ("Y",), "ʝ": ("Y",), "ɲ": ("N", "Y"), "ʎ": ("L", "Y"), "c": ("K",), "ɟ": ("G",), "ç": ("HH",),
    "k": ("K",), "g": ("G",), "ɡ": ("G",), "ŋ": ("NG",), "x": ("HH",), "ɣ": ("G",), "ɰ": ("G",),
    "q": ("K",), "ɢ": ("G",), "ɴ": ("NG",), "χ": ("HH",), "ʁ": ("HH",), "ʀ": ("HH",),
    "h": ("HH",), "ɦ": ("HH",), "ʔ": (),
    # espeak-ng data quirks: Danish stød written "?", Danish ɛ written as Greek epsilon
    "?": (), "ε": ("EH",),
}
# Per-language exceptions: in American English espeak writes the flapped t/d ("water") as ɾ.
_LANGUAGE_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {"en": {"ɾ": ("D",)}}

# Marks with no lip or jaw consequence for the rig: stress, length, tone, syllabicity,
# non-syllabic, tie bars, dental/laminal/apical, voicing, aspiration, palatalisation,
# velarisation, labialisation, nasalisation, centralisation, raising/lowering, espeak's
# "-" (unstressed word joined to the next), and its "^" and "\"" markers, which are not phones.
_DROPPED = set("ˈˌːˑ‿͜͡-ʰʲʷˠˤ̩̯̪̻̺̥̤̞̝̟̠̘̙̹̜̊̃̈̆̍ʼ'^\"") | {"\u0303", "\u0329", "\u032f", "\u0361"}
_MAX_KEY = max(len(k) for k in IPA_TO_ARPABET)
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)")   # espeak's "(en)…(ru)"
_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|<[^>]*>|\*[^*]*\*")
# A word: letters/marks/digits, with inner apostrophes (don't, l'homme) or a decimal number.
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
_warned: set[str] = set()
_ESPEAK_TIMEOUT_S = 60


def words_of(text: str, language: str) -> list[str]:
    """Normalise a transcript to its spoken words: lower case, without punctuation and
    without bracketed non-speech ("[ascending tones]", "(ahooga)"). Digits stay as words
    (espeak-ng reads them out in the language)."""
    _voice(language)
    text = unicodedata.normalize("NFC", text)
    text = _BRACKETED.sub(" ", text)
    text = text.replace("-", " ").replace("_", " ")
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


def phonemize(words: Sequence[str], language: str) -> list[list[str]]:
    """Per word, its ARPAbet phones (rig symbols, no stress digits). A word whose symbols are
    all unmapped gets an empty list."""
    return [[arpabet for _, arpabet in word] for word in phonemize_symbols(words, language)]


def phonemize_symbols(words: Sequence[str], language: str) -> list[list[tuple[str, str]]]:
    """Per word, (own symbol, rig ARPAbet) pairs: the IPA symbol for espeak-ng words, the
    ARPAbet phone itself for CMU dictionary words. One IPA symbol can give two pairs (ɲ)."""
    voice = _voice(language)
    out: list[list[tuple[str, str]] | None] = [None] * len(words)
    if language == "en":
        cmu = _cmudict()
        for i, word in enumerate(words):
            if word in cmu:
                out[i] = [(p, p) for p in cmu[word]]
    missing = [i for i, pron in enumerate(out) if pron is None]
    if missing:
        ipa = _espeak_ipa([words[i] for i in missing], voice)
        for i, word_ipa in zip(missing, ipa):
            out[i] = ipa_to_arpabet(word_ipa, language)
    return [pron or [] for pron in out]


def ipa_to_arpabet(ipa: str, language: str = "") -> list[tuple[str, str]]:
    """One word's IPA string -> (IPA symbol, rig ARPAbet) pairs, longest table match first."""
    table = {**IPA_TO_ARPABET, **_LANGUAGE_OVERRIDES.get(language, {})}
    chars = [c for c in unicodedata.normalize("NFD", _LANGUAGE_SWITCH.sub("", ipa))
             if c not in _DROPPED and not c.isspace()]
    s = unicodedata.normalize("NFC", "".join(chars))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(s):
        for size in range(min(_MAX_KEY, len(s) - i), 0, -1):
            key = s[i:i + size]
            if key in table:
                out += [(key, arpabet) for arpabet in table[key]]
                i += size
                break
        else:
            symbol = s[i]
            if symbol not in _warned:
                log.warning("IPA symbol %r (U+%04X) has no rig phone; skipped", symbol, ord(symbol))
                _warned.add(symbol)
            i += 1
    return out


def _voice(language: str) -> str:
    try:
        return LANGUAGES[language]
    except KeyError:
        raise Wav2SemError(BAD_REQUEST, f"Unknown transcript language {language!r}; use one of "
                                              f"{', '.join(sorted(LANGUAGES))}.") from None


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict[str, tuple[str, ...]]:
    """pocketsphinx's CMU dictionary: word -> first pronunciation (alternates are "word(2)")."""
    import pocketsphinx

    path = pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")
    out: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.strip().partition(" ")
            if word and "(" not in word and word not in out:
                out[word] = tuple(p.rstrip("012") for p in phones.split() if p != "#")
    return out


def _espeak_ipa(words: Sequence[str], voice: str) -> list[str]:
    """IPA of each word: one espeak-ng call with the words as comma-separated clauses (each
    clause is one output line); per-word calls if the line count does not match."""
    lines = _run_espeak(", ".join(words), voice)
    if len(lines) == len(words):
        return lines
    log.debug("espeak-ng gave %d lines for %d words; phonemizing word by word", len(lines), len(words))
    return [" ".join(_run_espeak(word, voice)) for word in words]


def _run_espeak(text: str, voice: str) -> list[str]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise Wav2SemError(TTS_UNAVAILABLE, "espeak-ng is not installed, so transcripts cannot be turned into "
                                              "phones; install the Debian package espeak-ng.")
    # Input on stdin (no argument-length limit); stderr carries notices such as "Full
    # dictionary is not installed for 'be'" (it then spells by rule), which are harmless.
    proc = subprocess.run([exe, "-v", voice, "-q", "--ipa"], input=text, capture_output=True, text=True,
                          encoding="utf-8", timeout=_ESPEAK_TIMEOUT_S)
    if proc.returncode != 0:
        raise Wav2SemError(TTS_UNAVAILABLE, f"espeak-ng failed on the transcript (voice {voice}): "
                                              f"{proc.stderr.strip()[-200:] or 'no output'}.")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]
