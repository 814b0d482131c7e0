"""Starting the backend before the first click: when a 3D View's sidebar is open on a mesh
(where the Lip Sync panel lives; a watcher timer looks twice a second, so the panel's draw
only draws), and (preference "Start Backend With the Add-on", default off) when the add-on is
enabled. Main thread only (bpy timers).

A prewarm is the Check's hello + model_info on the pool's backend, for the model and device
the preferences name, so the first Generate finds the process started, its protocol checked
and the model loaded, and the panel's Style list holds the model's speaking styles. It is
the same process (the pool's), started with the same launch settings
(preferences.backend_python configures the pool). It runs once per set of settings
(Python, launch arguments, model, device); changed settings prewarm again, and the pool
replaces a backend started with other launch settings, never one a job still waits on.

Quiet: the watcher only schedules a timer and never raises; a failed prewarm is
logged, its backend is stopped unless a job uses it, and the first Generate then reports the
error as it would have without a prewarm.
"""
from __future__ import annotations

import logging

import bpy

from ..core import client
from . import preferences, properties

log = logging.getLogger(__name__)

POLL_S = 0.25            # how often the timer looks at the prewarm's answers
BUSY_RETRY_S = 1.0       # a job still uses a backend this prewarm would replace: look again later
ENABLE_DELAY_S = 1.0     # after the add-on is enabled (Blender has finished starting)
WATCH_S = 0.5            # how often the watcher looks for an open sidebar on a mesh

Key = tuple[str, tuple[str, ...], str, str]

_last_key: Key | None = None      # the settings of the last prewarm asked for
_job: client.CheckJob | None = None
last_error: client.BackendError | None = None   # the last prewarm's failure (for tests and logs)


def _settings(context: bpy.types.Context) -> Key:
    """(Python, launch arguments, model, device) from the preferences. Raises BackendError."""
    launch = preferences.backend_launch(context)
    prefs = preferences.preferences(context)
    model = bpy.path.abspath(prefs.model) if prefs.model else ""
    return launch.python.path, launch.args, model, prefs.device


def request(context: bpy.types.Context) -> None:
    """The Lip Sync panel can be seen on a mesh: schedule a prewarm unless one was asked for
    these settings. Cheap, never blocks, never raises."""
    global _last_key
    try:
        key = _settings(context)
        if key == _last_key:
            return
        _last_key = key
        _schedule(0.0)
    except Exception as exc:  # a missing backend Python and the like: Generate will say so
        log.debug("no prewarm: %s", exc)


def at_enable() -> None:
    """The add-on was enabled: look at the consent preference once Blender is ready, and
    start watching for the sidebar."""
    if not bpy.app.timers.is_registered(_enable_tick):
        bpy.app.timers.register(_enable_tick, first_interval=ENABLE_DELAY_S, persistent=True)
    if not bpy.app.timers.is_registered(_watch):
        bpy.app.timers.register(_watch, first_interval=ENABLE_DELAY_S, persistent=True)


def sidebar_open_on_a_mesh(window_manager: bpy.types.WindowManager) -> bool:
    """Whether some window shows a 3D View's sidebar while its active object is a mesh."""
    for window in window_manager.windows:
        active = window.view_layer.objects.active
        if active is None or active.type != "MESH" or window.screen is None:
            continue
        if any(area.type == "VIEW_3D" and getattr(area.spaces.active, "show_region_ui", False)
               for area in window.screen.areas):
            return True
    return False


def _watch() -> float:
    """Timer: prewarm once the sidebar is open on a mesh (and again when the settings change)."""
    try:
        window_manager = bpy.context.window_manager
        if window_manager is not None and sidebar_open_on_a_mesh(window_manager):
            request(bpy.context)
    except Exception as exc:   # never let a timer raise into Blender
        log.debug("prewarm watcher: %s", exc)
    return WATCH_S


def stop() -> None:
    """The add-on is disabled: no more prewarms (the pool itself is closed by the operators)."""
    global _job, _last_key
    for timer in (_tick, _enable_tick, _watch):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    _job, _last_key = None, None


def running() -> bool:
    return _job is not None or bpy.app.timers.is_registered(_tick)


def _schedule(delay: float) -> None:
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=delay, persistent=True)


def _enable_tick() -> None:
    global _last_key
    try:
        if not preferences.preferences(bpy.context).start_with_blender:
            return None
        _last_key = _settings(bpy.context)
        _schedule(0.0)
    except Exception as exc:
        log.debug("no prewarm at enable: %s", exc)
    return None


def _tick() -> float | None:
    """Timer: start the prewarm, then follow it until it has its answers."""
    global _job, last_error
    try:
        if _job is None:
            return _start()
        if not _job.poll():
            return POLL_S
        job, _job = _job, None
        if job.error is None:
            log.info("backend prewarmed: %s, model %s", job.hello.summary() if job.hello else "",
                     job.model_info.name if job.model_info else "")
            if bpy.context.scene is not None:       # the Style list offers the model's styles at once
                properties.remember_subjects(bpy.context, job.model_info)
        else:
            last_error = job.error
            log.info("prewarm failed (the first Generate reports it): %s", job.error)
            client.POOL.release(keep_warm=False)      # unless a job already uses it
        return None
    except client.BackendError as exc:      # no backend Python, cannot start: Generate will say so
        last_error, _job = exc, None
        log.info("no prewarm: %s", exc)
        return None
    except Exception as exc:   # never let a timer raise into Blender
        log.warning("prewarm stopped: %s", exc)
        _job = None
        return None


def _start() -> float | None:
    global _job, last_error
    last_error = None
    context = bpy.context
    python, args, model, device = _settings(context)
    pool = client.POOL
    kept = pool.backend
    if kept is not None and kept.alive and (kept.python, kept.args) != (python, args) and pool.busy():
        return BUSY_RETRY_S                          # replacing it would end a running job
    backend, _ = pool.get(python, args)
    try:
        _job = client.CheckJob(backend, model, device=device)
    except client.BackendError as exc:
        last_error = exc
        pool.release(keep_warm=False)
        return None
    return POLL_S
