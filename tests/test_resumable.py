"""The save schedule and the atomic write shared by every resumable training."""
import pytest
import torch

from gatlib import resumable


def test_schedule_stops_at_max_steps_and_saves_there():
    schedule = resumable.SaveSchedule(checkpoint_minutes=60, max_steps=3)
    state = {"train_seconds": 0.0}
    ticks = [schedule.tick(state) for _ in range(3)]
    assert ticks == [(False, False), (False, False), (True, True)]
    assert state["train_seconds"] > 0


def test_schedule_saves_every_checkpoint_interval_and_counts_time_once():
    schedule = resumable.SaveSchedule(checkpoint_minutes=0)   # every step is due
    state = {"train_seconds": 0.0}
    assert schedule.tick(state) == (True, False)
    first = state["train_seconds"]
    schedule.finish(state)
    assert state["train_seconds"] >= first   # only the time since the last save is added


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    resumable.save_atomic({"step": 1}, path)

    def broken_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(resumable.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        resumable.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
