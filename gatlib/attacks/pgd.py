"""L∞ projected gradient descent (PGD): Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR 2018 — the "PGD" column of GAT's Table 2
(Poursaeed et al., ICCV 2021, §4.1, their reference [27]).

Starting from ``x⁰ = x + U(−ε, ε)`` (``random_start``; ``x⁰ = x`` otherwise), every step is::

    x^{t+1} = clip_[0,1]( x + clip_[−ε,ε]( x^t + α · sign(∇_x L(F(x^t), y)) − x ) )

with L the cross-entropy of the true label (Madry et al.; the margin loss is available as
``loss="margin"``). This is foolbox's ``LinfPGD`` step for step (``tests/test_attacks.py`` checks the
agreement with ``random_start=False``).

Budgets:

* ``MNIST_DEFAULTS`` — ε = 0.3, 100 steps of α = 0.01: Madry et al.'s MNIST bound and step size
  (their MNIST challenge's adversary takes 40 steps of 0.01 at ε = 0.3). We run 100 steps because
  chapter 05's strength check found 40 unconverged on an adversarially trained model: on 200 test
  digits, the zoo's ``at-pgd-s0`` kept 57.0 % at 40 steps, 49.0 % at 100 and 46.5 % at 200.
* ``PAPER_DEFAULTS`` — ε = 4/255, PAT's medium-perceptibility L∞ bound on ImageNet-100 (Laidlaw
  et al., ICLR 2021, Table 3; their README's evaluation command). PAT runs AutoAttack there; we run
  100 PGD steps of 2.5ε/100 (Madry et al.'s ratio of step to budget), which is weaker than
  AutoAttack by construction: accuracies are upper bounds. (PAT's ``LinfAttack`` default for
  ImageNet-100 is 8/255, the *high* bound; pass ``bound=8/255`` for that.)
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Attack

MNIST_DEFAULTS = {"bound": 0.3, "steps": 100, "step_size": 0.01}
PAPER_DEFAULTS = {"bound": 4 / 255, "steps": 100, "step_size": 2.5 * (4 / 255) / 100}


class LinfPGD(Attack):
    """L∞ PGD (Madry et al., 2018). ``bound`` is ε (pixels in [0, 1]); ``step_size`` α (default
    2.5ε/steps); see :class:`gatlib.attacks.base.Attack` for restarts, seeds, loss and early stop.
    ``last_params`` holds the kept perturbations ``x_adv − x``."""

    name = "PGD"
    default_loss = "ce"

    def _run(self, model: nn.Module, images: Tensor, labels: Tensor, generator):
        eps = self.bound
        if self.random_start:
            delta = self._uniform(images.shape, generator, images.device, -eps, eps)
            delta = (images + delta).clamp(0, 1) - images
        else:
            delta = images.new_zeros(images.shape)

        def render(x, d):
            return x + d

        def project(d, x):
            return (x + d.clamp(-eps, eps)).clamp(0, 1) - x

        delta = self._signed_ascent(model, images, labels, delta, render, project)
        return (images + delta).clamp(0, 1), delta


def mnist(**overrides) -> LinfPGD:
    """PGD at the MNIST budget (``MNIST_DEFAULTS``), with any argument overridden."""
    return LinfPGD(**{**MNIST_DEFAULTS, **overrides})


def paper(**overrides) -> LinfPGD:
    """PGD at PAT's ImageNet-100 budget (``PAPER_DEFAULTS``), with any argument overridden."""
    return LinfPGD(**{**PAPER_DEFAULTS, **overrides})
