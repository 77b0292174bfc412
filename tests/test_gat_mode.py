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
