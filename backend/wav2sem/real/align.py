"""Forced alignment of a transcript to recorded speech with pocketsphinx, in any language.

Every language is aligned with pocketsphinx's en-us acoustic model (cross-language forced
alignment): the transcript's words are added to the decoder's dictionary with their
`phonemize` pronunciations (the rig's ARPAbet, which is the model's CMU phone set plus
AX), the words are aligned with optional silence between them (pocketsphinx's align
search inserts optional <sil> and noise between words), and a second pass gives the phone
and state boundaries. One decoder per process, built on first use; not thread-safe.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import AUDIO_EMPTY, AUDIO_TOO_SHORT, BAD_REQUEST, INTERNAL, Wav2SemError
from ..synth.timing import PhoneSegment
from .phonemize import phonemize_symbols, words_of

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000           # the acoustic model's rate
FRAME_S = 0.01                # pocketsphinx's frame shift (100 frames per second)
MIN_DURATION_S = 0.1
# Speech energy: the loudest 20 ms frame must reach -50 dBFS; below that a clip is digital
# silence or hiss, and the aligner would only spread the phones over noise.
SILENCE_DBFS = -50.0
TRANSCRIPT_MISMATCH = "TRANSCRIPT_MISMATCH"

# Mismatch criterion: (1) no alignment path through the transcript fits the audio (the
# align search or the phone pass fails), or (2) the forced alignment's acoustic score per
# speech frame is below MISMATCH_SCORE_PER_FRAME. pocketsphinx scores each frame relative
# to that frame's best senone (AlignmentEntry.score), so 0 means the transcript costs
# nothing against free recognition. Measured by benchmarks/alignment_accuracy.py (2 shared
# cores; results/real_voices/alignment.md), per speech frame:
#   own transcript: espeak en (32 clips) median -32, worst -53, and 4 fast clips (190-215
#   wpm) with no path; festival en (12) median -14, worst -19; espeak fr/it/es/ru/el/nl (24)
#   median -38, worst -63;
#   another sentence's transcript: no path for 26/32, 4/12, 24/24; those that aligned scored
#   -34..-62 (espeak en), -49..-63 (festival);
#   half the words swapped: no path for 15/32, 0/12, 8/24; aligned ones -24..-60.
# The score ranges of matching and mismatched transcripts overlap across voices, so the
# threshold sits just below the worst matching clip (-63) and only catches gross
# mismatches; (1) does most of the work: 55/68 other-sentence mismatches, 23/68 half-swapped.
MISMATCH_SCORE_PER_FRAME = -65.0
# bestpath off: its lattice rescoring can hand the phone aligner a word boundary that leaves
# a phone one frame (pocketsphinx: "impossible duration ... consider disabling bestpath
# search"), and the second pass then fails. Batch cepstral mean normalisation (each clip is
# one utterance passed whole): live CMN carries the mean over from the previous clip, so a
# clip's alignment would depend on what was aligned before it.
# Beams much wider than pocketsphinx's defaults (1e-48/1e-48/7e-29): with the defaults a
# third of the Italian and a sixth of the Russian/Greek/Dutch espeak-ng clips found no path
# for their own transcript (the en-us model is far from those sounds); at 1e-100 all did.
_DECODER_ARGS = {"bestpath": False, "cmn": "batch", "beam": 1e-100, "pbeam": 1e-100, "wbeam": 1e-80}
_ALLPHONE = "allphone"
_ACOUSTIC = {"AX": "AH"}      # rig phone -> model phone where they differ
_FILLERS = ("<sil>", "<s>", "</s>", "[NOISE]", "[SPEECH]", "SIL")


class AlignmentError(Wav2SemError):
    """The transcript could not be aligned to the audio; the message says why and what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)

    def __reduce__(self):
        return (AlignmentError, (self.code, self.message))


_decoder = None


def decoder():
    """The process's pocketsphinx decoder: en-us model, no language model, empty dictionary
    (words are added per transcript), plus an allphone search (phone_baseline)."""
    global _decoder
    if _decoder is None:
        try:
            import pocketsphinx
        except ImportError as exc:
            raise AlignmentError(BAD_REQUEST, "pocketsphinx is not installed; install it with "
                                              "pip install 'pocketsphinx==5.1.1'.") from exc
        d = pocketsphinx.Decoder(hmm=pocketsphinx.get_model_path("en-us/en-us"), dict=None, lm=None,
                                 loglevel="FATAL", **_DECODER_ARGS)
        d.add_allphone_file(_ALLPHONE, pocketsphinx.get_model_path("en-us/en-us-phone.lm.bin"))
        _decoder = d
    return _decoder


