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
