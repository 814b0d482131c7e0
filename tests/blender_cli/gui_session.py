"""Driven inside a real Blender window (under Xvfb) by test_gui.py: the prewarm run by
Blender's event loop, the modal operator, its progress, Esc, the Cancel button, the panel's
disabled-button reason, and undo.

The cancels use a 300 s clip (the tiny test model decodes it for several seconds even on an
idle machine); they happen at the first progress of decoding. A generation that ends before
it could be cancelled is recorded as an error (the test fails at once, it does not wait).

Usage: blender scene.blend --enable-event-simulate --python gui_session.py -- AUDIO LONG_AUDIO OUT.json
"""
import json
import sys
import traceback

import bpy

AUDIO, LONG_AUDIO, OUT = sys.argv[sys.argv.index("--") + 1:]
DECODING = 0.3   # overall progress once the backend decodes (client.STAGE_SPANS)
report: dict = {"shown": [], "errors": []}
steps = []


def view3d():
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return {"window": window, "area": area, "region": region, "screen": window.screen}


def op_call(op, *args, **kwargs):
    with bpy.context.temp_override(**view3d()):
        return op(*args, **kwargs)


def key_state():
    key = bpy.data.objects["Head"].data.shape_keys
    return None if key is None else [b.name for b in key.key_blocks]


def step(function):
    steps.append(function)
    return function


def decoding(label: str) -> bool:
    """True once the running generation decodes; also True (with an error recorded) when it
    ended before that, so the session goes on instead of waiting for ever."""
    settings = bpy.context.scene.wav2sem_lipsync
    if not settings.running:
        report["errors"].append(f"{label}: the generation ended before it could be cancelled")
        return True
    return settings.progress > DECODING


def ended(key: str) -> bool:
    """False while a generation runs; then records the shape keys under `key`."""
    if bpy.context.scene.wav2sem_lipsync.running:
        return False
    report[key] = key_state()
    return True


def start_long() -> bool:
    op_call(bpy.ops.wav2sem.generate_lipsync, "INVOKE_DEFAULT", object="Head", audio_path=LONG_AUDIO)
    return True


@step
def check_disabled_reason():
    head = bpy.data.objects["Head"]
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    ok = op_call(bpy.ops.wav2sem.generate_lipsync.poll)
    availability = sys.modules["wav2sem_lipsync.ui.availability"]
    report["no_audio_poll"] = ok
    with bpy.context.temp_override(**view3d()):
        report["no_audio_reason"] = availability.why_cannot_generate(bpy.context)
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    editor.active_strip = editor.sequences.new_sound("line", AUDIO, 1, 5)
    report["with_audio_poll"] = op_call(bpy.ops.wav2sem.generate_lipsync.poll)
    return True


def record_shown_progress():
    """Record every fraction the operator puts on screen: sampling the scene's progress from
    a timer misses them all when a short clip finishes between two samples."""
    operator = sys.modules["wav2sem_lipsync.ops.generate"].WAV2SEM_OT_generate_lipsync
    show = operator._show_progress

    def recording(self, context, fraction, message):
        report["shown"].append(round(fraction, 3))
        show(self, context, fraction, message)

    operator._show_progress = recording


@step
def prewarm_from_the_panel():
    """The user opens the 3D View's sidebar with the head active: the prewarm's watcher and
    then its timer run in Blender's own event loop (the bpy-module tests can only call them by
    hand); nothing here calls the prewarm."""
    bpy.context.scene.wav2sem_lipsync.known_subjects.clear()
    view3d()["area"].spaces.active.show_region_ui = True
    return True


