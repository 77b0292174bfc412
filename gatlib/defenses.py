"""Defenses of GAT's Table 2, each a *mode* of the one training loop ``gatlib.training.train_classifier``.

A mode is a callable ``mode(model, images, labels, step) -> (inputs, targets)`` (see
``gatlib.training``); nothing here forks the loop. Every attack below is crafted against the
*current* model at every step. The attacks' base class (``gatlib.attacks.base.Attack``) puts the model
in eval mode with frozen parameters while it crafts (BatchNorm uses its running statistics) and
restores train mode and the ``requires_grad`` flags afterwards, so a mode leaves the model in train mode.

* :class:`AdversarialMode` — Madry-style adversarial training (Madry et al., ICLR 2018): the batch is
  *replaced* by adversarial examples (``mix="replace"``, Madry's min–max objective), or the clean
  batch is followed by its adversarial versions (``mix="half"``, Goodfellow et al.'s 50/50 mixture,
  which is also how GAT trains, ``gatlib.gat``). Factories with the training-time budgets:

  - :func:`at_pgd` — L∞ PGD, ε = 0.3, **10 steps of 2.5ε/10 = 0.075** with a random start
    (Madry et al. train MNIST with 40 steps of 0.01 at ε = 0.3; 10 steps of Madry's step/ε ratio
    cost 4× less; ``at_pgd(steps=40, step_size=0.01)`` is Madry's recipe);
  - :func:`at_spatial` — StAdv at PAT's flow bound 0.05, 10 steps of 2.5·bound/10;
  - :func:`at_recolor` — ReColorAdv at PAT's bound 0.06, 10 steps of 2.5·bound/10;
  - :func:`pat` — perceptual adversarial training (Laidlaw, Singla & Feizi, ICLR 2021): the fast
    Lagrangian perceptual attack (``FastLagrangePerceptual``) with the model's *own* features as the
    LPIPS network (self-LPIPS, PAT's "self-bounded" variant), bound 0.5, 10 steps — PAT's CIFAR-10
    training setting (``FastLagrangePerceptualAttack(model, bound=0.5, num_iterations=10)``; their
    ImageNet-100 runs used 0.25). PAT has no MNIST model; we keep the CIFAR-10 bound.

  The spatial/recolor step counts are our choice (PAT evaluates with 100–200 iterations; a training
  attack of 10 steps keeps an epoch affordable). All attacks run a fixed number of steps
  (``early_stop=False``), as adversarial training does. Every setting is a keyword of the factory.

* AdvProp (Xie, Tan, Gong, Wang, Yuille & Le, CVPR 2020): adversarial examples are normalised by an
  *auxiliary* BatchNorm, clean ones by the main BatchNorm; only the main one is used at test time.

  - :class:`MixBatchNorm2d` holds ``clean`` and ``adversarial`` ``nn.BatchNorm2d``;
    :func:`use_mix_batchnorm` swaps every ``nn.BatchNorm2d`` of a model for one, in place (both
    copies start from the original's weights and running statistics) — no model rewrite.
  - Routing (``MixBatchNorm2d.route``, set on every layer by :func:`set_route`):
    ``"clean"`` — all rows through the clean BN; ``"adversarial"`` — all rows through the auxiliary
    BN (used while crafting, in train *or* eval mode: the attack runs in eval mode, so crafting uses
    the auxiliary running statistics); ``"split"`` — the first ``clean_count`` rows through the clean
    BN, the rest through the auxiliary BN (``clean_count=None``: the first half). **In eval mode
    ``"split"`` and ``"clean"`` both use the clean BN**, so a trained model evaluates with clean BN
    whatever route its last training step left.
  - :class:`AdvPropMode` sets route ``"adversarial"`` while the attack crafts, then route
    ``"split"`` with ``clean_count = len(images)`` and returns ``cat(clean, adversarial)``. The mode
    cannot run code after the loop's forward pass, so the split is *recorded* on the layers and the
    route simply stays ``"split"`` until the next mode call (or :func:`set_route`). AdvProp sums the
    two cross-entropies; the loop takes the mean over the concatenated batch, i.e. half that sum
    (a constant factor absorbed by the learning rate).
  - Saving: an AdvProp model's ``state_dict`` has the mix layers' keys (``….clean.weight``,
    ``….adversarial.weight``); a checkpoint of ``train_classifier`` resumes into a model that went
    through :func:`use_mix_batchnorm` first. For deployment / evaluation,
    :func:`collapse_mix_batchnorm` puts each layer's clean ``BatchNorm2d`` back in its place: the
    result is a plain model (e.g. a ``SmallCNN`` whose ``state_dict`` loads into
    ``classifiers.build("small_cnn")``) with identical eval outputs.

Modes are seeded per step (``seed``, ``step``), so a resumed run crafts the same examples.
``import gatlib.defenses`` registers the four adversarial modes under ``at_pgd``, ``at_spatial``,
``at_recolor`` and ``pat`` in ``gatlib.training.MODES``; AdvProp needs :func:`use_mix_batchnorm` on
the model first and is used as ``mode=AdvPropMode(...)`` / ``mode=advprop()``.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .attacks.base import Attack
from .attacks.perceptual import TRAINING_DEFAULTS as PAT_TRAINING_DEFAULTS
from .attacks.perceptual import FastLagrangePerceptual
from .attacks.pgd import LinfPGD
from .attacks.recolor import ReColorAdv
from .attacks.spatial import StAdv
from .training import register_mode

__all__ = ["AdversarialMode", "at_pgd", "at_spatial", "at_recolor", "pat", "MixBatchNorm2d", "use_mix_batchnorm",
           "set_route", "collapse_mix_batchnorm", "AdvPropMode", "advprop", "AT_PGD_DEFAULTS",
           "AT_SPATIAL_DEFAULTS", "AT_RECOLOR_DEFAULTS", "PAT_DEFAULTS", "ROUTES"]

#: training-time attack budgets (MNIST / 32×32 digits); see the module docstring
AT_PGD_DEFAULTS = {"bound": 0.3, "steps": 10, "step_size": 2.5 * 0.3 / 10, "random_start": True, "early_stop": False}
AT_SPATIAL_DEFAULTS = {"bound": 0.05, "steps": 10, "step_size": 2.5 * 0.05 / 10, "random_start": True,
                       "early_stop": False}
AT_RECOLOR_DEFAULTS = {"bound": 0.06, "steps": 10, "step_size": 2.5 * 0.06 / 10, "random_start": True,
                       "early_stop": False}
PAT_DEFAULTS = {**PAT_TRAINING_DEFAULTS, "distance": "self", "early_stop": False}

MIXES = ("replace", "half")
ROUTES = ("clean", "adversarial", "split")


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class AdversarialMode:
    """Adversarial training as a mode of ``train_classifier``: every batch is attacked by ``attack``
    (an ``gatlib.attacks`` object) against the current model.

    ``mix="replace"``: train on the adversarial batch only (Madry et al.); ``mix="half"``: the clean
    batch followed by its adversarial versions, same labels. ``seed`` seeds each step's attack."""

    def __init__(self, attack: Attack, mix: str = "replace", seed: int = 0):
        if not callable(attack):
            raise TypeError(f"attack must be an attack object, got {type(attack).__name__}")
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
        self.attack, self.mix, self.seed = attack, mix, int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.attack!r}, mix={self.mix!r}, seed={self.seed})"

    def craft(self, model: nn.Module, images: Tensor, labels: Tensor, step: int) -> Tensor:
        return self.attack(model, images, labels, generator=_step_generator(self.seed, step)).detach()

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, step: int):
        adversarial = self.craft(model, images, labels, step)
        if self.mix == "replace":
            return adversarial, labels
        return torch.cat([images, adversarial]), torch.cat([labels, labels])


