"""The γ/β attack (gatlib.attacks.spade) on a segmenter and on a torchvision detector."""

import pytest
import torch
from torch import nn

from gatlib import scenes
from gatlib.attacks import spade as spade_attack
from gatlib.generators import spade

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = spade.SPADEGenerator(label_nc=11, image_nc=1, ngf=4, crop_size=64, z_dim=8, param_free_norm="instance",
                             spectral=False).eval()
    data = scenes.make_scenes(3, "test", seed=1)
    return G, data, spade.one_hot(data.masks, 11), torch.randn(3, 8)


def segmenter():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 11, 3, padding=1))


def test_one_step_is_the_signed_gradient_ascent_by_hand(setup):
    G, data, segmap, z = setup
    model = segmenter()
    layer = "up_2.norm_1"
    result = spade_attack.spade_attack(G, segmap, model, task="segmentation", masks=data.masks, eps=0.01,
                                       max_iters=1, layers=[layer], z=z)
    start = G.modulations(segmap)
    gamma, beta = (t.detach().clone().requires_grad_(True) for t in start[layer])
    mods = {**{k: (g.detach(), b.detach()) for k, (g, b) in start.items()}, layer: (gamma, beta)}
    model.eval()
    loss = spade_attack.segmentation_loss(model, G.to_unit(G.synthesize(segmap, mods, z)), data.masks).sum()
    grad_gamma, grad_beta = torch.autograd.grad(loss, [gamma, beta])
    torch.testing.assert_close(result.modulations[layer][0], gamma.detach() + 0.01 * grad_gamma.sign())
    torch.testing.assert_close(result.modulations[layer][1], beta.detach() + 0.01 * grad_beta.sign())
    for name in G.layer_names:
        if name != layer:   # unselected layers never move
            assert torch.equal(result.modulations[name][0], start[name][0].detach())
    assert len(result.images) == 2 and result.losses.shape == (2, 3)
    torch.testing.assert_close(result.images[0], G(segmap, z))


def test_the_attack_raises_the_segmentation_loss_and_keeps_models_as_they_were(setup):
    G, data, segmap, z = setup
    model = segmenter().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = spade_attack.spade_attack(G, segmap, model, task="segmentation", masks=data.masks, eps=0.05,
                                       max_iters=5, z=z)
    assert len(result.images) == 6 and result.losses[-1].mean() > result.losses[0].mean()
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    gamma_only = spade_attack.spade_attack(G, segmap, model, task="segmentation", masks=data.masks, max_iters=1,
                                           moves="gamma", z=z)
    start = G.modulations(segmap)
    assert all(torch.equal(gamma_only.modulations[n][1], start[n][1].detach()) for n in G.layer_names)


def test_detection_attack_uses_the_detector_loss_without_touching_batchnorm(setup, tiny_fcos):
    G, data, segmap, z = setup
    torch.manual_seed(3)
    detector = tiny_fcos().eval()
    bn = detector.backbone.body[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    result = spade_attack.spade_attack(G, segmap, detector, task="detection", targets=data.targets(), eps=0.05,
                                       max_iters=3, z=z)
    assert result.losses.shape == (4,) and result.losses[-1] > result.losses[0]
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2] and not detector.training


def test_bad_arguments_are_named(setup):
    G, data, segmap, z = setup
    with pytest.raises(ValueError, match="task"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="depth", masks=data.masks)
    with pytest.raises(ValueError, match="masks"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation")
    with pytest.raises(ValueError, match="unknown SPADE layers"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=data.masks, layers=["up_9.norm_0"])
    with pytest.raises(ValueError, match="eps"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=data.masks, eps=float("nan"))
    with pytest.raises(ValueError, match="one target dict"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="detection", targets=[])


def test_an_empty_or_string_layer_selection_is_named(setup):
    G, data, segmap, z = setup
    with pytest.raises(ValueError, match="at least one SPADE layer"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=data.masks, layers=[], z=z)
    with pytest.raises(ValueError, match=r"list of SPADE layer names, got the string 'up_2.norm_1'"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=data.masks,
                                  layers="up_2.norm_1", z=z)


@pytest.mark.parametrize("bad", [11, -1])
def test_label_ids_outside_the_segmenters_classes_are_named(setup, bad):
    G, data, segmap, z = setup
    masks = data.masks.clone()
    masks[0, 0, :3] = bad
    masks[1, 0, 0] = scenes.IGNORE   # unlabelled pixels are allowed
    with pytest.raises(ValueError, match=rf"class ids {bad} \(3 pixels\).*11 classes: ids must be 0-10 or 255"):
        spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=masks, max_iters=1, z=z)
    with pytest.raises(ValueError, match=rf"class ids {bad} "):
        spade_attack.segmentation_loss(segmenter().eval(), data.images, masks)


def test_ignored_pixels_pass_the_label_check_and_the_check_runs_once(setup, monkeypatch):
    G, data, segmap, z = setup
    masks = data.masks.clone()
    masks[:, :4] = scenes.IGNORE
    calls = []
    check = spade_attack.check_label_range
    monkeypatch.setattr(spade_attack, "check_label_range", lambda *a: calls.append(a[1]) or check(*a))
    result = spade_attack.spade_attack(G, segmap, segmenter(), task="segmentation", masks=masks, max_iters=3, z=z)
    assert calls == [11] and result.losses.shape == (4, 3)
