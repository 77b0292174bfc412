"""The `paper` profile's code path through the chapters themselves, on small files in the formats a
user brings: a generator checkpoint and a torchvision classifier state dict (issue: the paper's own
checkpoints are user downloads; CI runs the same loading code on files made here)."""
import json
from pathlib import Path

import pytest
import torch
import torchvision

from gatlib import classifiers, runbook, zoo
from gatlib.attacks.latent import class_labels
from gatlib.generators.stylegan2 import Generator

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _rgb_generator(path: Path, num_classes: int) -> None:
    """A small 32x32 RGB StyleGAN2 (like NVlabs' CIFAR-10 model in shape), saved in gatlib's format."""
    torch.manual_seed(3)
    G = Generator(resolution=32, num_classes=num_classes, z_dim=16, w_dim=16, mapping_layers=2,
                  channels={4: 16, 8: 16, 16: 8, 32: 8}, image_channels=3).eval()
    with torch.no_grad():
        for layer in G.layers:
            layer.noise_strength.fill_(0.1)
    torch.save({"state_dict": G.state_dict(), "config": G.config, "name": "fixture"}, path)


def _resnet18(path: Path, num_classes: int) -> None:
    torch.manual_seed(4)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=num_classes).state_dict(), path)


def test_unconditional_generator_needs_its_category(tmp_path):
    _rgb_generator(tmp_path / "g.pt", num_classes=0)
    G = zoo.generator(str(tmp_path / "g.pt"))
    with pytest.raises(ValueError, match="unconditional"):
        class_labels(G, 4)
    G = zoo.generator(str(tmp_path / "g.pt"), category=1)
    assert class_labels(G, 4).tolist() == [1, 1, 1, 1]
    _rgb_generator(tmp_path / "c.pt", num_classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        zoo.generator(str(tmp_path / "c.pt"), category=1)
    assert class_labels(zoo.generator(str(tmp_path / "c.pt"), category=-1), 4).tolist() == [0, 1, 2, 0]


def test_chapter_classifier_loads_a_user_state_dict_or_names_what_is_missing(tmp_path):
    _resnet18(tmp_path / "f.pt", 2)
    F = classifiers.chapter_classifier("", "resnet18", 2, tmp_path / "f.pt")
    assert not F.training and F(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ValueError, match="does not fit"):
        classifiers.chapter_classifier("", "resnet18", 10, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="classifier_path"):
        classifiers.chapter_classifier("", "resnet18", 2, "")


@pytest.mark.notebooks
def test_chapter_02_runs_on_the_paper_profile_with_user_files(tmp_path):
    """Chapter 02 on `paper`: an unconditional RGB generator of one category (class 1 of a binary
    classifier, like an LSUN car generator before a cars-vs-cats ResNet), no oracles, the paper's
    step sizes; only the sizes are made small."""
    _rgb_generator(tmp_path / "generator.pt", num_classes=0)
    _resnet18(tmp_path / "classifier.pt", 2)
    result = runbook.run_notebook(
        ROOT / "notebooks" / "02_latent_attacks.md", profile="paper", runs_dir=tmp_path / "runs",
        overrides={"generator": str(tmp_path / "generator.pt"), "classifier_path": str(tmp_path / "classifier.pt"),
                   "classifier_arch": "resnet18", "num_classes": 2, "generator_class": 1,
                   "samples": 12, "figure_count": 2, "device": "cpu"})
    assert result["status"] == "ok", result.get("error")
    numbers = result["numbers"]
    assert result["parameters"]["eps"] == 0.004 and result["parameters"]["delta"] == 0.2
    assert any(key.startswith("headline") or "success" in key for key in numbers), sorted(numbers)[:20]
    saved = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert saved["profile"] == "paper"


@pytest.mark.parametrize("name", ["paper-lsun-cars-cats.yaml", "colab-cifar10.yaml"])
def test_paper_sweeps_name_only_parameters_the_chapters_have(name, tmp_path):
    """The sweep templates under sweeps/ expand and validate (parameter names and types) before any
    kernel starts; their paths are the user's to fill in."""
    runs = runbook.expand_sweep(ROOT / "sweeps" / name, runs_dir=tmp_path)
    assert runs and all(run.profile == "paper" for run in runs)
    for run in runs:
        if run.path.stem == "02_latent_attacks":
            assert run.parameters["classifier_path"] and run.parameters["generator"]