def at_pgd(mix: str = "replace", seed: int = 0, **overrides) -> AdversarialMode:
    """AT-PGD: L∞ PGD adversarial training (``AT_PGD_DEFAULTS``: ε 0.3, 10 steps of 0.075)."""
    return AdversarialMode(LinfPGD(**{**AT_PGD_DEFAULTS, **overrides}), mix=mix, seed=seed)


def at_spatial(mix: str = "replace", seed: int = 0, **overrides) -> AdversarialMode:
    """AT-Spatial: StAdv adversarial training (``AT_SPATIAL_DEFAULTS``: flow bound 0.05, 10 steps)."""
    return AdversarialMode(StAdv(**{**AT_SPATIAL_DEFAULTS, **overrides}), mix=mix, seed=seed)


def at_recolor(mix: str = "replace", seed: int = 0, **overrides) -> AdversarialMode:
    """AT-Recolor: ReColorAdv adversarial training (``AT_RECOLOR_DEFAULTS``: bound 0.06, 10 steps)."""
    return AdversarialMode(ReColorAdv(**{**AT_RECOLOR_DEFAULTS, **overrides}), mix=mix, seed=seed)


def pat(mix: str = "replace", seed: int = 0, **overrides) -> AdversarialMode:
    """PAT: fast Lagrangian perceptual attack with self-LPIPS (``PAT_DEFAULTS``: bound 0.5, 10 steps)."""
    return AdversarialMode(FastLagrangePerceptual(**{**PAT_DEFAULTS, **overrides}), mix=mix, seed=seed)


