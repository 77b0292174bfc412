"""Saving long trainings so they survive being stopped: one atomic write and one save schedule,
shared by the classifier loop (``gatlib.training``), the StyleGAN2 trainer
(``gatlib.generators.training``) and the SPADE trainer (``gatlib.generators.spade_training``).

A training state is written to ``path.tmp`` and renamed over ``path``, so a process killed mid-write
leaves the previous state intact: a failure never destroys earlier results.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def save_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then an atomic rename over it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class SaveSchedule:
    """When a resumable step loop saves and when it stops.

    ``tick(state)`` is called after every step: it returns ``(save, stop)`` — save every
    ``checkpoint_minutes`` of wall time and when the call's own limits are reached (``max_minutes``
    of wall time or ``max_steps`` steps in this call), and stop at those limits. The wall time since
    the last save is added to ``state["train_seconds"]`` whenever a save is due (and by ``finish``),
    so a run resumed many times reports its total training time.
    """

    def __init__(self, checkpoint_minutes: float, max_minutes: float | None = None, max_steps: int | None = None):
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.max_seconds = None if max_minutes is None else max_minutes * 60
        self.max_steps = max_steps
        self.started = self.last_save = time.time()
        self.steps = 0

    def tick(self, state: dict) -> tuple[bool, bool]:
        self.steps += 1
        now = time.time()
        stop = ((self.max_seconds is not None and now - self.started >= self.max_seconds)
                or (self.max_steps is not None and self.steps >= self.max_steps))
        save = stop or now - self.last_save >= self.checkpoint_seconds
        if save:
            state["train_seconds"] += now - self.last_save
            self.last_save = now
        return save, stop

    def finish(self, state: dict) -> None:
        """The loop ran to its end: count the time since the last save (the caller saves)."""
        now = time.time()
        state["train_seconds"] += now - self.last_save
        self.last_save = now
