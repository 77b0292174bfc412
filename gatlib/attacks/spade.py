"""The γ/β attack on segmentation and detection (GAT, Poursaeed et al., ICCV 2021, §3.2, Figure 2).

A SPADE generator renders an image from a label map m; every SPADE layer modulates its normalised
activations with γ and β predicted from m (``gatlib.generators.spade``). The attack moves γ and β
of the chosen layers by signed-gradient **ascent** on the task loss of the given label map — the
non-targeted counterpart of eq. 1 for segmentation and detection::

    γ ← γ + ε · sign(∇_γ L(F(g(γ, β)), m)),      β ← β + ε · sign(∇_β L(F(g(γ, β)), m))

with ε = 0.001 in the paper (all layers). L is the per-pixel cross-entropy against m for a
segmenter, and the detector's own training loss against the boxes derived from m for a detector
(computed in train mode with every BatchNorm in eval mode, so the attack never changes running
statistics). The paper reports the task metric at every iteration 0–10 (Figure 5) and trains on
all 10 iterates, so there is no early stop: ``images[t]`` is the image after t steps.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..scenes import IGNORE
from .latent import _attack_mode

TASKS = ("segmentation", "detection")
MOVES = ("gamma", "beta", "both")


@dataclass
class SpadeAttackResult:
    """``images``: the iterates, ``images[0]`` the unperturbed render and ``images[t]`` the render
    after t steps, each (B, C, H, W) in [0, 1]; ``losses``: the task loss at each iterate (a
    ``(max_iters + 1, B)`` tensor for segmentation, ``(max_iters + 1,)`` for detection, whose loss
    is per batch); ``modulations``: the final γ and β."""
    images: list
    losses: Tensor
    modulations: dict

    @property
    def final(self) -> Tensor:
        return self.images[-1]


def segmentation_logits(model: nn.Module, images: Tensor) -> Tensor:
    """(B, classes, H, W) logits of a segmenter (torchvision's models return ``{"out": ...}``)."""
    out = model(images)
    return out["out"] if isinstance(out, dict) else out


def check_label_range(masks: Tensor, num_classes: int) -> None:
    """Raise a ValueError naming them if ``masks`` hold class ids outside ``0 … num_classes - 1``
    other than ``IGNORE`` (cross-entropy would otherwise fail without saying which value, and on a
    GPU only as a device-side assert). One pass over the label maps."""
    bad = ((masks < 0) | (masks >= num_classes)) & (masks != IGNORE)
    if bool(bad.any()):
        values = torch.unique(masks[bad]).tolist()
        shown = ", ".join(str(int(v)) for v in values[:5]) + (", …" if len(values) > 5 else "")
        raise ValueError(f"label maps hold class ids {shown} ({int(bad.sum())} pixels), but the segmenter has "
                         f"{num_classes} classes: ids must be 0-{num_classes - 1} or {IGNORE} (unlabelled)")


def segmentation_loss(model: nn.Module, images: Tensor, masks: Tensor, *, check: bool = True) -> Tensor:
    """Per-sample mean pixel cross-entropy against the label maps ``masks`` (B, H, W).
    ``check``: first check that every class id in ``masks`` is one of the segmenter's classes or
    ``IGNORE`` (:func:`check_label_range`; :func:`spade_attack` checks once, at iteration 0)."""
    logits = segmentation_logits(model, images)
    if check:
        check_label_range(masks, logits.shape[1])
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    # unlabelled pixels (IGNORE: COCO-stuff's 255) add nothing; the mean is over every pixel
    return F.cross_entropy(logits, masks.long(), reduction="none", ignore_index=IGNORE).flatten(1).mean(1)


@contextlib.contextmanager
def frozen_batchnorm_train_mode(model: nn.Module):
    """Train mode (a torchvision detector returns its losses only there) with every BatchNorm in
    eval mode (running statistics used, never updated) and no parameter gradients; restored after."""
    saved_mode = {m: m.training for m in model.modules()}
    saved_grad = [p.requires_grad for p in model.parameters()]
    try:
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        model.requires_grad_(False)
        yield model
    finally:
        for module, training in saved_mode.items():
            module.training = training
        for parameter, flag in zip(model.parameters(), saved_grad):
            parameter.requires_grad_(flag)


def detection_loss(detector: nn.Module, images: Tensor, targets: Sequence[dict]) -> Tensor:
    """The sum of a torchvision detector's training losses for ``targets`` (one dict of ``boxes``
    and ``labels`` per image); call inside :func:`frozen_batchnorm_train_mode`. Single-channel
    images are repeated to three channels (torchvision detectors expect RGB)."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    losses = detector(list(images), [dict(t) for t in targets])
    if not isinstance(losses, dict):
        raise ValueError("the detector returned detections, not losses: it must be a torchvision detection model")
    return sum(losses.values())


def spade_attack(G, segmap: Tensor, model: nn.Module, *, task: str, masks: Tensor | None = None,
                 targets: Sequence[dict] | None = None, eps: float = 0.001, max_iters: int = 10,
                 layers: Sequence[str] | None = None, moves: str = "both", z: Tensor | None = None) -> SpadeAttackResult:
    """Signed-gradient ascent on γ/β (module docstring) for ``max_iters`` steps.

    Args:
        G: a ``SPADEGenerator``; segmap: its one-hot label maps (B, label_nc, H, W).
        model: the segmenter (``task="segmentation"``, loss against ``masks`` (B, H, W), class ids
            0 … its classes - 1 or ``IGNORE``, checked once) or a torchvision detector
            (``task="detection"``, loss against ``targets``).
        eps: the step on γ and β (the paper: 0.001). layers: a non-empty list of SPADE layer names
            (``G.layer_names``; None = all). moves: ``"gamma"``, ``"beta"`` or ``"both"``. z: the
            generator's z input (kept fixed; drawn once when G has a z input and none is given).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if moves not in MOVES:
        raise ValueError(f"moves must be one of {MOVES}, got {moves!r}")
    if int(max_iters) != max_iters or max_iters < 1:
        raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    if task == "segmentation" and (masks is None or masks.shape != (segmap.shape[0], *segmap.shape[2:])):
        raise ValueError(f"segmentation needs masks of shape {(segmap.shape[0], *segmap.shape[2:])}, got "
                         f"{None if masks is None else tuple(masks.shape)}")
    if task == "detection" and (targets is None or len(targets) != len(segmap)):
        raise ValueError(f"detection needs one target dict per image ({len(segmap)}), got "
                         f"{None if targets is None else len(targets)}")
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of SPADE layer names, got the string {layers!r} "
                         f"(write [{layers!r}])")
    chosen = list(G.layer_names) if layers is None else list(layers)
    if not chosen:
        raise ValueError("the attack needs at least one SPADE layer to move (layers=None moves all of "
                         "G.layer_names)")
    unknown = set(chosen) - set(G.layer_names)
    if unknown:
        raise ValueError(f"unknown SPADE layers {sorted(unknown)}; G.layer_names lists them")

    mode = _attack_mode(G, model) if task == "segmentation" else _detector_mode(G, model)
    with mode:
        with torch.no_grad():
            mods = {name: (gamma.detach().clone(), beta.detach().clone())
                    for name, (gamma, beta) in G.modulations(segmap).items()}
            if z is None and getattr(G, "z_dim", 0):
                z = G.sample_z(len(segmap))
        images, losses = [], []
        for step in range(max_iters + 1):
            moving = {}
            for name in chosen:
                gamma, beta = mods[name]
                moving[name] = (gamma.requires_grad_(moves in ("gamma", "both")),
                                beta.requires_grad_(moves in ("beta", "both")))
            rendered = G.to_unit(G.synthesize(segmap, mods, z))
            loss = segmentation_loss(model, rendered, masks, check=step == 0) if task == "segmentation" else \
                detection_loss(model, rendered, targets)
            images.append(rendered.detach())
            losses.append(loss.detach())
            if step == max_iters:
                break
            variables = [t for pair in moving.values() for t in pair if t.requires_grad]
            grads = torch.autograd.grad(loss.sum(), variables)
            updates = iter(grads)
            for name in chosen:
                gamma, beta = mods[name]
                new_gamma = (gamma + eps * next(updates).sign()) if gamma.requires_grad else gamma
                new_beta = (beta + eps * next(updates).sign()) if beta.requires_grad else beta
                mods[name] = (new_gamma.detach(), new_beta.detach())
    return SpadeAttackResult(images=images, losses=torch.stack(losses), modulations=mods)


@contextlib.contextmanager
def _detector_mode(G, detector):
    with _attack_mode(G), frozen_batchnorm_train_mode(detector):
        yield
