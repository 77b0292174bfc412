"""Shared machinery of the image-space attacks (``pgd``, ``spatial``, ``recolor``, ``perceptual``).

Every attack is an object with a uniform call::

    adversarial = attack(model, images, labels)        # images (B, C, H, W) in [0, 1]

which returns adversarial images in [0, 1] of the same shape. The model takes [0, 1] images (any
normalisation lives inside it, ``gatlib.classifiers``); it is put in eval mode with no parameter
gradients for the duration of the attack and restored afterwards (``latent._attack_mode``).

What the base class :class:`Attack` does for every attack:

* **validation** — images must be a float tensor (B, C, H, W), finite, in [0, 1]; labels a
  (B,) integer tensor; clear ``ValueError`` / ``TypeError`` otherwise;
* **restarts** — ``restarts`` independent runs (each from its own random start when
  ``random_start``); per sample the result of the run that fools the model is kept, and among
  equals the one with the highest loss (Madry et al., 2018, evaluate PGD with restarts this way);
  with early stop, a restart runs only on the samples that no earlier run has fooled;
* **early stop** (``early_stop=True``) — a sample leaves the optimisation as soon as the model
  misclassifies it (and, for bounded-by-projection attacks, it lies inside the threat model); its
  fooling image is kept. The accuracy under attack is unchanged by this — the kept image still
  fools — but an undefended model costs a fraction of the steps. Use ``early_stop=False`` for a
  fixed number of steps (e.g. to compare step by step with another implementation);
* **randomness** — every call draws from a ``torch.Generator`` seeded with ``seed`` (or the
  ``generator`` passed to the call, which ``gatlib.evaluate`` uses to give each seed its own
  stream), so a call is reproducible.

Losses (maximised by the attack; per sample):

* ``"ce"`` — cross-entropy of the true label (Madry et al., 2018; foolbox's ``LinfPGD``);
* ``"margin"`` — the Carlini–Wagner f6 margin ``max_{k≠y} z_k − z_y`` (clamped at ``kappa``), the
  loss PAT (Laidlaw et al., ICLR 2021; ``perceptual_advex.utilities.MarginLoss``) uses for its
  StAdv, ReColorAdv and perceptual attacks. It is positive exactly when the sample is fooled.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .latent import _attack_mode

__all__ = ["Attack", "margin_loss", "cross_entropy_loss", "LOSSES", "validate_inputs", "grid_smoothness",
           "_attack_mode"]


def margin_loss(logits: Tensor, labels: Tensor, kappa: float = math.inf) -> Tensor:
    """Carlini & Wagner's f6 margin ``max_{k≠y} z_k − z_y``, clamped above at ``kappa``: shape (B,)."""
    correct = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -math.inf)
    return (others.amax(dim=1) - correct).clamp(max=kappa)


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy of the true labels: shape (B,)."""
    return F.cross_entropy(logits, labels, reduction="none")


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": cross_entropy_loss, "margin": margin_loss}


def positive_int(value, name: str, where: str = "") -> int:
    """``value`` as an int when it is a whole number ≥ 1 (``4`` or ``4.0``), else one ``ValueError``
    naming ``name`` (prefixed with ``where``: the entry point)."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if not whole or value < 1:
        raise ValueError(f"{where + ': ' if where else ''}{name} must be a positive integer, got {value!r}")
    return int(value)


