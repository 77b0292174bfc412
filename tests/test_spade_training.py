"""SPADE training on MNIST scenes: hinge + feature matching, resumable exactly, and it learns."""
import pytest
import torch

from gatlib import scenes
from gatlib.generators.spade import one_hot
from gatlib.generators.spade_training import (MultiscaleDiscriminator, SpadeRecipe, feature_matching_loss,
                                              train_spade)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(ngf=2, hidden=8, z_dim=4, ndf=8, n_layers_D=2, num_D=2, batch_size=4, total_steps=4,
            checkpoint_minutes=100.0)


@pytest.fixture(scope="module")
def scene_set():
    return scenes.make_scenes(16, "train", seed=0)


def test_resuming_gives_the_same_weights_as_one_run(scene_set, tmp_path):
    recipe = SpadeRecipe(**TINY)
    whole = train_spade(recipe, scene_set, tmp_path / "whole.pt", progress=False)
    assert whole["done"] and whole["step"] == 4
    first = train_spade(recipe, scene_set, tmp_path / "chunks.pt", max_steps=2, progress=False)
    assert not first["done"]
    resumed = train_spade(recipe, scene_set, tmp_path / "chunks.pt", progress=False)
    assert resumed["done"] and resumed["step"] == 4
    for key in ("G", "D"):
        for a, b in zip(whole[key].state_dict().values(), resumed[key].state_dict().values()):
            assert torch.equal(a, b)


def test_another_recipe_or_a_corrupt_state_is_refused(scene_set, tmp_path):
    train_spade(SpadeRecipe(**TINY), scene_set, tmp_path / "state.pt", max_steps=1, progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        train_spade(SpadeRecipe(**{**TINY, "lambda_feat": 1.0}), scene_set, tmp_path / "state.pt", progress=False)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        train_spade(SpadeRecipe(**TINY), scene_set, tmp_path / "bad.pt", progress=False)


def test_discriminator_features_and_feature_matching():
    torch.manual_seed(0)
    D = MultiscaleDiscriminator(input_nc=12, ndf=8, n_layers=3, num_D=2)
    x = torch.randn(2, 12, 64, 64)
    out = D(x)
    assert len(out) == 2 and len(out[0]) == 4 and out[0][-1].shape[1] == 1
    assert out[1][0].shape[-1] < out[0][0].shape[-1]           # the second D sees a pooled input
    assert feature_matching_loss(out, out) == 0
    assert feature_matching_loss(out, D(x + 1)) > 0


def test_the_generator_learns_to_fill_the_label_map(scene_set, tmp_path):
    """A few dozen steps already put brighter pixels inside the digits' label map than outside."""
    recipe = SpadeRecipe(**{**TINY, "ngf": 4, "hidden": 16, "total_steps": 60, "batch_size": 8})
    state = train_spade(recipe, scene_set, tmp_path / "learn.pt", progress=False)
    G = state["G"].eval()
    with torch.no_grad():
        images = G(one_hot(scene_set.masks[:8], 11))
    inside = images[:, 0][scene_set.masks[:8] > 0].mean()
    outside = images[:, 0][scene_set.masks[:8] == 0].mean()
    assert inside > outside + 0.1, (float(inside), float(outside))
