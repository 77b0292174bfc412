"""The runner (`gat run`, `gat batch`), the scoreboard (`gat report`) and a tiny `gat book`.

The notebooks executed here are the tiny fixtures in tests/fixtures/notebooks/ (a few seconds each):
`record.md` records numbers and fails when `value < 0`; `fails.md` raises after recording.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatlib import runbook, scoreboard
from gatlib.runbook import ParameterError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
RECORD = FIXTURES / "record.md"
FAILS = FIXTURES / "fails.md"


def gat(*args, cwd=None):
    """The installed console script, as a user would call it."""
    exe = Path(sys.executable).with_name("gat")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


# ---------------------------------------------------------------- parameters (no kernel involved)

def test_profiles_mirror_chapter():
    import gatlib.chapter

    assert runbook.PROFILES == gatlib.chapter.PROFILES


def test_defaults_presets_and_overrides_resolve_in_order(tmp_path):
    run = runbook.PreparedRun(RECORD, "default", None, tmp_path)
    assert run.parameters == {"profile": "default", "seed": 0, "device": "cpu", "value": 0.5,
                              "scale": 1.0, "label": "plain", "steps": 3}
    assert run.overrides == {}
    smoke = runbook.PreparedRun(RECORD, "smoke", {"label": "cli", "value": 1}, tmp_path)
    assert smoke.parameters["profile"] == "smoke"
    assert smoke.parameters["scale"] == 2.0 and isinstance(smoke.parameters["scale"], float)  # preset, int -> float
    assert smoke.parameters["label"] == "cli"  # override beats preset
    assert smoke.parameters["value"] == 1.0 and isinstance(smoke.parameters["value"], float)
    assert smoke.overrides == {"label": "cli", "value": 1.0}
    assert runbook.PreparedRun(RECORD, "paper", None, tmp_path).parameters["value"] == 0.75
    # the run directory is <runs>/<stem>/<profile>-<10 hex>, and depends on the parameters
    assert smoke.run_dir.parent == tmp_path / "record" and smoke.run_id.startswith("smoke-")
    assert len(smoke.run_id.split("-")[1]) == 10
    assert smoke.run_id != runbook.PreparedRun(RECORD, "smoke", None, tmp_path).run_id
    # an override equal to the profile's value is not an override: same run, canonical
    same = runbook.PreparedRun(RECORD, "default", {"steps": 3}, tmp_path)
    assert same.run_id == run.run_id and same.overrides == {}


def test_cli_overrides_are_yaml_and_strings_stay_strings(tmp_path):
    run = runbook.PreparedRun(RECORD, "default", ["steps=7", "value=1e-3", "label=007"], tmp_path)
    assert run.parameters["steps"] == 7 and run.parameters["value"] == 0.001
    assert run.parameters["label"] == "007"


@pytest.mark.parametrize("overrides, message", [
    ({"stepz": 3}, "unknown parameter 'stepz'"),
    ({"steps": 0.5}, "parameter 'steps' expects int"),
    ({"steps": True}, "parameter 'steps' expects int"),
    ({"value": "high"}, "parameter 'value' expects float"),
    ({"label": 3}, "parameter 'label' expects str"),
    ({"profile": "paper"}, "use --profile"),
])
def test_bad_parameters_are_refused_before_any_kernel(tmp_path, overrides, message):
    with pytest.raises(ParameterError, match=message):
        runbook.run_notebook(RECORD, "smoke", overrides, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="unknown profile 'huge'"):
        runbook.run_notebook(RECORD, "huge", runs_dir=tmp_path / "runs")


def test_cli_exit_code_2_names_parameter_and_type(tmp_path):
    runs = tmp_path / "runs"
    bad_type = gat("run", RECORD, "--profile", "smoke", "-p", "steps=abc", "--runs-dir", runs)
    assert bad_type.returncode == 2
    assert "'steps'" in bad_type.stderr and "expects int" in bad_type.stderr
    unknown = gat("run", RECORD, "-p", "nope=1", "--runs-dir", runs)
    assert unknown.returncode == 2 and "unknown parameter 'nope'" in unknown.stderr
    profile = gat("run", RECORD, "--profile", "huge", "--runs-dir", runs)
    assert profile.returncode == 2 and "unknown profile" in profile.stderr
    assert not runs.exists()


def test_parameters_cell_must_be_simple_assignments():
    assert runbook.parse_parameters_cell('profile = "default"\nseed = 0\ndevice = "auto"\nx: float = 1.5') == \
        {"profile": "default", "seed": 0, "device": "auto", "x": 1.5}
    with pytest.raises(ParameterError, match="not a simple"):
        runbook.parse_parameters_cell('profile = "default"\nseed = 0\ndevice = "auto"\nprint(1)')
    with pytest.raises(ParameterError, match="missing the common parameter"):
        runbook.parse_parameters_cell('profile = "default"\nseed = 0')


# ---------------------------------------------------------------- executing notebooks

@pytest.mark.notebooks
def test_run_notebook_writes_results_and_reuses_them(tmp_path):
    runs = tmp_path / "runs"
    res = runbook.run_notebook(RECORD, "smoke", {"steps": 5}, runs_dir=runs)
    assert res["status"] == "ok" and res["error"] is None
    assert res["numbers"] == {"value": 1.0, "table3.original.in_domain": 0.912, "label": "smoke-label"}
    assert res["stamp"]["profile"] == "smoke"
    run_dir = runs / "record" / res["run_id"]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == res
    for key in ("notebook", "run_id", "profile", "parameters", "seed", "status", "error", "numbers", "stamp",
                "git_commit", "versions", "started", "finished", "wall_time_s"):
        assert key in saved, key
    assert set(saved["versions"]) >= {"python", "torch", "torchvision", "papermill", "jupytext", "gatlib"}
    assert saved["parameters"]["steps"] == 5 and saved["parameters"]["profile"] == "smoke"
    assert (run_dir / "record.ipynb").is_file()
    assert not (run_dir / "numbers.json.partial").exists()
    # where the time went: papermill's per-cell durations, slowest first, each naming its cell
    slow = saved["slowest_cells"]
    assert 1 <= len(slow) <= 5 and [c["seconds"] for c in slow] == sorted((c["seconds"] for c in slow), reverse=True)
    cells = runbook.read_notebook(run_dir / "record.ipynb").cells
    for entry in slow:
        assert cells[entry["cell"]].cell_type == "code" and entry["seconds"] >= 0
        assert entry["source"] and entry["source"] in cells[entry["cell"]].source
    # a complete run is reused, not re-executed; force re-executes
    mtime = (run_dir / "results.json").stat().st_mtime_ns
    assert runbook.run_notebook(RECORD, "smoke", {"steps": 5}, runs_dir=runs) == saved
    assert (run_dir / "results.json").stat().st_mtime_ns == mtime
    # a fresh clone has the committed results.json but no executed notebook: it runs again
    (run_dir / "record.ipynb").unlink()
    again = runbook.run_notebook(RECORD, "smoke", {"steps": 5}, runs_dir=runs)
    assert again["status"] == "ok" and again["started"] != saved["started"]
    assert (run_dir / "record.ipynb").is_file()


@pytest.mark.notebooks
def test_failing_notebook_keeps_numbers_and_notebook(tmp_path):
    completed = gat("run", FAILS, "--runs-dir", tmp_path / "runs")
    assert completed.returncode == 1, completed.stderr
    (results_path,) = (tmp_path / "runs" / "fails").glob("default-*/results.json")
    res = json.loads(results_path.read_text())
    assert res["status"] == "failed"
    assert "RuntimeError" in res["error"] and "boom after recording" in res["error"]
    assert res["numbers"] == {"before_failure": 0.25}
    assert (results_path.parent / "fails.ipynb").is_file()
    assert "run dir:" in completed.stdout and "before_failure" in completed.stdout


# ---------------------------------------------------------------- sweeps

def _sweep(tmp_path, grid=(0.1, -1.0, 0.2)) -> Path:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"notebook": str(RECORD), "profile": "smoke",
                                    "parameters": {"steps": 2}, "grid": {"value": list(grid)}}))
    return spec


def test_sweep_expands_validates_and_shards(tmp_path):
    spec = tmp_path / "many.yaml"
    spec.write_text(yaml.safe_dump({"runs": [
        {"notebook": str(RECORD), "profile": "smoke", "grid": {"value": [0.1, 0.2, 0.3], "steps": [1, 2]}},
        {"notebook": str(FAILS), "profile": ["smoke", "default"]},
    ]}))
    runs = runbook.expand_sweep(spec, tmp_path / "runs")
    assert len(runs) == 8 and len({(r.stem, r.run_id) for r in runs}) == 8
    shards = [[r.run_id for k, r in enumerate(runs) if k % 3 == i] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(r.run_id for r in runs)  # disjoint and complete
    assert all(set(a).isdisjoint(b) for a in shards for b in shards if a is not b)
    assert runbook.parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ParameterError):
            runbook.parse_shard(bad)
    # one bad value anywhere stops the sweep before anything runs
    spec.write_text(yaml.safe_dump({"notebook": str(RECORD), "grid": {"steps": [1, "two"]}}))
    with pytest.raises(ParameterError, match="'steps' expects int"):
        runbook.run_batch(spec, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.notebooks
def test_batch_runs_all_reports_failure_and_resumes(tmp_path):
    spec, runs = _sweep(tmp_path), tmp_path / "runs"
    results = runbook.run_batch(spec, jobs=2, runs_dir=runs)
    assert [r["status"] for r in results] == ["ok", "failed", "ok"]  # sweep order, one failure
    assert "negative" in results[1]["error"]
    assert results[1]["numbers"]["value"] == -2.0  # recorded before the failure
    csv_text = (runs / "sweep-summary.csv").read_text()
    assert csv_text.splitlines()[0].startswith("notebook,run_id,profile,status,")
    assert "param.value" in csv_text and "number.value" in csv_text and csv_text.count("failed") == 1
    assert "| failed |" in (runs / "sweep-summary.md").read_text()

    ok_files = [runs / "record" / r["run_id"] / "results.json" for r in results if r["status"] == "ok"]
    mtimes = [p.stat().st_mtime_ns for p in ok_files]
    completed = gat("batch", spec, "--runs-dir", runs)  # resumes: only the failed run is retried
    assert completed.returncode == 1, completed.stderr
    assert "2 already complete, 1 to run" in completed.stderr
    assert [p.stat().st_mtime_ns for p in ok_files] == mtimes


@pytest.mark.notebooks
def test_batch_shards_run_disjoint_parts(tmp_path):
    spec, runs = _sweep(tmp_path, grid=(0.1, 0.2, 0.3)), tmp_path / "runs"
    first = runbook.run_batch(spec, shard="0/2", runs_dir=runs)
    summary = (runs / "sweep-summary.csv").read_text()
    assert summary.count(",ok,") == 2 and summary.count(",pending,") == 1
    second = runbook.run_batch(spec, shard=(1, 2), runs_dir=runs)
    assert [r["parameters"]["value"] for r in first] == [0.1, 0.3]
    assert [r["parameters"]["value"] for r in second] == [0.2]
    assert (runs / "sweep-summary.csv").read_text().count(",ok,") == 3


# ---------------------------------------------------------------- scoreboard

def _fake_run(runs, stem, run_id, numbers, finished, overrides=None, status="ok"):
    profile = run_id.split("-")[0]
    d = runs / stem / run_id
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "status": status, "profile": profile, "overrides": overrides or {}, "seed": 0,
        "parameters": {"profile": profile, "seed": 0}, "finished": finished, "numbers": numbers}))


def _book_page(root: Path, text: str) -> Path:
    page = root / "book" / "reproduction.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return page


def test_report_rewrites_between_markers_deterministically(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "00_setup", "default-0000000001", {"table3.original.in_domain": 0.5}, "2025-01-01T00:00:00")
    _fake_run(runs, "00_setup", "default-0000000002", {"table3.original.in_domain": 0.9912,
                                                       "table1.original.clean": 0.98}, "2025-02-01T00:00:00")
    _fake_run(runs, "00_setup", "default-0000000003", {"table3.original.in_domain": 0.1}, "2025-03-01T00:00:00",
              overrides={"seed": 3})  # a sweep run: never on the scoreboard
    _fake_run(runs, "00_setup", "default-0000000004", {"table3.original.in_domain": 0.2}, "2025-04-01T00:00:00",
              status="failed")
    page = _book_page(tmp_path, "# Scores\n\nbefore\n<!-- scoreboard:start -->\nold text\n<!-- scoreboard:end -->\nafter\n")
    completed = gat("report", "--root", tmp_path)
    assert completed.returncode == 0, completed.stderr
    text = page.read_text()
    assert text.startswith("# Scores\n\nbefore\n<!-- scoreboard:start -->") and text.endswith("<!-- scoreboard:end -->\nafter\n")
    assert "old text" not in text
    assert "| Table | Row | Column | Paper | Ours | Source |" in text
    row = next(line for line in text.splitlines() if "In-domain (LSUN)" in line and "| Original |" in line)
    assert "| 94.2 | [99.1](runs/00_setup-default-0000000002.md) |" in row and "00_setup/default-0000000002" in row
    clean = next(line for line in text.splitlines() if "Classification LSUN · clean" in line and "| Original |" in line)
    assert "| 88.9 | [98.0](runs/00_setup-default-0000000002.md) |" in clean
    # every other paper number is listed (table1.original.clean fills two: Table 1's and §4's 88.9 %),
    # as "not yet" unless no run of ours can ever be compared with it
    assert text.count("| not comparable |") == len(scoreboard.INCOMPARABLE) == 1
    assert text.count("| not yet |") == len(scoreboard.paper_entries()) - 3 - len(scoreboard.INCOMPARABLE)
    assert f"3 of {len(scoreboard.paper_entries())} paper numbers have a value of ours so far, 1 is marked" in text
    text_row = next(line for line in text.splitlines() if "| LSUN scene classifier | test accuracy |" in line)
    assert "| 88.9 | [98.0](runs/00_setup-default-0000000002.md) |" in text_row
    assert "| User study |" in text and "| Table 2 |" in text
    before = page.read_bytes()
    scoreboard.write_scoreboard(tmp_path)
    assert page.read_bytes() == before
    # another profile has no runs yet
    scoreboard.write_scoreboard(tmp_path, profile="smoke")
    assert "99.1" not in page.read_text()


def test_report_without_markers_fails_clearly(tmp_path):
    _book_page(tmp_path, "# Scores\n\nno markers here\n")
    with pytest.raises(scoreboard.ScoreboardError, match="scoreboard:start"):
        scoreboard.write_scoreboard(tmp_path)
    completed = gat("report", "--root", tmp_path)
    assert completed.returncode == 1 and "scoreboard:start" in completed.stderr


def test_scoreboard_formats():
    assert scoreboard.format_ours(0.9876) == "98.8"
    assert scoreboard.format_ours({"mean": 0.5, "std": 0.01}) == "50.0 ± 1.0"
    assert scoreboard.format_ours([0.5, 0.7]) == "60.0 ± 14.1 (n=2)"
    assert scoreboard.format_ours(0.004, percent=False) == "0.004"
    assert scoreboard.format_ours(-0.064, signed=True) == "−6.4"
    assert scoreboard.format_ours(0.012, signed=True) == "+1.2"
    assert scoreboard.format_ours(-0.0001, signed=True) == "+0.0"      # no "-0.0"
    keys = {e.key for e in scoreboard.paper_entries()}
    assert set(scoreboard.PAPER_TO_OURS) <= keys
    recomputed = {e.key: e.value for e in scoreboard.paper_entries()}
    assert recomputed["table2.AT PGD.mean_unseen_recomputed"] == 13.03


# ---------------------------------------------------------------- a tiny book

@pytest.mark.book
@pytest.mark.notebooks
def test_tiny_book_builds(tmp_path):
    root = tmp_path / "tiny"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(RECORD, root / "notebooks" / "record.md")
    (root / "_config.yml").write_text(yaml.safe_dump({
        "title": "Tiny book", "author": "tests", "only_build_toc_files": True,
        "exclude_patterns": ["_build", "runs", "notebooks/*.ipynb", "**.ipynb_checkpoints"],
        "execute": {"execute_notebooks": "off"}}))
    (root / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "intro",
        "chapters": [{"file": "notebooks/record"}, {"file": "book/reproduction"}]}))
    (root / "intro.md").write_text("# Tiny book\n\nOne chapter and a scoreboard.\n")
    _book_page(root, "# Reproduction\n\n<!-- scoreboard:start -->\n<!-- scoreboard:end -->\n")
    build = tmp_path / "out"
    completed = gat("book", "--profile", "smoke", "--root", root, "--build-dir", build)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert (build / "html" / "index.html").is_file()
    chapter = (build / "html" / "notebooks" / "record.html").read_text()
    assert "Run stamp" in chapter  # the executed notebook, outputs included
    assert "not yet" in (build / "html" / "book" / "reproduction.html").read_text()
    assert "scoreboard:start -->\n<!--" in (root / "book" / "reproduction.md").read_text()  # source untouched
    assert os.path.isdir(root / "runs" / "record")


def _user_study_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """``(row, column) -> cells`` of the scoreboard's user-study rows."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| User study |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[1], cells[2]] = cells
    return rows


