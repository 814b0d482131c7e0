"""Recognising face shape keys by name: ARKit spellings, prefixes, sides, visemes."""
from __future__ import annotations

import pytest

from wav2sem_lipsync.core import face_keys as fk
from wav2sem.heads import SPEECH_CHANNELS, ict_arrays

CHANNELS = list(SPEECH_CHANNELS)


@pytest.mark.parametrize("name, source", [
    # ICT spelling and Apple's canonical spelling
    ("jawOpen", "jawOpen"), ("mouthPress_L", "mouthPress_L"), ("mouthPressLeft", "mouthPress_L"),
    ("mouthPressRight", "mouthPress_R"), ("eyeBlinkLeft", "eyeBlink_L"), ("browInnerUp", "browInnerUp"),
    ("browInnerUp_R", "browInnerUp_R"), ("cheekPuff", "cheekPuff"), ("tongueOut", "tongueOut"),
    ("noseSneerRight", "noseSneer_R"), ("mouthRollLower", "mouthRollLower"),
    # case and separators
    ("jawopen", "jawOpen"), ("JAWOPEN", "jawOpen"), ("JawOpen", "jawOpen"), ("jaw_open", "jawOpen"),
    ("Jaw Open", "jawOpen"), ("jaw-open", "jawOpen"), ("Mouth_Press_L", "mouthPress_L"),
    ("mouth-press.l", "mouthPress_L"), ("MOUTHPRESSLEFT", "mouthPress_L"), ("Mouth_Roll_Lower", "mouthRollLower"),
    ("EyeBlink_L", "eyeBlink_L"), ("eye_blink.R", "eyeBlink_R"),
    # side styles
    ("mouthSmile.L", "mouthSmile_L"), ("mouthSmile.R", "mouthSmile_R"), ("mouthSmile_l", "mouthSmile_L"),
    ("mouthSmile_r", "mouthSmile_R"), ("MouthSmileL", "mouthSmile_L"), ("L_mouthSmile", "mouthSmile_L"),
    ("R_mouthSmile", "mouthSmile_R"), ("Left_Mouth_Smile", "mouthSmile_L"), ("mouthLeftSmile", "mouthSmile_L"),
    ("mouth_Right_Smile", "mouthSmile_R"), ("mouthSmile Left", "mouthSmile_L"),
    # ARKit's own left/right channels are not sides
    ("mouthLeft", "mouthLeft"), ("mouth_left", "mouthLeft"), ("MouthRight", "mouthRight"),
    ("jawLeft", "jawLeft"), ("jaw_right", "jawRight"),
    # a side-less key of a sided base stands for both sides
    ("mouthSmile", "mouthSmile"), ("Mouth_Press", "mouthPress"),
    # exporter and rig prefixes
    ("blendShape1.jawOpen", "jawOpen"), ("blendShapes.mouthClose", "mouthClose"), ("BS.jawOpen", "jawOpen"),
    ("BS_jawOpen", "jawOpen"), ("ARKit_jawOpen", "jawOpen"), ("arkit.mouthFunnel", "mouthFunnel"),
    ("Face_jawOpen", "jawOpen"), ("Facial_mouthFunnel", "mouthFunnel"), ("CC_Base_Body.jawOpen", "jawOpen"),
    ("CC_Base_Body.mouthPressLeft", "mouthPress_L"), ("head_jawOpen", "jawOpen"), ("shapes.jawOpen", "jawOpen"),
    ("facs_bs_MouthClose", "mouthClose"), ("head:jawOpen", "jawOpen"), ("Genesis8Female|mouthPucker", "mouthPucker"),
    ("blendShape1.Mouth_Press_R", "mouthPress_R"), ("BS_L_mouthPress", "mouthPress_L"),
    # halves of side-less mouth channels; Character Creator 4 names
    ("mouthRollLower_L", "mouthRollLower_L"), ("MouthFunnelRight", "mouthFunnel_R"), ("mouthClose.L", "mouthClose_L"),
    ("Mouth_Roll_In_Lower_L", "mouthRollLower_L"), ("CC_Base_Body.Mouth_Roll_In_Upper_R", "mouthRollUpper_R"),
    ("Brow_Raise_Inner_L", "browInnerUp_L"), ("Brow_Raise_Outer_R", "browOuterUp_R"), ("Brow_Drop_L", "browDown_L"),
    ("Mouth_Up_Upper_R", "mouthUpperUp_R"), ("Mouth_Down_Lower_L", "mouthLowerDown_L"), ("Mouth_Close", "mouthClose"),
    ("Jaw_Open", "jawOpen"), ("Eye_Blink_L", "eyeBlink_L"), ("Mouth_Shrug_Lower", "mouthShrugLower"),
    # MetaHuman-style curve prefix
    ("CTRL_expressions_jawOpen", "jawOpen"),
    # visemes
    ("viseme_sil", "viseme_sil"), ("viseme_PP", "viseme_PP"), ("viseme_aa", "viseme_aa"), ("viseme_AA", "viseme_aa"),
    ("Viseme_pp", "viseme_PP"), ("viseme_kk", "viseme_kk"), ("viseme_E", "viseme_E"), ("viseme_ih", "viseme_I"),
    ("viseme_oh", "viseme_O"), ("viseme_ou", "viseme_U"), ("vrc.v_aa", "viseme_aa"), ("vrc.v_ch", "viseme_CH"),
    ("v_nn", "viseme_nn"), ("Wolf3D_Head.viseme_O", "viseme_O"),
    # VRM vowels with a prefix
    ("Fcl_MTH_A", "vrm_A"), ("Fcl_MTH_I", "vrm_I"), ("Fcl_MTH_U", "vrm_U"), ("Fcl_MTH_E", "vrm_E"),
    ("Fcl_MTH_O", "vrm_O"), ("MTH_E", "vrm_E"), ("vrm_A", "vrm_A"), ("VRM.oh", "vrm_O"),
])
def test_canonical_source(name, source):
    assert fk.canonical_source(name) == source