@step
def wait_prewarm():
    prewarm = sys.modules["wav2sem_lipsync.ui.prewarm"]
    backend = sys.modules["wav2sem_lipsync.core.client"].POOL.backend
    if prewarm.running() or (prewarm.last_error is None and (backend is None or not backend.greeted)):
        return False
    backend = sys.modules["wav2sem_lipsync.core.client"].POOL.backend
    report["prewarm_error"] = None if prewarm.last_error is None else str(prewarm.last_error)
    report["prewarm_pid"] = backend.pid if backend is not None and backend.alive and backend.greeted else None
    report["styles_after_prewarm"] = [s.name for s in bpy.context.scene.wav2sem_lipsync.known_subjects]
    return True


@step
def start_generate():
    record_shown_progress()
    report["before"] = key_state()
    report["invoke"] = sorted(op_call(bpy.ops.wav2sem.generate_lipsync, "INVOKE_DEFAULT", object="Head"))
    return True


@step
def wait_generate():
    if not ended("after_generate"):
        return False
    report["first_shown"] = list(report["shown"])
    report["actions"] = [a.name for a in bpy.data.actions]
    backend = sys.modules["wav2sem_lipsync.core.client"].POOL.backend
    report["generate_pid"] = backend.pid if backend is not None else None
    return True


@step
def undo_take():
    op_call(bpy.ops.ed.undo)
    report["after_undo"] = key_state()
    report["actions_after_undo"] = [a.name for a in bpy.data.actions if a.users]
    op_call(bpy.ops.ed.redo)
    report["after_redo"] = key_state()
    return True


@step
def start_long_for_esc():
    report["before_cancel"] = key_state()
    op_call(bpy.ops.wav2sem.generate_lipsync, "INVOKE_DEFAULT", object="Head", audio_path=LONG_AUDIO,
            output_mode="PER_FRAME")
    return True


@step
def check_while_decoding():
    """Check during a running take: must return at once (modal) and leave the take alone."""
    import time
    if not decoding("Check"):
        return False
    started = time.monotonic()
    report["check_invoke"] = sorted(op_call(bpy.ops.wav2sem.check_backend, "INVOKE_DEFAULT"))
    report["check_invoke_s"] = time.monotonic() - started
    report["running_after_check"] = bpy.context.scene.wav2sem_lipsync.running
    return True


@step
def press_esc_when_running():
    settings = bpy.context.scene.wav2sem_lipsync
    if not decoding("Esc"):
        return False
    report["esc_running"] = settings.running
    window = bpy.context.window_manager.windows[0]
    window.event_simulate(type="ESC", value="PRESS")
    window.event_simulate(type="ESC", value="RELEASE")
    return True


@step
def wait_esc():
    return ended("after_esc")


@step
def wait_check():
    """The Check queued behind the cancelled take ends and reports the model."""
    if sys.modules["wav2sem_lipsync.core.runs"].active("Check") is not None:
        return False
    report["check_status"] = bpy.context.preferences.addons["wav2sem_lipsync"].preferences.status
    return True


@step
def start_long_for_button():
    return start_long()


@step
def press_cancel_button_when_running():
    if not decoding("Cancel button"):
        return False
    report["cancel_poll"] = op_call(bpy.ops.wav2sem.cancel_lipsync.poll)
    op_call(bpy.ops.wav2sem.cancel_lipsync)
    return True


@step
def wait_button():
    return ended("after_button")


@step
def start_long_then_load_a_file():
    return start_long()


@step
def load_file_when_running():
    if not decoding("file load"):
        return False
    bpy.ops.wm.read_homefile()          # ends the modal operator: Blender calls its cancel()
    return True


@step
def after_file_load():
    operators = sys.modules["wav2sem_lipsync.core.runs"]
    report["active_after_load"] = len(operators._ACTIVE)
    report["running_after_load"] = bpy.context.scene.wav2sem_lipsync.running
    return True


def tick():
    try:
        while steps and steps[0]():
            steps.pop(0)
        if steps:
            return 0.1
    except Exception:
        report["errors"].append(traceback.format_exc())
    with open(OUT, "w") as f:
        json.dump(report, f)
    bpy.ops.wm.quit_blender()
    return None


bpy.app.timers.register(tick, first_interval=1.0)