def test_scoreboard_user_study_rows(tmp_path):
    """Real vs fake: the change from unperturbed generated images, computed from the printed and
    the recorded rates (never an absolute machine rate beside people's); label experiment: chapter
    08's machine study, not chapter 02's oracle label preservation."""
    runs = tmp_path / "runs"
    rvf = "user_study.machine.real_vs_fake"
    label = "user_study.label_experiment.majority_matches_ground_truth"
    _fake_run(runs, "08_user_study", "default-0000000008", {
        f"{rvf}.judged_real.real": 0.68, f"{rvf}.judged_real.generated": 0.228,
        f"{rvf}.judged_real.noise-adv": 0.164, f"{rvf}.judged_real.style-adv": 0.216,
        # a recorded difference that disagrees with the rates: the scoreboard must not read it
        f"{rvf}.difference_from_generated.noise-adv": 0.5, f"{rvf}.difference_from_generated.style-adv": 0.5,
        f"{label}.overall": 0.598, f"{label}.style_based": 0.544, f"{label}.noise_based": 0.652},
        "2025-01-01T00:00:00")
    _fake_run(runs, "02_latent_attacks", "default-0000000002", {
        "preservation.both": {"majority": 0.529}, "attack.style.preservation": 0.473,
        "attack.noise.preservation": 0.578}, "2025-01-01T00:00:00")
    page = _book_page(tmp_path, "# Scores\n\n<!-- scoreboard:start -->\n<!-- scoreboard:end -->\n")
    scoreboard.write_scoreboard(tmp_path)
    text = page.read_text()
    rows = _user_study_rows(text)
    record = "runs/08_user_study-default-0000000008.md"
    diff = "Judged real, minus unperturbed generated (points)"
    # paper: 74.3 - 74.7 and 70.8 - 74.7; ours: 16.4 - 22.8 and 21.6 - 22.8 (the absolute 16.4 / 21.6 would fail)
    assert rows[diff, "noise based"][3:5] == ["−0.4 (74.3 − 74.7)", f"[−6.4]({record})"]
    assert rows[diff, "style based"][3:5] == ["−3.9 (70.8 − 74.7)", f"[−1.2]({record})"]
    assert not any(cells[1] == "Judged real" and cells[2] != "unperturbed generated" for cells in rows.values())
    baseline = rows["Judged real", "unperturbed generated"]
    assert baseline[3:5] == ["74.7", scoreboard.NOT_COMPARABLE] and "22.8" not in " ".join(baseline)
    assert not any("16.4" in c or "21.6" in c or "22.8" in c for cells in rows.values() for c in cells)
    # label experiment: chapter 08's values and run, not chapter 02's
    agree = "Majority label matches ground truth"
    for column, paper, ours in (("overall", "99.2", "59.8"), ("style based", "98.7", "54.4"),
                                ("noise based", "99.7", "65.2")):
        assert rows[agree, column][3:5] == [paper, f"[{ours}]({record})"]
        assert "08_user_study/default-0000000008" in rows[agree, column][5]
    assert "02_latent_attacks" not in "".join(line for line in text.splitlines() if line.startswith("| User study |"))
    assert not (tmp_path / "book" / "runs" / "02_latent_attacks-default-0000000002.md").exists()
    # the count: 3 label rows + 2 differences; the baseline is not comparable, not a value of ours
    total = len(scoreboard.paper_entries())
    assert f"5 of {total} paper numbers have a value of ours so far, 1 is marked \"not comparable\"" in text
    # the notes name the source and why the other chapter's measure differs
    notes = [line for line in text.splitlines() if line.startswith("* User study")]
    assert len(notes) == 2
    assert "ours comes from chapter `08_user_study`" in notes[0] and "`02_latent_attacks` is a different measure" in notes[0]
    assert "only the change" in notes[1] and "not comparable" in notes[1]
    # the run record shows the two recorded rates each difference is computed from
    record_text = (tmp_path / "book" / record).read_text()
    noise_line = next(line for line in record_text.splitlines() if "| noise based | −0.4 (74.3 − 74.7) |" in line)
    assert f"`{rvf}.judged_real.noise-adv − {rvf}.judged_real.generated`" in noise_line
    assert "| `0.164` − `0.228` = `-0.064` |" in noise_line and "| −6.4 |" in noise_line