@pytest.mark.parametrize("name", [
    "", " ", "Basis", "Key 1", "Key 12", "smile", "blink", "open", "mouth", "jaw", "Smile_L", "Blink",
    "jawOpenCorrective", "jawOpen.001", "jawOpen_L", "jawOpen_mouthClose", "mouthClose_jawOpen",
    "jawOpen_corrective", "MouthOpen", "Fcl_MTH_Close", "Fcl_MTH_Joy", "Fcl_ALL_Angry", "PP", "aa", "A", "O",
    "viseme_xx", "vaa", "ve", "Vss", "eyes_closed", "jawOpen_R", "mouthLeft_L", "tongueOut_L", "Jaw_L", "Mouth_L", "random shape", "Expression.003", "mouthSmile_L_mouthSmile_R", "L", "Left",
])
def test_not_a_face_key(name):
    assert fk.canonical_source(name) is None
    assert fk.find_face_keys([name]) == []


def test_ict_set_is_recognised_as_itself():
    names = list(ict_arrays()["expression_names"].tolist())
    found = fk.find_face_keys(["Basis"] + names)
    assert [(b.key, b.source) for b in found] == [(n, n) for n in names]
    assert fk.character_kind(CHANNELS, found) == "full"
    assert fk.match_channels(CHANNELS, found) == {c: c for c in CHANNELS}
    assert fk.describe(CHANNELS, found) == f"All {len(CHANNELS)} channels on their own ARKit keys"


def test_apple_52_all_recognised_and_cover_the_speech_channels():
    assert len(fk.ARKIT_52) == 52
    found = fk.find_face_keys(list(fk.ARKIT_52))
    assert len(found) == 52
    assert len({b.source for b in found}) == 52
    direct = fk.match_channels(CHANNELS, found)
    # browInnerUp is one key for both sides in Apple's set
    assert set(CHANNELS) - set(direct) == {"browInnerUp_L", "browInnerUp_R"}
    keys = fk.channel_keys(CHANNELS, found)
    assert keys["browInnerUp_L"] == ["browInnerUp"] and keys["browInnerUp_R"] == ["browInnerUp"]
    assert keys["mouthPress_L"] == ["mouthPressLeft"]
    assert fk.character_kind(CHANNELS, found) == "full"
    assert fk.describe(CHANNELS, found) == ("All 23 channels on ARKit keys (21 on their own; "
                                            "browInnerUp_L, browInnerUp_R on browInnerUp)")


