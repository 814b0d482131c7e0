"""Recognising a mesh's face shape keys: ARKit-named keys in the spellings exporters and rigs
use, and viseme sets (Oculus/ReadyPlayerMe/VRChat, VRM/VRoid/MMD vowels). No bpy; the
standard library, numpy and visemes.py (the viseme sets' ARKit weights), any thread.

Names. A *channel* is an ARKit blendshape in ICT FaceKit spelling, the spelling of the model's
`channels`: side-less ones as Apple writes them (`jawOpen`, `mouthClose`, `tongueOut`), sided
ones as base + `_L` / `_R` (`mouthPress_L`, `eyeBlink_R`, also `browInnerUp_L` and
`cheekPuff_L`, which ICT splits). `_L` is the character's left, as Apple's `...Left`.
A key's *source* (what the key stands for) is one of
  - a channel (`"mouthPress_L"`, `"jawOpen"`);
  - a sided base without side (`"browInnerUp"`, `"cheekPuff"`, and also `"mouthSmile"` for a
    rig that has one key for both sides): it stands for both `_L` and `_R` at once;
  - a half of a side-less mouth channel (`"mouthRollLower_L"`, `"mouthFunnel_R"`; SPLITTABLE):
    rigs that split them; taken as half the channel's displacement (coverage 0.5), so a
    pair of halves gets the channel's value on both;
  - a viseme id: Oculus `viseme_sil viseme_PP viseme_FF viseme_TH viseme_DD viseme_kk
    viseme_CH viseme_SS viseme_nn viseme_RR viseme_aa viseme_E viseme_I viseme_O viseme_U`
    or a VRM vowel `vrm_A vrm_I vrm_U vrm_E vrm_O` (see addon/visemes.py for their shapes).

Public API
    GROUPS = ("jaw", "lips", "upper_face")
    group_of(channel) -> str
        jaw*, tongue* -> "jaw"; mouth* -> "lips"; everything else (brow*, eye*, cheek*,
        nose*, unknown names) -> "upper_face". The tongue goes with the jaw: it is mouth
        interior that moves with the jaw, and upper_face's default strength is 0 (eyes and
        brows left alone), which must not silence a tongue.
    KeyBinding(key, source)                    frozen dataclass
    canonical_source(name) -> str | None       one key name -> its source (no set rules)
    find_face_keys(key_names) -> list[KeyBinding]
        every recognised key, in the order given; keys that mean nothing known are left out.
        Bare vowel names ("A", "aa", "あ", ...) count only when >= 3 of the 5 vowels of the
        same style are present (a VRM/MMD vowel set), so a key named "A" or "O" alone is not
        taken for a viseme.
    channels_of(source) -> tuple[str, ...]     the channels an ARKit source covers
                                               (() for visemes)
    coverage(source, channel) -> float         1.0 / 0.5 (half key, or an _L key of a
                                               side-less model channel) / 0.0
    covers(source, channel) -> bool            coverage > 0
    Model channels may be given in any spelling canonical_source knows (mouthPressLeft is
    mouthPress_L); ICT spelling is what the default model uses.
    is_viseme(source) -> bool
    select_bindings(channels, bindings) -> list[KeyBinding]
        the keys a take drives: ARKit keys covering at least one of `channels`; viseme keys
        too only when no ARKit key covers a lips (mouth*) channel (ReadyPlayerMe avatars carry
        both sets: their ARKit keys are driven and their visemes left alone).
    match_channels(channels, bindings) -> dict[str, str]
        channel -> key name for keys that stand for exactly that channel (first such key
        wins; a key spelt exactly as the channel is preferred).
    channel_keys(channels, bindings) -> dict[str, list[str]]
        channel -> every selected key whose target includes it (exact, side-less, viseme), for
        showing "which key each channel drives".
    character_kind(channels, bindings) -> "full" | "partial" | "visemes" | "none"
        full: every channel is on an ARKit key (its own, or a side-less one such as Apple's
        browInnerUp for both sides); partial: some ARKit key covers a channel; visemes: only
        viseme keys; none: nothing usable (refuse before inference).
    describe(channels, bindings) -> str        one line for the UI
    apply_overrides(bindings, overrides) -> list[KeyBinding]
        the user's choices, channel -> key name (or None / "" for "no key"): the named key
        now stands for exactly that channel (its old binding is replaced) and other keys bound
        to exactly that channel are dropped. A side-less key covering the channel is left;
        override it by its own name to change it.

Matching rules (case-insensitive; separators `_ - . space` ignored, so `Mouth_Press_L`,
`mouth-press.l`, `MOUTHPRESSLEFT` are all `mouthPress_L`):
  - side as a last token `L R Left Right` (`_L`, `.L`, `_l`, ` Left`), a first token
    (`L_mouthPress`, `Left_...`), a camel-case end (`mouthPressLeft`, `mouthPressL`), or
    `Left`/`Right` as a word anywhere (`mouthLeftSmile`). `mouthLeft`, `mouthRight`,
    `jawLeft`, `jawRight` are ARKit channels of their own and are matched first.
  - a prefix ending in `.`, `_`, `:` or `|` is stripped (`blendShape1.jawOpen`,
    `CC_Base_Body.jawOpen`, `BS_jawOpen`, `ARKit_`, `Face_`, `head:`, `facs_bs_`,
    MetaHuman's `CTRL_expressions_`, Maya's `Genesis8Female|`) when what
    remains is a known name and the prefix itself names no ARKit shape: `jawOpen_mouthClose`
    is a corrective combination, not mouthClose.
  - Character Creator 4 names that differ from ARKit's: `Brow_Raise_Inner_L`,
    `Brow_Raise_Outer_L`, `Brow_Drop_L`, `Mouth_Up_Upper_L`, `Mouth_Down_Lower_L`,
    `Mouth_Roll_In_Lower_L` / `_Upper_` (halves), ALIASES.
  - nothing is matched by a suffix: `jawOpenCorrective`, `jawOpen.001` are not jawOpen, and
    `jawOpen_L` is nothing (only the mouth channels of SPLITTABLE come in halves). Vague
    names (`Basis`, `Key 1`, `smile`, `blink`, `open`, `mouth`, `MouthOpen`) match nothing:
    whole-face expressions are not ARKit shapes; neither do VRoid's non-vowel mouth keys
    (`Fcl_MTH_Close`, `Fcl_MTH_Joy`).
  - visemes need their prefix: `viseme_aa`, `v_aa`, `vrc.v_aa`, and the OVR spellings
    `viseme_ih viseme_oh viseme_ou` for I O U; bare `PP`, `aa` ... are not Oculus visemes
    (bare `aa ih ou ee oh` are VRM 1.0 vowels, under the set rule above). VRM vowels:
    `Fcl_MTH_A`, `MTH_A`, `vrm_A`, `vrm.aa`, bare `A I U E O` / `aa ih ou ee oh` /
    `あ い う え お` (set rule).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .visemes import viseme_weights

GROUPS = ("jaw", "lips", "upper_face")

# Apple ARKit's channels that have no side.
UNSIDED = ("jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
           "mouthPucker", "mouthLeft", "mouthRight", "mouthRollLower", "mouthRollUpper",
           "mouthShrugLower", "mouthShrugUpper", "tongueOut")
# Bases that come as a left and a right channel (browInnerUp and cheekPuff are one channel
# each in ARKit and two in ICT; both are accepted).
SIDED_BASES = ("eyeBlink", "eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp", "eyeSquint",
               "eyeWide", "mouthSmile", "mouthFrown", "mouthDimple", "mouthStretch",
               "mouthPress", "mouthLowerDown", "mouthUpperUp", "browDown", "browInnerUp",
               "browOuterUp", "cheekSquint", "cheekPuff", "noseSneer")
# Side-less mouth channels some rigs split into a left and a right half (mouthRollLower_L):
# such a half key is taken as half the channel's displacement.
SPLITTABLE = ("mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
              "mouthShrugLower", "mouthShrugUpper")
# Character Creator 4 "Extended" profile names for ARKit shapes that it spells differently
# (Brow_Raise_Inner_L, Mouth_Roll_In_Lower_L, ...); its other names are ARKit's with
# separators (Jaw_Open, Mouth_Close, Mouth_Press_L, Eye_Blink_L) and need no alias.
ALIASES = {"browRaiseInner": "browInnerUp", "browRaiseOuter": "browOuterUp", "browDrop": "browDown",
           "mouthUpUpper": "mouthUpperUp", "mouthDownLower": "mouthLowerDown",
           "mouthRollInLower": "mouthRollLower", "mouthRollInUpper": "mouthRollUpper"}
# Apple's 52, in Apple spelling (for reference and tests).
ARKIT_52 = tuple(sorted(
    [n for n in UNSIDED]
    + [b + s for b in SIDED_BASES if b not in ("browInnerUp", "cheekPuff") for s in ("Left", "Right")]
    + ["browInnerUp", "cheekPuff"]))
# Every channel in ICT spelling.
ALL_CHANNELS = tuple(UNSIDED) + tuple(b + s for b in SIDED_BASES for s in ("_L", "_R"))

OCULUS_VISEMES = ("viseme_sil", "viseme_PP", "viseme_FF", "viseme_TH", "viseme_DD",
                  "viseme_kk", "viseme_CH", "viseme_SS", "viseme_nn", "viseme_RR",
                  "viseme_aa", "viseme_E", "viseme_I", "viseme_O", "viseme_U")
VRM_VOWELS = ("vrm_A", "vrm_I", "vrm_U", "vrm_E", "vrm_O")
VISEMES = OCULUS_VISEMES + VRM_VOWELS


@dataclass(frozen=True)
class KeyBinding:
    key: str      # the shape key's name on the mesh
    source: str   # a channel (ICT spelling), a side-less sided base, or a viseme id


def group_of(channel: str) -> str:
    """"jaw", "lips" or "upper_face" for a channel (any spelling canonical_source knows)."""
    name = canonical_source(channel) or channel
    low = name.lower()
    if low.startswith(("jaw", "tongue")):
        return "jaw"
    if low.startswith("mouth"):
        return "lips"
    return "upper_face"


def _norm(text: str) -> str:
    return _SEPARATORS.sub("", text).lower()


_SEPARATORS = re.compile(r"[\s_\-.]+")
_UNSIDED_BY_NORM = {_norm(n): n for n in UNSIDED}
_BASE_BY_NORM = {_norm(b): b for b in SIDED_BASES}
_SPLIT_BY_NORM = {_norm(n): n for n in SPLITTABLE}
for _alias, _name in ALIASES.items():
    (_BASE_BY_NORM if _name in SIDED_BASES else _SPLIT_BY_NORM)[_norm(_alias)] = _name
    if _name in UNSIDED:
        _UNSIDED_BY_NORM[_norm(_alias)] = _name
_SIDE_WORDS = {"l": "_L", "left": "_L", "r": "_R", "right": "_R"}
# Known shape words, to refuse a prefix that itself names a shape (corrective combinations).
_SHAPE_NORMS = tuple(sorted(set(_UNSIDED_BY_NORM) | set(_BASE_BY_NORM) | set(_SPLIT_BY_NORM), key=len, reverse=True))

_OCULUS_BY_NORM: dict[str, str] = {v[len("viseme_"):].lower(): v for v in OCULUS_VISEMES}
_OCULUS_BY_NORM.update({"ih": "viseme_I", "oh": "viseme_O", "ou": "viseme_U"})
_VISEME_PREFIX = re.compile(r"^(?:vrc[._\-\s]*)?(?:viseme[._\-\s]*|v[._\-\s]+)(?P<v>[A-Za-z]+)$", re.IGNORECASE)
_VRM_LETTER = {"a": "vrm_A", "i": "vrm_I", "u": "vrm_U", "e": "vrm_E", "o": "vrm_O"}
_VRM_TWO = {"aa": "vrm_A", "ih": "vrm_I", "ou": "vrm_U", "ee": "vrm_E", "oh": "vrm_O"}
_VRM_KANA = {"あ": "vrm_A", "い": "vrm_I", "う": "vrm_U", "え": "vrm_E", "お": "vrm_O"}
# Prefixed VRM vowels: VRoid's Fcl_MTH_A, MTH_A, vrm_A / vrm.aa / VRM_ih.
_VRM_PREFIXED = re.compile(r"^(?:fcl[._\-\s]*)?(?:mth|vrm)[._\-\s]*(?P<v>[A-Za-z]{1,2})$", re.IGNORECASE)
_PREFIX_END = re.compile(r"[._:|]")


def _words(name: str) -> list[str]:
    """Words of a name: split at separators and at camel-case humps (mouthPressLeft ->
    mouth Press Left; MOUTHPRESSLEFT stays one word)."""
    return [w for w in re.split(r"[\s_\-.]+|(?<=[a-z0-9])(?=[A-Z])", name) if w]


def _arkit(name: str) -> str | None:
    """A name with no outer prefix -> its ARKit source, or None."""
    words = _words(name)
    if not words:
        return None
    joined = "".join(words).lower()
    if joined in _UNSIDED_BY_NORM:
        return _UNSIDED_BY_NORM[joined]
    if joined in _BASE_BY_NORM:
        return _BASE_BY_NORM[joined]          # side-less form of a sided base
    # A side word: L/R first or last, Left/Right anywhere (mouthPress_L, L_mouthPress,
    # mouthPressLeft, mouthPressL, mouthLeftSmile).
    if len(words) > 1:
        for i, word in enumerate(words):
            side = _SIDE_WORDS.get(word.lower())
            if side is None or (len(word) == 1 and i not in (0, len(words) - 1)):
                continue
            rest = "".join(words[:i] + words[i + 1:]).lower()
            if rest in _BASE_BY_NORM:
                return _BASE_BY_NORM[rest] + side
            if rest in _SPLIT_BY_NORM:
                return _SPLIT_BY_NORM[rest] + side      # a half of a side-less mouth channel
    # Glued in one word: MOUTHPRESSLEFT, mouthpressright.
    for word, side in (("left", "_L"), ("right", "_R")):
        rest = joined[:-len(word)] if joined.endswith(word) else ""
        if rest in _BASE_BY_NORM:
            return _BASE_BY_NORM[rest] + side
        if rest in _SPLIT_BY_NORM:
            return _SPLIT_BY_NORM[rest] + side
    return None


def _viseme(name: str) -> str | None:
    """Prefixed viseme and vowel names (those that are safe alone)."""
    m = _VISEME_PREFIX.match(name.strip())
    if m:
        v = m.group("v").lower()
        if v in _OCULUS_BY_NORM:
            return _OCULUS_BY_NORM[v]
    m = _VRM_PREFIXED.match(name.strip())
    if m:
        v = m.group("v").lower()
        return _VRM_LETTER.get(v) or _VRM_TWO.get(v)
    return None


def _bare_vowel(name: str) -> tuple[str, str] | None:
    """(style, source) of a bare vowel name ("A", "aa", "あ"), or None."""
    text = name.strip()
    if text in _VRM_KANA:
        return "kana", _VRM_KANA[text]
    if len(text) == 1 and text.lower() in _VRM_LETTER:
        return "letter", _VRM_LETTER[text.lower()]
    if text.lower() in _VRM_TWO:
        return "two", _VRM_TWO[text.lower()]
    return None


def _names_a_shape(prefix: str) -> bool:
    low = _norm(prefix)
    return any(shape in low for shape in _SHAPE_NORMS) or _viseme(prefix.rstrip("._:|")) is not None


@lru_cache(maxsize=4096)
def canonical_source(name: str) -> str | None:
    """The source a single key name stands for (ARKit or prefixed viseme), or None.
    Bare vowels ("A", "aa", "あ") are not recognised here (they need the set rule of
    find_face_keys)."""
    if not name or not name.strip():
        return None
    text = name.strip()
    candidates = [text] + [text[m.end():] for m in _PREFIX_END.finditer(text)]
    for i, candidate in enumerate(candidates):
        if not candidate:
            continue
        if i > 0 and _names_a_shape(text[:len(text) - len(candidate)]):
            continue
        source = _arkit(candidate) or _viseme(candidate)
        if source is not None:
            return source
    return None


def find_face_keys(key_names: Sequence[str]) -> list[KeyBinding]:
    """Every key that stands for an ARKit shape or a viseme, in the order of key_names."""
    bare: dict[str, tuple[str, str]] = {}
    for name in key_names:
        vowel = _bare_vowel(name)
        if vowel is not None:
            bare[name] = vowel
    style_counts: dict[str, set[str]] = {}
    for style, vowel_source in bare.values():
        style_counts.setdefault(style, set()).add(vowel_source)
    full_styles = {style for style, sources in style_counts.items() if len(sources) >= 3}
    found = []
    for name in key_names:
        source: str | None = canonical_source(name)
        if source is None and name in bare and bare[name][0] in full_styles:
            source = bare[name][1]
        if source is not None:
            found.append(KeyBinding(name, source))
    return found


def is_viseme(source: str) -> bool:
    return source in VISEMES


HALVES = tuple(n + side for n in SPLITTABLE for side in ("_L", "_R"))


def channels_of(source: str) -> tuple[str, ...]:
    """The channels (ICT spelling) an ARKit source covers: one, both sides for a side-less
    sided base, the whole channel for a half (mouthRollLower_L); () for visemes and unknown
    sources."""
    if source in ALL_CHANNELS:
        return (source,)
    if source in SIDED_BASES:
        return (source + "_L", source + "_R")
    if source in HALVES:
        return (source[:-2],)
    return ()


@lru_cache(maxsize=4096)
def coverage(source: str, channel: str) -> float:
    """How much of a model channel (any spelling canonical_source knows) an ARKit source's
    key moves at value 1: 1.0, 0.5 for a half key (mouthRollLower_L of mouthRollLower), 0.0.
    A side-less model channel (Apple's browInnerUp) is covered by browInnerUp_L / _R keys
    too, 0.5 each."""
    channel = canonical_source(channel) or channel
    if channel in channels_of(source):
        return 0.5 if source in HALVES else 1.0
    if channel in SIDED_BASES and source in (channel + "_L", channel + "_R"):
        return 0.5
    if channel in SIDED_BASES and source == channel:
        return 1.0
    return 0.0


def covers(source: str, channel: str) -> bool:
    """Does an ARKit source's key move (part of) this model channel?"""
    return coverage(source, channel) > 0.0


def select_bindings(channels: Sequence[str], bindings: Sequence[KeyBinding]) -> list[KeyBinding]:
    """The keys a take drives (see module doc)."""
    arkit = [b for b in bindings if not is_viseme(b.source) and any(covers(b.source, c) for c in channels)]
    covers_lips = any(group_of(c) == "lips" and any(covers(b.source, c) for b in arkit) for c in channels)
    visemes = [] if covers_lips else [b for b in bindings if is_viseme(b.source)]
    chosen = {id(b) for b in arkit + visemes}
    return [b for b in bindings if id(b) in chosen]


def match_channels(channels: Sequence[str], bindings: Sequence[KeyBinding]) -> dict[str, str]:
    """channel -> key name, for keys that stand for exactly that channel."""
    out: dict[str, str] = {}
    for channel in channels:
        canonical = canonical_source(channel) or channel
        exact = [b.key for b in bindings if b.source == canonical]
        if exact:
            out[channel] = channel if channel in exact else exact[0]
    return out


def channel_keys(channels: Sequence[str], bindings: Sequence[KeyBinding]) -> dict[str, list[str]]:
    """channel -> every selected key whose target includes it (for the UI)."""
    selected = select_bindings(channels, bindings)
    out: dict[str, list[str]] = {c: [] for c in channels}
    for b in selected:
        if is_viseme(b.source):
            row = viseme_row(b.source, channels)
            for c, value in zip(channels, row):
                if value > 0:
                    out[c].append(b.key)
        else:
            for c in channels:
                if covers(b.source, c):
                    out[c].append(b.key)
    return out


def viseme_row(viseme_id: str, channels: Sequence[str]) -> np.ndarray:
    """The viseme key's ARKit weights over model channels in any spelling (K,) float64."""
    return viseme_weights(viseme_id, [canonical_source(c) or c for c in channels])


def character_kind(channels: Sequence[str], bindings: Sequence[KeyBinding]) -> str:
    """"full", "partial", "visemes" or "none" (see module doc)."""
    selected = select_bindings(channels, bindings)
    arkit = [b for b in selected if not is_viseme(b.source)]
    if channels and all(any(covers(b.source, c) for b in arkit) for c in channels):
        return "full"
    if arkit:
        return "partial"
    if selected:
        return "visemes"
    return "none"


def describe(channels: Sequence[str], bindings: Sequence[KeyBinding]) -> str:
    """One line for the UI, e.g. "21 of 23 channels on their own ARKit keys; mouthClose,
    jawForward solved onto the other keys"."""
    kind = character_kind(channels, bindings)
    selected = select_bindings(channels, bindings)
    direct = match_channels(channels, selected)
    k = len(channels)
    if kind == "none":
        if bindings:
            shown = ", ".join(b.key for b in bindings[:3]) + (", ..." if len(bindings) > 3 else "")
            return (f"No keys for the model's channels: {len(bindings)} ARKit keys ({shown}), none of them "
                    "for the jaw, mouth or brows, and no visemes")
        return ("No face keys: no ARKit-named shape keys (jawOpen, mouthClose, ...) and no "
                "visemes (viseme_aa, A/I/U/E/O, ...)")
    if kind == "visemes":
        names = [b.key for b in selected if b.source != "viseme_sil"]
        shown = ", ".join(names) if len(names) <= 5 else f"{names[0]}, {names[1]}, ..., {names[-1]}"
        return f"Viseme keys only: the {k} channels solved onto {len(names)} visemes ({shown})"
    covered = channel_keys(channels, bindings)
    missing = [c for c in channels if c not in direct]
    if kind == "full":
        if not missing:
            return f"All {k} channels on their own ARKit keys"
        shared = "; ".join(f"{', '.join(cs)} on {key}" for key, cs in _group_by_key(missing, covered).items())
        return f"All {k} channels on ARKit keys ({len(direct)} on their own; {shared})"
    solved = [c for c in missing if covered[c]]
    lost = [c for c in missing if not covered[c]]
    parts = [f"{len(direct)} of {k} channels on their own ARKit keys"]
    if solved:
        parts.append("; ".join(f"{', '.join(cs)} on {key}" for key, cs in _group_by_key(solved, covered).items()))
    if lost:
        shown = ", ".join(lost[:4]) + (f" and {len(lost) - 4} more" if len(lost) > 4 else "")
        parts.append(f"{shown} solved onto the other keys")
    if any(is_viseme(b.source) for b in selected):
        parts.append("with the visemes")
    return "; ".join(parts)


def _group_by_key(channels: Sequence[str], covered: Mapping[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in channels:
        out.setdefault(" + ".join(covered[c]), []).append(c)
    return out


def apply_overrides(bindings: Sequence[KeyBinding], overrides: Mapping[str, str | None]) -> list[KeyBinding]:
    """The bindings with the user's channel -> key choices applied (see module doc).
    Overrides naming a key that is not among `bindings` add it (the user knows best)."""
    out = list(bindings)
    for channel, key in overrides.items():
        out = [b for b in out if b.source != channel and (not key or b.key != key)]
        if key:
            out.append(KeyBinding(key, channel))
    order = {b.key: i for i, b in enumerate(bindings)}
    return sorted(out, key=lambda b: order.get(b.key, len(order)))
