"""Driven inside a real Blender 3.4 window (under Xvfb) by test_fit_face_cli.py, against
tests/fake_fit_backend.py (its mode switched through a file): the Lip Sync panel offering Fit
Face for a head without face keys, a modal Fit Face with its progress, one-step undo / redo,
Esc and the Cancel button during a fit (nothing changes), and NO_FACE's guessed empties as
an undo step of their own.

Usage: blender --factory-startup --enable-event-simulate --python fit_gui_session.py -- MODE_FILE OUT.json
"""
import json
import sys
import traceback

import bpy

MODE_FILE, OUT = sys.argv[sys.argv.index("--") + 1:]
report: dict = {"errors": [], "draws": {"main": 0, "face": 0}, "ticks": 0, "shown": []}
steps = []


def view3d():
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return {"window": window, "area": area, "region": region, "screen": window.screen}


def step(function):
    steps.append(function)
    return function


def addon(name):
    return sys.modules[f"wav2sem_lipsync.{name}"]


def mode(name: str) -> None:
    with open(MODE_FILE, "w") as f:
        f.write(name)


def state():
    bpy.context.view_layer.update()          # new empties' matrices
    head = bpy.data.objects.get("Head")
    key = head.data.shape_keys if head is not None else None
    teeth = bpy.data.objects.get("LowerTeeth")
    teeth_key = teeth.data.shape_keys if teeth is not None else None
    empties = {o.name: [round(c, 5) for c in o.matrix_world.translation] for o in bpy.data.objects
               if o.name.startswith("W2S_")}
    return {"keys": [b.name for b in key.key_blocks] if key else None,
            "teeth_keys": [b.name for b in teeth_key.key_blocks] if teeth_key else None,
            "empties": empties}


def running() -> bool:
    return addon("core.runs").active("Fit Face") is not None


def counted(original, counter):
    def draw(self, context):
        try:
            original(self, context)
            report["draws"][counter] += 1
        except Exception:
            report["errors"].append(traceback.format_exc())
            raise
    return draw


def show_panels():
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.call_panel(name="WAV2SEM_PT_lipsync", keep_open=False)
        bpy.ops.wm.call_panel(name="WAV2SEM_PT_face_keys", keep_open=False)


def invoke(**kwargs):
    with bpy.context.temp_override(**view3d()):
        return sorted(bpy.ops.wav2sem.fit_face("INVOKE_DEFAULT", object="Head", **kwargs))


def fitting_started() -> bool:
    """True once the running fit has reported progress; True (an error recorded) if none runs."""
    run = addon("core.runs").active("Fit Face")
    if run is None:
        report["errors"].append("the fit ended before it could be cancelled")
        return True
    return run.job.fraction > 0


@step
def setup():
    mode("ok")
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    with bpy.context.temp_override(**view3d()):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1, location=(0.0, 0.0, 1.6))
        head = bpy.context.active_object
        head.name = "Head"
        bpy.ops.mesh.primitive_cube_add(size=0.03, location=(0.0, -0.06, 1.55))
        teeth = bpy.context.active_object
        teeth.name = "LowerTeeth"
    teeth.parent = head
    teeth.matrix_parent_inverse = head.matrix_world.inverted()
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    for panel, counter in ((addon("ui.panels").WAV2SEM_PT_lipsync, "main"), (addon("ui.face_panel").WAV2SEM_PT_face_keys, "face")):
        panel.draw = counted(panel.draw, counter)
    operator = addon("ops.fit_face").WAV2SEM_OT_fit_face
    show = operator._show_progress

    def recording(self, context, fraction, message):
        report["shown"].append(round(fraction, 3))
        show(self, context, fraction, message)
    operator._show_progress = recording
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo_push(message="set-up")
    report["poll"] = bpy.ops.wav2sem.fit_face.poll()
    show_panels()
    report["before"] = state()
    return True


@step
def panels_drawn():
    report["ticks"] += 1
    return min(report["draws"].values()) > 0 or report["ticks"] > 50


@step
def start_fit():
    report["invoke"] = invoke()
    return True


@step
def wait_fit():
    if running():
        return False
    report["after_fit"] = state()
    report["first_shown"] = list(report["shown"])
    report["draws_before_refresh"] = dict(report["draws"])
    show_panels()                    # the panels with the fitted keys and the empties
    report["ticks"] = 0
    return True


@step
def panels_drawn_again():
    report["ticks"] += 1
    return report["draws"]["face"] > report["draws_before_refresh"]["face"] or report["ticks"] > 50


@step
def undo_and_redo():
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
        report["after_undo"] = state()
        bpy.ops.ed.redo()
        report["after_redo"] = state()
    return True


@step
def start_slow_for_esc():
    mode("slow")
    report["invoke_slow"] = invoke(use_existing_landmarks=True)
    return True


@step
def press_esc():
    if not fitting_started():
        return False
    report["running_before_esc"] = running()
    window = bpy.context.window_manager.windows[0]
    window.event_simulate(type="ESC", value="PRESS")
    window.event_simulate(type="ESC", value="RELEASE")
    return True


@step
def wait_esc():
    if running():
        return False
    report["after_esc"] = state()
    return True


@step
def start_slow_for_button():
    invoke()
    return True


@step
def press_cancel_button():
    if not fitting_started():
        return False
    with bpy.context.temp_override(**view3d()):
        report["cancel_poll"] = bpy.ops.wav2sem.cancel_fit_face.poll()
        bpy.ops.wav2sem.cancel_fit_face()
    return True


@step
def wait_button():
    if running():
        return False
    report["after_button"] = state()
    return True


@step
def no_face():
    mode("no_face")
    bpy.data.objects["W2S_chin"].location.x += 0.5      # so the guess visibly moves it back
    bpy.context.view_layer.update()
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo_push(message="moved the chin")
    report["before_no_face"] = state()
    invoke()
    return True


@step
def wait_no_face():
    if running():
        return False
    report["after_no_face"] = state()
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    report["after_no_face_undo"] = state()
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
