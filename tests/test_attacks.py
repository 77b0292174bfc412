"""Image-space attacks (PGD, StAdv, ReColorAdv, PPGD / LPA) and ``gatlib.evaluate``: agreement with
foolbox, bounds, strength against the undefended Original classifier, mode restoring, validation.

Budget: the whole file runs in about a minute on one thread. The expensive attacks run on fewer
images (ReColorAdv: 64, PPGD: 48) than the cheap ones (200); the report of the 500-image numbers
lives in the chapter."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gatlib import data, zoo
from gatlib.attacks import perceptual, pgd, recolor, spatial
from gatlib.attacks.base import grid_smoothness, margin_loss
from gatlib.evaluation import evaluate
from gatlib.perceptual import PerceptualDistance


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return zoo.load("mnist-classifier-s0")


@pytest.fixture(scope="module")
def digits():
    test_set = data.mnist("test")
    return test_set.images[:200], test_set.labels[:200]


@pytest.fixture(scope="module")
def lpips_net():
    return perceptual.default_distance()


def accuracy(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


# ------------------------------------------------------------------------------------------ PGD
def test_pgd_agrees_with_foolbox_linf_pgd(model, digits):
    fb = pytest.importorskip("foolbox")
    images, labels = digits
    steps, step_size, eps = 10, 0.01, 0.3   # a regime where about half the digits fall: agreement is informative
    ours = pgd.LinfPGD(bound=eps, steps=steps, step_size=step_size, random_start=False, early_stop=False)(
        model, images, labels)
    fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1))
    theirs = fb.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=False)
    _, clipped, _ = theirs(fmodel, images, labels, epsilons=eps)
    with torch.no_grad():
        ours_pred, theirs_pred = model(ours).argmax(1), model(clipped).argmax(1)
    agreement = (ours_pred == theirs_pred).float().mean().item()
    assert agreement >= 0.99, f"per-sample agreement with foolbox LinfPGD {agreement:.3f}"
    assert 0.05 < accuracy(model, ours, labels) < 0.95     # the regime is not trivial


def test_pgd_bound_and_mnist_target(model, digits):
    images, labels = digits
    attack = pgd.mnist()
    adversarial = attack(model, images, labels)
    assert (adversarial - images).abs().max() <= 0.3 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert accuracy(model, adversarial, labels) < 0.10


def test_restarts_keep_fooling_examples_and_seed_repeats(model, digits):
    images, labels = digits[0][:40], digits[1][:40]
    weak = dict(bound=0.1, steps=3, step_size=0.03)
    one = pgd.LinfPGD(**weak, seed=1)(model, images, labels)
    again = pgd.LinfPGD(**weak, seed=1)(model, images, labels)
    assert torch.equal(one, again)
    several = pgd.LinfPGD(**weak, restarts=4, seed=1)(model, images, labels)
    assert accuracy(model, several, labels) <= accuracy(model, one, labels)
    assert (several - images).abs().max() <= 0.1 + 1e-6


def test_restarts_with_early_stop_attack_only_the_samples_still_standing(model, digits):
    images, labels = digits[0][:40], digits[1][:40]
    sizes = []

    class Counting(pgd.LinfPGD):
        def _run(self, model, images, labels, generator):
            sizes.append(len(images))
            return super()._run(model, images, labels, generator)

    weak = dict(bound=0.1, steps=3, step_size=0.03, restarts=3, seed=1)
    adversarial = Counting(**weak)(model, images, labels)
    first = pgd.LinfPGD(**{**weak, "restarts": 1})(model, images, labels)
    with torch.no_grad():
        standing = int((model(first).argmax(1) == labels).sum())
    assert sizes[0] == 40 and sizes[1] == standing     # restart 2 sees only the digits restart 1 missed
    assert sizes == sorted(sizes, reverse=True)
    assert accuracy(model, adversarial, labels) <= accuracy(model, first, labels)
    sizes.clear()
    Counting(**weak, early_stop=False)(model, images, labels)
    assert sizes == [40, 40, 40]                       # without early stop every restart runs on all


# -------------------------------------------------------------------------------------- StAdv
def test_zero_flow_is_the_identity(digits):
    images = digits[0][:4]
    flow = torch.zeros(4, 2, 32, 32)
    assert torch.allclose(spatial.apply_flow(images, flow), images, atol=1e-5)
    # a flow of one pixel to the right (2/(W-1) in normalised units) samples the right neighbour
    flow[:, 0] = 2 / 31
    shifted = spatial.apply_flow(images, flow)
    assert torch.allclose(shifted[..., :-1], images[..., 1:], atol=1e-5)


def test_stadv_respects_its_flow_bound_and_fools(model, digits):
    images, labels = digits
    attack = spatial.mnist()
    adversarial = attack(model, images, labels)
    assert attack.last_params.shape == (200, 2, 32, 32)
    assert attack.last_params.abs().max() <= 0.05 + 1e-7
    assert torch.allclose(spatial.apply_flow(images, attack.last_params), adversarial, atol=1e-5)
    assert accuracy(model, adversarial, labels) < 0.10


def test_stadv_mnist_budget_spends_pats_iterations_as_random_starts():
    # chapter 05 and spatial's docstring say the MNIST budget is PAT's 200 ImageNet-100 iterations,
    # spent as 10 starts of 20 steps at PAT's bound: the two budgets must not drift apart
    mnist, paper = spatial.mnist(), spatial.paper()
    assert (mnist.restarts, mnist.steps) == (10, 20) and mnist.random_start
    assert mnist.restarts * mnist.steps == paper.restarts * paper.steps == 200
    assert mnist.bound == paper.bound == 0.05 and mnist.loss == "ce"


def test_flow_smoothness_is_xiao_et_al_l_flow():
    flow = torch.zeros(1, 2, 3, 3)
    flow[0, 0, 1, 1] = 0.3      # one displaced pixel: 4 neighbours, each pair counted from both sides
    assert spatial.flow_smoothness(flow).item() == pytest.approx(8 * 0.3, rel=1e-4)
    smooth = spatial.StAdv(bound=0.05, steps=5, smoothness=10.0)
    assert smooth.smoothness == 10.0


# ------------------------------------------------------------------------------------ ReColor
def test_recolor_curve_interpolates_control_points():
    images = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    offsets = torch.zeros(1, 3)                       # control points at 0, 0.5, 1
    assert torch.allclose(recolor.apply_curve(images, offsets), images)
    offsets[0, 1] = 0.06
    out = recolor.apply_curve(images, offsets).flatten()
    assert torch.allclose(out, torch.tensor([0.0, 0.56, 1.0, 0.28]), atol=1e-6)


def test_recolor_rgb_grid_is_trilinear():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 4, 4)
    offsets = torch.zeros(2, 3, 3, 3, 3)
    assert torch.allclose(recolor.apply_color_grid(images, offsets), images, atol=1e-6)
    offsets = torch.rand(2, 3, 3, 3, 3) * 0.1
    out = recolor.apply_color_grid(images, offsets)
    # by hand at one pixel
    color = images[0, :, 1, 2] * 2
    index, frac = color.floor().long().clamp(max=1), color - color.floor().clamp(max=1)
    expected = torch.zeros(3)
    for corner in range(8):
        bits = [(corner >> k) & 1 for k in range(3)]
        weight = math.prod(f if b else 1 - f for f, b in zip(frac.tolist(), bits))
        expected += weight * offsets[0, index[0] + bits[0], index[1] + bits[1], index[2] + bits[2]]
    assert torch.allclose(out[0, :, 1, 2], images[0, :, 1, 2] + expected, atol=1e-5)
    attack = recolor.ReColorAdv(bound=0.06, steps=3, resolution=3, smoothness=0.1)
    adversarial = attack(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), images, torch.tensor([1, 2]))
    assert attack.last_params.shape == (2, 3, 3, 3, 3) and attack.last_params.abs().max() <= 0.06 + 1e-7
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_recolor_respects_its_bound_and_does_not_help(model, digits):
    images, labels = digits[0][:64], digits[1][:64]
    attack = recolor.mnist()
    adversarial = attack(model, images, labels)
    offsets = attack.last_params
    assert offsets.shape == (64, 16)
    assert offsets.abs().max() <= 0.06 + 1e-7
    assert (adversarial - images).abs().max() <= 0.06 + 1e-6      # a curve moves each pixel by ≤ the bound
    assert torch.allclose(recolor.apply_curve(images, offsets), adversarial, atol=1e-6)
    assert accuracy(model, adversarial, labels) <= accuracy(model, images, labels)


def test_smoothness_norm_counts_both_directions():
    offsets = torch.tensor([[0.0, 0.1, 0.1]])[..., None]        # (B, K, 1)
    assert grid_smoothness(offsets, 1).item() == pytest.approx(0.2, rel=1e-3)


# ---------------------------------------------------------------------------------- perceptual
def test_lpa_stays_in_the_lpips_ball_and_fools(model, digits, lpips_net):
    images, labels = digits
    attack = perceptual.mnist("lpa")
    adversarial = attack(model, images, labels)
    with torch.no_grad():
        distances = perceptual.lpips_distance(lpips_net, images, adversarial)
    assert distances.max() <= 0.5 + 1e-3
    assert accuracy(model, adversarial, labels) < 0.10


def test_ppgd_stays_in_the_lpips_ball_and_fools(model, digits, lpips_net):
    images, labels = digits[0][:48], digits[1][:48]
    attack = perceptual.mnist("ppgd")
    adversarial = attack(model, images, labels)
    with torch.no_grad():
        distances = perceptual.lpips_distance(lpips_net, images, adversarial)
    assert distances.max() <= 0.5 + 1e-3
    assert accuracy(model, adversarial, labels) < 0.10


def test_newton_projection_lands_inside_the_ball_nearer_the_step_than_bisection(lpips_net, digits):
    """PAT's Newton projection moves x' along ∇d onto the ball; the bisection pulls it straight back
    toward x. Where PPGD uses it — a short step out of a point on the ball's surface — both end
    inside, and the Newton point keeps more of the step (it is nearer x')."""
    images = digits[0][:16]
    generator = torch.Generator().manual_seed(0)
    attacks = {kind: perceptual.PerceptualPGD(distance=lpips_net, projection=kind, projection_overshoot=0.01)
               for kind in perceptual.PROJECTIONS}
    with torch.no_grad():
        clean = lpips_net.features(images)
        bisection = attacks["bisection"]
        bisection._prepare(nn.Identity(), images)
        far = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        surface = bisection._project(images, far, clean)                   # points on the ball
        step = 0.05 * torch.randn(images.shape, generator=generator)
        outside = (surface + step).clamp(0, 1)
        assert (perceptual.lpips_distance(lpips_net, images, outside) > 0.5).all()   # every row needs projecting
        projected = {}
        for kind, attack in attacks.items():
            attack._prepare(nn.Identity(), images)
            projected[kind] = attack._project(images, outside, clean)
            distances = perceptual.lpips_distance(lpips_net, images, projected[kind])
            assert distances.max() <= 0.5 + 1e-4, kind
            assert distances.min() >= 0.4, kind       # onto the ball, not back to x
        gap = {kind: (out - outside).flatten(1).norm(dim=1) for kind, out in projected.items()}
    assert (gap["newton"] < gap["bisection"]).float().mean() >= 0.9
    assert gap["newton"].mean() < 0.8 * gap["bisection"].mean()


def test_newton_projection_falls_back_on_bisection(lpips_net, digits):
    """With no Newton step allowed every row goes to the bisection: the same output."""
    images = digits[0][:8]
    outside = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    with torch.no_grad():
        clean = lpips_net.features(images)
        outs = []
        for attack in (perceptual.PerceptualPGD(distance=lpips_net, projection="newton", newton_steps=0),
                       perceptual.PerceptualPGD(distance=lpips_net, projection="bisection")):
            attack._prepare(nn.Identity(), images)
            outs.append(attack._project(images, outside, clean))
    assert torch.equal(outs[0], outs[1])


def test_perceptual_projection_arguments_are_checked():
    assert perceptual.PerceptualPGD().projection == "newton"           # PAT's PerceptualPGDAttack default
    assert perceptual.LagrangePerceptual().projection == "newton"      # and its LagrangePerceptualAttack's
    assert perceptual.FastLagrangePerceptual().projection is None      # PAT training: no projection
    assert perceptual.PerceptualPGD().projection_overshoot == 0.1      # PAT's projection_overshoot
    assert perceptual.mnist("ppgd").projection_overshoot == perceptual.MNIST_PPGD_OVERSHOOT
    with pytest.raises(ValueError, match="projection must be one of"):
        perceptual.PerceptualPGD(projection="linesearch")
    with pytest.raises(ValueError, match="newton_steps"):
        perceptual.PerceptualPGD(newton_steps=-1)
    with pytest.raises(ValueError, match="projection_overshoot"):
        perceptual.LagrangePerceptual(projection_overshoot=float("nan"))


def test_lpips_units_are_pats(lpips_net, digits):
    """PAT's distance is the L2 norm of the flattened normalised features: sqrt of ours."""
    images = digits[0][:8]
    other = images.roll(1, 0)
    with torch.no_grad():
        flat = perceptual.PerceptualPGD()._flat
        direct = (flat(lpips_net.features(images)) - flat(lpips_net.features(other))).norm(dim=1)
        assert torch.allclose(perceptual.lpips_distance(lpips_net, images, other), direct, atol=1e-4)


def test_fast_lpa_with_self_lpips_runs_and_leaves_the_model_trainable(digits):
    model = zoo.load("mnist-classifier-s0").train()
    distance = perceptual.self_lpips(model)
    assert distance.layers == ["features.0.2", "features.1.2", "features.3.2", "features.4.2", "features.6.2"]
    images, labels = digits[0][:16], digits[1][:16]
    adversarial = perceptual.FastLagrangePerceptual(steps=3)(model, images, labels)
    assert adversarial.shape == images.shape and adversarial.min() >= 0 and adversarial.max() <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())        # hooks only during the attack
    model.eval()
    with torch.no_grad():
        assert distance(images, images).abs().max() < 1e-6
        assert (distance(images, images.roll(1, 0)) > 0).all()


