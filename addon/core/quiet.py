"""Blender's own console output (C code included: fd 1 and 2) captured in a temporary file
around a step, so headless runs print one line per event. No bpy."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass
class Captured:
    console: int          # a copy of the real stdout, for progress lines while captured
    text: str = ""        # everything written meanwhile (set when the block ends)

    def say(self, line: str) -> None:
        os.write(self.console, (line + "\n").encode("utf-8", errors="replace"))

    def tail(self, count: int = 6) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return " | ".join(lines[-count:])


@contextmanager
def captured_output() -> Iterator[Captured]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        captured = Captured(saved[0])
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[1])
            log.seek(0)
            captured.text = log.read().decode("utf-8", errors="replace")
            os.close(saved[0])
