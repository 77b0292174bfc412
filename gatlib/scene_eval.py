"""Evaluating segmentation and detection under the γ/β attack: Figure 5's curves and Table 1's
segmentation / detection columns (GAT, Poursaeed et al., ICCV 2021, §4.1).

Protocol (chapter 07; ``book/method.md``):

* **Clean** — the task metric on *real* test scenes (``gatlib.scenes`` from MNIST test digits).
* **Adversarial** — the metric on SPADE renders of the test scenes' label maps after
  ``max_iters`` (10) steps of the γ/β attack (``gatlib.attacks.spade``, all layers, the paper's
  ε = 0.001; :func:`choose_step` compares steps, and chapter 07 shows why the larger one it finds
  is not used) against the evaluated model itself, z fixed per scene by the seed.
* **Curve** — the same metric at every iteration 0 … ``max_iters`` (Figure 5's plot; iteration 0
  is the unperturbed render).

Metrics: foreground pixel accuracy (the headline: background is ~93 % of a scene — digit pixels
are 6.7 %, chapter 07's recorded ``scenes.foreground_fraction`` on its 100 MNIST test scenes — so
all-pixel accuracy barely moves), all-pixel accuracy and mIoU for segmentation; mAP@[.5:.95] and
AP50 for detection (``gatlib.segdet``). Rows are mean ± 95 % CI over the models' seeds.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from . import segdet
from .attacks.spade import spade_attack

def headline(task: str, scene_set) -> str:
    """The metric a chapter reports for ``task`` on ``scene_set``: mAP for detection; for
    segmentation the scenes' own choice (foreground accuracy on MNIST scenes, pixel accuracy on
    COCO-stuff, the paper's "ratio of correctly predicted pixels")."""
    if task not in ("segmentation", "detection"):
        raise ValueError(f"task must be 'segmentation' or 'detection', got {task!r}")
    return "map" if task == "detection" else scene_set.headline


