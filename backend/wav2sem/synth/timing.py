"""Phoneme timings: the one record type every TTS engine returns and the corpus stores."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class PhoneSegment:
    """One phone: engine symbol, ARPAbet class, start and end in seconds."""

    symbol: str
    arpabet: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def scale_segments(segments: Iterable[PhoneSegment], factor: float) -> list[PhoneSegment]:
    """Multiply all times by `factor` (after a speed change of 1/factor)."""
    return [PhoneSegment(s.symbol, s.arpabet, s.start * factor, s.end * factor) for s in segments]


def write_segments(path: str | Path, segments: Iterable[PhoneSegment]) -> None:
    """Write a tab-separated file: start, end (seconds), symbol, arpabet; with a header."""
    lines = ["start\tend\tsymbol\tarpabet"]
    lines += [f"{s.start:.4f}\t{s.end:.4f}\t{s.symbol}\t{s.arpabet}" for s in segments]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_segments(path: str | Path) -> list[PhoneSegment]:
    """Read a file written by `write_segments`."""
    rows = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    out = []
    for row in rows:
        if row.strip():
            start, end, symbol, arpabet = row.split("\t")
            out.append(PhoneSegment(symbol, arpabet, float(start), float(end)))
    return out