@pytest.mark.parametrize("style", [
    lambda n: n.lower(), lambda n: n.upper(), lambda n: "blendShape1." + n, lambda n: "CC_Base_Body." + n,
    lambda n: n.replace("_L", ".L").replace("_R", ".R"), lambda n: n.replace("_L", "Left").replace("_R", "Right"),
    lambda n: "BS_" + n[0].upper() + n[1:],
])
def test_renamed_ict_set_matches_every_channel(style):
    names = [style(n) for n in ict_arrays()["expression_names"].tolist()]
    found = fk.find_face_keys(["Basis", "Key 1"] + names)
    assert len(found) == 53
    direct = fk.match_channels(CHANNELS, found)
    assert set(direct) == set(CHANNELS)
    assert all(fk.canonical_source(key) == channel for channel, key in direct.items())
    assert fk.character_kind(CHANNELS, found) == "full"


def test_bare_vowels_need_a_set():
    assert [b.source for b in fk.find_face_keys(["Basis", "A", "I", "U", "E", "O"])] == list(fk.VRM_VOWELS)
    assert [b.source for b in fk.find_face_keys(["aa", "ih", "ou", "ee", "oh"])] == list(fk.VRM_VOWELS)
    assert [b.source for b in fk.find_face_keys(["あ", "い", "う", "え", "お", "まばたき"])] == list(fk.VRM_VOWELS)
    assert [b.source for b in fk.find_face_keys(["A", "I", "U"])] == ["vrm_A", "vrm_I", "vrm_U"]
    assert fk.find_face_keys(["Basis", "A", "O"]) == []           # two letters are not a vowel set
    assert fk.find_face_keys(["A", "B", "C", "D"]) == []


def test_oculus_set_is_a_viseme_character():
    found = fk.find_face_keys(["Basis"] + list(fk.OCULUS_VISEMES))
    assert [b.source for b in found] == list(fk.OCULUS_VISEMES)
    assert fk.character_kind(CHANNELS, found) == "visemes"
    assert fk.match_channels(CHANNELS, found) == {}
    assert fk.describe(CHANNELS, found) == ("Viseme keys only: the 23 channels solved onto 14 visemes "
                                            "(viseme_PP, viseme_FF, ..., viseme_U)")
    vowels = fk.find_face_keys(["A", "I", "U", "E", "O"])
    assert fk.describe(CHANNELS, vowels) == "Viseme keys only: the 23 channels solved onto 5 visemes (A, I, U, E, O)"
    assert "viseme_aa" in fk.channel_keys(CHANNELS, found)["jawOpen"]


def test_readyplayerme_drives_arkit_and_leaves_visemes():
    names = ["Basis"] + list(fk.ARKIT_52) + list(fk.OCULUS_VISEMES)
    found = fk.find_face_keys(names)
    selected = fk.select_bindings(CHANNELS, found)
    assert not any(fk.is_viseme(b.source) for b in selected)
    assert {b.key for b in selected} >= {"jawOpen", "mouthClose", "mouthPressLeft"}
    assert "eyeBlinkLeft" not in {b.key for b in selected}        # not a speech channel


def test_jaw_only_with_visemes_uses_both():
    found = fk.find_face_keys(["jawOpen", "viseme_aa", "viseme_PP"])
    assert [b.key for b in fk.select_bindings(CHANNELS, found)] == ["jawOpen", "viseme_aa", "viseme_PP"]
    assert fk.character_kind(CHANNELS, found) == "partial"


def test_partial_without_mouth_close():
    names = [c for c in CHANNELS if c != "mouthClose"]
    found = fk.find_face_keys(names)
    assert fk.character_kind(CHANNELS, found) == "partial"
    assert fk.describe(CHANNELS, found) == "22 of 23 channels on their own ARKit keys; mouthClose solved onto the other keys"


