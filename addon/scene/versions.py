"""Every Blender version difference the add-on cares about, in one place (3.4 ... 5.x).

- Animation: 3.x-4.3 keep F-curves in `action.fcurves`; 4.4+ have slotted (layered)
  actions whose F-curves live in a channel bag of a slot, and 5.0 removed `action.fcurves`.
- Sequencer: `sequences` / `sequences_all` became `strips` / `strips_all` (5.0).
- Render output: 5.0 chooses a movie with `image_settings.media_type = 'VIDEO'` before
  `file_format = 'FFMPEG'` (FFMPEG is no longer an image format).
Main thread only, like all bpy code.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import bpy

SLOTTED_ACTIONS = bpy.app.version >= (4, 4, 0)
EXTENSIONS = bpy.app.version >= (4, 2, 0)


# --- sequencer ---------------------------------------------------------------------------

def all_strips(scene: bpy.types.Scene) -> Iterable[Any]:
    editor = scene.sequence_editor
    if editor is None:
        return ()
    strips = getattr(editor, "strips_all", None)
    return strips if strips is not None else editor.sequences_all  # type: ignore[attr-defined]  # < 5.0


def sound_strips(scene: bpy.types.Scene) -> list[Any]:
    return [strip for strip in all_strips(scene) if strip.type == "SOUND" and strip.sound is not None]


def active_strip(scene: bpy.types.Scene) -> Any | None:
    editor = scene.sequence_editor
    return editor.active_strip if editor is not None else None


def sound_strip_path(strip: Any) -> str:
    """Absolute file path of a sound strip ('//relative' paths resolved, libraries too)."""
    sound = strip.sound
    return bpy.path.abspath(sound.filepath, library=sound.library)


# --- actions -----------------------------------------------------------------------------

def new_shape_key_action(name: str, key: bpy.types.Key) -> tuple[bpy.types.Action, Any, Any]:
    """A new Action for a shape-key datablock -> (action, slot or None, F-curve collection)."""
    action = bpy.data.actions.new(name)
    if SLOTTED_ACTIONS:
        from bpy_extras import anim_utils
        slot = action.slots.new(id_type="KEY", name=key.name)
        return action, slot, anim_utils.action_ensure_channelbag_for_slot(action, slot).fcurves
    action.id_root = "KEY"  # type: ignore[attr-defined]  # legacy actions (< 4.4)
    return action, None, action.fcurves  # type: ignore[attr-defined]


def action_fcurves(action: bpy.types.Action) -> list[Any]:
    """All F-curves of an action, whatever its kind."""
    if SLOTTED_ACTIONS and action.is_action_layered:
        curves: list[Any] = []
        for layer in action.layers:
            for strip in layer.strips:
                for bag in strip.channelbags:  # type: ignore[attr-defined]  # keyframe strips
                    curves.extend(bag.fcurves)
        return curves
    return list(action.fcurves)  # type: ignore[attr-defined]  # < 5.0


def strip_fcurves(strip: Any) -> Any:
    """The F-curve collection (new/remove) of an NLA strip's action: the channel bag of the
    strip's slot (4.4+), else the legacy `action.fcurves`."""
    action = strip.action
    if SLOTTED_ACTIONS and action.is_action_layered:
        from bpy_extras import anim_utils
        return anim_utils.action_ensure_channelbag_for_slot(action, strip.action_slot).fcurves
    return action.fcurves  # type: ignore[attr-defined]  # < 4.4


def add_nla_strip(track: Any, name: str, start: int, action: bpy.types.Action, slot: Any) -> Any:
    strip = track.strips.new(name, start, action)
    if slot is not None and getattr(strip, "action_slot", None) != slot:
        strip.action_slot = slot
    return strip


def new_nla_track(key: bpy.types.Key, name: str, start: int, action: bpy.types.Action,
                  slot: Any) -> tuple[Any, Any, bool]:
    """A new NLA track `name` on a shape-key datablock holding one strip of `action`.
    -> (track, strip, whether the animation data had to be created). If it fails, what it
    made is removed again."""
    animation = key.animation_data
    made = animation is None
    if animation is None:
        animation = key.animation_data_create()
    track = None
    try:
        track = animation.nla_tracks.new()
        track.name = name
        return track, add_nla_strip(track, name, start, action, slot), made
    except BaseException:
        if track is not None:
            animation.nla_tracks.remove(track)
        if made:
            key.animation_data_clear()
        raise


def user_data_dir(package: str, name: str) -> str:
    """A folder for the add-on's own data: the extension's user folder on 4.2+ (removed with
    the extension), else Blender's user datafiles folder."""
    if EXTENSIONS and package.startswith("bl_ext."):
        return str(bpy.utils.extension_path_user(package, path=name, create=False))
    return str(bpy.utils.user_resource("DATAFILES", path=os.path.join(package, name), create=False))


def addon_package(subpackage: str) -> str:
    """The name Blender registered the add-on under, from one of its sub-packages' names
    (`<add-on>.ui`): `wav2sem_lipsync` for the legacy install,
    `bl_ext.<repository>.wav2sem_lipsync` for a 4.2+ extension."""
    return subpackage.rpartition(".")[0]


def new_sound_strip(scene: bpy.types.Scene, name: str, path: str, frame: int) -> Any:
    """Add a sound strip on the first free channel above the others."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = _top_strips(editor)
    channel = max((s.channel for s in all_strips(scene)), default=0) + 1
    return strips.new_sound(name, path, channel, frame)


def remove_strip(scene: bpy.types.Scene, strip: Any) -> None:
    if scene.sequence_editor is not None:
        _top_strips(scene.sequence_editor).remove(strip)


def _top_strips(editor: Any) -> Any:
    """The editor's top-level strip collection: `strips` (5.0+) or `sequences`."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


# --- render output -----------------------------------------------------------------------

def set_movie_output(scene: bpy.types.Scene) -> None:
    """Render to an FFmpeg movie (the container and codecs are set by the caller)."""
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):                      # 5.0+
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"  # type: ignore[assignment]
