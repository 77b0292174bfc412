"""The book's time and memory budget per chapter, from the runner's ``runs/*/*/results.json``.

``gat run`` / ``gat book`` write one ``results.json`` per run (``gatlib.runbook.execute``): its
``wall_time_s``, ``profile``, ``status`` and ``overrides``. This benchmark runs nothing: for every
chapter and the profiles ``smoke`` and ``default`` it takes the latest *canonical* run (status ok,
no ``-p`` overrides) and compares the totals with the budgets:

* smoke total ≤ 5 min (CI runs every chapter on ``smoke``);
* default total ≤ 60 min (``make book`` on a laptop CPU);
* a full rebuild of the zoo (``python -m gatlib.zoo train`` of every model), in hours: the sum of
  the training times the manifest records;
* the chapters that have a budget of their own (``CHAPTER_BUDGETS_MIN``, from the issues) against it;
* where each default run spent its time: its slowest cell (the runner's ``slowest_cells``);
* peak resident memory of any run ≤ 4 GiB — **only when the runner records it**
  (a ``peak_rss_bytes`` / ``peak_rss_mib`` key in ``results.json``); otherwise it is reported as
  not recorded.

Committed runs are ``default`` ones (``smoke-*`` run directories are git-ignored), so a fresh clone
shows the default budget; run ``make smoke-book`` first for the smoke column.

    python benchmarks/bench_book.py [--runs-dir runs]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import result, row

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("smoke", "default")
TARGETS = {"smoke": 5.0, "default": 60.0}      # minutes, all chapters together
PEAK_RSS_TARGET_GIB = 4.0
#: Per-chapter ``default`` budgets (minutes) that the issues set: chapters 04 and 06 (Table 1 and
#: Table 3, issue 5), 05 (Table 2, issue 6) and 07 (segmentation and detection, issue 7). The other
#: chapters share what these leave of the 60-minute book.
CHAPTER_BUDGETS_MIN = {"04_adversarial_training": 10.0, "05_unforeseen_attacks": 15.0, "06_out_of_domain": 10.0,
                       "07_segmentation_detection": 10.0}
RSS_KEYS = {"peak_rss_bytes": 1 / 2 ** 30, "peak_rss_mib": 1 / 1024, "peak_rss_gib": 1.0}


def _peak_rss_gib(results: dict) -> float | None:
    for where in (results, results.get("resources") or {}, results.get("stamp") or {}):
        for key, scale in RSS_KEYS.items():
            if isinstance(where.get(key), (int, float)):
                return where[key] * scale
    return None


def chapter_runs(runs_dir: Path) -> dict[str, dict[str, dict]]:
    """``{stem: {profile: results}}``: the latest canonical ok run of each chapter and profile."""
    latest: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(runs_dir).glob("*/*/results.json")):
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        profile, stem = results.get("profile"), results.get("stem") or path.parent.parent.name
        if profile not in PROFILES or results.get("status") != "ok" or results.get("overrides"):
            continue
        known = latest.setdefault(stem, {}).get(profile)
        if known is None or str(results.get("finished", "")) > str(known.get("finished", "")):
            latest[stem][profile] = results
    return latest


def toc_chapters(root: Path = ROOT) -> list[str]:
    """The chapter notebooks of ``_toc.yml`` (their stems), so a chapter without a run shows up."""
    try:
        import yaml

        from gatlib.runbook import toc_files

        toc = yaml.safe_load((root / "_toc.yml").read_text())
    except (OSError, ImportError, ValueError):
        return []
    return [Path(entry).stem for entry in toc_files(toc) if entry.replace("\\", "/").startswith("notebooks/")]


def _slowest(results: dict | None) -> str:
    """The default run's slowest cell (``slowest_cells`` of the runner), as ``cell N (s): source``."""
    cells = (results or {}).get("slowest_cells") or []
    if not cells:
        return "not recorded"
    top = cells[0]
    source = top["source"].replace("|", "\\|").replace("`", "'")
    source = source if len(source) <= 48 else source[:47] + "…"
    return f"cell {top['cell']} ({top['seconds']:.0f} s): `{source}`"