def test_paper_perceptual_needs_the_alexnet_network():
    with pytest.raises(ValueError, match="AlexNet"):
        perceptual.paper("lpa")
    alexnet = PerceptualDistance.from_torchvision("alexnet", None)      # random weights: only the wiring
    attack = perceptual.paper("ppgd", distance=alexnet)
    assert attack.bound == 0.5 and attack.steps == 40 and attack.distance is alexnet


# ------------------------------------------------------------------------------------- common
@pytest.mark.parametrize("make", [lambda: pgd.LinfPGD(0.1, 2), lambda: spatial.StAdv(steps=2),
                                  lambda: recolor.ReColorAdv(steps=2),
                                  lambda: perceptual.LagrangePerceptual(steps=1, lagrange_steps=1)])
def test_attacks_restore_model_mode_and_grad_flags(make, digits):
    model = zoo.load("mnist-classifier-s0").train()
    model.head[1].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    adversarial = make()(model, digits[0][:8], digits[1][:8])
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert adversarial.shape == (8, 1, 32, 32)


def test_margin_loss():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    labels = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(logits, labels), torch.tensor([-1.0, 5.0]))
    assert torch.allclose(margin_loss(logits, labels, kappa=1.0), torch.tensor([-1.0, 1.0]))


def test_input_validation(model, digits):
    images, labels = digits[0][:4], digits[1][:4]
    attack = pgd.LinfPGD(0.1, 1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        attack(model, images[0], labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(model, images * 255, labels)
    with pytest.raises(ValueError, match="NaN"):
        attack(model, images.clone().index_fill_(0, torch.tensor([0]), float("nan")), labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        attack(model, images, labels[:3])
    with pytest.raises(TypeError, match="integer"):
        attack(model, images, labels.float())
    with pytest.raises(TypeError, match="floats"):
        attack(model, (images * 255).to(torch.uint8), labels)
    with pytest.raises(ValueError, match="restarts"):
        pgd.LinfPGD(0.1, 1, restarts=0)
    with pytest.raises(ValueError, match="loss"):
        pgd.LinfPGD(0.1, 1, loss="hinge")
    with pytest.raises(ValueError, match="bound"):
        spatial.StAdv(bound=-1)


def test_defaults_are_documented():
    assert pgd.MNIST_DEFAULTS == {"bound": 0.3, "steps": 100, "step_size": 0.01}
    assert "100 steps of α = 0.01" in pgd.__doc__
    assert spatial.PAPER_DEFAULTS["bound"] == 0.05 and spatial.PAPER_DEFAULTS["steps"] == 200
    assert recolor.PAPER_DEFAULTS["bound"] == 0.06 and recolor.PAPER_DEFAULTS["steps"] == 200
    assert perceptual.PAPER_DEFAULTS == {"bound": 0.5, "steps": 40}
    assert pgd.PAPER_DEFAULTS["bound"] == pytest.approx(4 / 255)


# ------------------------------------------------------------------------------------ evaluate
def test_evaluate_returns_a_tidy_frame(model):
    test_set = data.mnist("test")
    attacks = {"PGD": pgd.LinfPGD(bound=0.3, steps=5, step_size=0.1), "StAdv": spatial.StAdv(steps=5)}
    table = evaluate(model, test_set, attacks=attacks, seeds=(0, 1), count=30, batch_size=16, progress=False)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["attack", "seed", "accuracy", "samples", "seconds"]
    assert len(table) == 6 and table["attack"].tolist() == ["clean", "PGD", "StAdv"] * 2
    assert (table["samples"] == 30).all() and table["seconds"].ge(0).all()
    clean = table[table.attack == "clean"]["accuracy"]
    assert (clean > 0.9).all()
    assert (table[table.attack == "PGD"]["accuracy"].to_numpy() < clean.to_numpy()).all()
    again = evaluate(model, test_set, attacks=attacks, seeds=(0, 1), count=30, batch_size=16, progress=False)
    assert np.array_equal(table["accuracy"].to_numpy(), again["accuracy"].to_numpy())


def test_evaluate_takes_a_plain_dataset_and_a_torchvision_style_model():
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 8, 8), torch.randint(0, 4, (12,))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    table = evaluate(net, TensorDataset(images, labels), attacks={"PGD": pgd.LinfPGD(8 / 255, 2)}, batch_size=5,
                     progress=False)
    assert table["samples"].tolist() == [12, 12]


def test_gatlib_evaluate_is_the_one_call_entry_point():
    import gatlib
    from gatlib import data

    table = gatlib.evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10)),
                            data.mnist("test").subset(20), attacks={}, progress=False)
    assert list(table.attack) == ["clean"] and table.samples.iloc[0] == 20