def test_scoreboard_difference_needs_both_recorded_numbers(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "08_user_study", "default-0000000008",
              {"user_study.machine.real_vs_fake.judged_real.noise-adv": 0.164}, "2025-01-01T00:00:00")
    rows = _user_study_rows(scoreboard.render_scoreboard(runs))
    assert rows["Judged real, minus unperturbed generated (points)", "noise based"][4] == scoreboard.NOT_YET


def test_scoreboard_finds_numbers_under_flat_dotted_keys_and_nested_dicts():
    numbers = {"preservation.both": {"majority": 0.53, "oracle-mlp": 0.5}, "attack": {"both": {"success": 0.9}},
               "step_sizes.eps": 0.04, "a.b": {"c": 1.0}, "a": {"b": {"d": 2.0}}}
    assert scoreboard._lookup(numbers, "preservation.both.majority") == 0.53
    assert scoreboard._lookup(numbers, "attack.both.success") == 0.9
    assert scoreboard._lookup(numbers, "step_sizes.eps") == 0.04
    assert scoreboard._lookup(numbers, "a.b.c") == 1.0 and scoreboard._lookup(numbers, "a.b.d") == 2.0
    assert scoreboard._lookup(numbers, "preservation.both.missing") is None
    assert scoreboard._lookup(numbers, "nothing") is None


