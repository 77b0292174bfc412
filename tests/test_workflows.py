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


def test_ci_run_is_strict_installs_chromium_and_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert "apt-get install -y -qq chromium" in script and "</dev/null" in script
    assert script.rstrip().splitlines()[-1].startswith("make test")
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0


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