def zoo_rebuild_hours(manifest: Path | None = None) -> tuple[float | None, int]:
    """Hours to rebuild the whole zoo from scratch, measured: the sum of ``train_seconds`` that each
    ``python -m gatlib.zoo train NAME`` recorded in the manifest (wall time on our 2-core CPU
    machines, one or two torch threads per training), and how many models that sums."""
    manifest = manifest or ROOT / "gatlib" / "checkpoints" / "manifest.json"
    try:
        entries = json.loads(Path(manifest).read_text())
    except (OSError, json.JSONDecodeError):
        return None, 0
    seconds = [e["train_seconds"] for e in entries.values() if isinstance(e.get("train_seconds"), (int, float))]
    return (sum(seconds) / 3600 if seconds else None), len(seconds)


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def run(quick: bool = False, runs_dir: str | Path | None = None) -> dict:
    runs_dir = Path(runs_dir) if runs_dir else ROOT / "runs"
    runs = chapter_runs(runs_dir)
    chapters = sorted(set(runs) | set(toc_chapters()))
    table = ["| chapter | smoke (min) | default (min) | default budget (min) | within | peak RSS (GiB) "
             "| slowest cell of the default run |",
             "|---|---:|---:|---:|:---:|---:|---|"]
    totals = {profile: 0.0 for profile in PROFILES}
    counted = {profile: 0 for profile in PROFILES}
    peaks = []
    for stem in chapters:
        cells, minutes = [], {}
        for profile in PROFILES:
            res = runs.get(stem, {}).get(profile)
            minutes[profile] = res["wall_time_s"] / 60 if res and isinstance(res.get("wall_time_s"), (int, float)) \
                else None
            if minutes[profile] is not None:
                totals[profile] += minutes[profile]
                counted[profile] += 1
            cells.append(_minutes(minutes[profile]))
        budget = CHAPTER_BUDGETS_MIN.get(stem)
        cells.append("—" if budget is None else f"{budget:g}")
        cells.append("" if budget is None or minutes["default"] is None else
                     ("yes" if minutes["default"] <= budget else "**no**"))
        chapter_peaks = [p for p in (_peak_rss_gib(r) for r in runs.get(stem, {}).values()) if p is not None]
        peaks += chapter_peaks
        cells.append(f"{max(chapter_peaks):.2f}" if chapter_peaks else "not recorded")
        cells.append(_slowest(runs.get(stem, {}).get("default")))
        table.append(f"| {stem} | " + " | ".join(cells) + " |")
    rows = [row(f"book_{profile}_total_min", f"book, {profile} profile: all chapters (min, {counted[profile]} run"
                f"{'s' if counted[profile] != 1 else ''})", totals[profile] if counted[profile] else None,
                f"≤ {TARGETS[profile]:g}")
            for profile in PROFILES]
    label = "book, peak RSS of any run (GiB)" + ("" if peaks else ": not recorded by the runner")
    rows.append(row("book_peak_rss_gib", label, max(peaks) if peaks else None, f"≤ {PEAK_RSS_TARGET_GIB:g}"))
    hours, models = zoo_rebuild_hours()
    rows.append(row("zoo_rebuild_hours", f"zoo: a full rebuild, measured (hours, {models} models, sum of their "
                    "recorded training wall time)", hours))
    missing = [p for p in PROFILES if not counted[p]]
    return {**result(rows, {"runs_dir": str(runs_dir), "chapters": chapters, "peak_rss_recorded": bool(peaks),
                            "profiles_without_runs": missing}),
            "table": table}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", default=None, help="default: <repository>/runs")
    args = parser.parse_args(argv)
    out = run(runs_dir=args.runs_dir)
    print("\n".join(out["table"]))
    print()
    for r in out["rows"]:
        print(f"| {r['label']} | {_minutes(r['value'])} | {r['target']} |")
    return out


if __name__ == "__main__":
    main()