def validate_inputs(images, labels, name: str = "attack") -> Tensor:
    """Check ``images`` (float (B, C, H, W), finite, in [0, 1]) and ``labels`` ((B,) integers);
    returns the labels as a long tensor on the images' device."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name}: images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: images must be floats in [0, 1], got dtype {images.dtype}")
    if len(images) == 0:
        raise ValueError(f"{name}: got an empty batch")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name}: images contain NaN or infinite values")
    low, high = images.min().item(), images.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"{name}: images must lie in [0, 1] (normalisation belongs inside the model), "
                         f"got values in [{low:.3g}, {high:.3g}]")
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{name}: labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}")
    return labels.long().to(images.device)


def grid_smoothness(offsets: Tensor, spatial_dims: int) -> Tensor:
    """The smoothness norm of a per-sample grid of vector offsets, shape (B, *grid, V): the sum over
    every grid point p and each of its (up to 2·``spatial_dims``) axis neighbours q of
    ``sqrt(||offset_p − offset_q||² + 1e-10)``.

    This is Xiao et al.'s L_flow (ICLR 2018, eq. 4) for a flow field (grid = H×W, V = 2) and
    ReColorAdv's smoothness norm (Laidlaw & Feizi, NeurIPS 2019, §3; ``recoloradv/norms.py``) for a
    color-space grid. Both neighbours of a pair count (p→q and q→p), as in those definitions.
    Returns shape (B,)."""
    if offsets.ndim != spatial_dims + 2:
        raise ValueError(f"expected offsets of shape (B, {spatial_dims} grid dims, V), got {tuple(offsets.shape)}")
    total = offsets.new_zeros(offsets.shape[0])
    for dim in range(1, spatial_dims + 1):
        diff = torch.diff(offsets, dim=dim)
        total = total + 2 * (diff.square().sum(-1) + 1e-10).sqrt().flatten(1).sum(1)
    return total


class Attack:
    """Base class: validation, eval mode, restarts, seeding; subclasses implement ``_run``.

    Args (shared by every attack):
        bound: the size of the threat model (its meaning is the subclass's: an L∞ radius, a flow
            bound, a perceptual distance, ...).
        steps: iterations per run.
        step_size: size of one step (None: the subclass's default, a function of bound and steps).
        restarts: independent runs per sample (≥ 1); see the module docstring.
        random_start: start each run from a random point of the threat model.
        seed: seeds the random starts (a call with the same seed repeats itself).
        loss: ``"ce"`` or ``"margin"`` (see module docstring).
        early_stop: drop a sample from the optimisation once it is fooled (inside the threat model).
    """

    name = "attack"
    default_loss = "ce"

    def __init__(self, bound: float, steps: int, step_size: float | None = None, restarts: int = 1,
                 random_start: bool = True, seed: int = 0, loss: str | None = None, early_stop: bool = True):
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound >= 0):
            raise ValueError(f"{self.name}: bound must be a finite number ≥ 0, got {bound!r}")
        if int(steps) != steps or steps < 0:
            raise ValueError(f"{self.name}: steps must be a non-negative integer, got {steps!r}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"{self.name}: restarts must be an integer ≥ 1, got {restarts!r}")
        if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"{self.name}: step_size must be positive, got {step_size!r}")
        loss = loss or self.default_loss
        if loss not in LOSSES:
            raise ValueError(f"{self.name}: loss must be one of {list(LOSSES)}, got {loss!r}")
        self.bound, self.steps, self.restarts = float(bound), int(steps), int(restarts)
        self.step_size = float(step_size) if step_size is not None else self.default_step_size()
        self.random_start, self.seed, self.loss, self.early_stop = bool(random_start), int(seed), loss, bool(early_stop)
        self.loss_fn = LOSSES[loss]
        #: per sample, the perturbation parameters of the kept run (flow, curve offsets, ...) or None
        self.last_params: Tensor | None = None

    def default_step_size(self) -> float:
        return 2.5 * self.bound / max(self.steps, 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(bound={self.bound:g}, steps={self.steps}, step_size={self.step_size:g}, "
                f"restarts={self.restarts}, random_start={self.random_start}, loss={self.loss!r}, seed={self.seed})")

    # ------------------------------------------------------------------ to implement
    def _run(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator):
        """One run on a validated batch: returns ``(adversarial images, params or None)``."""
        raise NotImplementedError

    def _prepare(self, model: nn.Module, images: Tensor) -> None:
        """Hook before the runs (e.g. move a perceptual network to the images' device)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def _uniform(self, shape, generator: torch.Generator, device, low: float, high: float) -> Tensor:
        """Uniform noise drawn on the CPU generator (same numbers on every device)."""
        return (torch.rand(shape, generator=generator) * (high - low) + low).to(device)

    def _normal(self, shape, generator: torch.Generator, device, std: float) -> Tensor:
        return (torch.randn(shape, generator=generator) * std).to(device)

    # ------------------------------------------------------------------ the call
    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor,
                 generator: torch.Generator | None = None) -> Tensor:
        """Adversarial images for ``images`` (B, C, H, W) in [0, 1] with true ``labels`` (B,)."""
        labels = validate_inputs(images, labels, type(self).__name__)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}: model must be a torch.nn.Module, got {type(model).__name__}")
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        images = images.detach()
        with _attack_mode(model):
            with torch.no_grad():
                classes = model(images[:1]).shape[1]
            if labels.min() < 0 or labels.max() >= classes:
                raise ValueError(f"{type(self).__name__}: labels must be class indices in [0, {classes}) for this "
                                 f"model's {classes} outputs, got values in [{int(labels.min())}, {int(labels.max())}]")
            self._prepare(model, images)
            best = best_params = best_fooled = best_loss = None
            for _ in range(self.restarts):
                # with early stop a fooled sample is done: later restarts run only on the samples no
                # run has fooled yet (the accuracy is the same, the wasted steps are not spent)
                rows = (~best_fooled).nonzero().squeeze(1) if best is not None and self.early_stop \
                    else torch.arange(len(images), device=images.device)
                if len(rows) == 0:
                    break
                run_images, run_labels = (images, labels) if best is None else (images[rows], labels[rows])
                adversarial, params = self._run(model, run_images, run_labels, generator)
                adversarial = adversarial.detach().clamp(0, 1)
                with torch.no_grad():
                    logits = model(adversarial)
                fooled = logits.argmax(1) != run_labels
                loss = self.loss_fn(logits, run_labels)
                if best is None:
                    best, best_params, best_fooled, best_loss = adversarial, params, fooled, loss
                    continue
                better = (fooled & ~best_fooled[rows]) | ((fooled == best_fooled[rows]) & (loss > best_loss[rows]))
                best[rows] = torch.where(better[:, None, None, None], adversarial, best[rows])
                if params is not None and best_params is not None:
                    best_params[rows] = torch.where(better.view(-1, *[1] * (params.ndim - 1)), params,
                                                    best_params[rows])
                best_fooled[rows] = best_fooled[rows] | fooled
                best_loss[rows] = torch.where(better, loss, best_loss[rows])
        self.last_params = best_params.detach() if best_params is not None else None
        return best

    def _signed_ascent(self, model: nn.Module, images: Tensor, labels: Tensor, params: Tensor,
                       render: Callable[[Tensor, Tensor], Tensor], project: Callable[[Tensor, Tensor], Tensor],
                       penalty: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``steps`` signed-gradient ascent steps on per-sample ``params`` (B, ...)::

            params ← project(params + step_size · sign(∇_params [loss(F(render(x, params)), y) − penalty(params)]), x)

        ``render(x, params)`` makes the images, ``project`` maps params back into the threat model,
        ``penalty`` is an optional (B,) regulariser. With ``early_stop``, a sample F misclassifies at
        the start of a step keeps its current params and leaves the loop. Returns the final params."""
        params = params.detach().clone()
        active = torch.arange(len(images), device=images.device)
        for _ in range(self.steps):
            moving = params[active].requires_grad_(True)
            logits = model(render(images[active], moving))
            objective = self.loss_fn(logits, labels[active])
            if penalty is not None:
                objective = objective - penalty(moving)
            grad, = torch.autograd.grad(objective.sum(), moving)
            keep = (logits.argmax(1) == labels[active]) if self.early_stop else torch.ones_like(active, dtype=torch.bool)
            with torch.no_grad():
                rows = active[keep]
                params[rows] = project(moving[keep] + self.step_size * grad[keep].sign(), images[rows])
            active = rows
            if len(active) == 0:
                break
        return params
