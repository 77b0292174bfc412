"""The ``gat`` command: run chapter notebooks reproducibly, sweep them, report, build the book.

Why a runner at all: a chapter's numbers are only worth quoting if we know exactly which notebook
source, which parameters and which software produced them. ``gat run`` therefore

* reads the jupytext MyST source (``notebooks/NN_name.md`` is the source of truth),
* resolves parameters as *parameters-cell defaults < profile preset < ``-p`` overrides* and
  validates names and types **before** a kernel starts (a typo must cost seconds, not a GPU hour),
* executes the notebook with papermill in its own run directory
  ``runs/<stem>/<profile>-<hash>/`` where the hash covers the resolved parameters and the notebook
  source (so a changed notebook or parameter never silently reuses an old result),
* writes ``results.json`` atomically, also when the notebook fails (with the numbers recorded so
  far: ``gatlib.chapter`` streams them to ``$GAT_RESULTS_FILE``).

Conventions
-----------
* Profiles: ``smoke`` (seconds, CI), ``default`` (the book), ``paper`` (the paper's scale). The
  ``default`` profile is exactly the parameters cell; other profiles are partial presets under
  ``gat: profiles:`` in the notebook's YAML front matter (jupytext exposes it as
  ``nb.metadata["gat"]["profiles"]``).
* The kernel's working directory is the notebook's parent's parent, i.e. the repository root for
  ``notebooks/NN_name.md``; relative paths inside notebooks are relative to the repository root.
* The kernel's ``malloc`` is jemalloc when the machine has it (``gatlib.allocator``), unless the
  caller's ``GAT_ALLOCATOR`` or the front matter's ``gat: allocator: system`` says otherwise;
  ``results.json`` records which one ran (``allocator``) beside the run's ``peak_rss_bytes``.
* Sweeps (``gat batch sweep.yaml``)::

      notebook: notebooks/00_setup.md      # or a list of notebooks; relative to the current
      profile: smoke                       # directory, else to the sweep file's folder
      parameters: {eval_count: 256}        # fixed overrides
      grid: {seed: [0, 1, 2]}              # cartesian product (a `profile` list is allowed too)

  or a list of such entries under ``runs:``. ``--shard i/N`` (``i`` is 0-based) keeps the runs
  whose index in the expanded sweep is congruent to ``i`` modulo ``N``.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import datetime as _dt
import fnmatch
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

from gatlib import allocator

log = logging.getLogger("gat")

# Mirrors gatlib.chapter.PROFILES (kept here so that `gat` does not import torch just to validate).
PROFILES = ("smoke", "default", "paper")
RESULTS_ENV = "GAT_RESULTS_FILE"
OMP_WAIT_ENV = "OMP_WAIT_POLICY"
# Set for the kernels the runner starts: no person is at the controls, so interactive explorers draw
# their static figures instead of building ipywidgets (an Output widget that captures a figure can
# leave nbclient waiting forever for the cell's reply; chapter 02 hung in about one run in three).
BATCH_ENV = "GAT_BATCH_RUN"
COMMON_PARAMETERS = ("profile", "seed", "device")
VERSION_PACKAGES = ("torch", "torchvision", "papermill", "jupytext", "gatlib")


class ParameterError(ValueError):
    """A notebook was asked to run with parameters it does not declare, of the wrong type, or with
    an unknown profile. Raised before any kernel starts; the CLI turns it into exit code 2."""


# --------------------------------------------------------------------------------------------
# Reading notebooks and resolving parameters
# --------------------------------------------------------------------------------------------

def read_notebook(path: str | os.PathLike):
    """The notebook as an nbformat node, read from its jupytext source (``.md``) or an ``.ipynb``."""
    import jupytext

    path = Path(path)
    if not path.exists():
        raise ParameterError(f"notebook {path} does not exist")
    return jupytext.read(path)


def _parameters_cell(nb, path) -> tuple[int, str]:
    cells = [(i, c) for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    index, cell = cells[0]
    return index, cell.source


def parse_parameters_cell(source: str, where: str = "parameters cell") -> dict:
    """Defaults from a papermill parameters cell: simple ``name = literal`` (or ``name: T = literal``)
    statements only, so that the defaults can be read without running any code."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ParameterError(f"{where}: not valid Python ({err})") from err
    defaults = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, node = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, node = stmt.target.id, stmt.value
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring-like comment string
        else:
            raise ParameterError(f"{where}: line {stmt.lineno} is not a simple `name = value` assignment")
        try:
            defaults[name] = ast.literal_eval(node)
        except ValueError as err:
            raise ParameterError(f"{where}: the default of {name!r} (line {stmt.lineno}) is not a literal") from err
    missing = [p for p in COMMON_PARAMETERS if p not in defaults]
    if missing:
        raise ParameterError(f"{where}: missing the common parameter(s) {', '.join(missing)}")
    if defaults["profile"] != "default":
        raise ParameterError(f"{where}: `profile` must default to \"default\" (found {defaults['profile']!r})")
    return defaults


