"""The one exception the backend client raises, without bpy."""
from __future__ import annotations

STDERR_LINES_SHOWN = 6


class BackendError(Exception):
    """A failure to show the user: `message` is one sentence that says what to do."""

    def __init__(self, code: str, message: str, stderr_tail: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stderr_tail = stderr_tail

    def user_message(self) -> str:
        tail = last_lines(self.stderr_tail, STDERR_LINES_SHOWN)
        return f"{self.message} Backend said: {tail}" if tail else self.message


def last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])
