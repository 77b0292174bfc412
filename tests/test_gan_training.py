"""The GAN training loop: it learns, saves atomically and resumes exactly where it stopped."""
import pytest
import torch

from gatlib.data import DigitDataset
from gatlib.generators.training import GANRecipe, train_gan

TINY = dict(channels={4: 16, 8: 16, 16: 8, 32: 8}, z_dim=16, w_dim=16, mapping_layers=2, batch_size=8,
            total_kimg=0.048, r1_interval=2, checkpoint_minutes=100.0)


@pytest.fixture(scope="module")
def digits():
    generator = torch.Generator().manual_seed(0)
    return DigitDataset(torch.rand(64, 1, 32, 32, generator=generator), torch.arange(64) % 10)


def test_resuming_gives_the_same_weights_as_one_run(digits, tmp_path):
    recipe = GANRecipe(**TINY)
    whole = train_gan(recipe, digits, tmp_path / "whole.pt", progress=False)
    assert whole["done"] and whole["step"] == 6
    first = train_gan(recipe, digits, tmp_path / "chunks.pt", max_steps=3, progress=False)
    assert not first["done"] and (tmp_path / "chunks.pt").exists()
    resumed = train_gan(recipe, digits, tmp_path / "chunks.pt", progress=False)
    assert resumed["done"] and resumed["step"] == 6
    for a, b in zip(whole["G_ema"].state_dict().values(), resumed["G_ema"].state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole["D"].state_dict().values(), resumed["D"].state_dict().values()):
        assert torch.equal(a, b)


def test_a_state_from_another_recipe_is_refused(digits, tmp_path):
    train_gan(GANRecipe(**TINY), digits, tmp_path / "state.pt", max_steps=1, progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        train_gan(GANRecipe(**{**TINY, "r1_gamma": 1.0}), digits, tmp_path / "state.pt", progress=False)


def test_a_corrupt_state_is_named(digits, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        train_gan(GANRecipe(**TINY), digits, tmp_path / "state.pt", progress=False)


def test_training_can_be_extended(digits, tmp_path):
    short = train_gan(GANRecipe(**TINY), digits, tmp_path / "state.pt", progress=False)
    assert short["done"] and short["step"] == 6
    longer = train_gan(GANRecipe(**{**TINY, "total_kimg": 0.08}), digits, tmp_path / "state.pt", progress=False)
    assert longer["done"] and longer["step"] == 10


def test_a_zoo_generator_goes_on_from_anothers_training_state_on_one_class(digits, tmp_path, monkeypatch):
    """``mnist-stylegan2-sevens``'s recipe: resume the base generator's whole training state and
    train on one class's images only, which is the same as extending the base's own training there."""
    from gatlib import data, zoo

    monkeypatch.setattr(zoo, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(zoo, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "checkpoints" / "manifest.json")
    monkeypatch.setattr(data, "mnist", lambda split="train", root=None: digits)
    monkeypatch.setitem(zoo.ENTRIES, "tiny-base", zoo.ZooEntry("tiny-base", "test", "generator", "stylegan2", 0,
                                                               "tiny", dict(TINY)))
    monkeypatch.setitem(zoo.ENTRIES, "tiny-threes", zoo.ZooEntry("tiny-threes", "test", "generator", "stylegan2", 0,
                                                                 "tiny, then 3s", {"base": "tiny-base", "digit": 3,
                                                                                   "total_kimg": 0.08}))
    with pytest.raises(FileNotFoundError, match="train tiny-base first"):
        zoo.train("tiny-threes", progress=False)
    zoo.train("tiny-base", progress=False)
    base_state = tmp_path / "work" / "tiny-base.state.pt"
    reference_path = tmp_path / "reference.pt"
    reference_path.write_bytes(base_state.read_bytes())
    record = zoo.train("tiny-threes", progress=False)
    assert record["metrics"] == {"kimg": 0.08, "steps": 10}
    base_seconds = zoo.read_manifest()["tiny-base"]["train_seconds"]
    assert 0 < record["train_seconds"] < base_seconds + 60       # its own 4 steps, not the base's 6 as well
    assert record["train_seconds"] == pytest.approx(
        torch.load(tmp_path / "work" / "tiny-threes.state.pt", weights_only=True)["train_seconds"]
        - torch.load(base_state, weights_only=True)["train_seconds"], abs=0.1)
    reference = train_gan(GANRecipe(**{**TINY, "total_kimg": 0.08}), digits.of_class(3), reference_path, progress=False)
    threes = zoo.load("tiny-threes")
    for (name, ours), theirs in zip(threes.named_parameters(), reference["G_ema"].parameters()):
        assert torch.equal(ours, theirs), name
    base = zoo.load("tiny-base")
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), threes.parameters()))


def test_of_class_keeps_one_class_and_names_a_missing_one(digits):
    threes = digits.of_class(3)
    assert len(threes) == 7 and (threes.labels == 3).all() and torch.equal(threes.images, digits.images[digits.labels == 3])
    with pytest.raises(ValueError, match="no samples of class 11"):
        digits.of_class(11)