def test_partial_and_none_descriptions():
    found = fk.find_face_keys(["Basis", "jawOpen", "mouthFunnel", "Key 1"])
    assert fk.character_kind(CHANNELS, found) == "partial"
    text = fk.describe(CHANNELS, found)
    assert text.startswith("2 of 23 channels on their own ARKit keys") and "more solved onto the other keys" in text
    nothing = fk.find_face_keys(["Basis", "Key 1", "smile", "blink"])
    assert nothing == []
    assert fk.character_kind(CHANNELS, nothing) == "none"
    assert "No face keys" in fk.describe(CHANNELS, nothing)
    eyes = fk.find_face_keys(["eyeBlinkLeft", "eyeBlinkRight"])
    assert fk.character_kind(CHANNELS, eyes) == "none"
    assert fk.describe(CHANNELS, eyes).startswith("No keys for the model's channels: 2 ARKit keys (eyeBlinkLeft, eyeBlinkRight)")


def test_match_channels_prefers_the_exact_spelling():
    found = fk.find_face_keys(["BS.jawOpen", "jawOpen", "JawOpen"])
    assert fk.match_channels(CHANNELS, found) == {"jawOpen": "jawOpen"}
    found = fk.find_face_keys(["BS.jawOpen", "JawOpen"])
    assert fk.match_channels(CHANNELS, found) == {"jawOpen": "BS.jawOpen"}


def test_overrides():
    found = fk.find_face_keys(["jawOpen", "mouthClose", "LipsTogether"])
    out = fk.apply_overrides(found, {"mouthClose": "LipsTogether"})
    assert out == [fk.KeyBinding("jawOpen", "jawOpen"), fk.KeyBinding("LipsTogether", "mouthClose")]
    out = fk.apply_overrides(found, {"mouthClose": None})
    assert out == [fk.KeyBinding("jawOpen", "jawOpen")]
    out = fk.apply_overrides(found, {"jawOpen": "mouthClose"})     # a key moved to another channel
    assert out == [fk.KeyBinding("mouthClose", "jawOpen")]


@pytest.mark.parametrize("channel, group", [
    ("jawOpen", "jaw"), ("jawForward", "jaw"), ("tongueOut", "jaw"), ("mouthClose", "lips"),
    ("mouthPress_L", "lips"), ("mouthLeft", "lips"), ("browInnerUp_L", "upper_face"), ("eyeBlink_R", "upper_face"),
    ("cheekPuff", "upper_face"), ("noseSneer_L", "upper_face"), ("JawOpen", "jaw"), ("Mouth_Funnel", "lips"),
])
def test_group_of(channel, group):
    assert fk.group_of(channel) == group
    assert group in fk.GROUPS


def test_channels_of():
    assert fk.channels_of("browInnerUp") == ("browInnerUp_L", "browInnerUp_R")
    assert fk.channels_of("mouthPress_L") == ("mouthPress_L",)
    assert fk.channels_of("jawOpen") == ("jawOpen",)
    assert fk.channels_of("viseme_aa") == ()


def test_half_keys_cover_their_channel():
    found = fk.find_face_keys(["jawOpen", "mouthRollLower_L", "mouthRollLower_R"])
    assert fk.coverage("mouthRollLower_L", "mouthRollLower") == 0.5
    assert fk.channels_of("mouthRollLower_R") == ("mouthRollLower",)
    assert fk.channel_keys(CHANNELS, found)["mouthRollLower"] == ["mouthRollLower_L", "mouthRollLower_R"]
    assert fk.match_channels(CHANNELS, found) == {"jawOpen": "jawOpen"}
    assert "mouthRollLower on mouthRollLower_L + mouthRollLower_R" in fk.describe(CHANNELS, found)


def test_model_channels_in_apple_spelling():
    apple = [c.replace("_L", "Left").replace("_R", "Right") for c in CHANNELS if not c.startswith("browInner")]
    apple.append("browInnerUp")
    found = fk.find_face_keys(list(ict_arrays()["expression_names"].tolist()))
    direct = fk.match_channels(apple, found)
    assert direct["mouthPressLeft"] == "mouthPress_L"
    assert fk.channel_keys(apple, found)["browInnerUp"] == ["browInnerUp_L", "browInnerUp_R"]
    assert fk.coverage("browInnerUp_L", "browInnerUp") == 0.5
    assert fk.character_kind(apple, found) == "full"
