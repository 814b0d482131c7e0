"""Temporary folders of running takes (backend offsets, packed sounds). No bpy.

Each folder carries the id of the Blender process that made it
(`wav2sem_lipsync_<pid>_<random>`), so a folder whose Blender was killed or crashed before
it could clean up is removed by the next take; the ones still open are removed at exit.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "wav2sem_lipsync_"
_OWNED = re.compile(re.escape(PREFIX) + r"(\d+)_")
_OPEN: set[str] = set()


def _process_alive(pid: int) -> bool:
    if os.name == "nt":
        return True            # os.kill would end the process there; folders stay until reboot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True            # someone else's process, or we cannot tell: leave its folder
    return True


def remove_stale(parent: str | None = None) -> None:
    """Remove run folders whose Blender process no longer exists."""
    folder = Path(parent or tempfile.gettempdir())
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            log.info("removing %s, left behind by a Blender that ended", entry)
            shutil.rmtree(entry, ignore_errors=True)


def make_run_folder() -> str:
    remove_stale()
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_")
    _OPEN.add(path)
    return path


def remove_run_folder(path: str) -> None:
    _OPEN.discard(path)
    shutil.rmtree(path, ignore_errors=True)


@atexit.register
def _remove_open() -> None:
    for path in list(_OPEN):
        remove_run_folder(path)
