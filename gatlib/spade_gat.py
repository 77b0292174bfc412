"""GAT for segmentation and detection (Poursaeed et al., ICCV 2021, §4.1, Table 1's segmentation
and detection columns): a training mode of ``gatlib.training`` for ``task="segmentation"`` and
``task="detection"``.

The paper trains on "the first 10 generated examples": for a sampled label map, the SPADE images of
iterations 1 to 10 of the γ/β attack (``gatlib.attacks.spade``) against the current model, with
the map (or the boxes derived from it) as their target, in equal numbers with clean real scenes.
Every step here: the batch's ``B`` real scenes stay; ``ceil(B / iterates)`` label maps drawn from
the training scenes are attacked for ``iterates`` steps against the current model, and the first
``B`` of their iterates join the batch — so clean and adversarial images are equal in number.

The control (``attack=False``, Table 1's "control-generated" row of chapter 07): ``B`` label maps
rendered once each, unperturbed, join the batch instead. It separates what training on SPADE renders
labelled by their maps does from what the attack adds.

The label filter (``label_filter``, segmentation only; not in the paper): a render is labelled by the
map it was drawn from, but an attack iterate (and, less often, an unperturbed render) can show a
stroke the map does not — a digit turning into another, a speckle. An independent segmenter that is
never attacked or trained here reads every generated image, and the map's label is kept only on the
pixels where it agrees with the map; the others become ``IGNORE`` (no loss). It is the pixel-level
counterpart of chapter 04's label oracles, and chapter 07's "-filtered" rows measure what label
noise costs GAT. ``label_filter_name`` names the zoo's filter for a seed: another seed's Original.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch

from .attacks.spade import spade_attack


class SpadeGATMode:
    """``mode(model, images, targets, step) -> (inputs, targets)`` for the segmentation and
    detection tasks of ``gatlib.training`` (see the module docstring).

    Args: ``G`` (a ``SPADEGenerator``), ``scenes`` (the training ``SceneSet`` the label maps are
    drawn from), ``task``, ``eps`` (γ/β step, the paper's 0.001), ``iterates`` (10), ``seed``;
    ``attack=False``: unperturbed renders of ``B`` maps instead (the control, module docstring);
    ``label_filter``: an independent segmenter whose disagreement with the map makes a generated
    pixel ``IGNORE`` (segmentation only, module docstring)."""

    def __init__(self, G, scenes, task: str, eps: float = 0.001, iterates: int = 10, seed: int = 0,
                 attack: bool = True, label_filter=None):
        if task not in ("segmentation", "detection"):
            raise ValueError(f"SpadeGATMode trains segmentation or detection, got task {task!r}")
        if int(iterates) != iterates or iterates < 1:
            raise ValueError(f"iterates must be a positive integer, got {iterates!r}")
        if label_filter is not None and task != "segmentation":
            raise ValueError("label_filter keeps a render's map labels on the pixels an independent segmenter "
                             f"agrees with: it applies to task 'segmentation', not {task!r}")
        self.G, self.scenes, self.task = G, scenes, task
        self.eps, self.iterates, self.seed, self.attack = float(eps), int(iterates), int(seed), bool(attack)
        self.label_filter = label_filter
        self.log: list[dict] = []

    def __call__(self, model, images, targets, step):
        batch = len(images)
        maps_needed = math.ceil(batch / self.iterates) if self.attack else batch
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        picks = torch.randint(len(self.scenes), (maps_needed,), generator=rng)
        masks = self.scenes.masks[picks].to(images.device)
        segmap = self.scenes.segmap(picks, self.G.label_nc).to(images.device)
        z = self.G.sample_z(maps_needed, generator=rng)
        scene_targets = self.scenes.targets(picks.tolist())
        started = time.time()
        if self.attack:
            generated, which, entry = self._attack_iterates(model, segmap, masks, z, scene_targets, batch)
        else:
            generated, which, entry = self._render(segmap, z), torch.arange(maps_needed), {}
        # generated image k shows map which[k]: its labels are that map's mask (or boxes)
        generated = generated.to(images.device)
        inputs = torch.cat([images, generated])
        if self.task == "segmentation":
            labels = masks[which]
            if self.label_filter is not None:
                labels, entry["pixels_kept"], entry["foreground_kept"] = filter_labels(self.label_filter, generated,
                                                                                       labels)
            new_targets = torch.cat([targets, labels])
        else:
            new_targets = list(targets) + [scene_targets[i] for i in which.tolist()]
        self.log.append({"step": step, "maps": maps_needed, "seconds": time.time() - started, **entry})
        return inputs, new_targets

    def _attack_iterates(self, model, segmap, masks, z, scene_targets, batch):
        """GAT: iterates 1..``iterates`` of the γ/β attack on each map, the first ``batch`` of them
        (map 0's iterates, then map 1's, ...); returns them, the map of each and the log's losses."""
        maps = len(segmap)
        result = spade_attack(self.G, segmap, model, task=self.task, masks=masks if self.task == "segmentation" else None,
                              targets=scene_targets if self.task == "detection" else None, eps=self.eps,
                              max_iters=self.iterates, z=z)
        adversarial = torch.stack(result.images[1:], dim=1).flatten(0, 1)[:batch]
        which = torch.arange(maps).repeat_interleave(self.iterates)[:batch]
        model.train()    # the attack leaves the model as it found it; training goes on in train mode
        losses = {"loss_first": float(result.losses[1].mean()), "loss_last": float(result.losses[-1].mean())}
        return adversarial, which, losses

    def _render(self, segmap, z):
        """The control: one unperturbed render of each map."""
        from .attacks.latent import _attack_mode

        with torch.no_grad(), _attack_mode(self.G):
            return self.G(segmap, z)

    def state_dict(self) -> dict:
        """What a resumed training needs: the log (the draws come from (seed, step); the generator and
        the filter are never trained)."""
        return {"log": [dict(entry) for entry in self.log]}

    def load_state_dict(self, state: dict) -> None:
        self.log[:] = [dict(entry) for entry in state["log"]]

    def seconds_generating(self) -> float:
        return sum(entry["seconds"] for entry in self.log)

    def pixels_kept(self) -> float | None:
        """Mean fraction of generated pixels whose label the filter kept, over the steps so far (the
        log's ``foreground_kept`` has the same for foreground pixels); None without a filter."""
        kept = [entry["pixels_kept"] for entry in self.log if "pixels_kept" in entry]
        return sum(kept) / len(kept) if kept else None


def filter_labels(label_filter, images, masks):
    """The label filter (module docstring): ``masks`` with ``IGNORE`` wherever ``label_filter``'s
    prediction on ``images`` differs from the mask (pixels already ``IGNORE`` stay so). Returns the
    filtered masks, the fraction of labelled pixels kept and the fraction of labelled foreground
    (class > 0) pixels kept."""
    from .scenes import IGNORE
    from .segdet import segmentation_predictions

    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"label filter: {tuple(images.shape)} images for {tuple(masks.shape)} masks")
    predictions = segmentation_predictions(label_filter, images).to(masks.device)
    labelled = masks != IGNORE
    agree = (predictions == masks) & labelled
    foreground = labelled & (masks > 0)
    filtered = torch.where(agree, masks, torch.full_like(masks, IGNORE))
    kept = float(agree.sum() / labelled.sum().clamp(min=1))
    foreground_kept = float((agree & foreground).sum() / foreground.sum().clamp(min=1))
    return filtered, kept, foreground_kept


