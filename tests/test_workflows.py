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
