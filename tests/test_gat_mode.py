"""The GAT training mode: half clean, half fooled adversarial examples with their conditioning class."""
import pytest
import torch
from torch import nn

from gatlib.data import DigitDataset
from gatlib.gat import GATMode
from gatlib.training import train_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))


def test_batches_are_half_clean_half_fooled_adversarial(G):
    model = classifier()
    mode = GATMode(G, eps=0.2, delta=1.0, pool_size=32, chunk=16, refresh_every=3, seed=1)
    images, labels = torch.rand(8, 1, 32, 32), torch.arange(8)
    inputs, targets = mode(model, images, labels, step=0)
    assert inputs.shape == (16, 1, 32, 32) and torch.equal(inputs[:8], images) and torch.equal(targets[:8], labels)
    # every pooled example fooled the model it was made against, and carries its conditioning class
    with torch.no_grad():
        predictions = model(mode.pool_images).argmax(1)
    assert (predictions != mode.pool_labels).all()
    assert mode.log[0]["kept"] == len(mode.pool_images) > 0
    assert model.training, "the mode leaves the model in train mode"


def test_pool_refreshes_every_k_steps(G):
    mode = GATMode(G, eps=0.2, delta=1.0, pool_size=8, chunk=8, refresh_every=2, seed=2)
    model = classifier()
    for step in range(5):
        mode(model, torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long), step)
    assert [entry["step"] for entry in mode.log] == [0, 2, 4]


def test_control_uses_unperturbed_generated_images(G):
    mode = GATMode(G, eps=0.2, delta=1.0, pool_size=8, chunk=8, attack=False, seed=3)
    inputs, targets = mode(classifier(), torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long), 0)
    assert inputs.shape[0] == 8 and mode.log[0]["kept"] == 8


def test_gat_mode_plugs_into_the_training_loop(G):
    digits = DigitDataset(torch.rand(64, 1, 32, 32), torch.arange(64) % 10)
    mode = GATMode(G, eps=0.2, delta=1.0, pool_size=16, chunk=16, refresh_every=2, seed=4)
    history = train_classifier(classifier(), digits, epochs=1, batch_size=16, mode=mode, progress=False)
    assert len(history["loss"]) == 1 and len(mode.log) == 2


def test_bad_settings_are_named(G):
    with pytest.raises(ValueError, match="unknown moves"):
        GATMode(G, eps=0.1, delta=0.1, moves=("pixels",))
    with pytest.raises(ValueError, match="must be positive"):
        GATMode(G, eps=0.1, delta=0.1, pool_size=0)


class _Says(nn.Module):
    """An oracle that answers one fixed class, or the truth passed in ``truth``."""

    def __init__(self, answer=None):
        super().__init__()
        self.answer = answer
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        logits = torch.zeros(len(images), 10)
        logits[:, self.answer] = 1.0
        return logits


def test_oracle_filter_keeps_only_samples_the_oracle_majority_still_sees_as_c(G):
    model = classifier()
    unfiltered = GATMode(G, eps=0.2, delta=1.0, pool_size=32, chunk=16, seed=1)
    unfiltered.refresh(model, 0)
    assert len(unfiltered.pool_images) > 0
    # two of three oracles always answer 3: only fooled samples of class 3 survive the filter
    oracles = {"a": _Says(3), "b": _Says(3), "c": _Says(5)}
    filtered = GATMode(G, eps=0.2, delta=1.0, pool_size=32, chunk=16, seed=1, label_oracles=oracles, max_attempts=1)
    filtered.refresh(model, 0)
    assert (filtered.pool_labels == 3).all()
    assert len(filtered.pool_images) < len(unfiltered.pool_images)


def test_oracle_filter_is_an_ablation_with_its_own_recipe():
    from gatlib import finetune

    assert "oracle_filter" not in finetune.zoo_recipe("gat", 0)         # the paper's GAT: recipe unchanged
    assert finetune.zoo_recipe("gat-oracle-filter", 0)["oracle_filter"] == ["oracle-mlp", "oracle-widecnn",
                                                                             "oracle-shufflenet"]


