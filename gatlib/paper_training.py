"""Table 1's models trained on the ``paper`` profile: chapter 04 with ``retrain=True`` on a GPU.

The embedded book loads its models from the zoo; a user with the paper's setting (or the Colab
flagship: NVlabs' conditional CIFAR-10 StyleGAN2-ADA, CIFAR-10, a torchvision ResNet-18) trains them
in the chapter:

1. **Original** per seed k — the user's checkpoint from ``original_paths`` when given, else a
   torchvision classifier (``classifiers.paper_classifier``, e.g. ``resnet18_cifar``) trained from
   scratch on the user's training set for ``original_epochs`` epochs with random crop + flip
   (``gatlib.training.crop_flip_mode``), AdamW and a one-cycle schedule;
2. **control-real, control-generated, gat** — fine-tuned from that Original with the very recipe
   the embedded rows use (``gatlib.finetune.train_zoo_model``: the same modes, pool and filter, the
   chapter's ``steps``, ``eps``, ``delta``, ...), against the user's generator.

Every trained model is written to ``save_dir`` as ``{row}-s{k}.pt`` — a torchvision state dict
that ``classifiers.paper_classifier`` (and so every chapter's ``classifier_path``) reads back — with
``{row}-s{k}.json`` beside it: the recipe, the training seconds and the history. A rerun with the
same ``save_dir`` loads what is there instead of training it again (a Colab session that dropped
resumes where it stopped; the Original's epochs are also checkpointed while it trains); a file
saved with another recipe is an error that names the difference, never silently reused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from torch import nn

from . import classifiers
from .finetune import ORIGINAL, RowModels, train_zoo_model, zoo_recipe

ORIGINAL_DEFAULTS = {"epochs": 30, "batch_size": 128, "lr": 2e-3, "weight_decay": 5e-4, "padding": 4}


def _paths(save_dir: Path | None, row: str, seed: int) -> tuple[Path, Path] | None:
    if save_dir is None:
        return None
    return save_dir / f"{row}-s{seed}.pt", save_dir / f"{row}-s{seed}.json"


def _load_saved(paths, recipe: dict, arch: str, num_classes: int, device):
    """The model saved by an earlier run with the same recipe, or None when there is none."""
    if paths is None or not paths[0].is_file():
        return None
    weights, sidecar = paths
    if not sidecar.is_file():
        raise ValueError(f"{weights} has no {sidecar.name} beside it (the recipe it was trained with): "
                         "move the file away to retrain, or pass it as a user checkpoint")
    saved = json.loads(sidecar.read_text())
    differ = {k: (saved["recipe"].get(k), v) for k, v in recipe.items() if saved["recipe"].get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: saved {a!r} vs asked {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"{weights} was trained with another recipe ({listed}); use another save_dir or "
                         "move the file away to retrain")
    model = classifiers.paper_classifier(arch, num_classes, weights).to(device).eval()
    return model, saved.get("history"), saved.get("seconds"), f"saved by an earlier run: {weights}"


def _save(paths, model: nn.Module, recipe: dict, history, seconds: float) -> None:
    if paths is None:
        return
    classifiers.save_paper_classifier(model, paths[0])
    sidecar = {"recipe": recipe, "seconds": seconds, "history": history}
    tmp = paths[1].with_name(paths[1].name + ".tmp")
    tmp.write_text(json.dumps(sidecar, default=float))
    tmp.replace(paths[1])


def original_recipe(arch: str, num_classes: int, seed: int, **overrides) -> dict:
    unknown = set(overrides) - set(ORIGINAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown Original training settings {sorted(unknown)}; known: {', '.join(ORIGINAL_DEFAULTS)}")
    return {"row": ORIGINAL, "arch": arch, "num_classes": int(num_classes), "seed": int(seed),
            **ORIGINAL_DEFAULTS, **overrides}


def train_original(arch: str, num_classes: int, train_set, *, seed: int = 0, device="cpu", save_dir=None,
                   progress: bool = True, **settings):
    """The Original of seed k: loaded from ``save_dir`` when an earlier run trained it with the same
    recipe, else trained from scratch (resumable per epoch) and saved there.
    Returns ``(model in eval mode, history, seconds, source)``."""
    from .chapter import seed_everything
    from .training import crop_flip_mode, train_classifier

    recipe = original_recipe(arch, num_classes, seed, **settings)
    paths = _paths(Path(save_dir) if save_dir else None, ORIGINAL, seed)
    saved = _load_saved(paths, recipe, arch, num_classes, device)
    if saved is not None:
        return saved
    seed_everything(seed)
    model = classifiers.paper_classifier(arch, num_classes)
    checkpoint = paths[0].with_suffix(".epochs.pt") if paths else None
    if checkpoint:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    history = train_classifier(model, train_set, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                               lr=recipe["lr"], weight_decay=recipe["weight_decay"], seed=seed, device=device,
                               mode=crop_flip_mode(recipe["padding"], seed), checkpoint=checkpoint, progress=progress)
    seconds = time.time() - started
    model.eval()
    _save(paths, model, recipe, history, seconds)
    if checkpoint:
        checkpoint.unlink(missing_ok=True)
    return model, history, seconds, "trained in this run"


def trained_rows(rows: Sequence[str], seeds: Sequence[int], *, arch: str, num_classes: int, G, train_set,
                 curve_set, original_paths: Sequence[str] = (), original_settings: dict | None = None,
                 save_dir: str | Path | None = None, device="cpu", progress: bool = True, **overrides) -> RowModels:
    """Every row of ``rows`` for every seed, trained (or resumed from ``save_dir``) as the module
    docstring says. ``overrides`` are the fine-tuning recipe settings (``finetune.DEFAULTS`` keys)."""
    original_paths = [p for p in original_paths if p]
    if original_paths and len(original_paths) != len(seeds):
        raise ValueError(f"original_paths names {len(original_paths)} checkpoints for {len(seeds)} seeds")
    save_dir = Path(save_dir) if save_dir else None
    out = RowModels(seeds=list(seeds))
    for index, seed in enumerate(seeds):
        if original_paths:
            original = classifiers.paper_classifier(arch, num_classes, original_paths[index]).to(device).eval()
            original_seconds, original_source = None, f"user checkpoint {original_paths[index]}"
            base = original_paths[index]
        else:
            base = original_recipe(arch, num_classes, seed, **(original_settings or {}))
            original, _, original_seconds, original_source = train_original(
                arch, num_classes, train_set, seed=seed, device=device, save_dir=save_dir, progress=progress,
                **(original_settings or {}))
        for row in rows:
            if row == ORIGINAL:   # Table 1's Original: no fine-tuning history
                model, history, log, seconds, source = original, None, [], original_seconds, original_source
            else:
                recipe = {**zoo_recipe(row, seed, **overrides), "base": base, "arch": arch}
                paths = _paths(save_dir, row, seed)
                saved = _load_saved(paths, recipe, arch, num_classes, device)
                if saved is not None:
                    (model, history, seconds, source), log = saved, []
                else:
                    model, history, log, seconds = train_zoo_model(row, seed, G, train_set=train_set,
                                                                   curve_set=curve_set, original=original,
                                                                   device=device, progress=progress, **overrides)
                    _save(paths, model, recipe, history, seconds)
                    source = "trained in this run"
            out.add(row, model, history, log, seconds, source)
    return out


def cost_table(rows: RowModels, device_name: str):
    """Training time of every model of this run on its device: seconds and device-hours, per row and
    seed, with a total — the GPU-hour figure of a paper-profile run, measured, not estimated."""
    import pandas as pd

    table = rows.provenance()
    table["hours"] = table["train_seconds"] / 3600
    table["device"] = device_name
    total = pd.DataFrame([{"row": "total", "seed": "", "source": "", "train_seconds": table["train_seconds"].sum(),
                           "hours": table["hours"].sum(), "device": device_name}])
    return pd.concat([table, total], ignore_index=True)
