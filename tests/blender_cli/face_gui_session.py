"""Driven inside a real Blender 3.4 window (under Xvfb) by test_face_keys_cli.py: the Lip Sync
sidebar with the Face Keys panel drawn for the ICT head, a modal Generate onto its own keys,
and one-step undo / redo of that take (the stored match included).

Usage: blender ict.blend --enable-event-simulate --python face_gui_session.py -- AUDIO OUT.json
"""
import json
import sys
import traceback

import bpy

AUDIO, OUT = sys.argv[sys.argv.index("--") + 1:]
report: dict = {"errors": [], "panel_draws": 0, "rows_drawn": 0, "ticks": 0}
steps = []


def view3d():
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return {"window": window, "area": area, "region": region, "screen": window.screen}


def step(function):
    steps.append(function)
    return function


def state():
    head = bpy.data.objects["Head"]
    key = head.data.shape_keys
    tracks = [t.name for t in key.animation_data.nla_tracks] if key.animation_data else []
    return {"keys": [b.name for b in key.key_blocks], "tracks": tracks,
            "actions": sorted(a.name for a in bpy.data.actions if a.users),
            "rows": len(head.wav2sem_face.rows)}


def counted(original, counter):
    """Blender passes a draw function as many arguments as it names: keep the signatures."""
    def run(*args):
        try:
            original(*args)
            report[counter] += 1
        except Exception:
            report["errors"].append(traceback.format_exc())
            raise

    if counter == "panel_draws":
        def draw(self, context):
            run(self, context)
        return draw

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        run(self, context, layout, data, item, icon, active_data, active_property, index, flt_flag)
    return draw_item


def show_face_keys_panel():
    """The Face Keys panel as a popover (whatever sidebar tab is open): its draw() runs."""
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.call_panel(name="WAV2SEM_PT_face_keys", keep_open=False)


@step
def open_sidebar():
    head = bpy.data.objects["Head"]
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    settings = bpy.context.scene.wav2sem_lipsync
    settings.audio_source, settings.audio_file = "FILE", AUDIO       # what the panel's File choice sets
    module = sys.modules["wav2sem_lipsync.ui.face_panel"]
    module.WAV2SEM_PT_face_keys.draw = counted(module.WAV2SEM_PT_face_keys.draw, "panel_draws")
    module.WAV2SEM_UL_face_rows.draw_item = counted(module.WAV2SEM_UL_face_rows.draw_item, "rows_drawn")
    area = view3d()["area"]
    area.spaces[0].show_region_ui = True
    sidebar = next(r for r in area.regions if r.type == "UI")
    if hasattr(sidebar, "active_panel_category"):       # 4.x+; 3.4 opens the tab it saved
        sidebar.active_panel_category = "Lip Sync"
    area.tag_redraw()
    show_face_keys_panel()
    report["before"] = state()
    return True


@step
def panel_drawn():
    report["ticks"] += 1
    return report["panel_draws"] > 0 or report["ticks"] > 50


@step
def start_generate():
    with bpy.context.temp_override(**view3d()):
        report["invoke"] = sorted(bpy.ops.wav2sem.generate_lipsync("INVOKE_DEFAULT", object="Head",
                                                                   audio_path=AUDIO))
    return True


@step
def wait_generate():
    if bpy.context.scene.wav2sem_lipsync.running:
        return False
    report["after_generate"] = state()
    view3d()["area"].tag_redraw()
    show_face_keys_panel()
    report["ticks"] = 0
    return True


@step
def rows_drawn():
    report["ticks"] += 1
    return report["rows_drawn"] > 0 or report["ticks"] > 50


@step
def undo_and_redo():
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
        report["after_undo"] = state()
        bpy.ops.ed.redo()
        report["after_redo"] = state()
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
