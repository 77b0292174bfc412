"""Label oracles: independent classifiers that no attack ever sees, standing in for the paper's
human raters (§4.2).

The paper asked Mechanical Turk workers whether adversarial images still show their class (99.2%
agreement). Our machine analogue asks the zoo's oracles — other architectures, other seeds, never
attacked — whether a *successful* adversarial example is still classified as its conditioning class
c: each oracle on its own, and by majority vote (more than half of them say c).
"""
from __future__ import annotations

import torch

from . import classifiers


def majority_agrees(oracles: dict, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image (a bool tensor): more than half of the oracles classify it as its label c."""
    if not oracles:
        raise ValueError("label preservation needs at least one oracle")
    labels = labels.cpu()
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.bool)
    agrees = torch.stack([classifiers.predict(model, images) == labels for model in oracles.values()])
    return agrees.sum(0) * 2 > len(oracles)


def label_preservation(oracles: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"oracle name": fraction classified as c, ..., "majority": fraction}`` over ``images``."""
    if not oracles:
        raise ValueError("label preservation needs at least one oracle")
    if len(images) == 0:
        return {**{name: float("nan") for name in oracles}, "majority": float("nan")}
    labels = labels.cpu()
    agrees = torch.stack([classifiers.predict(model, images) == labels for model in oracles.values()])
    result = {name: classifiers.fraction(agree) for name, agree in zip(oracles, agrees)}
    result["majority"] = classifiers.fraction(agrees.sum(0) * 2 > len(oracles))
    return result


def preservation_of_attack(oracles: dict, result) -> dict:
    """Label preservation of the successful samples of a ``LatentAttackResult``."""
    fooled = result.success
    return label_preservation(oracles, result.images[fooled], result.labels[fooled])
