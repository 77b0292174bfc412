"""What every chapter notebook calls: seeding, device choice, recording numbers, the run stamp.

A chapter starts with ``chapter = gatlib.chapter.start(profile, seed, device)`` right after its
papermill ``parameters`` cell, records every number it reports with ``chapter.record(key, value)``
and ends with ``chapter.stamp()``.

When the notebook is executed by the runner (``gat run``/``gat book``), the environment variable
``GAT_RESULTS_FILE`` names a JSON file; every ``record`` rewrites it atomically, so a crash in a later
cell never loses the numbers already recorded. The runner folds that file into ``results.json``.
Run interactively (Colab, Jupyter), numbers are kept in memory and shown by ``chapter.numbers``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gatlib import allocator

PROFILES = ("smoke", "default", "paper")
RESULTS_ENV = "GAT_RESULTS_FILE"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a torch device (use 'auto', 'cpu' or 'cuda')") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available on this machine")
    return resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The checkout's commit (with ``+dirty`` when tracked files changed), or ``unknown``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _jsonable(value):
    """Numbers as plain Python (tensors, numpy scalars and arrays included); NaN is refused."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist() if value.ndim else value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to record a non-finite number ({value}): a result must be a real number")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a value of type {type(value).__name__}")


def _write_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class Chapter:
    profile: str
    seed: int
    device: torch.device
    started: float = field(default_factory=time.time)
    numbers: dict = field(default_factory=dict)
    results_file: Path | None = None

    def record(self, key: str, value):
        """Record one reported number (or small list/dict of numbers) under ``key``; returns ``value``."""
        if not isinstance(key, str) or not key:
            raise ValueError("a result key must be a non-empty string")
        self.numbers[key] = _jsonable(value)
        self._flush()
        return value

    def stamp(self) -> str:
        """The run stamp every chapter ends with: profile, device, wall time, git commit."""
        info = self.info()
        self._flush(stamp=info)
        text = (f"**Run stamp** · profile `{info['profile']}` · device `{info['device']}` · "
                f"seed {info['seed']} · wall time {info['wall_time_s']:.1f} s · "
                f"commit `{info['git_commit'][:12]}` · torch {info['torch']}")
        try:  # rendered as markdown in a notebook, plain text elsewhere
            from IPython.display import Markdown, display
            display(Markdown(text))
        except ImportError:  # pragma: no cover
            print(text)
        return text

    def info(self) -> dict:
        return {
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            "wall_time_s": time.time() - self.started,
            "git_commit": git_commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "peak_rss_bytes": peak_rss_bytes(),
            "allocator": allocator.loaded(),
        }

    def _flush(self, stamp: dict | None = None) -> None:
        if self.results_file is None:
            return
        payload = {"numbers": self.numbers}
        if stamp is not None:
            payload["stamp"] = stamp
        elif self.results_file.exists():
            try:
                previous = json.loads(self.results_file.read_text())
                if "stamp" in previous:
                    payload["stamp"] = previous["stamp"]
            except json.JSONDecodeError:
                pass
        _write_atomic(self.results_file, payload)


def peak_rss_bytes() -> int | None:
    """The kernel's peak resident memory so far (Linux/macOS ``getrusage``; None elsewhere)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)   # bytes on macOS, KiB on Linux


def start(profile: str = "default", seed: int = 0, device: str = "auto") -> Chapter:
    """Validate the common parameters, seed every RNG, pick the device; return the chapter's recorder."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {', '.join(PROFILES)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    seed_everything(seed)
    results_file = os.environ.get(RESULTS_ENV)
    return Chapter(profile=profile, seed=seed, device=resolve_device(device),
                   results_file=Path(results_file) if results_file else None)