def test_every_run_the_prose_cites_is_committed():
    """A run id named in the hand-written pages, the chapters or a docstring (e.g. deviations.md
    citing the run a number came from) must have its results.json under runs/: deleting a
    superseded run that prose still cites leaves a reader with a dangling reference."""
    import re

    root = Path(__file__).resolve().parents[1]
    generated = {root / "book" / "reproduction.md"}           # rewritten by `gat report` from runs/
    sources = [p for p in (*(root / "book").glob("*.md"), *(root / "notebooks").glob("*.md"),
                           *(root / "gatlib").rglob("*.py")) if p not in generated]
    committed = {p.parent.name for p in (root / "runs").glob("*/*/results.json")}
    cited = {}
    for path in sources:
        for run_id in re.findall(r"\b((?:default|paper)-[0-9a-f]{10})\b", path.read_text()):
            cited.setdefault(run_id, path.relative_to(root))
    assert cited, "the pages cite no run at all: the pattern is out of date"
    missing = {run_id: str(path) for run_id, path in cited.items() if run_id not in committed}
    assert not missing, f"cited runs with no results.json under runs/: {missing}"


def test_the_kernel_gets_sleeping_openmp_threads_unless_the_caller_chose(tmp_path, monkeypatch):
    """OMP_WAIT_POLICY=PASSIVE for the kernel (lower peak memory on the 2-core CPU), a caller's own
    choice kept, and the runner's environment restored afterwards."""
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *args, **kwargs: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    run = runbook.PreparedRun(RECORD, "smoke", None, tmp_path)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    runbook.execute(run)
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runbook.execute(run)
    assert seen == ["PASSIVE", "ACTIVE"] and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
