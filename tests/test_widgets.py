"""The attack explorer: live controls that redraw on every change, and a plain static figure in batch
runs (the runner's kernels), where an Output widget could leave the executor waiting forever."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from gatlib import runbook, widgets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)).eval()


def test_batch_runs_draw_the_starting_figure_without_widgets(tiny_generator, classifier, monkeypatch):
    monkeypatch.setenv(runbook.BATCH_ENV, "1")
    assert widgets.batch_run()
    plt.close("all")
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    controls = widgets.attack_explorer(tiny_generator, classifier, count=3, seed=4, eps=0.05, delta=0.5,
                                       max_iters=2)
    assert controls is None
    assert len(shown) == 1 and shown[0].axes, "one static figure of the starting values"
    assert shown[0].get_suptitle().startswith("both · all layers · ε=0.05 δ=0.5 · non-targeted")


def test_live_controls_redraw_with_the_changed_value(tiny_generator, classifier, monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.delenv(runbook.BATCH_ENV, raising=False)
    assert not widgets.batch_run()
    calls = []
    monkeypatch.setattr(widgets, "show_attack", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(plt, "show", lambda: None)
    controls = widgets.attack_explorer(tiny_generator, classifier, count=3, eps=0.05, delta=0.5, max_iters=2)
    assert set(controls) == {"layers", "moves", "eps", "delta", "max_iters", "target"}
    assert calls[-1]["moves"] == "both" and calls[-1]["layers"] == "all" and calls[-1]["target"] == -1
    controls["moves"].value = "style"
    controls["target"].value = 3
    assert len(calls) == 3
    assert calls[-1]["moves"] == "style" and calls[-1]["target"] == 3


def test_the_runner_marks_its_kernels_as_batch_runs(tmp_path):
    notebook = tmp_path / "notebooks" / "probe.md"
    notebook.parent.mkdir()
    notebook.write_text(
        "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
        "kernelspec: {display_name: Python 3, language: python, name: python3}\n"
        "gat:\n  profiles:\n    smoke: {}\n---\n\n# Probe\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"default\"\nseed = 0\ndevice = \"cpu\"\n```\n\n"
        "```{code-cell} ipython3\nimport gatlib.chapter\nfrom gatlib import widgets\n\n"
        "chapter = gatlib.chapter.start(profile, seed, device)\nchapter.record('batch', widgets.batch_run())\n"
        "chapter.stamp()\n```\n")
    result = runbook.run_notebook(str(notebook), profile="smoke", runs_dir=str(tmp_path / "runs"))
    assert result["status"] == "ok", result.get("error")
    assert result["numbers"]["batch"] is True
