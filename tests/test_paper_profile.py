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


def _rgb_generator(path: Path, num_classes: int, resolution: int = 32) -> None:
    """A small RGB StyleGAN2 (at 32 px like NVlabs' CIFAR-10 model in shape), saved in gatlib's format."""
    torch.manual_seed(3)
    channels = {r: c for r, c in {4: 16, 8: 16, 16: 8, 32: 8}.items() if r <= resolution}
    G = Generator(resolution=resolution, num_classes=num_classes, z_dim=16, w_dim=16, mapping_layers=2,
                  channels=channels, image_channels=3).eval()
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
    """Chapter 02 on `paper`: an unconditional RGB generator of one category (class 1 of a 4-way
    classifier whose classes 1 and 2 both count as the category, like an LSUN car generator before
    an ImageNet ResNet with several car classes), no oracles, the paper's step sizes; only the
    sizes are made small."""
    _rgb_generator(tmp_path / "generator.pt", num_classes=0)
    _resnet18(tmp_path / "classifier.pt", 4)
    result = runbook.run_notebook(
        ROOT / "notebooks" / "02_latent_attacks.md", profile="paper", runs_dir=tmp_path / "runs",
        overrides={"generator": str(tmp_path / "generator.pt"), "classifier_path": str(tmp_path / "classifier.pt"),
                   "classifier_arch": "resnet18", "num_classes": 4, "generator_class": 1, "category_classes": "1,2",
                   "samples": 12, "figure_count": 2, "targeted_samples": 6, "device": "cpu"})
    assert result["status"] == "ok", result.get("error")
    numbers = result["numbers"]
    assert result["parameters"]["eps"] == 0.004 and result["parameters"]["delta"] == 0.2
    assert numbers["attack.category_classes"] == [1, 2]
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
        if run.path.stem == "04_adversarial_training" and run.parameters.get("retrain"):
            assert run.parameters["save_dir"] and run.parameters["data_root"]
    if name == "colab-cifar10.yaml":   # chapter 02 attacks the Original that chapter 04 saves
        chapters = [run.path.stem for run in runs]
        assert chapters.index("04_adversarial_training") < chapters.index("02_latent_attacks")
        trained = next(r for r in runs if r.path.stem == "04_adversarial_training").parameters["save_dir"]
        attacked = next(r for r in runs if r.path.stem == "02_latent_attacks").parameters["classifier_path"]
        assert attacked.startswith(trained)


