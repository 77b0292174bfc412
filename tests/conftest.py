"""Fixtures several test files share."""
import os

import pytest
import torch

# Under pytest-xdist (`make test` runs two workers on our 2-core machines) each worker, and every
# notebook kernel or helper process it starts, uses one thread: two workers of two threads each
# oversubscribe the cores, and a spinning OpenMP pool sharing a core is many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(items):
    """The smoke runs and the smoke book are session fixtures, built once per worker process: keep
    every test that needs them on one worker (``--dist loadgroup``) so they are built only once."""
    for item in items:
        if {"smoke_runs", "smoke_book"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("smoke_book"))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: two threads on a busy 2-core machine (a notebook kernel or
    a training run beside the tests) made tensor-heavy tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_fcos():
    """A factory of small torchvision FCOS detectors for MNIST scenes (11 classes, 64 px, one FPN
    level with a BatchNorm in its backbone so tests can check BN statistics stay put)."""
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    class TinyBackbone(nn.Module):
        out_channels = 32

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, x):
            return OrderedDict([("0", self.body(x))])

    def make():
        return FCOS(TinyBackbone(), num_classes=11, min_size=64, max_size=64,
                    anchor_generator=AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,),)))

    return make


@pytest.fixture(scope="module")
def tiny_generator():
    """The small randomly initialised StyleGAN2 of the smoke profile (``zoo.generator("random-tiny")``)."""
    from gatlib import zoo

    return zoo.generator("random-tiny", seed=0)


# ------------------------------------------------------------------ the smoke book (session-wide, built once)
# test_notebooks.py checks the runs and the -W build; test_browser.py opens the built pages in Chromium.

@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """Each notebook (chapters and drafts) run once on `smoke`: ``(runs_dir, {stem: results})``."""
    from gatlib import pairing, runbook

    runs_dir = tmp_path_factory.mktemp("runs")
    # as under .ci/run: a non-inline backend in the environment must not reach the kernels
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        results = {path.stem: runbook.run_notebook(path, profile="smoke", runs_dir=runs_dir)
                   for path in pairing.all_notebooks()}
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved
    return runs_dir, results


@pytest.fixture(scope="session")
def smoke_book(smoke_runs, tmp_path_factory):
    """The book built from the smoke runs with ``gat book`` (Jupyter Book's -W): a namespace with
    ``completed`` (the CompletedProcess; check its returncode), ``build`` (the build dir, the
    staged sources under ``stage/``) and ``html`` (``build/html``)."""
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    root = Path(__file__).resolve().parent.parent
    runs_dir, _ = smoke_runs
    build = tmp_path_factory.mktemp("book") / "build"
    gat = Path(sys.executable).with_name("gat")
    completed = subprocess.run([str(gat), "book", "--profile", "smoke", "--runs-dir", str(runs_dir),
                                "--build-dir", str(build), "--root", str(root)],
                               capture_output=True, text=True, timeout=900)
    return SimpleNamespace(completed=completed, build=build, html=build / "html")


@pytest.fixture
def paper_chapter_02(tmp_path):
    """Runs chapter 02 on the `paper` profile against a generator file a test wrote (any format the
    loaders read): a torchvision ResNet-18 (CIFAR stem) state dict with ``num_classes`` outputs is
    made beside it; only the sizes are small. Returns the run's result."""
    from pathlib import Path

    from gatlib import classifiers, runbook

    root = Path(__file__).resolve().parent.parent

    def run(generator_path, num_classes: int, **overrides):
        torch.manual_seed(4)
        classifier = classifiers.save_paper_classifier(classifiers.paper_classifier("resnet18_cifar", num_classes),
                                                       tmp_path / "classifier.pt")
        result = runbook.run_notebook(
            root / "notebooks" / "02_latent_attacks.md", profile="paper", runs_dir=tmp_path / "runs",
            overrides={"generator": str(generator_path), "classifier_path": str(classifier),
                       "classifier_arch": "resnet18_cifar", "num_classes": num_classes, "samples": 12,
                       "figure_count": 2, "device": "cpu", **overrides})
        assert result["status"] == "ok", result.get("error")
        return result

    return run