def prepare_audio(audio: np.ndarray, sample_rate: int) -> tuple[bytes, float]:
    """Check a clip and turn it into the model's input: 16 kHz 16-bit PCM. -> (pcm, seconds)"""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    duration = len(audio) / sample_rate
    if duration < MIN_DURATION_S:
        raise AlignmentError(AUDIO_TOO_SHORT, f"The clip is {duration:.3f} s long; alignment needs at least "
                                              f"{MIN_DURATION_S} s of audio, so pass a longer recording.")
    if sample_rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    frame = SAMPLE_RATE // 50
    n = max(1, len(audio) // frame)
    rms = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, -1), dtype=np.float64), axis=1)) if len(audio) >= frame \
        else np.sqrt(np.mean(np.square(audio, dtype=np.float64)))[None]
    peak_db = 20 * np.log10(max(float(rms.max()), 1e-12))
    if not np.isfinite(audio).all() or peak_db < SILENCE_DBFS:
        raise AlignmentError(AUDIO_EMPTY, f"The clip holds no speech (loudest 20 ms at {peak_db:.0f} dBFS, "
                                          f"speech needs at least {SILENCE_DBFS:.0f} dBFS); check that the "
                                          "recording is the right file and not muted.")
    # Peak to half scale: 16-bit rounding then costs nothing even for quiet recordings (the
    # model normalises the level itself). A little fixed, seeded noise: pocketsphinx cannot
    # align through stretches of exact digital zeros (log energy of nothing), and a fixed seed
    # keeps the result a function of the audio alone.
    audio = audio * (0.5 / max(float(np.abs(audio).max()), 1e-9))
    audio = audio + np.random.default_rng(0).normal(0.0, 1e-4, len(audio)).astype(np.float32)
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16).tobytes()
    return pcm, duration


def align_transcript(audio: np.ndarray, text: str, language: str, sample_rate: int = SAMPLE_RATE) -> list[PhoneSegment]:
    """Phone segments of `text` spoken in `audio` (float32 mono), covering 0 .. duration
    without gaps: ("_", "SIL") for silence and pauses, else (IPA or ARPAbet symbol, rig
    ARPAbet class). Raises AlignmentError for an empty transcript, a clip under 0.1 s, a
    silent clip, or a transcript that does not match the audio."""
    segments, score = align_scored(audio, text, language, sample_rate)
    if score < MISMATCH_SCORE_PER_FRAME:
        raise _mismatch(text, f"its acoustic score is {score:.0f} per frame, below the {MISMATCH_SCORE_PER_FRAME:.0f} "
                              "that matching transcripts reach")
    return segments


def align_scored(audio: np.ndarray, text: str, language: str,
                 sample_rate: int = SAMPLE_RATE) -> tuple[list[PhoneSegment], float]:
    """`align_transcript` without the score check: (segments, acoustic score per speech
    frame). Still raises AlignmentError for the other cases, and for a transcript through
    which no alignment path fits the audio."""
    words = words_of(text, language)
    prons = [p for p in phonemize_symbols(words, language) if p]
    if not prons:
        raise AlignmentError(BAD_REQUEST, f"The transcript {text[:60]!r} has no speakable words after removing "
                                          "punctuation and bracketed non-speech; pass the words that are spoken.")
    pcm, duration = prepare_audio(audio, sample_rate)
    d = decoder()
    names = [_add_word(d, [_ACOUSTIC.get(a, a) for _, a in pron]) for pron in prons]
    d.set_align_text(" ".join(names))
    _decode(d, pcm)
    if d.hyp() is None:
        raise _mismatch(text, "no alignment path fits the audio")
    d.set_alignment()
    try:
        _decode(d, pcm)
    except RuntimeError:   # the phone-level pass found no path through the word alignment
        raise _mismatch(text, "no phone alignment fits the audio") from None
    alignment = d.get_alignment()
    if alignment is None:
        raise _mismatch(text, "no alignment path fits the audio")
    segments: list[PhoneSegment] = []
    speech_score = speech_frames = 0
    queue = iter(prons)
    for word in alignment.words():
        start, end = word.start * FRAME_S, (word.start + word.duration) * FRAME_S
        if word.name in _FILLERS or word.name.startswith(("<", "[")):
            segments.append(PhoneSegment("_", "SIL", start, end))
            continue
        pron = next(queue)
        phones = list(word)
        if len(phones) != len(pron):   # cannot happen: the dictionary entry is this pronunciation
            raise AlignmentError(INTERNAL, f"pocketsphinx returned {len(phones)} phones for a word of {len(pron)}.")
        for (symbol, arpabet), phone in zip(pron, phones):
            segments.append(PhoneSegment(symbol, arpabet, phone.start * FRAME_S,
                                         (phone.start + phone.duration) * FRAME_S))
            speech_score += phone.score
            speech_frames += phone.duration
    return tile(segments, duration), speech_score / max(speech_frames, 1)


