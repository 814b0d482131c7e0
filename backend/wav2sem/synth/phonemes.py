"""English phonemes -> articulator targets, and the symbol sets of our TTS engines.

Every phoneme is normalised to ARPAbet (upper case, no stress digit, "SIL" for pauses).
Each ARPAbet phoneme has, per articulator, a target value in 0..1 and a dominance
(how strongly it imposes that target on its neighbours; see coarticulation.py).
Diphthongs are two targets in sequence (first and second half of the segment).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Articulators driven by phonemes (brow_raise is driven by prosody, see prosody.py).
SPEECH_ARTICULATORS = ("jaw_open", "lip_close", "lip_round", "lip_spread", "lower_lip_tuck", "upper_lip_raise")


@dataclass(frozen=True)
class Target:
    """Target articulator values and their dominance for one phoneme (or diphthong half)."""

    values: dict[str, float]
    dominance: dict[str, float]


def _t(jaw=0.0, close=0.0, round_=0.0, spread=0.0, tuck=0.0, raise_=0.0, dom=None) -> Target:
    values = {"jaw_open": jaw, "lip_close": close, "lip_round": round_, "lip_spread": spread,
              "lower_lip_tuck": tuck, "upper_lip_raise": raise_}
    # Default dominance: vowels set the jaw firmly and the lips moderately; anything
    # a phoneme does not care about gets low dominance so that context shows through.
    dominance = {name: 0.3 for name in SPEECH_ARTICULATORS}
    dominance.update(dom or {})
    return Target(values, dominance)


_VOWEL_DOM = {"jaw_open": 1.0, "lip_round": 0.8, "lip_spread": 0.8, "lip_close": 1.5, "lower_lip_tuck": 1.5}
_LOOSE = {name: 0.08 for name in SPEECH_ARTICULATORS}  # h, k, g: take everything from context
_LOOSE_LIPS = {"jaw_open": 0.5, "lip_close": 0.6, "lip_round": 0.1, "lip_spread": 0.1,
               "lower_lip_tuck": 0.6, "upper_lip_raise": 0.1}

VOWEL = "vowel"
PHONEMES: dict[str, tuple[Target, ...]] = {
    # monophthong vowels
    "AA": (_t(jaw=0.80, spread=0.10, dom=_VOWEL_DOM),),
    "AE": (_t(jaw=0.65, spread=0.45, dom=_VOWEL_DOM),),
    "AH": (_t(jaw=0.55, spread=0.10, dom=_VOWEL_DOM),),
    "AO": (_t(jaw=0.65, round_=0.55, dom=_VOWEL_DOM),),
    "AX": (_t(jaw=0.30, dom={**_VOWEL_DOM, "jaw_open": 0.5, "lip_round": 0.2, "lip_spread": 0.2}),),
    "EH": (_t(jaw=0.48, spread=0.45, dom=_VOWEL_DOM),),
    "ER": (_t(jaw=0.30, round_=0.40, dom=_VOWEL_DOM),),
    "IH": (_t(jaw=0.25, spread=0.55, dom=_VOWEL_DOM),),
    "IY": (_t(jaw=0.15, spread=0.80, dom=_VOWEL_DOM),),
    "UH": (_t(jaw=0.25, round_=0.60, dom=_VOWEL_DOM),),
    "UW": (_t(jaw=0.12, round_=0.95, dom={**_VOWEL_DOM, "lip_round": 2.0}),),
    # diphthongs: start and end targets
    "AW": (_t(jaw=0.75, spread=0.10, dom=_VOWEL_DOM), _t(jaw=0.25, round_=0.70, dom=_VOWEL_DOM)),
    "AY": (_t(jaw=0.75, spread=0.10, dom=_VOWEL_DOM), _t(jaw=0.20, spread=0.60, dom=_VOWEL_DOM)),
    "EY": (_t(jaw=0.45, spread=0.45, dom=_VOWEL_DOM), _t(jaw=0.18, spread=0.70, dom=_VOWEL_DOM)),
    "OW": (_t(jaw=0.55, round_=0.55, dom=_VOWEL_DOM), _t(jaw=0.20, round_=0.90, dom=_VOWEL_DOM)),
    "OY": (_t(jaw=0.55, round_=0.60, dom=_VOWEL_DOM), _t(jaw=0.20, spread=0.60, dom=_VOWEL_DOM)),
    # bilabials: lips closed and pressed (coarticulation.GESTURES guarantees the closure)
    "P": (_t(jaw=0.06, close=1.0, dom={"lip_close": 2.0, "jaw_open": 0.8, "lower_lip_tuck": 2.0}),),
    "B": (_t(jaw=0.06, close=1.0, dom={"lip_close": 2.0, "jaw_open": 0.8, "lower_lip_tuck": 2.0}),),
    "M": (_t(jaw=0.05, close=1.0, dom={"lip_close": 2.0, "jaw_open": 0.8, "lower_lip_tuck": 2.0}),),
    # labiodentals: lower lip tucked under the upper teeth (guaranteed by a gesture too)
    "F": (_t(jaw=0.12, tuck=1.0, raise_=0.35, dom={"lower_lip_tuck": 2.0, "jaw_open": 0.8, "lip_close": 2.0, "upper_lip_raise": 1.0}),),
    "V": (_t(jaw=0.12, tuck=1.0, raise_=0.35, dom={"lower_lip_tuck": 2.0, "jaw_open": 0.8, "lip_close": 2.0, "upper_lip_raise": 1.0}),),
    # dentals: tongue between the teeth, lips a little apart, not tucked
    "TH": (_t(jaw=0.22, spread=0.20, dom={**_LOOSE_LIPS, "jaw_open": 1.2, "lip_close": 3.0, "lower_lip_tuck": 3.0}),),
    "DH": (_t(jaw=0.20, spread=0.20, dom={**_LOOSE_LIPS, "jaw_open": 1.0, "lip_close": 3.0, "lower_lip_tuck": 3.0}),),
    # alveolars and velars: jaw fairly closed, lips from context
    "T": (_t(jaw=0.16, dom=_LOOSE_LIPS),),
    "D": (_t(jaw=0.16, dom=_LOOSE_LIPS),),
    "N": (_t(jaw=0.16, dom=_LOOSE_LIPS),),
    "L": (_t(jaw=0.25, dom=_LOOSE_LIPS),),
    "S": (_t(jaw=0.07, spread=0.45, dom={**_LOOSE_LIPS, "jaw_open": 1.5, "lip_spread": 0.6}),),
    "Z": (_t(jaw=0.07, spread=0.45, dom={**_LOOSE_LIPS, "jaw_open": 1.5, "lip_spread": 0.6}),),
    "K": (_t(jaw=0.22, dom=_LOOSE),),
    "G": (_t(jaw=0.22, dom=_LOOSE),),
    "NG": (_t(jaw=0.22, dom=_LOOSE),),
    "HH": (_t(jaw=0.35, dom=_LOOSE),),
    # post-alveolars: lips protruded and slightly flared
    "SH": (_t(jaw=0.12, round_=0.70, raise_=0.35, dom={**_LOOSE_LIPS, "jaw_open": 1.2, "lip_round": 2.5, "upper_lip_raise": 1.0}),),
    "ZH": (_t(jaw=0.12, round_=0.70, raise_=0.35, dom={**_LOOSE_LIPS, "jaw_open": 1.2, "lip_round": 2.5, "upper_lip_raise": 1.0}),),
    "CH": (_t(jaw=0.12, round_=0.65, raise_=0.30, dom={**_LOOSE_LIPS, "jaw_open": 1.2, "lip_round": 2.5, "upper_lip_raise": 1.0}),),
    "JH": (_t(jaw=0.12, round_=0.65, raise_=0.30, dom={**_LOOSE_LIPS, "jaw_open": 1.2, "lip_round": 2.5, "upper_lip_raise": 1.0}),),
    # approximants
    "R": (_t(jaw=0.20, round_=0.55, dom={**_LOOSE_LIPS, "lip_round": 1.5}),),
    "W": (_t(jaw=0.10, round_=1.00, dom={**_LOOSE_LIPS, "lip_round": 6.0, "jaw_open": 1.0}),),
    "Y": (_t(jaw=0.15, spread=0.50, dom={**_LOOSE_LIPS, "lip_spread": 1.0}),),
    # silence: relaxed rest pose (lips lightly together, jaw closed)
    "SIL": (_t(jaw=0.0, close=0.35, dom={"jaw_open": 0.6, "lip_close": 0.6, "lip_round": 0.4,
                                          "lip_spread": 0.4, "lower_lip_tuck": 0.4, "upper_lip_raise": 0.4}),),
}
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AX", "EH", "ER", "IH", "IY", "UH", "UW", "AW", "AY", "EY", "OW", "OY"})

# Viseme classes (for contact sheets and checks): name -> representative ARPAbet phonemes.
VISEMES: dict[str, tuple[str, ...]] = {
    "sil": ("SIL",), "PP (p b m)": ("P", "B", "M"), "FF (f v)": ("F", "V"), "TH": ("TH", "DH"),
    "DD (t d n l)": ("T", "D", "N", "L"), "kk (k g)": ("K", "G", "NG"), "CH (sh ch)": ("SH", "ZH", "CH", "JH"),
    "SS (s z)": ("S", "Z"), "RR (r)": ("R",), "W": ("W",), "aa (open)": ("AA", "AE", "AH"),
    "E": ("EH", "EY"), "I (spread)": ("IY", "IH", "Y"), "O": ("AO", "OW"), "U (round)": ("UW", "UH"),
}

# Festival "radio" phone set (kal, ked, slt): lower-case ARPAbet, plus a few extras.
_FESTIVAL_EXTRA = {"pau": "SIL", "h#": "SIL", "brth": "SIL", "#": "SIL", "ax": "AX", "axr": "ER", "dx": "D",
                   "el": "L", "em": "M", "en": "N", "nx": "N", "ix": "IH"}

# espeak-ng English phoneme mnemonics (phsource/ph_english*) -> ARPAbet.
_ESPEAK = {
    "a": "AE", "a#": "AX", "aa": "AA", "A:": "AA", "A@": "AA", "A": "AA", "0": "AA", "@": "AX", "@2": "AX",
    "@5": "AX", "@L": "L", "@r": "ER", "3": "ER", "3:": "ER", "V": "AH", "e": "EH", "E": "EH", "E2": "EH",
    "E3": "EH", "e@": "EH", "i": "IY", "i:": "IY", "i@": "IH", "i@3": "IH", "I": "IH", "I2": "IH",
    "I#": "IH", "0#": "AA", "O": "AO", "O:": "AO", "O@": "AO", "o@": "AO", "o": "OW", "u:": "UW", "u": "UW",
    "U": "UH", "U@": "UH", "u@": "UH", "aI": "AY", "aI@": "AY", "aI3": "AY", "aU": "AW", "aU@": "AW",
    "eI": "EY", "OI": "OY", "oU": "OW", "oU#": "OW", "@U": "OW",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V", "T": "TH", "D": "DH",
    "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "tS": "CH", "dZ": "JH", "m": "M", "n": "N",
    "N": "NG", "l": "L", "r": "R", "r-": "R", "w": "W", "j": "Y", "t#": "T", "d#": "D", "?": "T",
    "n-": "N", "m-": "M", "l/": "L", "l/2": "L", "x": "K", "C": "HH", "R": "R", "z#": "Z", "t2": "T",
    "d2": "D", "*": "D", "_": "SIL", "_:": "SIL", "_!": "SIL", "_|": "SIL", "||": "SIL", "|": "SIL",
    "_^_": "SIL", ";": "SIL",
}
_ARPABET = frozenset(PHONEMES)
_warned: set[str] = set()


def normalise(symbol: str, symbol_set: str) -> str:
    """Map an engine's phoneme symbol to ARPAbet ("SIL" for pauses).

    symbol_set: "arpabet" (CMUdict style, stress digits allowed), "festival" (radio
    phone set) or "espeak" (espeak-ng mnemonics). Unknown symbols map to "SIL" with a
    warning once (the motion then relaxes rather than guessing a shape).
    """
    if symbol_set == "espeak":
        s = symbol.strip().lstrip("'\",%=")
        mapped = _ESPEAK.get(s) or _ESPEAK.get(s.rstrip(";:")) or _ESPEAK.get(s[:2]) or _ESPEAK.get(s[:1])
    elif symbol_set in ("festival", "arpabet"):
        s = symbol.strip()
        mapped = _FESTIVAL_EXTRA.get(s.lower())
        if mapped is None:
            s = s.upper().rstrip("012")
            mapped = s if s in _ARPABET else None
    else:
        raise ValueError(f"unknown phoneme symbol set {symbol_set!r}")
    if mapped is None:
        if (symbol_set, symbol) not in _warned:
            log.warning("unknown %s phoneme %r treated as silence", symbol_set, symbol)
            _warned.add((symbol_set, symbol))  # type: ignore[arg-type]
        return "SIL"
    return mapped
