"""Starting the backend before the first click (addon/prewarm.py) in Blender 5.0 (bpy module)
with the real backend: the watcher (a sidebar open on a mesh) schedules one start, the panel's
draw only draws, the first Generate runs
on that very process, changed launch settings start a fresh one, and nothing starts when the
add-on is enabled unless the user opted in.

bpy as a module has no window and runs no timers by itself: the panel's draw is called with
a layout that records what it is asked to show (the one stand-in here), the tests ask for the
prewarm as the watcher does (prewarm.request) and run the timer functions as Blender's event
loop would. The watcher itself runs in a real window in tests/blender_cli (gui_session.py).
"""
from __future__ import annotations

import sys
import time

import pytest

from bpy_helpers import PACKAGE, addon_utils, bpy, make_head


class Layout:
    """Accepts what a panel's draw asks of a UILayout (rows, props, labels, operators)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self

    def __setattr__(self, name, value):
        pass


class PanelSelf:
    layout = Layout()


def modules():
    return sys.modules[PACKAGE + ".core.client"], sys.modules[PACKAGE + ".ui.prewarm"]


def draw_panel():
    panel = getattr(bpy.types, "WAV2SEM_PT_lipsync")
    panel.draw(PanelSelf(), bpy.context)


def prewarm_model_info(backend):
    """What the backend says of the model and device the preferences name."""
    client, prewarm = modules()
    _, _, model, device = prewarm._settings(bpy.context)
    job = client.CheckJob(backend, model, device=device)
    job.wait(timeout=60)
    assert job.error is None and job.model_info is not None
    return job.model_info


def run_timer(function, timeout: float = 120.0) -> None:
    """Call a timer function as Blender does until it stops asking to be called again."""
    deadline = time.monotonic() + timeout
    while (delay := function()) is not None:
        assert time.monotonic() < deadline, "the prewarm did not finish"
        time.sleep(delay)
    if bpy.app.timers.is_registered(function):   # Blender drops a timer that returned None
        bpy.app.timers.unregister(function)


@pytest.fixture
def clean(addon):
    client, prewarm = modules()
    prewarm.stop()
    client.POOL.close()
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    yield prefs
    client, prewarm = modules()                               # (the add-on may have been enabled anew)
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.backend_threads = 0
    prefs.start_with_blender = False
    prewarm.stop()
    client.POOL.close()


def test_one_prewarm_per_settings_and_generate_uses_it(scene, template, speech, clean):
    client, prewarm = modules()
    make_head(template)
    bpy.context.scene.wav2sem_lipsync.known_subjects.clear()
    draw_panel()
    assert client.POOL.backend is None and not bpy.app.timers.is_registered(prewarm._tick)   # draw only draws
    assert not prewarm.sidebar_open_on_a_mesh(bpy.context.window_manager)     # no window here
    prewarm.request(bpy.context)                             # what the watcher asks for ...
    assert client.POOL.backend is None                       # ... starts nothing at once ...
    assert bpy.app.timers.is_registered(prewarm._tick)       # ... it schedules the start
    prewarm.request(bpy.context)                             # asked again: still one start
    run_timer(prewarm._tick)
    backend = client.POOL.backend
    assert backend is not None and backend.alive and backend.greeted and prewarm.last_error is None
    assert backend.args == ()                                # Auto threads: the backend's default
    styles = [s.name for s in bpy.context.scene.wav2sem_lipsync.known_subjects]
    assert styles and styles == list(prewarm_model_info(backend).subjects)    # the Style list, before any click
    pid = backend.pid
    for _ in range(3):
        prewarm.request(bpy.context)
    assert not bpy.app.timers.is_registered(prewarm._tick) and client.POOL.backend is backend

    started = time.perf_counter()
    assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech)) == {"FINISHED"}
    print(f"first Generate after the prewarm: {time.perf_counter() - started:.2f} s")
    assert client.POOL.backend is backend and backend.pid == pid and backend.alive   # the same process
    assert any(a.name.startswith("LipSync_") for a in bpy.data.actions)


def test_changed_threads_start_a_fresh_backend_that_generate_then_uses(scene, template, speech, clean):
    client, prewarm = modules()
    make_head(template)
    prewarm.request(bpy.context)
    run_timer(prewarm._tick)
    first = client.POOL.backend
    assert first is not None and first.alive
    clean.backend_threads = 1                                 # a settings change: not the stale process
    prewarm.request(bpy.context)
    run_timer(prewarm._tick)
    second = client.POOL.backend
    assert second is not first and not first.alive and second.alive
    assert second.args == ("--threads", "1") and second.command[-2:] == ["--threads", "1"]
    hello = client.CheckJob(second)
    hello.wait(timeout=60)
    assert hello.error is None and hello.hello is not None
    assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech)) == {"FINISHED"}
    assert client.POOL.backend is second and second.alive


def test_a_failed_prewarm_is_quiet_and_generate_reports_the_error(scene, template, speech, clean, tmp_path):
    client, prewarm = modules()
    make_head(template)
    previous = clean.model
    clean.model = str(tmp_path / "no-such-model")
    try:
        prewarm.request(bpy.context)                          # never raises
        run_timer(prewarm._tick)
        assert prewarm.last_error is not None and prewarm.last_error.code == "MODEL_NOT_FOUND"
        assert client.POOL.backend is None                    # stopped: nobody used it
        with pytest.raises(RuntimeError, match="(?i)model"):  # Generate's own ERROR report, as before
            bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    finally:
        clean.model = previous


def test_no_start_at_enable_without_consent_and_a_start_with_it(scene, clean, bundle):
    client, prewarm = modules()
    assert clean.start_with_blender is False                  # the default: off
    addon_utils.disable(PACKAGE)
    addon_utils.enable(PACKAGE)
    client, prewarm = modules()
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.model = str(bundle)                                 # what the session's add-on fixture set
    try:
        assert prefs.start_with_blender is False
        assert bpy.app.timers.is_registered(prewarm._enable_tick)   # it looks, once Blender is ready ...
        assert bpy.app.timers.is_registered(prewarm._watch)         # (and watches for the sidebar)
        assert prewarm._watch() == prewarm.WATCH_S and not bpy.app.timers.is_registered(prewarm._tick)   # no window
        run_timer(prewarm._enable_tick)
        assert not bpy.app.timers.is_registered(prewarm._tick) and client.POOL.backend is None   # ... and starts nothing
        prefs.start_with_blender = True                       # consent: the same look starts the backend
        prewarm.at_enable()
        run_timer(prewarm._enable_tick)
        assert bpy.app.timers.is_registered(prewarm._tick)
        run_timer(prewarm._tick)
        backend = client.POOL.backend
        assert backend is not None and backend.alive and backend.greeted and prewarm.last_error is None
    finally:
        prefs.start_with_blender = False
        prewarm.stop()
        client.POOL.close()
