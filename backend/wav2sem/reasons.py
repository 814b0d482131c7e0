"""An exception's text as one short line, for the middle of a user-facing sentence."""
from __future__ import annotations


def reason(exc: BaseException, limit: int = 160) -> str:
    """'HeaderTooLarge', 'No space left on device', ...: whitespace collapsed, cut at `limit`,
    no trailing full stop (the caller's sentence ends itself)."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
