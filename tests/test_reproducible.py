"""Reproducible and traceable: the same seed and profile give bit-identical results on the CPU (in
process and through the runner), a run killed mid-way leaves no results behind and the next
`gat batch` completes it, and every value on the scoreboard has a run record behind it.

What tests/test_runbook.py already covers is not repeated here: a notebook that *raises* keeps its
numbers with status "failed" and `gat batch` retries exactly the failed runs; complete runs are
reused; `gat report` is idempotent.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from gatlib import runbook, scoreboard, zoo
from gatlib.attacks.latent import attack_batches

NOTEBOOK_HEAD = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
gat:
  profiles:
    smoke: {count: 6}
---

# %s

```{code-cell} ipython3
:tags: [parameters]

profile = "default"
seed = 0
device = "cpu"
count = 8
```
"""

SEEDED = NOTEBOOK_HEAD % "Seeded" + """
```{code-cell} ipython3
import hashlib
import random

import numpy as np
import torch

import gatlib.chapter
from gatlib import zoo
from gatlib.attacks.latent import attack_batches

chapter = gatlib.chapter.start(profile, seed, device)
chapter.record("rng.python", [random.random() for _ in range(count)])
chapter.record("rng.numpy", np.random.rand(count))
chapter.record("rng.torch", torch.rand(count))
G = zoo.generator("random-tiny", seed=seed)
F = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))   # initialised from the seeded RNG
result = attack_batches(G, F, torch.arange(count) % 10, seed=seed, batch_size=4, eps=0.05, delta=0.5,
                        max_iters=3, progress=False)
chapter.record("attack.images_sha256", hashlib.sha256(result.images.numpy().tobytes()).hexdigest())
chapter.record("attack.iterations", result.iterations)
chapter.record("attack.l2", result.l2)
chapter.stamp()
```
"""

# Waits while `hold.flag` exists (after writing its kernel's pid to `started.flag`): a run the test
# can kill in the middle, and complete later by removing the flag.
HELD = NOTEBOOK_HEAD % "Held" + """
```{code-cell} ipython3
import os
import time

import gatlib.chapter

chapter = gatlib.chapter.start(profile, seed, device)
chapter.record("before_hold", count)
with open("started.flag", "w") as handle:
    handle.write(str(os.getpid()))
while os.path.exists("hold.flag"):
    time.sleep(0.1)
chapter.record("after_hold", 2 * count)
chapter.stamp()
```
"""


