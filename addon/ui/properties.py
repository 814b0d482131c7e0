"""The add-on's scene settings: one PropertyGroup at `Scene.wav2sem_lipsync`."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty

from ..core.protocol import ModelInfo

OUTPUT_MODES = (
    ("COMPACT", "Compact", "A small shape-key basis (at most 64 keys) with one weight curve each: "
                           "fast to play, small files"),
    ("PER_FRAME", "Per Frame", "One shape key per frame, keyed 0/1/0: exact but slow and large"),
)
AUDIO_SOURCES = (
    ("STRIP", "Sound Strip", "The active or selected sound strip in the Video Sequencer"),
    ("FILE", "File", "An audio file, placed at the current frame"),
)


class WAV2SEM_PG_subject(bpy.types.PropertyGroup):
    name: StringProperty()  # type: ignore[valid-type]


class WAV2SEM_PG_settings(bpy.types.PropertyGroup):
    audio_source: EnumProperty(name="Audio", items=AUDIO_SOURCES, default="STRIP")  # type: ignore[valid-type]
    audio_file: StringProperty(name="Audio File", subtype="FILE_PATH",  # type: ignore[valid-type]
                               description="Speech audio (wav, flac, ogg, mp3)")
    subject: StringProperty(name="Speaking Style",  # type: ignore[valid-type]
                            description="Speaking style (a training subject of the model); empty = model default")
    known_subjects: CollectionProperty(type=WAV2SEM_PG_subject)  # type: ignore[valid-type]
    # The last model's blendshape channels (empty for vertex models), for the Face Keys panel.
    known_channels: CollectionProperty(type=WAV2SEM_PG_subject)  # type: ignore[valid-type]
    intensity: FloatProperty(name="Intensity", default=1.0, min=0.0, soft_max=2.0, max=5.0,  # type: ignore[valid-type]
                             description="Scale of the mouth motion (1 = as the model predicts)")
    output_mode: EnumProperty(name="Output", items=OUTPUT_MODES, default="COMPACT")  # type: ignore[valid-type]
    # Progress of the running job (written by the modal operator, read by the panel).
    running: BoolProperty(default=False, options={"SKIP_SAVE"})  # type: ignore[valid-type]
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0,  # type: ignore[valid-type]
                            subtype="FACTOR", options={"SKIP_SAVE"})
    status: StringProperty(default="", options={"SKIP_SAVE"})  # type: ignore[valid-type]


classes = (WAV2SEM_PG_subject, WAV2SEM_PG_settings)


def settings(context: bpy.types.Context) -> WAV2SEM_PG_settings:
    return context.scene.wav2sem_lipsync  # type: ignore[attr-defined,no-any-return]


def remember_subjects(context: bpy.types.Context, info: ModelInfo | None) -> None:
    """Keep the model's speaking styles (for the panel's drop-down) and its channels."""
    if info is None:
        return
    for known, names in ((settings(context).known_subjects, info.subjects),
                         (settings(context).known_channels, info.channels)):
        if [s.name for s in known] != list(names):
            known.clear()
            for name in names:
                known.add().name = name


def known_channels(context: bpy.types.Context) -> tuple[str, ...]:
    return tuple(c.name for c in settings(context).known_channels)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.wav2sem_lipsync = PointerProperty(type=WAV2SEM_PG_settings)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Scene.wav2sem_lipsync  # type: ignore[attr-defined]
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