# the zoo's scene GAT rows (gatlib.zoo) and chapter 07's retraining use this one recipe. eps: the paper's
# γ/β step. The smallest step whose 10 iterations halve scene-segmenter-s0's foreground accuracy (0.01,
# scene_eval.choose_step) visibly breaks the digits, and GAT trained on those iterates lost clean
# accuracy and robustness alike; chapter 07 shows both.
GAT_RECIPE = {"steps": 300, "batch_size": 16, "lr": 5e-4, "weight_decay": 1e-4, "eps": 0.001, "iterates": 10}
KINDS = {"segmenter": "segmentation", "detector": "detection"}
# Table 1's rows in chapter 07: the control is GAT's fine-tuning with unperturbed renders (attack=False)
ROWS = ("original", "control-generated", "gat")
# the segmenter's extra rows: the same two fine-tunings with the label filter (module docstring)
FILTERED_ROWS = ("control-generated-filtered", "gat-filtered")
FILTER_SEEDS = 3   # the zoo's Original segmenters: seed k's filter is seed (k + 1) % 3's


def rows_for(kind: str) -> tuple:
    """Chapter 07's rows for ``kind``: ``ROWS``, plus ``FILTERED_ROWS`` for the segmenter."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return ROWS + FILTERED_ROWS if kind == "segmenter" else ROWS


def zoo_name(kind: str, row: str, seed: int) -> str:
    """``scene-{kind}-s{k}`` (Original), ``scene-{kind}-control-generated-s{k}``, ``scene-{kind}-gat-s{k}``,
    and the segmenter's ``scene-segmenter-gat-filtered-s{k}``, ``scene-segmenter-control-generated-filtered-s{k}``."""
    if row not in rows_for(kind):
        raise ValueError(f"unknown row {row!r} for {kind}; rows: {rows_for(kind)}")
    return f"scene-{kind}-s{seed}" if row == "original" else f"scene-{kind}-{row}-s{seed}"


