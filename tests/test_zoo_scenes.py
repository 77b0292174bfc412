"""Zoo entries of §3.2 (SPADE generator, scene segmenter and detector): trained by their command,
recorded with sha256 and metrics, loaded back verified — on tiny recipes in a temporary zoo."""
import pytest
import torch

from gatlib import zoo
from gatlib.generators.spade import SPADEGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "checkpoints" / "manifest.json")
    monkeypatch.setattr(zoo, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(zoo, "SCENE_TEST", {"count": 8, "seed": 10_000})
    (tmp_path / "checkpoints").mkdir()
    small = {"scenes": 32, "scene_seed": 0}
    for entry in (zoo.ZooEntry("mnist-spade", "scene-generator", "spade", "spade", 0, "tiny", {"total_steps": 2, **small}),
                  zoo.ZooEntry("scene-segmenter-s0", "scene-segmenter", "segmenter", "small_unet", 0, "tiny",
                               {"epochs": 1, "batch_size": 16, "lr": 2e-3, "weight_decay": 1e-4, **small}),
                  zoo.ZooEntry("scene-detector-s0", "scene-detector", "detector", "fcos_resnet18_fpn", 0, "tiny",
                               {"epochs": 1, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4, **small}),
                  zoo.ZooEntry("scene-segmenter-gat-s0", "scene-segmenter-gat", "segmenter", "small_unet", 0, "tiny",
                               {"base": "scene-segmenter-s0", "generator": "mnist-spade", "steps": 2, "batch_size": 4,
                                "lr": 5e-4, "weight_decay": 1e-4, "eps": 0.001, "iterates": 2, **small}),
                  zoo.ZooEntry("scene-segmenter-control-generated-s0", "scene-segmenter-control", "segmenter",
                               "small_unet", 0, "tiny",
                               {"base": "scene-segmenter-s0", "generator": "mnist-spade", "attack": False, "steps": 2,
                                "batch_size": 4, "lr": 5e-4, "weight_decay": 1e-4, **small})):
        monkeypatch.setitem(zoo.ENTRIES, entry.name, entry)
    return tmp_path


def test_spade_entry_trains_resumably_and_loads_as_a_plain_generator(tiny_zoo):
    recorded = zoo.train("mnist-spade", progress=False)
    assert recorded["metrics"]["steps"] == 2 and len(recorded["sha256"]) == 64
    G = zoo.load("mnist-spade")
    assert isinstance(G, SPADEGenerator) and not G.config["spectral"] and not G.training
    assert G.config["label_nc"] == 11 and G.config["crop_size"] == 64


@pytest.mark.parametrize("name, keys", [("scene-segmenter-s0", ("pixel_accuracy", "foreground_accuracy", "miou")),
                                        ("scene-detector-s0", ("map", "map_50"))])
def test_scene_models_train_and_record_in_and_out_of_domain_metrics(tiny_zoo, name, keys):
    recorded = zoo.train(name, progress=False)
    for source in ("mnist", "optdigits"):
        for key in keys:
            assert 0.0 <= recorded["metrics"][f"{source}_scenes_{key}"] <= 1.0
    model = zoo.load(name)
    assert not model.training
    (tiny_zoo / "checkpoints" / f"{name}.pt").write_bytes(b"tampered")
    with pytest.raises(zoo.ZooIntegrityError, match="sha256"):
        zoo.load(name)


def test_gat_scene_entry_fine_tunes_its_base_with_the_zoo_generator(tiny_zoo):
    zoo.train("mnist-spade", progress=False)
    zoo.train("scene-segmenter-s0", progress=False)
    recorded = zoo.train("scene-segmenter-gat-s0", progress=False)
    assert recorded["recipe"]["base"] == "scene-segmenter-s0" and "mnist_scenes_miou" in recorded["metrics"]
    base, tuned = zoo.load("scene-segmenter-s0"), zoo.load("scene-segmenter-gat-s0")
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values()))


def test_control_scene_entry_fine_tunes_on_renders_without_attacking(tiny_zoo, monkeypatch):
    from gatlib import spade_gat

    zoo.train("mnist-spade", progress=False)
    zoo.train("scene-segmenter-s0", progress=False)
    monkeypatch.setattr(spade_gat, "spade_attack", lambda *a, **k: pytest.fail("the control must not attack"))
    recorded = zoo.train("scene-segmenter-control-generated-s0", progress=False)
    assert recorded["recipe"]["attack"] is False and "eps" not in recorded["recipe"]
    base, tuned = zoo.load("scene-segmenter-s0"), zoo.load("scene-segmenter-control-generated-s0")
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values()))
    # the registered entries name their row the way chapter 07 asks for it
    assert spade_gat.zoo_name("detector", "control-generated", 2) in zoo.ENTRIES
    with pytest.raises(ValueError, match="unknown row"):
        spade_gat.zoo_name("segmenter", "control-real", 0)


def test_filtered_scene_entries_use_another_seeds_original_as_their_label_filter(tiny_zoo, monkeypatch):
    from gatlib import spade_gat

    for seed in range(3):
        control, gat = (zoo.ENTRIES[spade_gat.zoo_name("segmenter", row, seed)] for row in spade_gat.FILTERED_ROWS)
        assert gat.recipe["label_filter"] == control.recipe["label_filter"] == f"scene-segmenter-s{(seed + 1) % 3}"
        assert gat.recipe["base"] == f"scene-segmenter-s{seed}" and control.recipe["attack"] is False
        assert gat.recipe["eps"] == spade_gat.GAT_RECIPE["eps"]
    with pytest.raises(ValueError, match="unknown row 'gat-filtered' for detector"):
        spade_gat.zoo_name("detector", "gat-filtered", 0)
    # a tiny filtered control: trained with scene-segmenter-s0 as its own filter here (one seed in this zoo)
    small = {"scenes": 32, "scene_seed": 0}
    monkeypatch.setitem(zoo.ENTRIES, "tiny-filtered", zoo.ZooEntry(
        "tiny-filtered", "scene-segmenter-control-filtered", "segmenter", "small_unet", 0, "tiny",
        {"base": "scene-segmenter-s0", "generator": "mnist-spade", "attack": False, "label_filter": "scene-segmenter-s0",
         "steps": 2, "batch_size": 4, "lr": 5e-4, "weight_decay": 1e-4, **small}))
    zoo.train("mnist-spade", progress=False)
    zoo.train("scene-segmenter-s0", progress=False)
    recorded = zoo.train("tiny-filtered", progress=False)
    assert 0.0 <= recorded["metrics"]["label_filter_pixels_kept"] <= 1.0
