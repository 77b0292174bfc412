"""Properties of the attacks over their parameters (hypothesis): whatever the bound, steps (1–3),
random start, restarts and images, the image-space attacks return images of the input's shape in
[0, 1] inside their threat model and leave the input alone; the latent attack never moves a layer
or a variable it was not asked to move, and its images stay in [0, 1].

Tiny models only, 10 examples per property: the file runs in well under 30 s on one thread.
"""
import os
import tempfile
from pathlib import Path

import pytest
import torch

# hypothesis caches under ./.hypothesis by default: keep the checkout clean
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "gat-book-hypothesis"))

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from gatlib.attacks import pgd, recolor, spatial  # noqa: E402
from gatlib.attacks.latent import MOVES, latent_attack, sample_latents  # noqa: E402

SETTINGS = settings(max_examples=10, deadline=None)
TOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """(The shared ``one_thread`` fixture is function-scoped, which hypothesis refuses.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """A tiny classifier per channel count (grayscale and RGB), 8x8 inputs, 5 classes."""
    torch.manual_seed(0)
    return {c: nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
            for c in (1, 3)}


@st.composite
def batches(draw, channels=(1, 3)):
    """(images, labels): random, constant 0 / 1 (the edges of [0, 1]) or binary images."""
    c = draw(st.sampled_from(channels))
    b = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["uniform", "zeros", "ones", "binary"]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    images = torch.rand(b, c, 8, 8, generator=generator)
    if kind == "zeros":
        images.zero_()
    elif kind == "ones":
        images.fill_(1)
    elif kind == "binary":
        images = images.round()
    labels = torch.randint(0, 5, (b,), generator=generator)
    return images, labels


common = dict(steps=st.integers(1, 3), random_start=st.booleans(), restarts=st.integers(1, 2),
              early_stop=st.booleans(), seed=st.integers(0, 1000))


def check_output(adversarial, images, before):
    assert torch.equal(images, before), "the attack modified its input"
    assert adversarial.shape == images.shape and adversarial.dtype == images.dtype
    assert torch.isfinite(adversarial).all()
    assert adversarial.min() >= 0 and adversarial.max() <= 1


@SETTINGS
@given(batch=batches(), bound=st.floats(0, 0.5), **common)
def test_pgd_stays_in_the_unit_box_and_the_linf_ball(models, batch, bound, steps, random_start, restarts,
                                                      early_stop, seed):
    images, labels = batch
    before = images.clone()
    attack = pgd.LinfPGD(bound, steps, random_start=random_start, restarts=restarts, early_stop=early_stop, seed=seed)
    adversarial = attack(models[images.shape[1]], images, labels)
    check_output(adversarial, images, before)
    assert (adversarial - images).abs().max() <= bound + TOL


@SETTINGS
@given(batch=batches(), bound=st.floats(0, 0.2), smoothness=st.sampled_from([0.0, 0.01]), **common)
def test_stadv_keeps_its_flow_bound(models, batch, bound, smoothness, steps, random_start, restarts, early_stop, seed):
    images, labels = batch
    before = images.clone()
    attack = spatial.StAdv(bound, steps, random_start=random_start, restarts=restarts, early_stop=early_stop,
                           seed=seed, smoothness=smoothness)
    adversarial = attack(models[images.shape[1]], images, labels)
    check_output(adversarial, images, before)
    flow = attack.last_params
    assert flow.shape == (len(images), 2, 8, 8) and flow.abs().max() <= bound + TOL
    if bound == 0:
        assert torch.allclose(adversarial, images, atol=1e-6)


@SETTINGS
@given(batch=batches(), bound=st.floats(0, 0.2), resolution=st.integers(2, 5), **common)
def test_recolor_keeps_its_color_bound(models, batch, bound, resolution, steps, random_start, restarts, early_stop,
                                       seed):
    images, labels = batch
    before = images.clone()
    attack = recolor.ReColorAdv(bound, steps, random_start=random_start, restarts=restarts, early_stop=early_stop,
                                seed=seed, resolution=resolution)
    adversarial = attack(models[images.shape[1]], images, labels)
    check_output(adversarial, images, before)
    offsets = attack.last_params
    expected = (len(images), resolution) if images.shape[1] == 1 else (len(images), *[resolution] * 3, 3)
    assert offsets.shape == expected and offsets.abs().max() <= bound + TOL


# ------------------------------------------------------------------------------ the latent attack

@pytest.fixture(scope="module")
def latent_setup(tiny_generator):
    """random-tiny G, a linear F, and latents whose labels are F's clean predictions (all valid)."""
    G = tiny_generator
    torch.manual_seed(1)
    F = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)).eval()
    styles, noises = sample_latents(G, torch.arange(4) % 10, seed=3)
    with torch.no_grad():
        labels = F(G.to_unit(G.synthesize(styles, noises))).argmax(1)
    return G, F, styles, noises, labels


@SETTINGS
@given(data=st.data(), moves=st.sampled_from(MOVES), include_torgb=st.booleans(), eps=st.floats(0, 0.2),
       delta=st.floats(0, 1.0), max_iters=st.integers(1, 3), targeted=st.booleans(), use_cache=st.booleans())
def test_latent_attack_moves_only_the_selected_layers(latent_setup, data, moves, include_torgb, eps, delta,
                                                      max_iters, targeted, use_cache):
    G, F, styles, noises, labels = latent_setup
    layers = sorted(data.draw(st.sets(st.integers(0, G.num_layers - 1), min_size=1), label="layers"))
    conv = [l for l in layers if l < len(styles.conv)]
    moving_styles = conv if moves in ("style", "both") else []
    moving_torgb = G.torgb_of_layers(layers) if include_torgb and moves in ("style", "both") else []
    moving_noises = conv if moves in ("noise", "both") else []
    kwargs = dict(eps=eps, delta=delta, moves=moves, layers=layers, include_torgb=include_torgb,
                  max_iters=max_iters, use_cache=use_cache, target=(labels + 1) % 10 if targeted else None)
    if not (moving_styles or moving_torgb or moving_noises):
        with pytest.raises(ValueError, match="nothing to move"):
            latent_attack(G, F, styles, noises, labels, **kwargs)
        return
    if ((moving_styles or moving_torgb) and eps == 0) or (moving_noises and delta == 0):
        with pytest.raises(ValueError, match="is 0 but"):   # a zero step on what moves would never change it
            latent_attack(G, F, styles, noises, labels, **kwargs)
        return
    before = [s.clone() for s in styles.conv + styles.torgb] + [n.clone() for n in noises]
    result = latent_attack(G, F, styles, noises, labels, **kwargs)

    for index, (got, original) in enumerate(zip(result.styles.conv, styles.conv)):
        if index not in moving_styles:
            assert torch.equal(got, original), f"style of unselected layer {index} moved"
    for index, (got, original) in enumerate(zip(result.styles.torgb, styles.torgb)):
        if index not in moving_torgb:
            assert torch.equal(got, original), f"ToRGB style {index} moved"
    for index, (got, original) in enumerate(zip(result.noises, noises)):
        if index not in moving_noises:
            assert torch.equal(got.expand_as(original), original), f"noise of unselected layer {index} moved"
    assert all(torch.equal(a, b) for a, b in zip(before, styles.conv + styles.torgb + noises)), "inputs modified"
    assert result.images.shape == result.clean_images.shape == (len(labels), 1, 32, 32)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert ((result.iterations >= 0) & (result.iterations <= max_iters)).all()
