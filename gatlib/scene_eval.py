"""Evaluating segmentation and detection under the γ/β attack: Figure 5's curves and Table 1's
segmentation / detection columns (GAT, Poursaeed et al., ICCV 2021, §4.1).

Protocol (chapter 07; ``book/method.md``):

* **Clean** — the task metric on *real* test scenes (``gatlib.scenes`` from MNIST test digits).
* **Adversarial** — the metric on SPADE renders of the test scenes' label maps after
  ``max_iters`` (10) steps of the γ/β attack (``gatlib.attacks.spade``, ε = 0.001 as in the paper,
  all layers) against the evaluated model itself, z fixed per scene by the seed.
* **Curve** — the same metric at every iteration 0 … ``max_iters`` (Figure 5's plot; iteration 0
  is the unperturbed render).

Metrics: foreground pixel accuracy (the headline: background is ~94 % of a scene, so all-pixel
accuracy barely moves), all-pixel accuracy and mIoU for segmentation; mAP@[.5:.95] and AP50 for
detection (``gatlib.segdet``). Rows are mean ± 95 % CI over the models' seeds.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from . import segdet
from .attacks.spade import spade_attack
from .generators.spade import one_hot

HEADLINE = {"segmentation": "foreground_accuracy", "detection": "map"}


def _metrics(task: str, model, images, scene_set, indices) -> dict:
    if task == "segmentation":
        return segdet.segmentation_metrics(segdet.segmentation_predictions(model, images), scene_set.masks[indices])
    return segdet.detection_metrics(segdet.detections(model, images), scene_set.targets(indices))


def attack_iterates(G, model, task: str, scene_set, *, eps: float = 0.001, max_iters: int = 10, batch_size: int = 16,
                    seed: int = 0) -> list[torch.Tensor]:
    """The renders of every scene's label map at iterations 0 … ``max_iters`` of the attack against
    ``model``: a list of ``max_iters + 1`` tensors (N, C, H, W)."""
    per_iteration = [[] for _ in range(max_iters + 1)]
    rng = torch.Generator().manual_seed(seed)
    for start in range(0, len(scene_set), batch_size):
        indices = list(range(start, min(start + batch_size, len(scene_set))))
        masks = scene_set.masks[indices]
        z = G.sample_z(len(indices), generator=rng)
        result = spade_attack(G, one_hot(masks, G.label_nc), model, task=task,
                              masks=masks if task == "segmentation" else None,
                              targets=scene_set.targets(indices) if task == "detection" else None,
                              eps=eps, max_iters=max_iters, z=z)
        for t, images in enumerate(result.images):
            per_iteration[t].append(images)
    return [torch.cat(images) for images in per_iteration]


def attack_curve(G, model, task: str, scene_set, *, eps: float = 0.001, max_iters: int = 10, batch_size: int = 16,
                 seed: int = 0) -> pd.DataFrame:
    """One row per iteration 0 … ``max_iters``: the task metrics on the attacked renders."""
    iterates = attack_iterates(G, model, task, scene_set, eps=eps, max_iters=max_iters, batch_size=batch_size,
                               seed=seed)
    indices = list(range(len(scene_set)))
    return pd.DataFrame([{"iteration": t, **_metrics(task, model, images, scene_set, indices)}
                         for t, images in enumerate(iterates)])


def table1_columns(models_by_row: dict, G, task: str, test_scenes, *, seeds: Sequence[int], eps: float = 0.001,
                   max_iters: int = 10, batch_size: int = 16) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1's segmentation or detection columns: per (row, seed) the metrics on real test scenes
    (``clean_*``) and on renders after ``max_iters`` attack steps against that model
    (``adversarial_*``); returns ``(summary, per_seed)`` with ``summary`` as mean ± 95 % CI strings
    (``robustness.summarize``) of the headline metric."""
    from .robustness import summarize

    rows = []
    indices = list(range(len(test_scenes)))
    for row, models in models_by_row.items():
        if len(models) != len(seeds):
            raise ValueError(f"row {row!r} has {len(models)} models for {len(seeds)} seeds")
        for seed, model in zip(seeds, models):
            clean = _metrics(task, model, test_scenes.images, test_scenes, indices)
            final = attack_iterates(G, model, task, test_scenes, eps=eps, max_iters=max_iters,
                                    batch_size=batch_size, seed=seed)[-1]
            adversarial = _metrics(task, model, final, test_scenes, indices)
            rows.append({"row": row, "seed": seed, **{f"clean_{k}": v for k, v in clean.items()},
                         **{f"adversarial_{k}": v for k, v in adversarial.items()}})
    per_seed = pd.DataFrame(rows)
    key = HEADLINE[task]
    return summarize(per_seed, (f"clean_{key}", f"adversarial_{key}")), per_seed
