"""The server's temporary folder, `wav2sem-serve-<pid>-XXXX` in the system temp folder.

A server that ends normally removes its own; one that was killed outright cannot, so each
start removes the folders of servers whose process no longer runs."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..pids import pid_alive, pid_in_name

log = logging.getLogger(__name__)

PREFIX = "wav2sem-serve-"


def make_workdir() -> Path:
    remove_stale_workdirs()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def remove_stale_workdirs() -> None:
    root = Path(tempfile.gettempdir())
    try:
        folders = [p for p in root.glob(f"{PREFIX}*") if p.is_dir()]
    except OSError:
        return
    for folder in folders:
        pid = pid_in_name(folder.name, PREFIX)
        if pid is not None and not pid_alive(pid):
            log.info("removing %s, left by a backend that no longer runs", folder)
            shutil.rmtree(folder, ignore_errors=True)