def label_filter_seed(seed: int) -> int:
    """The seed of the Original segmenter that filters seed ``seed``'s labels: another seed's, so the
    filter is neither the model being trained nor its starting point."""
    return (seed + 1) % FILTER_SEEDS


def label_filter_name(seed: int) -> str:
    """The zoo name of seed ``seed``'s label filter (:func:`label_filter_seed`)."""
    return zoo_name("segmenter", "original", label_filter_seed(seed))


def fine_tune(model, G, train_scenes, task: str, *, steps: int, batch_size: int, lr: float, weight_decay: float,
              eps: float, iterates: int, seed: int = 0, progress: bool = True, attack: bool = True,
              label_filter=None, checkpoint: str | Path | None = None,
              checkpoint_minutes: float | None = 5.0) -> dict:
    """GAT fine-tuning of a trained segmenter or detector: exactly ``steps`` steps of the one loop
    with :class:`SpadeGATMode` (one epoch capped at ``steps``); ``attack=False`` fine-tunes the
    control on unperturbed renders instead; ``label_filter`` (a segmenter) filters the generated
    images' labels. Returns the loop's history plus the mode's log.

    ``checkpoint``: ``train_classifier``'s checkpoint, saved within the epoch every
    ``checkpoint_minutes`` (``None``: at its end only) and at the end; a killed run resumes from it
    with the weights of an uninterrupted one. Pass the model the fine-tuning *started* from: the
    checkpoint records fingerprints of it, the generator, the filter and the scenes, and another one
    is refused with a ValueError naming the file (left in place)."""
    from .training import train_classifier

    if steps * batch_size > len(train_scenes):
        raise ValueError(f"{steps} steps of {batch_size} need {steps * batch_size} training scenes, "
                         f"have {len(train_scenes)}")
    mode = SpadeGATMode(G, train_scenes, task, eps=eps, iterates=iterates, seed=seed, attack=attack,
                        label_filter=label_filter)
    tag = None
    if checkpoint is not None:
        tag = {"fine_tune": "spade_gat", "eps": float(eps), "iterates": int(iterates), "attack": bool(attack),
               "model": _fingerprint(model), "generator": _fingerprint(G),
               "label_filter": None if label_filter is None else _fingerprint(label_filter),
               "train_scenes": _fingerprint(train_scenes.images, train_scenes.masks)}
    history = train_classifier(model, train_scenes, epochs=1, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               seed=seed, mode=mode, max_steps=steps, progress=progress, task=task,
                               checkpoint=checkpoint, checkpoint_minutes=checkpoint_minutes if checkpoint else None,
                               checkpoint_tag=tag)
    out = {**history, "mode_log": mode.log, "seconds_generating": mode.seconds_generating()}
    if label_filter is not None:
        out["pixels_kept"] = mode.pixels_kept()
    return out


