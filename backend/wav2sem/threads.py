"""The process's torch thread policy (`wav2sem serve/infer --threads auto|N`; results/startup.md).

On the 2-core CPU, with the default model: two intra-op threads beat one in every phase while
the cores were idle (the warm 10 s request 0.17 vs 0.29 s, the speech encoder 0.03 vs 0.06 s
on 2 s of speech and 1.2 vs 2.1 s on 60 s, Wav2Sem's GRU and the decoder no slower), and lost
2-10x while other work kept the cores busy (the encoder 1.30 vs 0.31 s on 10 s, the GRU and
the decoder 3-40x). So "auto" loads the model on one thread and runs each generate on as many
threads as cores are idle just before it (cpu_idle: measured, this process's own work left
out), at least one and at most AUTO_MAX_THREADS. A core counts as idle while others use less
than 1 - AUTO_IDLE_FRACTION of it. Library callers that never call configure_threads keep
torch's setting.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from . import cpu_idle

AUTO_MAX_THREADS = 4
AUTO_IDLE_FRACTION = 0.75
_THREADS: tuple[str, int] | None = None    # None: not configured; ("auto", 1) or ("fixed", N)


def configure_threads(threads: int | None) -> None:
    """The process's thread policy (serve and infer call it once, before loading a model):
    a fixed intra-op thread count, or None = auto (see AUTO_*; starts the idle-core monitor)."""
    global _THREADS
    _THREADS = ("auto", 1) if threads is None else ("fixed", int(threads))
    torch.set_num_threads(_THREADS[1])
    if threads is None:
        cpu_idle.start_monitor()


def generate_threads() -> int | None:
    """Threads for the next generate under the configured policy; None = leave torch's
    setting as it is (a fixed count, or a library caller's own)."""
    if _THREADS is None or _THREADS[0] != "auto":
        return None
    idle = cpu_idle.idle_cores() + 1 - AUTO_IDLE_FRACTION
    return max(1, min(AUTO_MAX_THREADS, int(idle)))


@contextlib.contextmanager
def thread_count(n: int | None) -> Iterator[None]:
    """Run the block on `n` torch threads (None: as set), then put the count back."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
