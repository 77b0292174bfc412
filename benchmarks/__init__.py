"""Speed benchmarks of gat-book, run together with ``python -m benchmarks`` (see ``book/performance.md``).

Every figure a benchmark reports is a **ratio of two timings taken in the same process run, on the
same batch, warm (after one untimed call), each the median of at least 5 repeats** (``--quick``: 2
repeats on a tiny batch — a check that the benchmarks run, not a measurement). Absolute timings
depend on the machine and on whatever else runs on it; ratios of one run do not, much.

A benchmark module exposes ``run(quick: bool = False, **options) -> dict`` with

* ``ratios`` — ``{key: value}``, the figures (stable keys: ``results.json`` and the tests read them);
* ``rows`` — one per figure: ``{"key", "label", "value", "target", "ok"}`` (``target`` a text such as
  ``"≤ 1.00"``, ``ok`` True/False, or None for figures reported without a target);
* ``details`` — the raw timings and settings behind the ratios.

Each module also keeps its own command line (``python benchmarks/bench_pgd.py --help``).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

#: runner name -> module (``python -m benchmarks --only pgd,training``)
BENCHES = {
    "attack": "benchmarks.bench_attack",
    "stylegan2": "benchmarks.bench_stylegan2",
    "pgd": "benchmarks.bench_pgd",
    "predict": "benchmarks.bench_predict",
    "training": "benchmarks.bench_training",
    "gan": "benchmarks.bench_gan",
    "userstudy": "benchmarks.bench_userstudy",
    "book": "benchmarks.bench_book",
    "paper_cost": "benchmarks.bench_paper_cost",
    "allocator": "benchmarks.bench_allocator",
}

QUICK_REPEATS = 2
REPEATS = 5


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time (seconds) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[..., object]], repeats: int, warmup: int = 1,
                setup: Callable[[], object] | None = None) -> dict[str, float]:
    """Median wall time of each function, timed in turns (a, b, a, b, ...) after ``warmup`` untimed
    calls of each, so that a change of load on a shared machine hits every contender alike. With
    ``setup``, every call gets ``fn(setup())`` and only ``fn`` is timed (e.g. a fresh model copy)."""
    def call(fn):
        argument = () if setup is None else (setup(),)
        start = time.perf_counter()
        fn(*argument)
        return time.perf_counter() - start

    for fn in fns.values():
        for _ in range(warmup):
            call(fn)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(call(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def check(value: float, target: str | None) -> bool | None:
    """Does ``value`` meet ``target``: ``"≤ x"``, ``"≥ x"``, ``"< x"``, ``"> x"`` or ``"within d of x"``,
    optionally followed by a remark (None: no target)?"""
    if not target or value is None:
        return None
    words = target.strip().split()
    try:
        if words[0] == "within" and len(words) >= 4 and words[2] == "of":
            return abs(value - float(words[3])) <= float(words[1])
        bound = float(words[1])
    except (ValueError, IndexError):
        return None
    return {"≤": value <= bound, "<=": value <= bound, "≥": value >= bound, ">=": value >= bound,
            "<": value < bound, ">": value > bound}.get(words[0])


def row(key: str, label: str, value: float | None, target: str | None = None) -> dict:
    return {"key": key, "label": label, "value": value, "target": target, "ok": check(value, target)}


def result(rows: list[dict], details: dict | None = None) -> dict:
    """A benchmark's return value from its rows."""
    return {"ratios": {r["key"]: r["value"] for r in rows}, "rows": rows, "details": details or {}}