def _fingerprint(*items) -> str:
    """sha256 of tensors or of modules' state dicts (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for item in items:
        tensors = item.state_dict().items() if isinstance(item, torch.nn.Module) else [("", item)]
        for name, tensor in tensors:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _check_zoo_recipe(name: str, asked: dict) -> None:
    """A zoo model's recorded recipe must agree with the chapter's parameters on every key both have
    (e.g. the γ/β step ``eps`` of GAT training), else one error names each difference."""
    from . import zoo

    recorded = zoo.read_manifest().get(name, {}).get("recipe", {})
    differ = {k: (recorded[k], v) for k, v in asked.items() if k in recorded and recorded[k] != v}
    if differ:
        listed = ", ".join(f"{k}: zoo {a!r} vs asked {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"zoo model {name!r} was trained with another recipe ({listed}); set the chapter's "
                         f"parameters to the zoo's recipe, rebuild it with `python -m gatlib.zoo train {name}`, "
                         "or run with retrain=True")


def scene_rows(kind: str, seeds, *, retrain: bool = False, G=None, train_scenes=None, original_recipe=None,
               gat_recipe=None, progress: bool = True) -> dict:
    """``{"original": [model per seed], "control-generated": [...], "gat": [...]}`` for ``kind``
    (``segmenter`` / ``detector``; the segmenter also has ``FILTERED_ROWS``): from the zoo
    (:func:`zoo_name`), or with ``retrain=True`` trained here — Original from scratch with
    ``original_recipe`` (``epochs``, ``batch_size``, ``lr``, ``weight_decay``; ``max_steps``
    optional), GAT fine-tuned from it with ``gat_recipe`` and the control with the same recipe on
    unperturbed renders; the filtered rows use the Original of :func:`label_filter_seed` as their
    filter (trained here too when that seed is not among ``seeds``)."""
    import copy

    from . import zoo
    from .training import train_classifier

    rows = rows_for(kind)
    task = KINDS[kind]
    out = {row: [] for row in rows}
    if not retrain:
        for seed in seeds:
            for row in rows:
                asked = original_recipe if row == "original" else gat_recipe
                name = zoo_name(kind, row, seed)
                _check_zoo_recipe(name, {k: v for k, v in (asked or {}).items() if k != "model"})
                out[row].append(zoo.load(name))
        return out
    if G is None or train_scenes is None or original_recipe is None:
        raise ValueError("retrain=True needs G, train_scenes and original_recipe")

    def train_original(seed):
        torch.manual_seed(seed)
        original = zoo._scene_model(kind) if original_recipe.get("model") is None else original_recipe["model"]()
        recipe = {k: v for k, v in original_recipe.items() if k != "model"}
        train_classifier(original, train_scenes, seed=seed, task=task, progress=progress, **recipe)
        return original.eval()

    originals = {seed: train_original(seed) for seed in seeds}
    filters = {}
    if FILTERED_ROWS[0] in rows:
        for seed in seeds:
            source = label_filter_seed(seed)
            if source not in originals:
                originals[source] = train_original(source)
            filters[seed] = originals[source]
    for seed in seeds:
        out["original"].append(originals[seed])
        for row in rows[1:]:
            tuned = copy.deepcopy(originals[seed]).train()
            fine_tune(tuned, G, train_scenes, task, seed=seed, progress=progress, attack=row.startswith("gat"),
                      label_filter=filters[seed] if row in FILTERED_ROWS else None,
                      **{**GAT_RECIPE, **(gat_recipe or {})})
            out[row].append(tuned.eval())
    return out


def paper_scene_rows(kind: str, arch: str, num_classes: int, original_paths: str, gat_paths: str = "") -> dict:
    """Chapter 07's ``paper`` profile: the user's torchvision segmenters or detectors,
    ``{"original": [model per seed], "gat": [...]}`` from comma-separated state-dict paths (one per
    seed; ``gat`` left out when no path is given), built by ``segdet.paper_segmenter`` /
    ``segdet.paper_detector``. An empty ``original_paths`` gives ``{}`` (the task is skipped)."""
    from . import segdet

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    build = segdet.paper_segmenter if kind == "segmenter" else segdet.paper_detector
    lists = {row: [p.strip() for p in str(paths).split(",") if p.strip()]
             for row, paths in (("original", original_paths), ("gat", gat_paths))}
    if not lists["original"]:
        if lists["gat"]:
            raise ValueError(f"{kind}: GAT checkpoints without the Original ones they are compared with")
        return {}
    if lists["gat"] and len(lists["gat"]) != len(lists["original"]):
        raise ValueError(f"{kind}: one GAT checkpoint per Original seed, got {len(lists['gat'])} for "
                         f"{len(lists['original'])}")
    return {row: [build(arch, num_classes, path) for path in paths] for row, paths in lists.items() if paths}
