"""One exception type for every user-facing failure, carrying a protocol error code.

The message is one sentence that says what went wrong and what to do; the command line
prints it, the server sends it as an error event, the add-on shows it.
"""
from __future__ import annotations

# The codes are the protocol's (defined once, in protocol.py); raisers import them from here.
from .protocol import (AUDIO_EMPTY, AUDIO_NOT_FOUND, AUDIO_TOO_SHORT, AUDIO_UNREADABLE, BAD_REQUEST,  # noqa: F401
                       CANCELLED, DEVICE_UNAVAILABLE, INTERNAL, MODEL_INVALID, MODEL_NOT_FOUND, OUT_OF_MEMORY,
                       OUTPUT_UNWRITABLE)


class Wav2SemError(Exception):
    """A failure the user can act on. `code` is one of the protocol error codes above."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

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