def test_random_filter_keeps_a_share_of_the_fooled_samples_blind_to_the_digit(G):
    model = classifier()
    unfiltered = GATMode(G, eps=0.2, delta=1.0, pool_size=256, chunk=32, seed=1, max_attempts=1)
    unfiltered.refresh(model, 0)
    thinned = [GATMode(G, eps=0.2, delta=1.0, pool_size=256, chunk=32, seed=1, max_attempts=1, random_keep=0.36)
               for _ in range(2)]
    for mode in thinned:
        mode.refresh(model, 0)
    # the same latents and the same attacks (its draws use their own generator), fewer of them kept
    fooled, kept = unfiltered.log[0]["kept"], thinned[0].log[0]["kept"]
    assert fooled > 30 and 0 < kept < fooled
    assert abs(kept / fooled - 0.36) < 0.2
    assert unfiltered.log[0]["fooled_rate"] == thinned[0].log[0]["fooled_rate"]
    # every kept sample is one of the unfiltered pool's, with the same label (nothing about labels changes)
    matches = (thinned[0].pool_images.flatten(1)[:, None] == unfiltered.pool_images.flatten(1)[None]).all(-1)
    assert matches.any(1).all()
    assert torch.equal(unfiltered.pool_labels[matches.float().argmax(1)], thinned[0].pool_labels)
    assert torch.equal(thinned[0].pool_images, thinned[1].pool_images), "seeded: the same run keeps the same samples"


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_random_filter_share_must_be_a_probability(G, share):
    with pytest.raises(ValueError, match="random_keep"):
        GATMode(G, eps=0.2, delta=1.0, random_keep=share)


@pytest.mark.parametrize("random_row, oracle_row", [("gat-random-filter", "gat-oracle-filter"),
                                                     ("gat-all-layers-random-filter", "gat-all-layers-oracle-filter")])
def test_random_filter_is_an_ablation_matched_to_the_oracle_filter(random_row, oracle_row):
    from gatlib import finetune, zoo

    assert "random_keep" not in finetune.zoo_recipe("gat", 0)           # the paper's GAT: recipe unchanged
    recipe = finetune.zoo_recipe(random_row, 0)
    assert recipe["random_keep"] == finetune.ORACLE_KEEP_SHARES[oracle_row] and "oracle_filter" not in recipe
    # apart from the filter, the random twin's recipe is its oracle twin's
    twin = finetune.zoo_recipe(oracle_row, 0)
    assert {k: v for k, v in recipe.items() if k not in ("row", "random_keep")} == \
        {k: v for k, v in twin.items() if k not in ("row", "oracle_filter")}
    # the share is the one the oracle filter kept while training its zoo models (every seed)
    shares = []
    for seed in range(3):
        name = f"{oracle_row}-s{seed}"
        if not zoo.is_trained(name):
            pytest.skip(f"{name} is not built here")
        log = torch.load(zoo.verified_path(name), map_location="cpu", weights_only=True)["mode_log"]
        shares.append(sum(e["kept"] for e in log) / sum(e["fooled_rate"] * e["attacked"] for e in log))
    assert abs(sum(shares) / len(shares) - finetune.ORACLE_KEEP_SHARES[oracle_row]) < 0.01


@pytest.mark.parametrize("override", [{"oracle_filter": ()}, {"oracle_filter": []}, {"random_keep": 1.0},
                                      {"random_keep": 1}])
def test_settings_added_later_leave_the_recipe_as_before_at_their_default(override):
    from gatlib import finetune

    # the zoo's earlier models were trained before these keys existed: at the paper's default they are left out
    assert finetune.zoo_recipe("gat", 0, **override) == finetune.zoo_recipe("gat", 0)
    assert "oracle_filter" in finetune.zoo_recipe("gat", 0, oracle_filter=["oracle-mlp"])
    assert finetune.zoo_recipe("gat", 0, random_keep=0.5)["random_keep"] == 0.5
