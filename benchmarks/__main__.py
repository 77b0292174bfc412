"""Run every benchmark and print one table: ``python -m benchmarks``.

    python -m benchmarks                       # all benchmarks; writes benchmarks/results.json
    python -m benchmarks --only pgd,training   # some of them, keeping the others' figures in results.json
                                               # (names: attack stylegan2 pgd training gan userstudy book
                                               #  paper_cost predict allocator)
    python -m benchmarks --quick --only pgd    # tiny batch, 2 repeats: checks that they run (tests use it)
    python -m benchmarks --write-book          # put the table of results.json into book/performance.md

``results.json`` holds the date, device, torch version, CPU count and thread count of the run and,
per benchmark, its ratios, rows (label, value, target, ok), details (timings, settings), wall time
and captured output. Modules named ``benchmarks/bench_*.py`` that this runner does not list are
run too when they define ``run(quick)``; otherwise they are listed as not wired.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import io
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import BENCHES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results.json"
DEFAULT_BOOK = ROOT / "book" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def all_benches() -> dict[str, str]:
    """The runner's benchmarks, then any other ``bench_*.py`` module of this folder."""
    found = dict(BENCHES)
    for path in sorted(HERE.glob("bench_*.py")):
        module = f"benchmarks.{path.stem}"
        if module not in found.values():
            found[path.stem.removeprefix("bench_")] = module
    return found


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": f"cpu: {cpu_name()}", "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with contextlib.suppress(Exception):
        from gatlib.chapter import git_commit

        info["git_commit"] = git_commit(ROOT)
    return info


def run_one(name: str, module_name: str, quick: bool, options: dict, verbose: bool) -> dict:
    started = time.perf_counter()
    log = io.StringIO()
    try:
        module = importlib.import_module(module_name)
        if hasattr(module, "run"):
            with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(log):
                out = {"status": "ok", **module.run(quick=quick, **options.get(name, {}))}
        else:
            out = {"status": "not wired", "error": f"{module_name} has no run(quick) function", "ratios": {},
                   "rows": []}
    except Exception as err:  # noqa: BLE001 - one broken benchmark must not hide the others
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
               "ratios": {}, "rows": []}
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["log"] = log.getvalue()
    return out


def _value(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(results: dict) -> str:
    """The table of a results dict: one row per figure, then the book's per-chapter budget."""
    lines = ["| benchmark | figure | measured | target | met |", "|---|---|---:|---|:---:|"]
    extra = []
    for name, bench in {**results["benches"], **results.get("kept", {})}.items():
        if bench.get("status") != "ok":
            lines.append(f"| {name} | {bench.get('status')}: {bench.get('error', '')} | — | — | |")
            continue
        for r in bench["rows"]:
            met = {True: "yes", False: "**no**", None: ""}[r.get("ok")]
            lines.append(f"| {name} | {r['label']} | {_value(r['value'])} | {r.get('target') or '—'} | {met} |")
        if bench.get("table"):
            extra += ["", f"Per chapter (`{name}`):", "", *bench["table"]]
    return "\n".join(lines + extra)


def header(results: dict) -> str:
    m = results["machine"]
    kind = "**quick check (tiny batches, 2 repeats): not a measurement**" if results.get("quick") else \
        "median of ≥ 5 warm repeats per timing"
    text = (f"Measured {m['date']} on {m['device']} ({m['cpu_count']} CPUs, {m['threads']} torch threads), "
            f"torch {m['torch']}; {kind}. Benchmarks in this run: {', '.join(results['benches']) or 'none'}.")
    kept = {name: bench["machine"]["date"] + ("" if bench["machine"].get("device") == m["device"] else
                                              f", on {bench['machine'].get('device')}")
            for name, bench in results.get("kept", {}).items()}
    if kept:   # figures of earlier runs kept by `--only` (each ratio still comes from one run)
        text += " Kept from earlier runs: " + ", ".join(f"{name} ({date})" for name, date in kept.items()) + "."
    return text


def previous_results(out: Path) -> dict:
    """The results JSON already at ``out``, or ``{}`` when there is none or it is not one of ours."""
    try:
        previous = json.loads(out.read_text())
        previous["machine"]["date"], previous["benches"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return previous


def merge_kept(results: dict, previous: dict) -> dict:
    """``results`` of an ``--only`` run plus the benchmarks of ``previous`` it did not rerun, each
    with the machine stamp of the run that measured it (under ``kept``, so the book names its date).
    A quick run keeps nothing, and nothing is kept from a quick run."""
    if results.get("quick") or previous.get("quick"):
        return results
    kept = dict(previous.get("kept", {}))
    kept.update({name: {**bench, "machine": previous["machine"]} for name, bench in previous.get("benches", {}).items()})
    kept = {name: bench for name, bench in kept.items() if name not in results["benches"]}
    if not kept:
        return results
    merged = {**results, "kept": kept, "ratios": {}}
    for bench in [*kept.values(), *results["benches"].values()]:
        merged["ratios"].update(bench.get("ratios", {}))
    return merged


def write_book(results: dict, page: Path) -> None:
    """Replace what lies between the bench markers of ``page`` with the table of ``results``."""
    text = page.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise SystemExit(f"{page}: needs the markers {START} and {END} (in that order)")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    body = f"{START}\n\n{header(results)}\n\n{markdown(results)}\n\n{END}"
    page.write_text(before + body + after)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny batches, 2 repeats: a functional check")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--skip", default=None, help="comma-separated benchmark names")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="gan: also time a torch.compile'd step (slow)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (default benchmarks/results.json)")
    parser.add_argument("--write-book", action="store_true",
                        help="run nothing: fill the table of --book from the results JSON of --out")
    parser.add_argument("--book", default=str(DEFAULT_BOOK), help="the page --write-book fills")
    parser.add_argument("--verbose", action="store_true", help="let the benchmarks print as they go")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.write_book:
        results = json.loads(out.read_text())
        write_book(results, Path(args.book))
        print(f"wrote the table of {out} into {args.book}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    benches = all_benches()
    only = [n.strip() for n in args.only.split(",")] if args.only else list(benches)
    skip = {n.strip() for n in args.skip.split(",")} if args.skip else set()
    unknown = [n for n in [*only, *skip] if n not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(benches)}")
    options = {"gan": {"compile": True}} if args.compile else {}
    command = ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
    results = {"machine": machine(), "quick": args.quick, "command": command, "benches": {}, "ratios": {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = previous_results(out) if args.only else {}   # `--only` adds to the table: the others are kept

    def save():   # after every benchmark: an interrupted long run keeps what it measured
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(merge_kept(results, previous), indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, out)

    for name in only:
        if name in skip:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        bench = run_one(name, benches[name], args.quick, options, args.verbose)
        results["benches"][name] = bench
        results["ratios"].update(bench.get("ratios", {}))
        print(f"  {name}: {bench['status']} in {bench['seconds']:.0f} s" +
              (f" ({bench['error']})" if bench.get("error") else ""), file=sys.stderr, flush=True)
        save()
    save()
    results = merge_kept(results, previous)
    print(header(results))
    print()
    print(markdown(results))
    print(f"\nresults: {out}")
    return 1 if any(b["status"] == "failed" for b in results["benches"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