def _metrics(task: str, model, images, scene_set, indices) -> dict:
    if task == "segmentation":
        return segdet.segmentation_metrics(segdet.segmentation_predictions(model, images), scene_set.masks[indices],
                                           num_classes=scene_set.num_classes)
    targets = scene_set.targets(indices)
    if not any(len(target["boxes"]) for target in targets):
        raise ValueError(f"{scene_set.name}: no scene has a box, so detection cannot be scored "
                         "(COCO-stuff: give the instance maps, inst_dir)")
    return segdet.detection_metrics(segdet.detections(model, images), targets)


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
        result = spade_attack(G, scene_set.segmap(indices, G.label_nc), model, task=task,
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
                   max_iters: int = 10, batch_size: int = 16) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Table 1's segmentation or detection columns: per (row, seed) the metrics on real test scenes
    (``clean_*``) and on renders after ``max_iters`` attack steps against that model
    (``adversarial_*``). Returns ``(summary, per_seed, curves)``: ``summary`` is mean ± 95 % CI
    (``robustness.summarize``) of the headline metric; ``curves`` holds every (row, seed)'s metrics at
    each iteration 0 … ``max_iters`` of the same attack runs (Figure 5 reads Original's from it,
    so no attack is run twice)."""
    from .robustness import summarize

    rows, curves = [], []
    indices = list(range(len(test_scenes)))
    for row, models in models_by_row.items():
        if len(models) != len(seeds):
            raise ValueError(f"row {row!r} has {len(models)} models for {len(seeds)} seeds")
        for seed, model in zip(seeds, models):
            clean = _metrics(task, model, test_scenes.images, test_scenes, indices)
            curve = attack_curve(G, model, task, test_scenes, eps=eps, max_iters=max_iters, batch_size=batch_size,
                                 seed=seed)
            adversarial = curve.iloc[-1].drop("iteration").to_dict()
            rows.append({"row": row, "seed": seed, **{f"clean_{k}": v for k, v in clean.items()},
                         **{f"adversarial_{k}": v for k, v in adversarial.items()}})
            curves.append(curve.assign(row=row, seed=seed))
    per_seed = pd.DataFrame(rows)
    key = headline(task, test_scenes)
    return summarize(per_seed, (f"clean_{key}", f"adversarial_{key}")), per_seed, pd.concat(curves, ignore_index=True)


def choose_step(G, model, task: str, scene_set, *, grid: Sequence[float], max_iters: int = 10, drop: float = 0.5,
                batch_size: int = 16, seed: int = 0) -> tuple[pd.DataFrame, float | None]:
    """The γ/β step for a generator other than the paper's: the smallest ε of ``grid`` with which
    ``max_iters`` attack steps against ``model`` remove at least ``drop`` of its headline metric on
    the unperturbed renders of ``scene_set`` (label maps held out from the test scenes). The paper's
    ε = 0.001 was set for NVlabs' COCO-stuff SPADE, where ten steps take DeepLab's foreground
    accuracy from 67.9 % to 2.7 %; our generator's γ and β have their own scale, so the step is
    searched as chapter 02 searches ε and δ. Returns ``(table, chosen)``: per ε the metric at
    iterations 0, 1 and ``max_iters`` and the relative drop; ``chosen`` is None when no ε suffices."""
    if not grid or any(eps <= 0 for eps in grid):
        raise ValueError(f"the step grid must hold positive values, got {list(grid)}")
    if not 0 < drop < 1:
        raise ValueError(f"drop must be a fraction in (0, 1), got {drop}")
    key = headline(task, scene_set)
    records = []
    for eps in sorted(grid):
        curve = attack_curve(G, model, task, scene_set, eps=eps, max_iters=max_iters, batch_size=batch_size,
                             seed=seed).set_index("iteration")[key]
        start, final = float(curve.iloc[0]), float(curve.iloc[-1])
        records.append({"eps": eps, f"{key}_iteration_0": start, f"{key}_iteration_1": float(curve.iloc[1]),
                        f"{key}_iteration_{max_iters}": final,
                        "relative_drop": (start - final) / start if start > 0 else float("nan")})
    table = pd.DataFrame(records)
    enough = table[table.relative_drop >= drop]
    return table, (float(enough.eps.iloc[0]) if len(enough) else None)


PAPER_DROPS = {"segmentation": "67.9 → 2.7 % pixel accuracy", "detection": "39.0 → 2.0 AP"}
REQUIRED_ROWS = ("original",)   # table1_findings' drop is the Original model's; the other rows are optional


def table1_findings(tables: dict[str, pd.DataFrame], keys: dict[str, str], max_iters: int = 10) -> dict:
    """What chapter 07 concludes from its Table 1 columns, measured, not typed.

    ``tables``: ``{task: table}`` with ``clean_<key>_mean`` / ``adversarial_<key>_mean`` columns per
    row (:func:`table1_columns`); ``keys``: ``{task: headline metric}`` (:func:`headline`). Returns
    ``{"targets", "numbers", "sentences"}``:

    * targets — the issue's bars: the Original segmenter's headline falls by ≥ 50 points, the
      detector's mAP by ≥ 50 % relative (paper: 67.9 → 2.7 %, AP 39.0 → 2.0);
    * numbers (fractions) — ``gat_minus_control.<task>``: GAT under attack minus the control
      fine-tuned on unperturbed renders (what the attack iterates add); with the label-filtered
      rows, ``gat_filtered_minus_control_filtered.<task>`` and ``label_filter_gain.gat.<task>``;
    * sentences — one markdown paragraph per task saying the same.
    """
    targets, numbers, sentences = {}, {}, []
    for task, table in tables.items():
        if task not in PAPER_DROPS:
            raise ValueError(f"tables: task must be one of {sorted(PAPER_DROPS)}, got {task!r}")
        if task not in keys:
            raise ValueError(f"keys has no headline metric for {task!r} (it has {sorted(keys)})")
        key = keys[task]
        missing = [row for row in REQUIRED_ROWS if row not in table.index]
        if missing:
            raise ValueError(f"the {task} table has no {', '.join(repr(r) for r in missing)} row "
                             f"(rows present: {list(table.index)})")
        columns = [f"clean_{key}_mean", f"adversarial_{key}_mean"]
        absent = [column for column in columns if column not in table.columns]
        if absent:
            raise ValueError(f"the {task} table lacks column(s) {absent} for headline {key!r} "
                             f"(columns present: {list(table.columns)})")
        attacked = {row: 100 * table.loc[row, f"adversarial_{key}_mean"] for row in table.index}   # percent
        clean = {row: 100 * table.loc[row, f"clean_{key}_mean"] for row in table.index}
        before, after = clean["original"], attacked["original"]
        if task == "segmentation":
            targets["segmentation_drop_at_least_50_points"] = bool(before - after >= 50)
            drop = f"falls by **{before - after:.1f} points** ({before:.1f} → {after:.1f} %)"
        else:
            relative = 1 - after / max(before, 1e-9)
            targets["detection_ap_drop_at_least_50pct"] = bool(relative >= 0.5)
            drop = f"falls by **{100 * relative:.0f} %** ({before:.1f} → {after:.1f})"
        sentence = (f"{task}: the Original model's {key.replace('_', ' ')} {drop} under {max_iters} γ/β steps "
                    f"(paper: {PAPER_DROPS[task]})")
        if "gat" in attacked:
            sentence += (f"; GAT keeps {attacked['gat']:.1f} under its own attack, with {clean['gat']:.1f} clean "
                         f"(Original {before:.1f})")
        if {"gat", "control-generated"} <= attacked.keys():
            gain = attacked["gat"] - attacked["control-generated"]
            numbers[f"gat_minus_control.{task}"] = gain / 100
            sentence += (f". The control fine-tuned on unperturbed renders keeps {attacked['control-generated']:.1f} "
                         f"under attack with {clean['control-generated']:.1f} clean, so the attack iterates add "
                         f"**{gain:+.1f} points** of robustness beyond what training on renders does")
        if {"gat", "gat-filtered", "control-generated-filtered"} <= attacked.keys():
            gain = attacked["gat-filtered"] - attacked["control-generated-filtered"]
            filter_gain = attacked["gat-filtered"] - attacked["gat"]
            numbers[f"gat_filtered_minus_control_filtered.{task}"] = gain / 100
            numbers[f"label_filter_gain.gat.{task}"] = filter_gain / 100
            sentence += (f". With the label filter GAT keeps {attacked['gat-filtered']:.1f} under attack "
                         f"({clean['gat-filtered']:.1f} clean) and its control "
                         f"{attacked['control-generated-filtered']:.1f} ({clean['control-generated-filtered']:.1f} "
                         f"clean): the filter is worth **{filter_gain:+.1f} points** to GAT under attack, and the "
                         f"attack iterates add **{gain:+.1f} points** beyond training on filtered renders")
        sentences.append(sentence + ".")
    return {"targets": targets, "numbers": numbers, "sentences": sentences}
