"""What the benchmarks share about the machine they run on: its CPU for the tables' headers,
this process's resident and peak memory (Linux), and a best-of timer."""
from __future__ import annotations

import math
import platform
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM, ...); 0 where it is missing."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    """VmHWM := VmRSS (Linux >= 4.0), so that a later VmHWM is the peak from now on."""
    Path("/proc/self/clear_refs").write_text("5")


def best_seconds(fn, repeats: int, inner: int = 1) -> float:
    """The fastest of `repeats` timed runs of `inner` calls each (seconds per call), after one
    untimed call (first calls pay one-off set-up costs)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best
