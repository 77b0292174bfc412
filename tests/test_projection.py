"""Perceptual distance (LPIPS-style) and the projection of §3.1.1, on the small random generator."""
import math

import pytest
import torch
from torch import nn

from gatlib import zoo
from gatlib.attacks.latent import LatentAttackResult, sample_latents
from gatlib.perceptual import TORCHVISION_LAYERS, PerceptualDistance, unit_normalize
from gatlib.projection import (ProjectionResult, attack_projected, fresh_noise_error, learning_rate,
                               noise_regularisation, normalise_noise_, project, reconstruction_report)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def perceptual():
    return PerceptualDistance.from_zoo("oracle-widecnn")


@pytest.fixture(scope="module")
def made(G):
    """Images that G itself rendered (so a perfect projection exists), with their classes."""
    labels = torch.tensor([3, 5, 7, 1])
    styles, noises = sample_latents(G, labels, seed=11)
    with torch.no_grad():
        images = G.to_unit(G.synthesize(styles, noises))
    return images, labels


FAST = dict(steps=25, w_avg_samples=256, progress=False)


# ------------------------------------------------------------------------------ perceptual distance
def test_perceptual_distance_is_zero_on_equal_images_and_symmetric(perceptual):
    torch.manual_seed(0)
    a, b = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    assert perceptual(a, a).abs().max() < 1e-6
    d_ab, d_ba = perceptual(a, b), perceptual(b, a)
    assert d_ab.shape == (3,)
    assert torch.allclose(d_ab, d_ba, atol=1e-6)
    assert (d_ab > 0).all() and (d_ab <= 4 * len(perceptual.layers)).all()
    assert torch.allclose(perceptual.to_features(a, perceptual.features(b)), d_ab, atol=1e-6)


