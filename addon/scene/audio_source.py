"""Which audio a take is made from: a named sound strip, a file, or the active or selected
strip; and the file the backend reads (a packed sound is written out first). Main thread."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from ..core.errors import UserError
from . import versions


@dataclass(frozen=True)
class AudioChoice:
    path: str
    frame_start: int
    strip_name: str = ""
    packed_sound: str = ""      # name of a packed Sound: its bytes go to a temporary file

    @property
    def label(self) -> str:
        """What the take is named after: the strip (unique in a scene), else the file."""
        return self.strip_name or Path(self.path).stem


def _from_strip(strip: Any) -> AudioChoice:
    path = versions.sound_strip_path(strip)
    if strip.sound.packed_file is not None:
        return AudioChoice(path, round(strip.frame_start), strip.name, strip.sound.name)
    if not os.path.isfile(path):
        raise UserError(f"The sound strip '{strip.name}' plays {path}, which does not exist; relink the sound.")
    return AudioChoice(path, round(strip.frame_start), strip.name)


def find_audio(scene: bpy.types.Scene, audio_path: str = "", strip_name: str = "") -> AudioChoice:
    """The sound strip named `strip_name`, else the file `audio_path` (at its strip's start
    if one plays it, else at the current frame), else the active or a selected strip."""
    strips = versions.sound_strips(scene)
    if strip_name:
        strip = next((s for s in strips if s.name == strip_name), None)
        if strip is None:
            raise UserError(f"There is no sound strip named '{strip_name}' in the scene '{scene.name}'.")
        return _from_strip(strip)
    if audio_path:
        path = os.path.abspath(bpy.path.abspath(audio_path))
        if not os.path.isfile(path):
            raise UserError(f"Audio file not found: {path}; choose an existing file.")
        for strip in strips:
            if os.path.abspath(versions.sound_strip_path(strip)) == path:
                return AudioChoice(path, round(strip.frame_start), strip.name)
        return AudioChoice(path, scene.frame_current)
    active = versions.active_strip(scene)
    chosen = active if active is not None and active in strips else None
    if chosen is None:
        selected = [s for s in strips if s.select]
        chosen = selected[0] if selected else (strips[0] if len(strips) == 1 else None)
    if chosen is None:
        raise UserError("No audio: select a sound strip in the Video Sequencer or choose an audio file.")
    return _from_strip(chosen)


def file_for_backend(audio: AudioChoice, folder: str) -> str:
    """The audio file the backend reads: the strip's file, or a packed sound written into `folder`."""
    if not audio.packed_sound:
        return audio.path
    sound = bpy.data.sounds.get(audio.packed_sound)
    if sound is None:
        raise UserError(f"The sound '{audio.packed_sound}' was removed from the file; add the sound strip again.")
    packed = sound.packed_file
    if packed is None:
        raise UserError(f"The sound '{audio.packed_sound}' is no longer packed; play it from a file.")
    path = os.path.join(folder, "sound" + (Path(audio.path).suffix or ".wav"))
    with open(path, "wb") as file:
        file.write(packed.data)
    return path