# ------------------------------------------------------------------------------------------ AdvProp
class MixBatchNorm2d(nn.Module):
    """A BatchNorm2d with an auxiliary copy for adversarial examples (AdvProp). See the module
    docstring for ``route`` and ``clean_count``."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.clean = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.adversarial = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.route = "clean"
        self.clean_count: int | None = None

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "MixBatchNorm2d":
        """Both copies start as ``bn`` (weights, running statistics, device and dtype)."""
        mix = cls.__new__(cls)
        nn.Module.__init__(mix)
        mix.clean = copy.deepcopy(bn)
        mix.adversarial = copy.deepcopy(bn)
        mix.route, mix.clean_count = "clean", None
        mix.train(bn.training)
        return mix

    def extra_repr(self) -> str:
        return f"route={self.route!r}, clean_count={self.clean_count}"

    def forward(self, x: Tensor) -> Tensor:
        route = self.route
        if route == "adversarial":
            return self.adversarial(x)
        if route == "clean" or not self.training:          # eval: "split" uses the clean BN
            return self.clean(x)
        if route != "split":
            raise ValueError(f"MixBatchNorm2d: unknown route {route!r}; choose among {ROUTES}")
        count = len(x) // 2 if self.clean_count is None else self.clean_count
        if not 0 < count < len(x):
            raise ValueError(f"MixBatchNorm2d: split route needs 0 < clean_count < batch ({len(x)}), got {count}")
        return torch.cat([self.clean(x[:count]), self.adversarial(x[count:])])


def _mix_layers(model: nn.Module) -> list[MixBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, MixBatchNorm2d)]


def use_mix_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``model`` (in place) by a :class:`MixBatchNorm2d` whose
    clean and auxiliary copies start as that layer; returns ``model``. Layers already mixed are left
    alone. Raises ``ValueError`` when the model has no BatchNorm2d at all."""
    def swap(parent: nn.Module) -> int:
        count = 0
        for name, child in parent.named_children():
            if isinstance(child, MixBatchNorm2d):
                count += 1
            elif type(child) is nn.BatchNorm2d:
                setattr(parent, name, MixBatchNorm2d.from_batchnorm(child))
                count += 1
            else:
                count += swap(child)
        return count

    if swap(model) == 0:
        raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer: AdvProp needs batch normalisation")
    return model


def set_route(model: nn.Module, route: str, clean_count: int | None = None) -> nn.Module:
    """Set ``route`` (and ``clean_count`` for ``"split"``) on every MixBatchNorm2d of ``model``."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    layers = _mix_layers(model)
    if not layers:
        raise ValueError("the model has no MixBatchNorm2d: call use_mix_batchnorm(model) first")
    for layer in layers:
        layer.route, layer.clean_count = route, clean_count
    return model


def collapse_mix_batchnorm(model: nn.Module) -> nn.Module:
    """Put each MixBatchNorm2d's clean ``BatchNorm2d`` back in its place (in place; returns ``model``):
    a plain model with the clean statistics and the same eval outputs, for deployment and evaluation."""
    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, MixBatchNorm2d):
                setattr(parent, name, child.clean)
            else:
                swap(child)

    swap(model)
    return model


class AdvPropMode:
    """AdvProp as a mode of ``train_classifier`` (Xie et al., CVPR 2020, Algorithm 1): craft the
    adversarial batch with the auxiliary BNs (route ``"adversarial"``), then return
    ``cat(clean, adversarial)`` with route ``"split"`` (clean rows → clean BN, adversarial rows →
    auxiliary BN) for the loop's training forward. The model must have gone through
    :func:`use_mix_batchnorm`."""

    def __init__(self, attack: Attack, seed: int = 0):
        if not callable(attack):
            raise TypeError(f"attack must be an attack object, got {type(attack).__name__}")
        self.attack, self.seed = attack, int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.attack!r}, seed={self.seed})"

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, step: int):
        if not _mix_layers(model):
            raise ValueError("AdvPropMode: the model has no MixBatchNorm2d; call use_mix_batchnorm(model) first")
        set_route(model, "adversarial")
        try:
            adversarial = self.attack(model, images, labels, generator=_step_generator(self.seed, step)).detach()
        finally:
            set_route(model, "split", clean_count=len(images))
        return torch.cat([images, adversarial]), torch.cat([labels, labels])


def advprop(seed: int = 0, **overrides) -> AdvPropMode:
    """AdvProp with the AT-PGD training attack (``AT_PGD_DEFAULTS``, any argument overridden).
    Xie et al. use small-ε PGD on ImageNet; on digits we keep the AT-PGD budget by default."""
    return AdvPropMode(LinfPGD(**{**AT_PGD_DEFAULTS, **overrides}), seed=seed)


for _name, _factory in {"at_pgd": at_pgd, "at_spatial": at_spatial, "at_recolor": at_recolor, "pat": pat}.items():
    register_mode(_name, _factory())
