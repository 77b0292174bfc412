"""The kernel's malloc (gatlib.allocator): jemalloc when the machine has it, chosen by GAT_ALLOCATOR,
passed to the kernel through LD_PRELOAD, and recorded in every run's results.json.

CI (``CI=true``) must have jemalloc (``.ci/run`` installs Debian's libjemalloc2): there the tests that
need it fail rather than skip, so the committed runs' allocator is the one CI checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatlib import allocator, runbook

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
PROBE = "from gatlib import allocator; print(allocator.loaded())"


def _need_jemalloc():
    library = allocator.find_jemalloc()
    if library is None:
        reason = "no libjemalloc.so.2 on this machine"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}; .ci/run installs libjemalloc2 before `make test`", pytrace=False)
        pytest.skip(reason)
    return library


def _probe(extra_env: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env.update(extra_env)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_choices_and_bad_values(tmp_path, monkeypatch):
    assert allocator.choose("system") is None
    assert allocator.choose("auto") == allocator.find_jemalloc() == allocator.choose("")
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "system")
    assert allocator.choose() is None and allocator.kernel_env() == {}
    with pytest.raises(ValueError, match="GAT_ALLOCATOR='tcmalloc' is not 'auto', 'system'"):
        allocator.choose("tcmalloc")
    with pytest.raises(ValueError, match="no such file"):
        allocator.choose(str(tmp_path / "libjemalloc.so.2"))


def test_kernel_env_preloads_the_library_and_keeps_the_users_settings(tmp_path):
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_bytes(b"")      # only its path is used here: nothing loads it
    env = allocator.kernel_env(str(fake), environ={})
    assert env == {"LD_PRELOAD": str(fake.resolve()), "MALLOC_CONF": allocator.JEMALLOC_CONF}
    env = allocator.kernel_env(str(fake), environ={"LD_PRELOAD": "/opt/libfoo.so:/x/libjemalloc.so.2",
                                                   "MALLOC_CONF": "narenas:2"})
    # ours first, the user's other libraries kept, no second jemalloc; the user's MALLOC_CONF wins
    assert env == {"LD_PRELOAD": f"{fake.resolve()} /opt/libfoo.so", "MALLOC_CONF": "narenas:2"}
    # the system's allocator: a jemalloc the caller preloaded is taken out, nothing else touched
    assert allocator.kernel_env("system", environ={"LD_PRELOAD": "/opt/libfoo.so"}) == {}
    assert allocator.kernel_env("system", environ={"LD_PRELOAD": "/opt/libfoo.so /x/libjemalloc.so.2"}) == {
        "LD_PRELOAD": "/opt/libfoo.so"}
    assert allocator.kernel_env("system", environ={"LD_PRELOAD": "/x/libjemalloc.so.2"}) == {"LD_PRELOAD": None}


def test_a_process_started_with_kernel_env_runs_jemalloc():
    _need_jemalloc()
    assert _probe(allocator.kernel_env("auto", environ={})) == "jemalloc"
    assert _probe(allocator.kernel_env("system", environ={})) == "system"


def test_a_bad_choice_fails_before_the_earlier_results_are_touched(tmp_path, monkeypatch):
    run = runbook.PreparedRun(FIXTURES / "record.md", "smoke", None, tmp_path)
    run.run_dir.mkdir(parents=True)
    run.results_path.write_text('{"status": "ok"}')
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "/nowhere/libjemalloc.so.2")
    with pytest.raises(ValueError, match="GAT_ALLOCATOR='/nowhere/libjemalloc.so.2': no such file"):
        runbook.execute(run)
    assert run.results_path.read_text() == '{"status": "ok"}'


def test_the_kernel_gets_the_allocator_and_the_runner_keeps_its_own_environment(tmp_path, monkeypatch):
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: seen.append(
        (os.environ.get("LD_PRELOAD"), os.environ.get("MALLOC_CONF"))))
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_bytes(b"")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    run = runbook.PreparedRun(FIXTURES / "record.md", "smoke", None, tmp_path / "runs")
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, str(fake))
    runbook.execute(run)
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "system")
    runbook.execute(run)
    assert seen == [(str(fake.resolve()), allocator.JEMALLOC_CONF), (None, None)]
    assert "LD_PRELOAD" not in os.environ and "MALLOC_CONF" not in os.environ
    # a caller running under a preloaded jemalloc still gets the system's malloc in the kernel when asked
    monkeypatch.setenv("LD_PRELOAD", str(fake))
    runbook.execute(run)
    assert seen[-1] == (None, None) and os.environ["LD_PRELOAD"] == str(fake)


def test_a_chapter_may_ask_for_the_system_allocator_in_its_front_matter(tmp_path, monkeypatch):
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: seen.append(os.environ.get("LD_PRELOAD")))
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_bytes(b"")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(allocator.ALLOCATOR_ENV, raising=False)
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: fake.resolve())
    text = (FIXTURES / "record.md").read_text()
    assert text.startswith("---\n") and "\ngat:\n" in text
    chapter = tmp_path / "system.md"
    chapter.write_text(text.replace("\ngat:\n", "\ngat:\n  allocator: system\n", 1))
    run = runbook.PreparedRun(chapter, "smoke", None, tmp_path / "runs")
    assert run.allocator == "system"
    runbook.execute(run)
    runbook.execute(runbook.PreparedRun(FIXTURES / "record.md", "smoke", None, tmp_path / "runs"))
    monkeypatch.setenv(allocator.ALLOCATOR_ENV, "auto")        # the caller's choice wins over the chapter's
    runbook.execute(run)
    assert seen == [None, str(fake.resolve()), str(fake.resolve())]
    # a chapter names a policy, never a path
    chapter.write_text(text.replace("\ngat:\n", "\ngat:\n  allocator: /usr/lib/libjemalloc.so.2\n", 1))
    with pytest.raises(runbook.ParameterError, match="`gat: allocator:` must be 'auto' or 'system'"):
        runbook.PreparedRun(chapter, "smoke", None, tmp_path / "runs")


def test_committed_default_runs_record_the_allocator_their_chapter_asks_for():
    """Every canonical default run the book shows says which malloc its kernel had (the book's peak
    memory depends on it), and it is the one its chapter's front matter asks for: jemalloc unless
    the chapter says `system`."""
    from benchmarks.bench_book import chapter_runs

    root = Path(__file__).resolve().parents[1]
    latest = {stem: profiles["default"] for stem, profiles in chapter_runs(root / "runs").items()
              if "default" in profiles}
    assert latest, "no committed default runs"
    wrong = {}
    for stem, results in latest.items():
        asked = runbook.chapter_allocator(runbook.read_notebook(root / results["notebook"]), stem)
        expected = "system" if asked == "system" else "jemalloc"
        if results.get("allocator") != expected:
            wrong[stem] = (results.get("allocator"), expected)
    assert not wrong, f"default runs whose kernel allocator is not their chapter's (recorded, expected): {wrong}"
    assert "jemalloc" in {results["allocator"] for results in latest.values()}


def test_jemalloc_changes_nothing_the_attack_computes():
    """The claim behind giving kernels jemalloc: same adversarial images and iteration counts, bit for
    bit, as with the system's malloc (benchmarks/bench_allocator.py's workload on 4 latents, each in a
    fresh process started the way the runner starts a kernel)."""
    _need_jemalloc()
    from benchmarks import bench_allocator

    system, jemalloc = bench_allocator.child("system", 4), bench_allocator.child("auto", 4)
    assert (system["allocator"], jemalloc["allocator"]) == ("system", "jemalloc")
    assert system["digest"] == jemalloc["digest"]


@pytest.mark.notebooks
def test_gat_run_starts_a_real_kernel_with_jemalloc_and_says_so(tmp_path):
    _need_jemalloc()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator.ALLOCATOR_ENV)}
    exe = Path(sys.executable).with_name("gat")
    completed = subprocess.run([str(exe), "run", str(FIXTURES / "record.md"), "--profile", "smoke", "--runs-dir",
                                str(tmp_path / "runs")], env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    (results_path,) = (tmp_path / "runs" / "record").glob("smoke-*/results.json")
    results = json.loads(results_path.read_text())
    assert results["allocator"] == results["stamp"]["allocator"] == "jemalloc"
    assert "jemalloc malloc" in completed.stdout and "peak" in completed.stdout