def chapter_allocator(nb, path="notebook") -> str:
    """The kernel allocator a chapter asks for in its front matter (``gat: allocator: auto|system``;
    default ``auto``). A chapter names a policy, never a library path: paths belong to the machine."""
    choice = (nb.metadata.get("gat") or {}).get("allocator", "auto")
    if choice not in ("auto", "system"):
        raise ParameterError(f"{path}: front matter `gat: allocator:` must be 'auto' or 'system', got {choice!r}")
    return choice


def notebook_parameters(nb, path="notebook") -> tuple[dict, dict]:
    """(defaults from the parameters cell, profile presets from the front matter)."""
    _, source = _parameters_cell(nb, path)
    defaults = parse_parameters_cell(source, where=f"{path}: parameters cell")
    presets = (nb.metadata.get("gat") or {}).get("profiles") or {}
    if not isinstance(presets, dict):
        raise ParameterError(f"{path}: front matter `gat: profiles:` must be a mapping of profile -> values")
    for name in presets:
        if name not in PROFILES:
            raise ParameterError(f"{path}: front matter defines unknown profile {name!r} (profiles: {', '.join(PROFILES)})")
    return defaults, presets


def _type_name(value) -> str:
    return type(value).__name__


def coerce(name: str, value, default, source: str):
    """``value`` checked against the type of ``default``; an int is accepted where a float is
    expected (and converted), a bool never counts as a number. ``None`` defaults accept anything."""
    if default is None:
        return value
    expected = type(default)
    ok = False
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif expected in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok:
            value = list(value)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ParameterError(
            f"parameter {name!r} expects {expected.__name__} (default {default!r}), "
            f"got {_type_name(value)} {value!r} from {source}")
    return value


def parse_override(text: str, defaults: dict | None = None) -> tuple[str, object]:
    """``key=value`` from the command line; the value is YAML (``1e-3``, ``true``, ``[1, 2]``). For a
    string parameter the raw text is kept when YAML would read it as something else (``-p tag=007``)."""
    if "=" not in text:
        raise ParameterError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ParameterError(f"override {text!r}: value is not valid YAML ({err})") from err
    default = (defaults or {}).get(key)
    if isinstance(default, str) and not isinstance(value, str):
        value = raw
    elif isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        # YAML 1.1 reads `1e-3` as a string; Python's number syntax is what users type
        for parse in ((int,) if isinstance(default, int) else ()) + (float,):
            with contextlib.suppress(ValueError):
                value = parse(raw.strip())
                break
    return key, value


def resolve_parameters(defaults: dict, presets: dict, profile: str = "default",
                       overrides: dict | None = None, where: str = "notebook") -> tuple[dict, dict]:
    """Parameters-cell defaults < profile preset < overrides, validated.

    Returns ``(parameters, effective_overrides)``; the latter keeps only overrides that change the
    profile's value, so that a run is "canonical" (no overrides) exactly when its parameters are the
    profile's.
    """
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    params = dict(defaults)
    preset = presets.get(profile) or {}
    for name, value in preset.items():
        if name == "profile":
            raise ParameterError(f"{where}: profile preset {profile!r} must not set `profile`")
        if name not in defaults:
            raise ParameterError(f"{where}: profile preset {profile!r} sets unknown parameter {name!r} "
                                 f"(known: {', '.join(sorted(defaults))})")
        params[name] = coerce(name, value, defaults[name], f"profile preset {profile!r} in {where}")
    params["profile"] = profile
    profile_params = dict(params)
    effective = {}
    for name, value in (overrides or {}).items():
        if name == "profile":
            raise ParameterError("`profile` cannot be overridden with -p; use --profile")
        if name not in defaults:
            raise ParameterError(f"{where}: unknown parameter {name!r} (known: {', '.join(sorted(defaults))})")
        params[name] = coerce(name, value, defaults[name], f"override {name}={value!r}")
        if params[name] != profile_params[name] or type(params[name]) is not type(profile_params[name]):
            effective[name] = params[name]
    return params, effective


