"""Resumable training state: written atomically every epoch, read with weights_only=True.

Only torch's global RNG is saved: the trainers draw dropout and input noise from it, and
replay their seeded numpy shuffling generator epoch by epoch on resume.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, extra: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "extra": extra,
             "torch_rng": torch.get_rng_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore model, optimizer and RNG; returns (next epoch, extra)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]) + 1, state["extra"]