def tile(segments: list[PhoneSegment], duration: float) -> list[PhoneSegment]:
    """Make segments cover 0 .. duration exactly: each starts where the previous ends,
    adjacent silences merge, the first starts at 0 and the last ends at `duration`."""
    out: list[PhoneSegment] = []
    for seg in sorted(segments, key=lambda s: s.start):
        start = out[-1].end if out else 0.0
        end = min(max(seg.end, start), duration)
        if end <= start:
            continue
        if out and seg.arpabet == "SIL" and out[-1].arpabet == "SIL":
            out[-1] = PhoneSegment("_", "SIL", out[-1].start, end)
        else:
            out.append(PhoneSegment(seg.symbol, seg.arpabet, start, end))
    if not out:
        return [PhoneSegment("_", "SIL", 0.0, duration)]
    last = out[-1]
    if duration - last.end > 2 * FRAME_S and last.arpabet != "SIL":
        out.append(PhoneSegment("_", "SIL", last.end, duration))
    else:
        out[-1] = PhoneSegment(last.symbol, last.arpabet, last.start, duration)
    return out


def _add_word(d, phones: list[str]) -> str:
    """A dictionary word for a pronunciation, named after it (so repeated words and
    transcripts reuse entries and the dictionary stays bounded)."""
    name = "~" + ".".join(p.lower() for p in phones)
    if d.lookup_word(name) is None:
        d.add_word(name, " ".join(phones), True)
    return name


def _decode(d, pcm: bytes) -> None:
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()


def _mismatch(text: str, why: str) -> AlignmentError:
    return AlignmentError(TRANSCRIPT_MISMATCH, f"The transcript {text[:60]!r} does not match the audio ({why}); "
                                               "check that the text is what is spoken in this clip and that the "
                                               "language is right.")


def boundary_errors(reference: list[PhoneSegment], hypothesis: list[PhoneSegment],
                    use_labels: bool = True) -> list[float]:
    """Start-time errors (seconds) of the hypothesis phones matched to reference phones.

    The two speech-phone sequences (pauses left out, see is_pause) are matched by edit distance:
    substitution costs 0 for the same ARPAbet class, 0.5 for two vowels, 1 otherwise (or 1
    for every pair when use_labels is False, e.g. when the reference symbols are another
    language's espeak-ng mnemonics), insertion and deletion 1. Each matched pair gives
    |start_ref - start_hyp|, and so does the end of the last matched pair."""
    from ..synth.phonemes import VOWELS

    ref = [s for s in reference if not is_pause(s)]
    hyp = [s for s in hypothesis if not is_pause(s)]
    if not ref or not hyp:
        return []

    def sub(a: PhoneSegment, b: PhoneSegment) -> float:
        if not use_labels:
            return 1.0
        if a.arpabet == b.arpabet:
            return 0.0
        return 0.5 if a.arpabet in VOWELS and b.arpabet in VOWELS else 1.0

    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + sub(ref[i - 1], hyp[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + sub(ref[i - 1], hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    errors = [abs(r.start - h.start) for r, h in pairs]
    if pairs:
        errors.append(abs(pairs[-1][0].end - pairs[-1][1].end))
    return errors


_PAUSES = frozenset({"pau", "h#", "brth", "#", "sil", "<sil>"})


def is_pause(segment: PhoneSegment) -> bool:
    """A pause by its symbol (espeak-ng "_", "_:", festival "pau", ours "_"), not by its
    ARPAbet class: the synthesiser's normaliser maps phones it does not know to SIL too."""
    return segment.arpabet == "SIL" and (segment.symbol[:1] in ("_", "|", ";", "")
                                         or segment.symbol.lower() in _PAUSES)
