"""Defenses as modes of the one training loop: AT-PGD, AT-Spatial, AT-Recolor, PAT, AdvProp."""
import copy

import pytest
import torch
from torch import nn

from gatlib import classifiers
from gatlib.data import DigitDataset
from gatlib.defenses import (AdvPropMode, AdversarialMode, MixBatchNorm2d, advprop, at_pgd, at_recolor, at_spatial,
                             collapse_mix_batchnorm, pat, set_route, use_mix_batchnorm)
from gatlib.training import MODES, train_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


def dataset(count=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return DigitDataset(torch.rand(count, 1, 32, 32, generator=generator),
                        torch.randint(10, (count,), generator=generator))


def model(seed=0):
    torch.manual_seed(seed)
    return classifiers.build("small_cnn")


def warmed(seed=0):
    """A SmallCNN whose BN running statistics are not the identity (so copies are tested)."""
    net = model(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(dataset(32, seed + 1).images * 0.7 + 0.1)
    return net


def test_adversarial_mode_stays_in_bound_and_in_train_mode():
    data, net = dataset(16), model()
    net.train()
    mode = at_pgd(steps=3)
    inputs, targets = mode(net, data.images, data.labels, step=0)
    assert net.training
    assert all(p.requires_grad for p in net.parameters())
    assert inputs.shape == data.images.shape and torch.equal(targets, data.labels)
    assert (inputs - data.images).abs().max() <= 0.3 + 1e-6
    assert inputs.min() >= 0 and inputs.max() <= 1
    assert not torch.equal(inputs, data.images)
    again, _ = mode(net, data.images, data.labels, step=0)          # seeded per step
    assert torch.equal(again, inputs)

    half = AdversarialMode(mode.attack, mix="half")
    inputs, targets = half(net, data.images, data.labels, step=1)
    assert torch.equal(inputs[:16], data.images) and torch.equal(targets, torch.cat([data.labels, data.labels]))
    assert (inputs[16:] - data.images).abs().max() <= 0.3 + 1e-6
    assert net.training
    with pytest.raises(ValueError):
        AdversarialMode(mode.attack, mix="third")


@pytest.mark.parametrize("factory", [at_pgd, at_spatial, at_recolor, pat])
def test_factories_train_through_the_loop(factory):
    net = model()
    before = copy.deepcopy(net.state_dict())
    history = train_classifier(net, dataset(), epochs=1, batch_size=16, mode=factory(steps=2), progress=False)
    assert len(history["loss"]) == 1 and torch.isfinite(torch.tensor(history["loss"])).all()
    assert not net.training
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_modes_are_registered_by_name():
    for name in ("at_pgd", "at_spatial", "at_recolor", "pat"):
        assert isinstance(MODES[name], AdversarialMode)
    assert MODES["pat"].attack.distance == "self" and MODES["pat"].attack.bound == 0.5
    assert MODES["at_pgd"].attack.bound == 0.3


def test_use_mix_batchnorm_keeps_eval_outputs():
    net = warmed().eval()
    images = dataset(8, 3).images
    with torch.no_grad():
        expected = net(images)
    plain_bns = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    mixed = use_mix_batchnorm(net)
    assert mixed is net
    layers = [m for m in net.modules() if isinstance(m, MixBatchNorm2d)]
    assert len(layers) == plain_bns == 5
    for layer in layers:
        assert torch.equal(layer.clean.running_mean, layer.adversarial.running_mean)
        assert layer.clean.running_mean is not layer.adversarial.running_mean
    with torch.no_grad():
        assert torch.allclose(net(images), expected, atol=1e-6)
        set_route(net, "split", clean_count=4)          # eval forces the clean BN for "split"
        assert torch.allclose(net(images), expected, atol=1e-6)
    use_mix_batchnorm(net)                              # idempotent
    assert len([m for m in net.modules() if isinstance(m, MixBatchNorm2d)]) == 5
    with pytest.raises(ValueError):
        use_mix_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_split_route_sends_halves_to_different_batchnorms():
    net = use_mix_batchnorm(model()).train()
    clean = torch.full((8, 1, 32, 32), 0.1)
    other = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    set_route(net, "split", clean_count=8)
    with torch.no_grad():
        net(torch.cat([clean, other]))
    first = next(m for m in net.modules() if isinstance(m, MixBatchNorm2d))
    # a constant image has zero variance per channel after the first conv: the clean BN saw only those
    assert not torch.allclose(first.clean.running_var, first.adversarial.running_var)
    assert not torch.allclose(first.clean.running_mean, first.adversarial.running_mean)

    # the clean half's features depend only on the clean rows (BN statistics are not shared;
    # features, not logits: dropout is active in train mode)
    features = lambda x: net.features(net.normalize(x))
    with torch.no_grad():
        a = features(torch.cat([clean, other]))[:8]
        b = features(torch.cat([clean, other.flip(0) * 0.5]))[:8]
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError):
        set_route(net, "sideways")


def test_collapse_restores_plain_batchnorm_with_clean_statistics():
    net = use_mix_batchnorm(warmed()).train()
    set_route(net, "split", clean_count=8)
    with torch.no_grad():
        net(torch.cat([torch.rand(8, 1, 32, 32), torch.rand(8, 1, 32, 32) * 0.2]))
    net.eval()
    images = dataset(8, 4).images
    with torch.no_grad():
        expected = net(images)
    cleans = [m.clean for m in net.modules() if isinstance(m, MixBatchNorm2d)]
    collapse_mix_batchnorm(net)
    assert not any(isinstance(m, MixBatchNorm2d) for m in net.modules())
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 5 and all(a is b for a, b in zip(bns, cleans))
    with torch.no_grad():
        assert torch.allclose(net(images), expected, atol=1e-6)
    fresh = classifiers.build("small_cnn")
    fresh.load_state_dict(net.state_dict())           # loads like any SmallCNN
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(images), expected, atol=1e-6)


def test_advprop_end_to_end():
    net = use_mix_batchnorm(model())
    first = next(m for m in net.modules() if isinstance(m, MixBatchNorm2d))
    mode = advprop(steps=2)
    data = dataset()
    net.train()
    inputs, targets = mode(net, data.images[:16], data.labels[:16], step=0)
    assert inputs.shape == (32, 1, 32, 32) and torch.equal(inputs[:16], data.images[:16])
    assert (inputs[16:] - data.images[:16]).abs().max() <= 0.3 + 1e-6
    assert first.route == "split" and first.clean_count == 16 and net.training

    history = train_classifier(net, data, epochs=1, batch_size=16, mode=mode, progress=False)
    assert len(history["loss"]) == 1
    assert not torch.allclose(first.clean.running_mean, first.adversarial.running_mean)
    with pytest.raises(ValueError):
        AdvPropMode(mode.attack)(model(), data.images[:4], data.labels[:4], 0)


def test_advprop_crafts_with_the_auxiliary_batchnorm():
    net = use_mix_batchnorm(model()).train()
    seen = []

    class Spy:
        def __call__(self, model, images, labels, generator=None):
            seen.append({m.route for m in model.modules() if isinstance(m, MixBatchNorm2d)})
            return images.clone()

    AdvPropMode(Spy())(net, torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long), 0)
    assert seen == [{"adversarial"}]
