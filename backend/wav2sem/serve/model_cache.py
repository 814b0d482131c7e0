"""The server's loaded models: at most `capacity`, the least recently used one dropped first.

A loaded model holds its weights (the default one ~300 MB, on the GPU under CUDA); a server
that kept every model it was ever asked for would grow with each one the user tried. Two
cover switching between two characters' models without a reload. Torch-free: the caller
passes the loader.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

Model = TypeVar("Model")


class ModelCache(Generic[Model]):
    """Least-recently-used models by key. Not thread-safe: the server's worker thread alone uses it."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a model cache holds at least one model, not {capacity}")
        self.capacity = capacity
        self._models: OrderedDict[Hashable, Model] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[Hashable]:
        """Least recently used first."""
        return list(self._models)

    def get(self, key: Hashable, load: Callable[[], Model]) -> Model:
        """The model under `key`, loaded with `load()` if it is not held. Room is made before
        the load, so no more than `capacity` models are ever in memory at once (a load that
        then fails has still dropped the least recently used one). Blocks while loading."""
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= self.capacity:
            dropped, _ = self._models.popitem(last=False)
            log.info("unloading model %s (the server keeps %d)", dropped, self.capacity)
        model = load()
        self._models[key] = model
        return model
