"""The progress bar of the corpus commands (`wav2sem synth`, `wav2sem corpus real`)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def clip_progress(desc: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr driven by progress(done, total) calls; a no-op when not enabled."""
    bar = None
    if enabled:
        from tqdm import tqdm
        bar = tqdm(total=0, unit="clip", file=sys.stderr, dynamic_ncols=True, desc=desc)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