def run_id_for(params: dict, source_text: str) -> str:
    """``<profile>-<10 hex>`` over the resolved parameters and the notebook source."""
    digest = hashlib.sha256((json.dumps(params, sort_keys=True) + "\n" + source_text).encode()).hexdigest()
    return f"{params['profile']}-{digest[:10]}"


class PreparedRun:
    """Everything about one run that can be known without a kernel: resolved parameters, run dir."""

    def __init__(self, path, profile="default", overrides=None, runs_dir="runs"):
        self.path = Path(path)
        self.source_text = self.path.read_text() if self.path.exists() else ""
        self.nb = read_notebook(self.path)
        self.defaults, self.presets = notebook_parameters(self.nb, self.path)
        self.allocator = chapter_allocator(self.nb, self.path)
        if isinstance(overrides, (list, tuple)):  # raw "key=value" strings from the CLI
            overrides = dict(parse_override(t, self.defaults) for t in overrides)
        self.parameters, self.overrides = resolve_parameters(
            self.defaults, self.presets, profile, overrides, where=str(self.path))
        self.profile = profile
        self.stem = self.path.stem
        self.run_id = run_id_for(self.parameters, self.source_text)
        self.run_dir = Path(runs_dir) / self.stem / self.run_id

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.json"

    def completed(self) -> dict | None:
        """The stored results when this exact run already finished ok *and* its executed notebook
        is still there. A fresh clone holds the committed ``results.json`` but not the executed
        notebook (it is not committed), so the run is executed again: the book always renders a
        notebook that ran on this machine."""
        if not (self.run_dir / f"{self.stem}.ipynb").is_file():
            return None
        return _load_ok(self.results_path)


def _load_ok(path: Path) -> dict | None:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("status") == "ok" else None


# --------------------------------------------------------------------------------------------
# Executing one notebook
# --------------------------------------------------------------------------------------------

def write_atomic(path: Path, text: str) -> None:
    """Readers (the scoreboard, a concurrent shard) never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def _env(name: str, value: str | None):
    """The kernel inherits our environment: set ``name`` (None: unset it) for this run only."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _quiet_papermill():
    """Papermill re-infers parameters from the cell text and warns about inline comments and
    "unknown" parameters; our own validation already ran, so only its errors are worth showing."""
    logger = logging.getLogger("papermill")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd()).as_posix()
    return path.as_posix()


