"""How far one pip install has got, from pip's own output lines, no bpy.

pip >= 24.1 prints "Progress CUR of TOTAL" for each download with `--progress-bar raw`; older
pips print only "Collecting" / "Downloading" / "Installing collected packages". A pip step's
fraction is 0.9 for the downloads (bytes against the expected size, or packages against the
expected count, whichever is further) and the last 0.1 for unpacking them. It never goes back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

RAW_PROGRESS_PIP = (24, 1)           # first pip with --progress-bar raw
_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)\s*$")
_PACKAGE_LINES = ("Collecting ", "Processing ", "Requirement already satisfied: ")
_DOWNLOADS_SHARE = 0.9


@dataclass(frozen=True)
class PipExpectation:
    """Rough size of one pip step: only for the bar, an underestimate just fills it early."""
    packages: int
    download_bytes: float


def progress_bar_option(pip_version_output: str) -> str:
    """The --progress-bar value for the pip that printed `pip --version` ("pip 23.2.1 from ...")."""
    match = re.match(r"pip (\d+)\.(\d+)", pip_version_output.strip())
    return "raw" if match and (int(match.group(1)), int(match.group(2))) >= RAW_PROGRESS_PIP else "off"


class PipProgress:
    """Feed it pip's output lines; `fraction` is 0..1 and never decreases."""

    def __init__(self, expected: PipExpectation):
        self.expected = expected
        self.fraction = 0.0
        self._packages = 0
        self._finished_bytes = 0       # downloads that are complete (or were replaced by the next one)
        self._announced_bytes = 0      # sizes of all downloads started
        self._file = (0, 0)            # (current, total) of the download in progress

    def feed(self, line: str) -> float:
        match = _PROGRESS.match(line)
        if match:
            current, total = int(match.group(1)), int(match.group(2))
            if current < self._file[0] or total != self._file[1] or current == 0:
                self._finished_bytes += self._file[0]
                self._announced_bytes += total
            self._file = (current, total)
        elif line.startswith(_PACKAGE_LINES):
            self._packages += 1
        if line.startswith("Installing collected packages"):
            self._advance(_DOWNLOADS_SHARE)
        elif line.startswith("Successfully installed"):
            self._advance(1.0)
        else:
            done = self._finished_bytes + self._file[0]
            by_bytes = done / max(self.expected.download_bytes, self._announced_bytes, 1)
            by_count = self._packages / max(self.expected.packages, self._packages + 1)
            self._advance(_DOWNLOADS_SHARE * min(1.0, max(by_bytes, by_count)))
        return self.fraction

    def _advance(self, fraction: float) -> None:
        self.fraction = max(self.fraction, fraction)


def text_bar(fraction: float, width: int = 24) -> str:
    """A bar for Blender versions without layout.progress: "[#######.........]  31%"."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%"