def tiny_classifier(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


def write_notebook(root: Path, stem: str, text: str) -> Path:
    path = root / "notebooks" / f"{stem}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def gat(*args, cwd=None, timeout=600):
    exe = Path(sys.executable).with_name("gat")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


# ---------------------------------------------------------------- bit-identical on the CPU

@pytest.mark.usefixtures("one_thread")
def test_latent_attack_is_bit_identical_for_the_same_seed():
    def attack(seed):
        G = zoo.generator("random-tiny", seed=0)   # a fresh generator each time
        labels = torch.arange(10) % 10
        return attack_batches(G, tiny_classifier(), labels, seed=seed, batch_size=4, eps=0.05, delta=0.5,
                              max_iters=3, progress=False)

    first, second, other = attack(7), attack(7), attack(8)
    assert first.images.dtype == torch.float32 and first.images.shape == (10, 1, 32, 32)
    for name in ("images", "clean_images", "targets", "valid", "success", "iterations", "predictions", "l2", "linf"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.summary() == pytest.approx(second.summary(), nan_ok=True)
    assert not torch.equal(first.clean_images, other.clean_images), "another seed draws other latents"


@pytest.mark.notebooks
def test_two_runner_runs_record_identical_numbers(tmp_path):
    notebook = write_notebook(tmp_path, "seeded", SEEDED)
    first = runbook.run_notebook(notebook, "smoke", runs_dir=tmp_path / "runs-a")
    second = runbook.run_notebook(notebook, "smoke", runs_dir=tmp_path / "runs-b")
    assert first["status"] == second["status"] == "ok", (first.get("error"), second.get("error"))
    assert first["run_id"] == second["run_id"] and first["parameters"] == second["parameters"]
    assert len(first["numbers"]["rng.torch"]) == 6   # the smoke preset
    assert first["numbers"] == second["numbers"]
    saved = [json.loads((tmp_path / runs / "seeded" / first["run_id"] / "results.json").read_text())["numbers"]
             for runs in ("runs-a", "runs-b")]
    assert saved[0] == saved[1] == first["numbers"]


# ---------------------------------------------------------------- a run killed mid-way

def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"gat run ended before the notebook started: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)
    time.sleep(0.2)   # the pid is written


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.notebooks
def test_a_killed_run_leaves_no_results_and_the_next_batch_completes_it(tmp_path):
    notebook = write_notebook(tmp_path, "held", HELD)
    runs = tmp_path / "runs"
    run = runbook.PreparedRun(notebook, "smoke", None, runs)
    # an earlier complete run of the same id: the killed rerun must not leave its "ok" behind
    run.run_dir.mkdir(parents=True)
    run.results_path.write_text(json.dumps({"status": "ok", "numbers": {"old": 1}}))
    (run.run_dir / "held.ipynb").write_text("{}")
    (tmp_path / "hold.flag").touch()
    exe = Path(sys.executable).with_name("gat")
    proc = subprocess.Popen([str(exe), "run", str(notebook), "--profile", "smoke", "--runs-dir", str(runs), "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    kernel = None
    try:
        _wait_for(tmp_path / "started.flag", proc)
        kernel = int((tmp_path / "started.flag").read_text())
        _kill(proc.pid)          # the runner dies in the middle of the notebook (as with an OOM kill)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            _kill(proc.pid)
            proc.wait(timeout=60)
        if kernel is not None:
            _kill(kernel)        # its kernel would exit by itself once it notices its parent is gone
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not run.results_path.exists(), "a killed run must not leave a results.json (old or half-written)"
    assert not [p.name for p in run.run_dir.iterdir() if p.name.startswith(".results.json")]
    assert run.completed() is None

    (tmp_path / "hold.flag").unlink()
    (tmp_path / "started.flag").unlink()
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"notebook": str(notebook), "profile": "smoke"}))
    completed = gat("batch", spec, "--runs-dir", runs)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 already complete, 1 to run" in completed.stderr
    results = json.loads(run.results_path.read_text())
    assert results["status"] == "ok" and results["numbers"] == {"before_hold": 6, "after_hold": 12}
    assert run.completed() == results
    again = gat("batch", spec, "--runs-dir", runs)   # and now it is complete
    assert again.returncode == 0 and "1 already complete, 0 to run" in again.stderr


# ---------------------------------------------------------------- provenance of the scoreboard

def _fake_run(runs: Path, stem: str, run_id: str, numbers: dict, **extra) -> None:
    run_dir = runs / stem / run_id
    run_dir.mkdir(parents=True)
    profile = run_id.split("-")[0]
    (run_dir / "results.json").write_text(json.dumps({
        "status": "ok", "profile": profile, "overrides": {}, "seed": 0, "run_id": run_id,
        "parameters": {"profile": profile, "seed": 0, "eval_count": 300}, "finished": "2025-01-01T00:00:00",
        "numbers": numbers, "git_commit": "0123456789abcdef", "versions": {"torch": "2.14.1", "gatlib": "0.1.0"},
        "stamp": {"device": "cpu", "device_name": "x86_64", "peak_rss_bytes": 2**30, "allocator": "jemalloc"},
        "wall_time_s": 12.5,
        **extra}))


def scoreboard_values(page: Path) -> list[tuple[str, str]]:
    """``(row text, Ours cell)`` for every scoreboard row whose Ours cell is a value (not "not yet",
    not "not comparable")."""
    lines = page.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Table | Row | Column | Paper | Ours |"))
    ours = [c.strip() for c in lines[header].strip("|").split("|")].index("Ours")
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells[ours] not in (scoreboard.NOT_YET, scoreboard.NOT_COMPARABLE):
            rows.append((line, cells[ours]))
    return rows


def assert_every_value_has_a_record(page: Path) -> int:
    """Fails when a scoreboard value has no link to a run record, or the record is missing or
    belongs to another run; returns how many values were checked."""
    values = scoreboard_values(page)
    for line, cell in values:
        link = re.fullmatch(r"\[[^\]]+\]\((runs/([\w.-]+)\.md)\)", cell)
        assert link, f"scoreboard value without a run record link: {line}"
        record = page.parent / link.group(1)
        assert record.is_file(), f"{record} (linked from the scoreboard) does not exist"
        text = record.read_text()
        assert text.startswith(scoreboard.RECORD_MARKER)
        run_id = re.search(r"^\| Run id \| `([^`]+)` \|$", text, flags=re.M).group(1)
        assert link.group(2).endswith(run_id) and run_id in line, (line, run_id)
    return len(values)


def test_every_scoreboard_value_links_to_its_run_record(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "00_setup", "default-00000000aa", {"table3.original.in_domain": 0.99, "table1.original.clean": 0.98})
    _fake_run(runs, "04_adversarial_training", "default-00000000bb", {"table1.gat.clean": 0.97})
    page = tmp_path / "book" / "reproduction.md"
    page.parent.mkdir()
    page.write_text("# Scores\n\n<!-- scoreboard:start -->\n<!-- scoreboard:end -->\n")
    scoreboard.write_scoreboard(tmp_path)
    assert assert_every_value_has_a_record(page) == 4   # table1.original.clean fills two rows
    records = sorted(p.name for p in (tmp_path / "book" / "runs").iterdir())
    assert records == ["00_setup-default-00000000aa.md", "04_adversarial_training-default-00000000bb.md"]
    record = (tmp_path / "book" / "runs" / records[0]).read_text()
    for expected in ("| Run id | `default-00000000aa` |", "| Seed | 0 |", "| Git commit | `0123456789abcdef` |",
                     "| Device | `cpu (x86_64)` |", "| Wall time | 12.5 s |", "| Peak RSS | 1024 MiB",
                     "| Allocator | `jemalloc` |",
                     "| `torch` | `2.14.1` |", "| `eval_count` | `300` |", "`table3.original.in_domain`"):
        assert expected in record, expected

    # deterministic: a second report rewrites nothing
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [page, *(tmp_path / "book" / "runs").iterdir()]}
    scoreboard.write_scoreboard(tmp_path)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    # a newer run replaces the record; the stale one goes, a hand-written page stays
    (tmp_path / "book" / "runs" / "notes.md").write_text("# Notes by hand\n")
    _fake_run(runs, "04_adversarial_training", "default-00000000cc", {"table1.gat.clean": 0.96},
              finished="2025-02-01T00:00:00")
    scoreboard.write_scoreboard(tmp_path)
    assert sorted(p.name for p in (tmp_path / "book" / "runs").iterdir()) == [
        "00_setup-default-00000000aa.md", "04_adversarial_training-default-00000000cc.md", "notes.md"]
    assert assert_every_value_has_a_record(page) == 4   # table1.original.clean fills two rows
    # and the check bites: a value whose record is gone fails
    (tmp_path / "book" / "runs" / "00_setup-default-00000000aa.md").unlink()
    with pytest.raises(AssertionError, match="does not exist"):
        assert_every_value_has_a_record(page)


def test_the_repository_scoreboard_has_a_record_behind_every_value():
    page = Path(__file__).resolve().parent.parent / "book" / "reproduction.md"
    assert_every_value_has_a_record(page)


def test_stage_lists_the_run_records_under_the_scoreboard_page():
    toc = {"format": "jb-book", "root": "intro", "parts": [
        {"caption": "Reproduction", "chapters": [{"file": "book/reproduction"}, {"file": "book/data"}]},
        {"caption": "Old", "chapters": [{"file": "book/runs/x-default-0000000000"}]}]}
    records = ["book/runs/00_setup-smoke-0123456789", "book/runs/x-default-0000000000"]
    staged = runbook._with_run_records(toc, "book/reproduction", records)
    assert staged["parts"][0]["chapters"][0] == {"file": "book/reproduction",
                                                 "sections": [{"file": r} for r in records]}
    assert len(staged["parts"]) == 1          # named once only; the part left empty goes
    assert runbook._with_run_records(toc, "book/reproduction", []) == toc
