"""Accuracy of a classifier under a set of image-space attacks: GAT's Table 2 protocol (Poursaeed et
al., ICCV 2021, §4.1: accuracy of each model under PGD, spatial, recolor and perceptual attacks).

    import gatlib
    from gatlib.attacks import pgd, spatial, recolor, perceptual

    table = gatlib.evaluate(model, data.mnist("test"),
                     attacks={"PGD": pgd.mnist(), "StAdv": spatial.mnist(), "ReColor": recolor.mnist(),
                              "PPGD": perceptual.mnist("ppgd"), "LPA": perceptual.mnist("lpa")},
                     seeds=(0, 1, 2), count=1000)

returns a tidy ``pandas.DataFrame``, one row per (attack, seed), columns ``attack``, ``seed``,
``accuracy`` (a fraction), ``samples``, ``seconds``; the clean accuracy is the row ``attack ==
"clean"`` (an attack given as ``None`` is clean too). A seed fixes both the subset drawn when
``count`` is given and the attacks' random starts (one ``torch.Generator`` per (attack, seed),
shared by its batches), so a row is reproducible; ``count=None`` uses every sample for every seed.

Works on any ``nn.Module`` taking [0, 1] images (a zoo classifier, a user's own torchvision model
with its normalisation inside) and any dataset of ``(image, label)`` pairs: an in-memory
``gatlib.data.ImageSet`` (sliced directly) or a map-style ``Dataset`` such as a torchvision
``ImageFolder`` returning [0, 1] tensors (read through a ``DataLoader``).
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .attacks.base import positive_int, validate_inputs
from .attacks.latent import _attack_mode

COLUMNS = ["attack", "seed", "accuracy", "samples", "seconds"]


def _indices(size: int, count: int | None, seed: int) -> torch.Tensor:
    if count is None or count <= 0 or count >= size:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def _batches(dataset, indices: torch.Tensor, batch_size: int):
    """(images, labels) batches of the samples ``indices``."""
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            yield dataset.images[rows], dataset.labels[rows]
        return
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False)
    for images, labels in loader:
        yield images, torch.as_tensor(labels)


def evaluate(model: nn.Module, dataset, attacks: Mapping[str, object] | None = None, seeds: Sequence[int] = (0,),
             count: int | None = None, batch_size: int = 250, progress: bool = True, device=None,
             include_clean: bool = True) -> pd.DataFrame:
    """Accuracy of ``model`` on ``dataset`` clean and under every attack, per seed.

    Args:
        model: takes (B, C, H, W) images in [0, 1]; put in eval mode while evaluated, then restored.
        dataset: (image, label) pairs (see module docstring).
        attacks: ``{name: attack}`` with ``attack(model, images, labels, generator=...)`` returning
            adversarial images (the ``gatlib.attacks`` objects); ``None`` as an attack means clean.
        seeds: one row per attack and seed.
        count: samples per seed (a seeded random subset); None = all.
        batch_size: images per attack call.
        progress: show a progress bar.
        device: where to run (default: the model's device).
        include_clean: add the ``clean`` row per seed.
    """
    from tqdm.auto import tqdm

    attacks = dict(attacks or {})
    if include_clean and "clean" not in attacks:
        attacks = {"clean": None, **attacks}
    if not attacks:
        raise ValueError("evaluate: nothing to evaluate (no attacks and include_clean=False)")
    batch_size = positive_int(batch_size, "batch_size", "evaluate")
    if count is not None and count < 0:
        raise ValueError(f"evaluate: count must be None (all samples) or ≥ 0, got {count}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("evaluate: seeds must not be empty")
    size = len(dataset)
    if size == 0:
        raise ValueError("evaluate: the dataset is empty")

    rows = []
    jobs = [(name, attack, seed) for seed in seeds for name, attack in attacks.items()]
    for name, attack, seed in tqdm(jobs, desc="evaluate", disable=not progress):
        started = time.perf_counter()
        correct = correct_mask(model, dataset, attack, _indices(size, count, seed), seed=seed,
                               batch_size=batch_size, device=device)
        rows.append({"attack": name, "seed": seed, "accuracy": int(correct.sum()) / len(correct),
                     "samples": len(correct), "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows, columns=COLUMNS)


def correct_mask(model: nn.Module, dataset, attack, indices: torch.Tensor, *, seed: int, batch_size: int = 250,
                 device=None) -> torch.Tensor:
    """Per sample of ``dataset[indices]``: does ``model`` still classify it correctly after ``attack``
    (``None``: clean)? A (len(indices),) bool tensor on the CPU. The attack's random draws come from
    one generator seeded with ``seed`` (what :func:`evaluate` reports per seed)."""
    if device is None:
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for images, labels in _batches(dataset, indices, batch_size):
        labels = validate_inputs(images, labels, "evaluate")   # the clean row too: range, shape, NaN
        images, labels = images.to(device), labels.to(device)
        if attack is not None:
            images = attack(model, images, labels, generator=generator)
        with _attack_mode(model), torch.no_grad():
            parts.append((model(images).argmax(1) == labels).cpu())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the accuracy over seeds, per attack (in the table's order)."""
    grouped = table.groupby("attack", sort=False)["accuracy"]
    return pd.DataFrame({"accuracy": grouped.mean(), "std": grouped.std(ddof=0), "seeds": grouped.size()})