def _describe_error(err: Exception) -> str:
    ename = getattr(err, "ename", None)
    if ename:  # papermill.PapermillExecutionError: the notebook's own exception
        return f"{ename}: {getattr(err, 'evalue', '')} (cell {getattr(err, 'exec_count', '?')})"
    return f"{type(err).__name__}: {err}"


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def execute(run: PreparedRun, progress: bool = False) -> dict:
    """Execute a prepared run with papermill and write ``results.json`` (also on failure)."""
    import papermill

    # the kernel's malloc (gatlib.allocator): the caller's GAT_ALLOCATOR, else the chapter's front matter
    # (`gat: allocator:`), else jemalloc when the machine has it. A bad choice fails here, before any
    # earlier result is touched
    preload = allocator.kernel_env(os.environ.get(allocator.ALLOCATOR_ENV) or run.allocator)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run.results_path
    results_path.unlink(missing_ok=True)  # a crash mid-run must not leave an older "ok" behind
    partial = run.run_dir / "numbers.json.partial"
    partial.unlink(missing_ok=True)
    executed = run.run_dir / f"{run.stem}.ipynb"
    cwd = _repository_root(run.path)

    started, t0 = _now(), time.time()
    status, error = "ok", None
    try:
        # the kernel draws figures inline whatever the caller's MPLBACKEND (CI exports Agg for the
        # tests' own plots; a kernel that inherits it would show no figure in the book). Its OpenMP
        # threads sleep when idle unless the caller chose otherwise: with spinning threads the default
        # chapters peaked higher on the 2-core CPU (chapter 00: 1.40 GiB against 1.22; chapter 04: 4.35
        # GiB against 3.62, over the book's 4 GiB budget), with the same numbers. It starts with
        # jemalloc when the machine has it (see `preload` above)
        kernel = {RESULTS_ENV: str(partial.resolve()), "MPLBACKEND": INLINE_BACKEND, BATCH_ENV: "1",
                  OMP_WAIT_ENV: os.environ.get(OMP_WAIT_ENV, "PASSIVE"), **preload}
        with contextlib.ExitStack() as stack:
            for name, value in kernel.items():
                stack.enter_context(_env(name, value))
            stack.enter_context(_quiet_papermill())
            papermill.execute_notebook(
                run.nb, str(executed), parameters=run.parameters, kernel_name="python3",
                language="python", cwd=str(cwd), progress_bar=progress, log_output=False)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, never lost
        status, error = "failed", _describe_error(err)
    finished, wall = _now(), time.time() - t0

    recorded = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        recorded = json.loads(partial.read_text())
    from gatlib.chapter import git_commit  # imports torch: only once a run actually happened

    results = {
        "notebook": _display_path(run.path),
        "stem": run.stem,
        "run_id": run.run_id,
        "run_dir": _display_path(run.run_dir),
        "profile": run.profile,
        "parameters": run.parameters,
        "overrides": run.overrides,
        "seed": run.parameters.get("seed"),
        "status": status,
        "error": error,
        "numbers": recorded.get("numbers", {}),
        "stamp": recorded.get("stamp"),
        "git_commit": git_commit(cwd),
        "versions": versions(),
        "started": started,
        "finished": finished,
        "wall_time_s": round(wall, 3),
        "peak_rss_bytes": (recorded.get("stamp") or {}).get("peak_rss_bytes"),
        "allocator": (recorded.get("stamp") or {}).get("allocator"),
        "slowest_cells": slowest_cells(executed),
    }
    write_atomic(results_path, json.dumps(results, indent=2, sort_keys=True) + "\n")
    partial.unlink(missing_ok=True)
    return results


def slowest_cells(executed: Path, count: int = 5) -> list[dict]:
    """Where a run spent its time: the ``count`` code cells papermill timed longest, each as
    ``{"cell": index, "seconds": s, "source": first line}`` (``[]`` when the notebook is unreadable).
    The book budget (``benchmarks/bench_book.py``) names each chapter's slowest one."""
    try:
        cells = read_notebook(executed).cells
    except Exception:  # noqa: BLE001 - a failed run may leave no notebook; timings are optional
        return []
    timed = []
    for index, cell in enumerate(cells):
        seconds = ((cell.get("metadata") or {}).get("papermill") or {}).get("duration")
        if cell.get("cell_type") == "code" and isinstance(seconds, (int, float)):
            first = next((line.strip() for line in cell.get("source", "").splitlines() if line.strip()), "")
            timed.append({"cell": index, "seconds": round(float(seconds), 2), "source": first[:100]})
    return sorted(timed, key=lambda c: -c["seconds"])[:count]


def _repository_root(path: Path) -> Path:
    """The directory holding ``notebooks/`` (chapters and ``notebooks/drafts/``): the kernel's cwd."""
    for parent in path.resolve().parents:
        if parent.name == "notebooks":
            return parent.parent
    return path.resolve().parent.parent


def run_notebook(path, profile: str = "default", overrides: dict | None = None, runs_dir="runs",
                 force: bool = False, progress: bool = False) -> dict:
    """Run one chapter notebook; returns its results (the existing ones when already complete).

    Raises :class:`ParameterError` (before any kernel starts) for bad parameters or profile. A
    failing notebook does not raise: its results have ``status == "failed"`` and an ``error``.
    """
    run = PreparedRun(path, profile, overrides, runs_dir)
    if not force:
        done = run.completed()
        if done is not None:
            log.info("reusing complete run %s", _display_path(run.run_dir))
            return done
    log.info("running %s (profile %s) in %s", run.path, profile, _display_path(run.run_dir))
    return execute(run, progress=progress)


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------

def _resolve_notebook_path(notebook: str, spec_path: Path) -> Path:
    """Relative notebook paths: against the current directory first, then the sweep file's folder."""
    path = Path(notebook)
    if path.is_absolute() or path.exists():
        return path
    beside = spec_path.parent / path
    return beside if beside.exists() else path