def test_perceptual_distance_grows_more_for_noise_than_for_a_one_pixel_shift(perceptual):
    from gatlib import data

    digits = data.mnist("test").images[:6]
    shifted = torch.roll(digits, shifts=1, dims=3)
    noisy = (digits + 0.3 * torch.randn(digits.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert (perceptual(digits, shifted) < perceptual(digits, noisy)).all()


def test_perceptual_distance_hooks_the_conv_stages_and_is_frozen(perceptual):
    assert perceptual.layers == ["features.1", "features.4", "features.7"]   # WideCNN's ReLUs
    assert not any(p.requires_grad for p in perceptual.parameters())
    perceptual.train()
    assert not perceptual.network.training
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    perceptual(x, torch.rand(2, 1, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unit_normalize_gives_unit_channel_vectors():
    x = torch.randn(2, 5, 3, 3)
    assert torch.allclose(unit_normalize(x).norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_perceptual_distance_rejects_mismatched_images(perceptual):
    with pytest.raises(ValueError, match="channels"):
        perceptual(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        perceptual(torch.rand(2, 1, 32, 32), torch.rand(3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        perceptual(torch.rand(1, 32, 32), torch.rand(1, 32, 32))


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_torchvision_perceptual_distance_loads_a_saved_state_dict(arch, tmp_path):
    import torchvision.models as models

    torch.manual_seed(0)
    net = getattr(models, arch)(weights=None)
    # alexnet: the whole model's state dict; vgg16: only its features (both are accepted)
    state = net.state_dict() if arch == "alexnet" else {k: v for k, v in net.state_dict().items()
                                                       if k.startswith("features.")}
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    distance = PerceptualDistance.from_torchvision(arch, path)
    assert distance.layers == TORCHVISION_LAYERS[arch]
    assert torch.equal(distance.network.features[0].weight, net.features[0].weight)
    grey, colour = torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32)
    assert distance(grey, grey.flip(3)).shape == (2,)
    assert distance(colour, colour).abs().max() < 1e-6
    assert (distance(colour, torch.rand(2, 3, 32, 32)) > 0).all()


def test_torchvision_perceptual_distance_refuses_a_foreign_state_dict(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="does not fit"):
        PerceptualDistance.from_torchvision("alexnet", path)
    with pytest.raises(ValueError, match="must be one of"):
        PerceptualDistance.from_torchvision("resnet50", path)


# ------------------------------------------------------------------------------ projection pieces
def test_learning_rate_ramps_up_then_down():
    assert learning_rate(0.0, 0.1) == 0.0
    assert learning_rate(0.5, 0.1) == pytest.approx(0.1)
    assert 0 < learning_rate(0.95, 0.1) < 0.05
    assert learning_rate(0.025, 0.1) == pytest.approx(0.05)


def test_noise_regulariser_is_small_for_white_noise_and_large_for_smooth_noise():
    rng = torch.Generator().manual_seed(0)
    white = [torch.randn(2, 1, r, r, generator=rng) for r in (16, 32)]
    smooth = [nn.functional.interpolate(n[..., ::4, ::4], scale_factor=4, mode="bilinear") for n in white]
    normalise_noise_(smooth)
    reg_white, reg_smooth = noise_regularisation(white), noise_regularisation(smooth)
    assert reg_white.shape == (2,)
    assert (reg_white < 0.05).all() and (reg_smooth > 0.5).all()


# ------------------------------------------------------------------------------ projection
def test_projection_reconstructs_an_image_the_generator_made(G, perceptual, made):
    images, labels = made
    result = project(G, images, labels, perceptual=perceptual, **FAST)
    assert isinstance(result, ProjectionResult)
    assert result.images.shape == images.shape and result.images.min() >= 0 and result.images.max() <= 1
    assert (result.perceptual < 0.5 * result.start_perceptual).all()
    assert (result.pixel_mse < result.start_pixel_mse).all()
    assert len(result.history["loss"]) == FAST["steps"]
    assert result.history["loss"][-1] < result.history["loss"][0]
    # the projected latents render the reported reconstruction
    with torch.no_grad():
        again = G.to_unit(G.synthesize(result.styles, result.noises))
    assert torch.allclose(again, result.images, atol=1e-5)
    assert G.training is False and not any(p.requires_grad for p in perceptual.parameters())


def test_projected_noise_stays_zero_mean_unit_variance(G, perceptual, made):
    images, labels = made
    result = project(G, images, labels, perceptual=perceptual, **FAST)
    for noise in result.noises:
        assert torch.allclose(noise.mean(dim=(1, 2, 3)), torch.zeros(len(images)), atol=1e-5)
        assert torch.allclose(noise.std(dim=(1, 2, 3), unbiased=False), torch.ones(len(images)), atol=1e-4)
    assert result.history["noise_reg"][-1] < 0.05
    fresh_mse, fresh_perceptual = fresh_noise_error(G, result, perceptual, seed=1)
    assert fresh_mse.shape == fresh_perceptual.shape == (len(images),)


def test_projection_of_one_image_does_not_depend_on_the_others_in_its_batch(G, perceptual, made):
    images, labels = made
    # same batch size and same first class: the seeded draws for the first row are identical
    first = project(G, images[[0, 1]], labels[[0, 1]], perceptual=perceptual, **{**FAST, "steps": 10})
    other = project(G, images[[0, 2]], labels[[0, 2]], perceptual=perceptual, **{**FAST, "steps": 10})
    for a, b in zip(first.styles.conv + first.noises, other.styles.conv + other.noises):
        assert torch.allclose(a[0], b[0], atol=1e-4)
    assert not torch.allclose(first.styles.conv[0][1], other.styles.conv[0][1])


def test_projection_in_w_plus_returns_the_styles_of_its_w(G, perceptual, made):
    images, labels = made
    result = project(G, images, labels, perceptual=perceptual, optimise_space="w", **FAST)
    assert result.w.shape == (len(images), G.num_ws, G.w_dim)
    with torch.no_grad():
        styles = G.styles(result.w)
    for got, want in zip(result.styles.conv + result.styles.torgb, styles.conv + styles.torgb):
        assert torch.allclose(got, want)
    assert (result.perceptual < result.start_perceptual).all()


def test_projection_in_batches_joins_the_parts(G, perceptual, made):
    images, labels = made
    result = project(G, images, labels, perceptual=perceptual, batch_size=3, **{**FAST, "steps": 3})
    assert len(result.images) == len(result.perceptual) == len(result.labels) == 4
    assert all(len(y) == 4 for y in result.styles.conv) and all(len(n) == 4 for n in result.noises)
    assert len(result.history["loss"]) == 3


def test_projection_without_labels_starts_from_the_global_mean(G, perceptual, made):
    images, _ = made
    result = project(G, images, None, perceptual=perceptual, optimise_noise=False, **{**FAST, "steps": 3})
    assert result.labels is None
    with pytest.raises(ValueError, match="labels"):
        attack_projected(G, nn.Flatten(), result, eps=0.01, delta=0.1)


def test_attack_from_the_projection_returns_a_latent_attack_result(G, perceptual, made):
    images, labels = made
    result = project(G, images, labels, perceptual=perceptual, **{**FAST, "steps": 5})
    classifier = zoo.load("mnist-classifier-s0")
    attack = attack_projected(G, classifier, result, eps=0.05, delta=0.5, max_iters=3)
    assert isinstance(attack, LatentAttackResult)
    assert len(attack.images) == 4 and torch.equal(attack.labels, labels)
    assert torch.allclose(attack.clean_images, result.images, atol=1e-5)   # the attack starts at the projection
    summary = attack.summary()
    assert summary["samples"] == 4
    report = reconstruction_report(G, result, classifier, perceptual)
    assert 0 <= report["classified_as_input"] <= 1 and math.isfinite(report["fresh_noise_perceptual"])


@pytest.mark.parametrize("images, match", [
    (torch.rand(2, 3, 32, 32), r"shape \(B, 1, 32, 32\)"),
    (torch.rand(2, 1, 28, 28), r"shape \(B, 1, 32, 32\)"),
    (torch.full((2, 1, 32, 32), float("nan")), "NaN"),
    (torch.full((2, 1, 32, 32), 2.0), r"\[0, 1\]"),
])
def test_projection_refuses_images_the_generator_cannot_reproduce(G, perceptual, images, match):
    with pytest.raises(ValueError, match=match):
        project(G, images, torch.tensor([0, 1]), perceptual=perceptual, **FAST)


def test_projection_refuses_bad_arguments(G, perceptual, made):
    images, labels = made
    with pytest.raises(ValueError, match="labels must have shape"):
        project(G, images, labels[:2], perceptual=perceptual, **FAST)
    with pytest.raises(ValueError, match="labels must lie"):
        project(G, images, labels + 10, perceptual=perceptual, **FAST)
    with pytest.raises(ValueError, match="optimise_space"):
        project(G, images, labels, perceptual=perceptual, optimise_space="z", **FAST)
    with pytest.raises(ValueError, match="steps"):
        project(G, images, labels, perceptual=perceptual, **{**FAST, "steps": 0})


def test_torchvision_perceptual_distance_downsamples_large_images_like_the_projector():
    distance = PerceptualDistance.from_torchvision("alexnet", None, max_size=64)
    big = torch.rand(1, 3, 128, 128)
    assert distance.preprocess(big).shape == (1, 3, 64, 64)
    assert distance.preprocess(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_projection_works_inside_no_grad(G, perceptual, made):
    images, labels = made
    with torch.no_grad():
        result = project(G, images[:2], labels[:2], perceptual=perceptual, **{**FAST, "steps": 3})
    assert len(result.images) == 2
