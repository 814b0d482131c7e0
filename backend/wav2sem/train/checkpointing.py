"""Resumable training state: written atomically every epoch, read with weights_only=True."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, extra: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "extra": extra,
             "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()[1].copy(),
             "python_rng_seed": random.getrandbits(32)}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore model, optimizer and RNGs; returns (next epoch, extra)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    np.random.seed(int(state["numpy_rng"][0]))
    random.seed(int(state["python_rng_seed"]))
    return int(state["epoch"]) + 1, state["extra"]
