"""Song et al. (2018)'s latent search on our generator (gatlib.attacks.song) and its training mode."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatlib import training
from gatlib.attacks.song import DEFAULTS, SongMode, register_song_mode, soft_box_penalty, song_attack

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


def linear_classifier(G, seed, steps=60):
    """A linear classifier fitted to G's images of each class (so that its clean predictions mostly
    equal the conditioning class: the samples are valid)."""
    torch.manual_seed(seed)
    labels = torch.arange(300) % 10
    with torch.no_grad():
        images = G(G.sample_z(300, torch.Generator().manual_seed(seed)), labels)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def models(G):
    return linear_classifier(G, 1), linear_classifier(G, 2)


def test_defaults_are_song_et_al_s_values():
    """Song et al. (2018): λ1 = λ2 = 100, ε_z = 0.1, Adam with learning rate 0.01. Chapter 09 departs
    from λ2 and the learning rate on purpose and checks these values beside its own."""
    assert DEFAULTS == {"lambda_box": 100.0, "lambda_aux": 100.0, "z_eps": 0.1, "lr": 0.01}
    import inspect

    signature = inspect.signature(song_attack).parameters
    assert {name: signature[name].default for name in DEFAULTS} == DEFAULTS   # song_attack uses them


def test_soft_box_is_zero_inside_the_box_and_linear_outside():
    z0 = torch.zeros(2, 4)
    inside = torch.full((2, 4), 0.1)
    assert torch.equal(soft_box_penalty(inside, z0, 0.1), torch.zeros(2))
    assert torch.equal(soft_box_penalty(-0.05 * torch.ones(2, 4), z0, 0.1), torch.zeros(2))
    outside = torch.tensor([[0.3, 0.0, 0.0, 0.0], [-0.5, 0.5, 0.0, 0.0]])
    assert torch.allclose(soft_box_penalty(outside, z0, 0.1), torch.tensor([0.05, 0.2]))
    with pytest.raises(ValueError, match="z_eps"):
        soft_box_penalty(outside, z0, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        soft_box_penalty(outside, z0[:1], 0.1)


def test_the_attack_fools_a_small_classifier_or_lowers_its_confidence(G, models):
    classifier, aux = models
    labels = torch.arange(12) % 10
    result = song_attack(G, classifier, aux, labels, seed=3, max_steps=15, lambda_aux=1.0, lambda_box=1.0, lr=0.05)
    valid = result.valid
    assert valid.sum() >= 3
    with torch.no_grad():
        before = F.softmax(classifier(result.clean_images), 1)[torch.arange(12), labels]
        after = F.softmax(classifier(result.images), 1)[torch.arange(12), labels]
        aux_says = aux(result.images).argmax(1)
        predicted = classifier(result.images).argmax(1)
    assert result.success.any() or (after[valid] < before[valid]).float().mean() > 0.5
    # what is recorded is consistent with the images returned
    assert torch.equal(result.predictions, predicted)
    assert torch.equal(result.success, valid & (predicted != labels) & (aux_says == labels))
    assert (result.iterations[result.success] < 15).all() and (result.iterations[~valid] == 0).all()
    summary = result.summary()
    assert 0 <= summary["success_rate"] <= summary["fooled_rate"] <= 1


def test_targeted_attack_and_zero_steps_outside_the_box(G, models):
    classifier, aux = models
    labels = torch.full((4,), 3)
    result = song_attack(G, classifier, aux, labels, seed=4, target=5, max_steps=3, z_eps=100.0)
    assert result.targeted and (result.targets == 5).all()
    assert torch.equal(result.box_excess, torch.zeros(4))          # a box of 100 is never left in 3 steps
    with pytest.raises(ValueError, match="different from the source class"):
        song_attack(G, classifier, aux, labels, target=3, max_steps=1)


@pytest.mark.parametrize("bad, match", [({"max_steps": 0}, "max_steps"), ({"lr": 0.0}, "lr"),
                                        ({"lambda_box": -1.0}, "lambda_box"), ({"z_eps": -0.1}, "z_eps"),
                                        ({"z0": torch.zeros(2, 3)}, "z0 must have shape")])
def test_bad_arguments_raise(G, models, bad, match):
    with pytest.raises(ValueError, match=match):
        song_attack(G, models[0], models[1], torch.tensor([1, 2]), **bad)


def test_the_training_mode_returns_half_clean_half_song_images(G, models):
    classifier, aux = models
    model = linear_classifier(G, 5, steps=1).train()
    mode = SongMode(G, aux, pool_size=4, chunk=4, max_steps=2, refresh_every=10, keep="all", seed=0)
    images, labels = torch.rand(6, 1, 32, 32), torch.arange(6)
    inputs, targets = mode(model, images, labels, step=0)
    assert inputs.shape == (12, 1, 32, 32) and targets.shape == (12,)
    assert torch.equal(inputs[:6], images) and torch.equal(targets[:6], labels)
    assert not any(torch.equal(inputs[6 + i], images[j]) for i in range(6) for j in range(6))
    assert model.training and all(p.requires_grad for p in model.parameters())   # left as it was
    assert mode.log[0]["attacked"] >= 4 and mode.log[0]["kept"] <= 4
    with pytest.raises(ValueError, match="keep"):
        SongMode(G, aux, keep="some")
    with pytest.raises(ValueError, match="pool_size"):
        SongMode(G, aux, pool_size=0)


def test_register_song_mode_puts_it_on_the_training_loop(G, models):
    try:
        mode = register_song_mode(G, models[1], name="song-test", pool_size=2, chunk=2, max_steps=1)
        assert training.MODES["song-test"] is mode
    finally:
        training.MODES.pop("song-test", None)
