"""How many CPU cores other processes leave idle, measured from the kernel's counters.

The thread policy (`threads.configure_threads(None)`, "auto") asks this before a generate.
The 1-minute load average was used before and misled it both ways: it counts this process's
own recent work (loading the model, the previous click) as other load, and it lags a minute
behind a job that has just started or ended. Here the CPU time of every process on the
machine (/proc/stat) minus this process's own (/proc/self/stat), over the last second, gives
the cores others kept busy. A daemon thread samples both counters every SAMPLE_S seconds
(two small file reads), so a request never waits for a measurement.

Written by hand: psutil would give the same two counters but is not a dependency, and
nothing else needs it. Without /proc (macOS, Windows) the load average is used where there
is one, else half the cores are taken as idle.
"""
from __future__ import annotations

import collections
import os
import threading
import time

SAMPLE_S = 0.25        # seconds between samples
WINDOW_S = 1.0         # the window `other_busy_cores` reports on (the newest one at least this long)
MIN_WINDOW_S = 0.1     # shorter than this after start, the counters (10 ms ticks) cannot tell
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat). Raises
    OSError without /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # after "pid (comm)": state is field 3, so utime and stime (fields 14, 15) are at 11, 12
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _read_counters() -> tuple[float, float, float] | None:
    """(wall s, machine busy CPU s, this process's CPU s), or None without /proc."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        mine = process_cpu_seconds()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return time.monotonic(), busy / _TICKS, mine


def _others_busy(old: tuple[float, float, float], new: tuple[float, float, float]) -> float | None:
    """Cores kept busy by other processes between two samples."""
    wall = new[0] - old[0]
    if wall <= 0:
        return None
    return max(0.0, ((new[1] - old[1]) - (new[2] - old[2])) / wall)


class IdleMonitor:
    """Samples the counters on a daemon thread; `other_busy_cores()` reads the newest window."""

    def __init__(self, sample_s: float = SAMPLE_S, window_s: float = WINDOW_S):
        self.sample_s, self.window_s = sample_s, window_s
        self._samples: collections.deque = collections.deque(maxlen=max(2, int(4 * window_s / sample_s)))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "IdleMonitor":
        first = _read_counters()
        if first is None or self._thread is not None:
            return self
        self._samples.append(first)
        self._thread = threading.Thread(target=self._run, name="wav2sem-idle-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            time.sleep(self.sample_s)
            sample = _read_counters()
            if sample is not None:
                with self._lock:
                    self._samples.append(sample)

    def other_busy_cores(self) -> float | None:
        """CPU cores that other processes kept busy from the newest sample at least window_s
        old (the oldest there is, shortly after start) until now; None if never started or
        too soon after start to tell (under MIN_WINDOW_S)."""
        now = _read_counters()
        with self._lock:
            samples = list(self._samples)
        if now is None or not samples:
            return None
        old = next((s for s in reversed(samples) if now[0] - s[0] >= self.window_s), samples[0])
        return _others_busy(old, now) if now[0] - old[0] >= MIN_WINDOW_S else None


_MONITOR = IdleMonitor()


def start_monitor() -> None:
    """Start the process's sampler (idempotent); serve and infer call it early, so that a
    window exists by the first generate."""
    _MONITOR.start()


def idle_cores() -> float:
    """Cores this process may use that others leave idle: measured where /proc exists and the
    monitor runs, else cores minus the load average, else half the cores. Never waits."""
    cores = usable_cores()
    busy = _MONITOR.other_busy_cores()
    if busy is not None:
        machine = os.cpu_count() or cores
        return max(0.0, min(float(cores), machine - busy))
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except (AttributeError, OSError):
        return cores / 2