def expand_sweep(spec_path, runs_dir="runs") -> list[PreparedRun]:
    """All runs of a sweep file, validated, in a deterministic order (entries, then grid product).
    Identical runs (same notebook and run id) appear once."""
    spec_path = Path(spec_path)
    try:
        spec = yaml.safe_load(spec_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ParameterError(f"cannot read sweep {spec_path}: {err}") from err
    entries = spec.get("runs") if isinstance(spec, dict) and "runs" in spec else [spec]
    if not isinstance(entries, list) or not entries:
        raise ParameterError(f"{spec_path}: expected a mapping with `notebook:` or a list under `runs:`")
    runs, seen = [], set()
    for n, entry in enumerate(entries):
        where = f"{spec_path} entry {n}"
        if not isinstance(entry, dict) or "notebook" not in entry:
            raise ParameterError(f"{where}: each run needs a `notebook:`")
        unknown = set(entry) - {"notebook", "profile", "parameters", "grid"}
        if unknown:
            raise ParameterError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        fixed = dict(entry.get("parameters") or {})
        grid = dict(entry.get("grid") or {})
        if not isinstance(entry.get("parameters") or {}, dict) or not isinstance(entry.get("grid") or {}, dict):
            raise ParameterError(f"{where}: `parameters` and `grid` must be mappings")
        # `notebook:` and `profile:` may be lists too: chapters x profiles x grid
        notebooks = entry["notebook"] if isinstance(entry["notebook"], list) else [entry["notebook"]]
        profiles = grid.pop("profile", None) or entry.get("profile", "default")
        profiles = profiles if isinstance(profiles, list) else [profiles]
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ParameterError(f"{where}: grid {name!r} must be a non-empty list of values")
        names = list(grid)
        for notebook, profile in itertools.product(notebooks, profiles):
            path = _resolve_notebook_path(str(notebook), spec_path)
            for combo in itertools.product(*(grid[k] for k in names)):
                overrides = {**fixed, **dict(zip(names, combo))}
                try:
                    run = PreparedRun(path, profile, overrides, runs_dir)
                except ParameterError as err:
                    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                    raise ParameterError(f"{where} ({path.name}, profile {profile}{', ' if shown else ''}{shown}): {err}") from err
                key = (str(run.path.resolve()), run.run_id)
                if key not in seen:
                    seen.add(key)
                    runs.append(run)
    return runs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` with 0 <= i < N."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError as err:
        raise ParameterError(f"--shard {text!r}: expected i/N, e.g. 0/4") from err
    if n < 1 or not 0 <= i < n:
        raise ParameterError(f"--shard {text!r}: need 0 <= i < N (i is 0-based)")
    return i, n


def _batch_worker(path: str, profile: str, overrides: dict, runs_dir: str) -> dict:
    """Runs in a pool process; never raises, so one broken run cannot take the sweep down."""
    try:
        return run_notebook(path, profile, overrides, runs_dir)
    except Exception as err:  # noqa: BLE001
        return {"notebook": path, "profile": profile, "parameters": overrides, "status": "failed",
                "error": _describe_error(err), "numbers": {}}


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value
    return out


def summary_rows(runs: list[PreparedRun], results: dict) -> tuple[list[str], list[dict]]:
    """One row per run of the sweep (runs not done yet, e.g. other shards, read ``pending``)."""
    rows = []
    for run in runs:
        res = results.get(run.run_id)
        if res is None:
            with contextlib.suppress(OSError, json.JSONDecodeError):
                res = json.loads(run.results_path.read_text())
        row = {"notebook": _display_path(run.path), "run_id": run.run_id, "profile": run.profile,
               "status": (res or {}).get("status", "pending")}
        row.update(_flatten("param", run.parameters, {}))
        row.update(_flatten("number", (res or {}).get("numbers", {}), {}))
        rows.append(row)
    fixed = ["notebook", "run_id", "profile", "status"]
    params = sorted({k for r in rows for k in r if k.startswith("param.")})
    numbers = sorted({k for r in rows for k in r if k.startswith("number.")})
    return fixed + params + numbers, rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_summary(spec_path, runs: list[PreparedRun], results: dict, runs_dir) -> tuple[Path, Path]:
    columns, rows = summary_rows(runs, results)
    stem = Path(spec_path).stem
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    csv_path = runs_dir / f"{stem}-summary.csv"
    write_atomic(csv_path, buf.getvalue())

    def md(value):
        return _cell(value).replace("|", "\\|")

    lines = [f"# Sweep `{stem}`", "",
             "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(md(r.get(c)) for c in columns) + " |" for r in rows]
    md_path = runs_dir / f"{stem}-summary.md"
    write_atomic(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def run_batch(spec_path, jobs: int = 1, shard=None, runs_dir="runs") -> list[dict]:
    """Run a sweep (validated up front, resumable, shardable); returns this shard's results.

    ``shard`` is ``(i, N)`` or ``"i/N"``: run index ``k`` belongs to shard ``k % N``. Complete runs
    are reused, failures never stop the other runs, and the summary files always list the whole
    sweep. Check ``any(r["status"] != "ok" for r in results)`` for failure.
    """
    if isinstance(shard, str):
        shard = parse_shard(shard)
    all_runs = expand_sweep(spec_path, runs_dir)
    mine = [r for k, r in enumerate(all_runs) if shard is None or k % shard[1] == shard[0]]
    results: dict[str, dict] = {}
    todo = []
    for run in mine:
        done = run.completed()
        if done is not None:
            results[run.run_id] = done
        else:
            todo.append(run)
    log.info("sweep %s: %d runs%s, %d already complete, %d to run", spec_path, len(mine),
             f" in shard {shard[0]}/{shard[1]}" if shard else "", len(mine) - len(todo), len(todo))

    def report(k, run, res):
        results[run.run_id] = res
        log.info("[%d/%d] %s %s/%s%s", k, len(todo), res.get("status"), run.stem, run.run_id,
                 f": {res.get('error')}" if res.get("error") else "")

    if jobs > 1 and len(todo) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # kernels and zmq threads do not survive fork
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_batch_worker, str(r.path), r.profile, r.overrides, str(runs_dir)): r
                       for r in todo}
            for k, fut in enumerate(as_completed(futures), 1):
                report(k, futures[fut], fut.result())
    else:
        for k, run in enumerate(todo, 1):
            report(k, run, _batch_worker(str(run.path), run.profile, run.overrides, str(runs_dir)))

    csv_path, md_path = write_summary(spec_path, all_runs, results, runs_dir)
    log.info("summary: %s, %s", csv_path, md_path)
    return [results[r.run_id] for r in mine]


# --------------------------------------------------------------------------------------------
# The book
# --------------------------------------------------------------------------------------------

def toc_files(toc) -> list[str]:
    """Every ``file:`` (and ``root:``) entry of a jupyter-book ``_toc.yml``, in order."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _notebook_entry(entry: str) -> bool:
    return entry.replace("\\", "/").startswith("notebooks/")


def _source_for(root: Path, entry: str) -> Path | None:
    path = root / entry
    if path.suffix and path.exists():
        return path
    for ext in (".md", ".ipynb", ".rst"):
        candidate = path.with_name(path.name + ext) if not path.suffix else path.with_suffix(ext)
        if candidate.exists():
            return candidate
    return None


def _strip_toc_notebook_ext(node):
    """Notebook entries point at the staged ``.ipynb``: drop any explicit extension."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("file", "root") and isinstance(v, str) and _notebook_entry(v):
                v = str(Path(v).with_suffix("")) if Path(v).suffix in (".md", ".ipynb") else v
            out[k] = _strip_toc_notebook_ext(v)
        return out
    if isinstance(node, list):
        return [_strip_toc_notebook_ext(x) for x in node]
    return node


STATIC_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".bib", ".css", ".js", ".pdf"}


def stage_book(root: Path, stage: Path, executed: dict[str, Path], profile: str, runs_dir: Path) -> Path:
    """A copy of the book where every chapter is its executed notebook (outputs included)."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    write_atomic(stage / "_toc.yml", yaml.safe_dump(_strip_toc_notebook_ext(toc), sort_keys=False))

    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    probe = "notebooks/x.ipynb"
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns") or []
                                  if not fnmatch.fnmatch(probe, p)]
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # outputs come from our runs
    write_atomic(stage / "_config.yml", yaml.safe_dump(config, sort_keys=False))

    if (root / "book").is_dir():
        shutil.copytree(root / "book", stage / "book")
    # other pages the toc names, and files the config names (bibliography, logo)
    extra = [_source_for(root, e) for e in toc_files(toc) if not _notebook_entry(e)]
    for key in ("logo", "favicon"):
        if isinstance(config.get(key), str):
            extra.append(root / config[key])
    extra += [root / b for b in (config.get("bibtex_bibfiles") or [])]
    for src in extra:
        if src is None or not src.exists():
            continue
        dest = stage / src.relative_to(root)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    # figures and other static files next to the notebooks
    nb_dir = root / "notebooks"
    if nb_dir.is_dir():
        for src in nb_dir.rglob("*"):
            if src.is_file() and src.suffix.lower() in STATIC_SUFFIXES:
                dest = stage / src.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
    for stem, ipynb in executed.items():
        (stage / "notebooks").mkdir(exist_ok=True)
        shutil.copy2(ipynb, stage / "notebooks" / f"{stem}.ipynb")

    if (stage / "book" / "reproduction.md").exists():
        from gatlib.scoreboard import RECORDS_DIR, generated_records, write_scoreboard

        # the records copied from the repository's book/runs/ belong to `gat report`'s profile:
        # write_scoreboard replaces them by this build's, and the toc lists them
        target = write_scoreboard(stage, runs_dir, profile=profile)
        records = [p.relative_to(stage).with_suffix("").as_posix()
                   for p in generated_records(target.parent / RECORDS_DIR)]
        toc = _with_run_records(yaml.safe_load((stage / "_toc.yml").read_text()),
                                target.relative_to(stage).with_suffix("").as_posix(), records)
        write_atomic(stage / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))
    return stage


def _with_run_records(toc, page: str, records: list[str]):
    """The toc with the run records (docnames) as sections of the scoreboard ``page``: with
    ``only_build_toc_files`` a page the toc does not name is not built, and the scoreboard's links
    to it would break the ``-W`` build. Entries already naming a record are dropped first (and a
    part or a ``sections`` list left empty by that)."""
    if not records:
        return toc
    wanted = set(records)

    def named(node) -> str:
        return str(node.get("file", "")).removesuffix(".md") if isinstance(node, dict) else ""

    def walk(node):
        if isinstance(node, list):
            items = [walk(item) for item in node if named(item) not in wanted]
            return [item for item in items if not (isinstance(item, dict) and "file" not in item
                                                    and "chapters" in item and not item["chapters"])]
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if "sections" in out and not out["sections"]:
                del out["sections"]
            if named(out) == page:
                out["sections"] = [*(out.get("sections") or []), *({"file": r} for r in records)]
            return out
        return node

    return walk(toc)


def _jupyter_book_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def build_book(root=".", profile: str = "default", runs_dir=None, build_dir="_build",
               strict: bool = True) -> Path:
    """Run every notebook of ``_toc.yml`` (reusing complete runs), stage the executed notebooks and
    build the HTML book into ``<build_dir>/html``. Returns the path of ``index.html``.

    jupyter-book writes to ``<build_dir>/jb/_build/html`` (kept for incremental builds), which is
    then copied to ``<build_dir>/html``.
    """
    root = Path(root).resolve()
    runs_dir = Path(runs_dir).resolve() if runs_dir else root / "runs"
    build_dir = Path(build_dir)
    build_dir = (build_dir if build_dir.is_absolute() else Path.cwd() / build_dir).resolve()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = [e for e in toc_files(toc) if _notebook_entry(e)]
    executed, failures = {}, []
    for entry in entries:
        source = _source_for(root, entry)
        if source is None:
            failures.append(f"{entry}: no notebook source found")
            continue
        if source.suffix == ".ipynb":
            source = source.with_suffix(".md") if source.with_suffix(".md").exists() else source
        res = run_notebook(source, profile=profile, runs_dir=runs_dir)
        if res["status"] != "ok":
            failures.append(f"{entry}: {res.get('error')} (see {res.get('run_dir')})")
            continue
        executed[source.stem] = runs_dir / source.stem / res["run_id"] / f"{source.stem}.ipynb"
    if failures:
        raise BookError("notebooks failed:\n  " + "\n  ".join(failures))

    stage = stage_book(root, build_dir / "stage", executed, profile, runs_dir)
    out = build_dir / "jb"
    cmd = _jupyter_book_cmd() + ["build", str(stage), "--builder", "html", "--path-output", str(out)]
    if strict:
        cmd += ["-W", "--keep-going"]
    log.info("building: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=stage)
    if proc.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {proc.returncode})")
    html = build_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "_build" / "html", html)
    index = html / "index.html"
    if not index.exists():
        raise BookError(f"jupyter-book finished but {index} is missing")
    return index


class BookError(RuntimeError):
    """The book could not be built (a chapter failed, or jupyter-book did)."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _format_number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _print_run(res: dict) -> None:
    print(f"run dir: {res.get('run_dir')}")
    print(f"status:  {res.get('status')}" + (f" ({res['error']})" if res.get("error") else ""))
    if res.get("wall_time_s") is not None and res.get("peak_rss_bytes"):
        print(f"cost:    {res['wall_time_s']:.0f} s, peak {res['peak_rss_bytes'] / 2 ** 30:.2f} GiB, "
              f"{res.get('allocator') or 'unrecorded'} malloc")
    numbers = res.get("numbers") or {}
    if numbers:
        print(f"numbers ({len(numbers)}):")
        for key in list(sorted(numbers))[:30]:
            print(f"  {key} = {_format_number(numbers[key])}")
        if len(numbers) > 30:
            print(f"  ... and {len(numbers) - 30} more in results.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gat", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one chapter notebook")
    p.add_argument("notebook")
    p.add_argument("--profile", default="default", help="smoke | default | paper")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (value parsed as YAML); repeatable")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--force", action="store_true", help="rerun even when a complete run exists")
    p.add_argument("--progress", action="store_true", help="show papermill's cell progress bar")

    b = sub.add_parser("batch", help="run a sweep file (grid of parameters)",
                       description="Sweep file: {notebook, profile, parameters, grid} or a list under runs:. "
                                   "Complete runs are skipped; a summary CSV/MD lands in the runs dir.")
    b.add_argument("spec")
    b.add_argument("--jobs", type=int, default=1, help="runs in parallel (process pool)")
    b.add_argument("--shard", default=None, help="i/N, i 0-based: runs whose index %% N == i")
    b.add_argument("--runs-dir", default="runs")

    r = sub.add_parser("report", help="regenerate the scoreboard in book/reproduction.md and its run records in book/runs/")
    r.add_argument("--runs-dir", default=None, help="default: <root>/runs")
    r.add_argument("--root", default=".")
    r.add_argument("--profile", default="default")

    k = sub.add_parser("book", help="run every chapter and build the HTML book")
    k.add_argument("--profile", default="default")
    k.add_argument("--runs-dir", default=None, help="default: <root>/runs")
    k.add_argument("--build-dir", default="_build")
    k.add_argument("--root", default=".")
    k.add_argument("--allow-warnings", action="store_true", help="do not pass -W to jupyter-book")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="gat: %(message)s")
    try:
        if args.command == "run":
            res = run_notebook(args.notebook, args.profile, args.param, args.runs_dir,
                               force=args.force, progress=args.progress)
            _print_run(res)
            return 0 if res["status"] == "ok" else 1
        if args.command == "batch":
            results = run_batch(args.spec, jobs=args.jobs, shard=parse_shard(args.shard),
                                runs_dir=args.runs_dir)
            failed = [r for r in results if r.get("status") != "ok"]
            print(f"{len(results) - len(failed)} ok, {len(failed)} failed")
            for r in failed:
                print(f"  failed: {r.get('notebook')} {r.get('run_id', '')}: {r.get('error')}")
            return 1 if failed else 0
        if args.command == "report":
            from gatlib.scoreboard import RECORDS_DIR, generated_records, write_scoreboard

            path = write_scoreboard(args.root, args.runs_dir, profile=args.profile)
            records = generated_records(path.parent / RECORDS_DIR)
            print(f"scoreboard written to {path}, with {len(records)} run record(s) in {path.parent / RECORDS_DIR}")
            return 0
        if args.command == "book":
            if args.profile not in PROFILES:
                raise ParameterError(f"unknown profile {args.profile!r}: choose one of {', '.join(PROFILES)}")
            index = build_book(args.root, args.profile, args.runs_dir, args.build_dir,
                               strict=not args.allow_warnings)
            print(f"book: {index}")
            return 0
    except ParameterError as err:
        print(f"gat: error: {err}", file=sys.stderr)
        return 2
    except (BookError, RuntimeError, OSError) as err:
        print(f"gat: error: {err}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
