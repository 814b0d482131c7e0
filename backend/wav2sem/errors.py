"""One exception type for every user-facing failure, carrying a protocol error code.

The message is one sentence that says what went wrong and what to do; the command line
prints it, the server sends it as an error event, the add-on shows it.
"""
from __future__ import annotations

BAD_REQUEST = "BAD_REQUEST"
AUDIO_NOT_FOUND = "AUDIO_NOT_FOUND"
AUDIO_UNREADABLE = "AUDIO_UNREADABLE"
AUDIO_EMPTY = "AUDIO_EMPTY"
AUDIO_TOO_SHORT = "AUDIO_TOO_SHORT"
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
MODEL_INVALID = "MODEL_INVALID"
DEVICE_UNAVAILABLE = "DEVICE_UNAVAILABLE"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
CANCELLED = "CANCELLED"
OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"  # extension of the DESIGN.md list
INTERNAL = "INTERNAL"


class Wav2SemError(Exception):
    """A failure the user can act on. `code` is one of the protocol error codes above."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}

    def __reduce__(self):  # picklable (errors cross process boundaries, e.g. the espeak child)
        return (type(self), (self.code, self.message))


class Cancelled(Wav2SemError):
    def __init__(self, message: str = "Generation was cancelled."):
        super().__init__(CANCELLED, message)

    def __reduce__(self):
        return (Cancelled, (self.message,))


def reason(exc: BaseException, limit: int = 160) -> str:
    """An exception's text as one short line for the middle of a user-facing sentence
    ('HeaderTooLarge', 'No space left on device'): whitespace collapsed, cut at `limit`,
    no trailing full stop (the caller's sentence ends itself)."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