def _image_folder(root: Path, per_class: dict, size: int = 32) -> None:
    """``root/{train,test}/<class>/*.png``: RGB images, class 'dark' darker than class 'light'."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in per_class.items():
        for label, (name, base) in enumerate((("dark", 0.25), ("light", 0.75))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (base + 0.2 * (torch.rand(size, size, 3, generator=generator) - 0.5)).clamp(0, 1)
                Image.fromarray((pixels * 255).byte().numpy()).save(folder / f"{i}.png")


def test_paper_training_saves_every_model_and_refuses_another_recipe(tmp_path):
    """gatlib.paper_training on its own: the Original trained from scratch and a GAT row fine-tuned
    from it land in save_dir as state dicts paper_classifier reads; a rerun loads them; a rerun with
    another recipe is refused."""
    from gatlib import data, finetune, paper_training

    _rgb_generator(tmp_path / "g.pt", num_classes=2, resolution=16)   # 16 px: a quarter of the ResNet's work
    G = zoo.generator(str(tmp_path / "g.pt"))
    _image_folder(tmp_path / "data", {"train": 10}, size=16)
    train_set, curve_set = data.materialize(data.dataset("lsun", "train", root=tmp_path / "data", resolution=16)
                                            ).split_off(4, seed=0)
    settings = dict(steps=2, batch_size=4, pool_size=4, refresh_every=2, eval_every=2, curve_samples=2,
                    eps=0.004, delta=0.2, generator=str(tmp_path / "g.pt"))
    kwargs = dict(arch="resnet18_cifar", num_classes=2, G=G, train_set=train_set, curve_set=curve_set,
                  original_settings={"epochs": 1, "batch_size": 4}, save_dir=tmp_path / "models", progress=False)
    rows = paper_training.trained_rows(["original", "gat"], [0], **kwargs, **settings)
    assert rows.sources["original"] == ["trained in this run"] and rows.sources["gat"] == ["trained in this run"]
    for name in ("original-s0", "gat-s0"):
        reloaded = classifiers.paper_classifier("resnet18_cifar", 2, tmp_path / "models" / f"{name}.pt").eval()
        model = rows.models[name.split("-")[0]][0]
        probe = torch.rand(3, 3, 16, 16)
        assert torch.allclose(reloaded(probe), model.cpu()(probe), atol=1e-5)
    again = paper_training.trained_rows(["original", "gat"], [0], **kwargs, **settings)
    assert all(source.startswith("saved by an earlier run") for source in again.sources["original"] + again.sources["gat"])
    with pytest.raises(ValueError, match="another recipe.*steps"):
        paper_training.trained_rows(["original", "gat"], [0], **kwargs, **{**settings, "steps": 3})
    cost = paper_training.cost_table(rows, "cpu")
    assert cost["row"].iloc[-1] == "total" and cost["hours"].iloc[-1] > 0
    assert finetune.TABLE_ROWS[0] == "original"


@pytest.mark.notebooks
def test_chapter_04_trains_table_1_on_the_paper_profile(tmp_path):
    """Chapter 04 on `paper` with retrain=True — the Colab flagship's path: a class-conditional RGB
    generator, the user's image folders, a ResNet-18 (CIFAR stem) trained from scratch, every row
    fine-tuned and saved to save_dir; only the sizes are small."""
    _rgb_generator(tmp_path / "generator.pt", num_classes=2)
    _image_folder(tmp_path / "data", {"train": 24, "test": 8})
    overrides = {"generator": str(tmp_path / "generator.pt"), "retrain": True, "classifier_arch": "resnet18_cifar",
                 "num_classes": 2, "data_root": str(tmp_path / "data"), "save_dir": str(tmp_path / "models"),
                 "seeds": [0], "steps": 2, "batch_size": 8, "pool_size": 8, "refresh_every": 1, "eval_every": 1,
                 "curve_samples": 4, "curve_images": 8, "eval_samples": 6, "original_epochs": 1,
                 "figure_count": 2, "device": "cpu"}
    result = runbook.run_notebook(ROOT / "notebooks" / "04_adversarial_training.md", profile="paper",
                                  runs_dir=tmp_path / "runs", overrides=overrides)
    assert result["status"] == "ok", result.get("error")
    numbers = result["numbers"]
    assert numbers["paper_training.hours"] > 0
    assert {"table1.original.clean", "table1.gat.adversarial", "table1.control_real.transfer"} <= set(numbers)
    saved = sorted(p.name for p in (tmp_path / "models").glob("*.pt"))
    assert saved == ["control-generated-s0.pt", "control-real-s0.pt", "gat-s0.pt", "original-s0.pt"]


@pytest.mark.notebooks
def test_chapter_01_runs_on_the_paper_profile_with_a_rosinality_checkpoint(tmp_path):
    """Chapter 01 on `paper` with the file a user of the paper's setup brings: an unconditional RGB
    StyleGAN2 in rosinality's converted format (``g_ema`` + ``latent_avg``, as convert_weight.py
    writes it), made by test_checkpoints' port of rosinality's model; the paper's truncation 0.7 and
    no quality numbers (they need digit classifiers); only the sizes are small."""
    from test_checkpoints import _rosinality_model   # tests/ is on sys.path (rootdir-relative imports)

    ref = _rosinality_model(seed=5, size=32)
    path = tmp_path / "stylegan2-lsun-car.pt"
    torch.save({"g_ema": ref.state_dict(), "latent_avg": torch.randn(16)}, path)
    result = runbook.run_notebook(
        ROOT / "notebooks" / "01_generators.md", profile="paper", runs_dir=tmp_path / "runs",
        overrides={"generator": str(path), "per_class": 2, "mix_count": 2, "noise_draws": 3, "device": "cpu"})
    assert result["status"] == "ok", result.get("error")
    assert result["parameters"]["truncation_psi"] == 0.7 and result["parameters"]["quality_samples"] == 0
    numbers = result["numbers"]
    groups = {"coarse", "middle", "fine", "all"}
    for key in ("noise.pixel_std", "style.pixel_std"):
        assert set(numbers[key]) == groups and all(value > 0 for value in numbers[key].values()), (key, numbers[key])
    assert numbers["style.pixel_std"]["all"] > numbers["noise.pixel_std"]["all"]
    assert not [key for key in numbers if key.startswith("quality.")], sorted(numbers)
    saved = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert saved["profile"] == "paper"


@pytest.mark.notebooks
def test_chapter_01_on_the_paper_profile_names_the_missing_generator(tmp_path):
    """The paper profile leaves `generator` to the user: left empty, the run fails with the
    chapter's own message, not a FileNotFoundError on ''."""
    result = runbook.run_notebook(ROOT / "notebooks" / "01_generators.md", profile="paper",
                                  runs_dir=tmp_path / "runs", overrides={"device": "cpu"})
    assert result["status"] == "failed"
    assert "parameter 'generator' is empty" in result["error"], result["error"]
