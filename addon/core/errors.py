"""The add-on's two kinds of failure the user is told about, without bpy: BackendError (the
backend client) and UserError (something to change in Blender)."""
from __future__ import annotations

from typing import Any, Mapping

_TRACEBACK_HEAD = "Traceback (most recent call last)"


class UserError(Exception):
    """Something the user must change in Blender (selection, file, settings): one sentence."""


class BackendError(Exception):
    """A failure to show the user: `message` is one sentence that says what to do.
    `stderr_tail` keeps the backend's last stderr lines (or its traceback) for the console;
    `details` the error object's other fields (NO_FACE: the "landmarks" guess)."""

    def __init__(self, code: str, message: str, stderr_tail: str = "", details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stderr_tail = stderr_tail
        self.details = dict(details or {})

    def user_message(self) -> str:
        """The sentence, plus the backend's own last error line when it left one (never a
        traceback: the whole tail belongs in the console, see `stderr_tail`)."""
        line = last_error_line(self.stderr_tail)
        return f"{self.message} Backend said: {line}" if line else self.message


def last_error_line(text: str) -> str:
    """The last line of `text` that is not part of a traceback's frames: for a Python
    traceback that is its final 'SomeError: message' line."""
    for raw in reversed(text.splitlines()):
        line = raw.strip()
        if not line or raw[:1].isspace() or line.startswith((_TRACEBACK_HEAD, "During handling", "The above exception")):
            continue
        if set(line) <= set("^~ "):
            continue
        return line
    return ""
