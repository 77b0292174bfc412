"""The GitHub workflows (which cannot run here) parse and call the two commands of README.md:
`make book` publishes the book on GitHub Pages, `.ci/run` (`make test`) runs on every push and PR."""
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(flow: dict) -> dict:
    on = flow.get("on", flow.get(True))   # YAML 1.1 (PyYAML) reads the key `on` as True
    return {name: None for name in on} if isinstance(on, list) else dict(on)


def steps(flow: dict) -> list[dict]:
    return [step for job in flow["jobs"].values() for step in job.get("steps", [])]


def uses(flow: dict, action: str) -> list[dict]:
    return [step for step in steps(flow) if str(step.get("uses", "")).split("@")[0] == action]


def test_book_workflow_builds_with_make_book_and_deploys_to_pages():
    flow = workflow("book.yml")
    assert triggers(flow)["push"]["branches"] == ["main"]
    assert any(step.get("run", "").strip() == "make book" for step in steps(flow))
    (python,) = uses(flow, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"
    (cache,) = uses(flow, "actions/cache")
    assert cache["with"]["path"] == ".venv" and "hashFiles('pyproject.toml')" in cache["with"]["key"]
    (upload,) = uses(flow, "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"
    assert uses(flow, "actions/deploy-pages")
    assert flow["permissions"]["pages"] == "write" and flow["permissions"]["id-token"] == "write"
    assert flow["jobs"]["deploy"]["needs"] == "build"


def test_tests_workflow_runs_ci_run_on_push_and_pull_request():
    flow = workflow("tests.yml")
    assert {"push", "pull_request"} <= set(triggers(flow))
    assert any(step.get("run", "").strip() == "bash .ci/run" for step in steps(flow))
    (python,) = uses(flow, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"


def test_ci_run_is_strict_installs_chromium_and_jemalloc_and_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert "packages=(libjemalloc2)" in script and "packages+=(chromium)" in script
    assert 'bash .ci/apt-install "${packages[@]}"' in script      # strict: not --optional
    assert script.rstrip().splitlines()[-1].startswith("make test") and "</dev/null" in script
    installer = (ROOT / ".ci" / "apt-install").read_text()
    assert 'apt-get install -y -qq "${missing[@]}" </dev/null' in installer
    assert "bash .ci/apt-install --optional libjemalloc2" in (ROOT / "Makefile").read_text()
    for path in (ROOT / ".ci" / "run", ROOT / ".ci" / "apt-install"):
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_apt_install_fails_or_skips_clearly_without_apt(tmp_path):
    """.ci/apt-install on a machine without apt-get: strict, it fails naming the package and why;
    with --optional it says what it skipped and succeeds (make book runs without jemalloc)."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "grep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")   # nothing is installed
    (bin_dir / "dpkg-query").chmod(0o755)
    env = {"PATH": str(bin_dir)}
    bash = shutil.which("bash")
    strict = subprocess.run([bash, str(ROOT / ".ci" / "apt-install"), "libjemalloc2"], env=env,
                            capture_output=True, text=True)
    assert strict.returncode == 1
    assert "libjemalloc2 missing and this machine has no apt-get" in strict.stderr
    optional = subprocess.run([bash, str(ROOT / ".ci" / "apt-install"), "--optional", "libjemalloc2"], env=env,
                              capture_output=True, text=True)
    assert optional.returncode == 0
    assert "not installing libjemalloc2 (this machine has no apt-get)" in optional.stderr


def test_loadgroup_keeps_the_smoke_book_tests_on_one_worker(tmp_path):
    """`make test` runs `pytest -n 2 --dist loadgroup` and relies on tests/conftest.py tagging every
    test that needs the smoke book with one xdist group, so that only one worker builds it. That tag
    silently does nothing under a pytest that pytest-xdist cannot rename nodes in (pytest 9 with
    xdist 3.8: the book was built twice and the suite took 10 minutes): check it really groups."""
    import shutil
    import sys

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_grouped.py").write_text(
        "import os\nimport pytest\n\n"
        "@pytest.fixture(scope='session')\ndef smoke_book():   # the real one builds the book: not here\n"
        "    return os.environ['PYTEST_XDIST_WORKER']\n\n"
        "@pytest.mark.parametrize('page', range(6))\ndef test_page(smoke_book, page):\n    pass\n\n"
        "@pytest.mark.parametrize('other', range(6))\ndef test_other(other):\n    pass\n")
    completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                                "-p", "no:cacheprovider", str(tmp_path)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    workers = {line.split()[0] for line in completed.stdout.splitlines()
               if "PASSED" in line and "test_page" in line}
    assert len(workers) == 1, f"the smoke-book tests ran on {sorted(workers)}:\n{completed.stdout[-2000:]}"
