"""One training loop (tqdm, seeded, checkpointed every epoch — and, optionally, every few minutes within
one — resumable) with pluggable modes and tasks.

A *mode* turns each clean mini-batch into the batch the model is trained on:

* ``standard`` — the clean batch itself (the paper's "Original" models).

Later chapters register more modes on this same loop (``register_mode``): ``gat`` (half clean, half
latent-attack images, §3.1 and §4.1), adversarial training with PGD, spatial, recolor, perceptual
attacks (Table 2 baselines). A mode is a callable ``mode(model, images, labels, step) -> (inputs,
targets)``; it may run attacks against the current ``model`` (which it must leave in train mode).

A mode that keeps state between steps which a resumed run needs (a pool of examples, a log) may define
``state_dict()`` / ``load_state_dict(state)``: the loop saves it with each checkpoint and restores it on
resume.

A *task* says what the targets are and which loss the loop minimises (``TASKS``):
``classification`` (labels, cross-entropy; the default), ``segmentation`` (label maps
``train_set.masks``, per-pixel cross-entropy) and ``detection`` (``train_set.targets`` of boxes
and labels; the sum of a torchvision detector's training losses) — §3.2's segmentation and
detection experiments train on the same loop, with their own modes.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as _distributed
from .resumable import save_atomic
from .scenes import IGNORE

Mode = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def standard_mode(model, images, labels, step):
    return images, labels


def crop_flip_mode(padding: int = 4, seed: int = 0) -> Mode:
    """The standard CIFAR augmentation as a mode: every image of the batch shifted by a random crop of
    its reflection-padded copy (up to ``padding`` pixels each way) and mirrored with probability 1/2.
    The draws depend only on (seed, step), so a resumed run sees the same batches."""
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")

    def mode(model, images, labels, step):
        batch, channels, height, width = images.shape
        draws = torch.Generator().manual_seed(seed * 1_000_003 + step)
        dy = torch.randint(0, 2 * padding + 1, (batch,), generator=draws).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (batch,), generator=draws).to(images.device)
        flip = (torch.rand(batch, generator=draws) < 0.5).to(images.device)
        padded = F.pad(images, (padding,) * 4, mode="reflect") if padding else images
        rows = dy[:, None] + torch.arange(height, device=images.device)[None]
        cols = dx[:, None] + torch.arange(width, device=images.device)[None]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        out = padded[torch.arange(batch, device=images.device)[:, None, None, None],
                     torch.arange(channels, device=images.device)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        return out, labels

    return mode


MODES: dict[str, Mode] = {"standard": standard_mode, "crop_flip": crop_flip_mode()}


def register_mode(name: str, mode: Mode) -> None:
    MODES[name] = mode


class ClassificationTask:
    """Labels ``train_set.labels``; cross-entropy on the logits; accuracy counts correct images."""
    name = "classification"

    def batch(self, train_set, index, device):
        return train_set.images[index].to(device), train_set.labels[index].to(device)

    def loss(self, net, inputs, targets):
        logits = net(inputs)
        return F.cross_entropy(logits, targets), (logits.argmax(1) == targets).sum().item(), len(targets)


class SegmentationTask(ClassificationTask):
    """Label maps ``train_set.masks`` (B, H, W); per-pixel cross-entropy; accuracy counts pixels.
    A torchvision segmentation model's ``{"out": logits}`` is unwrapped."""
    name = "segmentation"

    def batch(self, train_set, index, device):
        return train_set.images[index].to(device), train_set.masks[index].to(device)

    def loss(self, net, inputs, targets):
        logits = net(inputs)
        logits = logits["out"] if isinstance(logits, dict) else logits
        labelled = targets != IGNORE   # COCO-stuff's unlabelled pixels: no loss, not counted
        return (F.cross_entropy(logits, targets, ignore_index=IGNORE),
                ((logits.argmax(1) == targets) & labelled).sum().item(), labelled.sum().item())


class DetectionTask(ClassificationTask):
    """``train_set.boxes`` / ``train_set.labels`` (lists, one tensor per image); the loss is the sum
    of a torchvision detector's training losses (grey images repeated to RGB); no accuracy."""
    name = "detection"

    def batch(self, train_set, index, device):
        targets = [{"boxes": train_set.boxes[i].to(device), "labels": train_set.labels[i].to(device)}
                   for i in index.tolist()]
        return train_set.images[index].to(device), targets

    def loss(self, net, inputs, targets):
        images = inputs.repeat(1, 3, 1, 1) if inputs.shape[1] == 1 else inputs
        losses = net(list(images), targets)
        return sum(losses.values()), 0, 0


TASKS = {task.name: task for task in (ClassificationTask(), SegmentationTask(), DetectionTask())}


def _epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffling of one epoch depends only on (seed, epoch), so a resumed run sees the same data."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


CHECKPOINT_FORMAT = "gatlib.training.train_classifier/2"   # format 1: the per-epoch files without "format"
_RESTART = "it is left in place: move it away (or delete it) to restart the training from the start"


def _rng_states(device: torch.device) -> dict:
    """The torch (and CUDA, on a CUDA device), numpy and Python global RNG states, as tensors and
    plain values (loadable with ``weights_only=True``)."""
    python = random.getstate()
    numpy_state = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                        "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
              "python": {"version": python[0], "internal": list(python[1]), "gauss_next": python[2]}}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def _read_checkpoint(path: Path, device: torch.device, recipe: dict, checkpoint_tag: dict | None,
                     steps_per_epoch: int) -> dict:
    """The training state at ``path``, checked to be a ``train_classifier`` state of this recipe (and
    of ``checkpoint_tag``); anything else is one ValueError naming the file, which is never touched.
    Per-epoch files from before the format was versioned (no ``format``, no ``recipe``) still load."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"training checkpoint {path} is unreadable or corrupt ({type(err).__name__}: {err}); "
                         f"{_RESTART}") from err
    keys = ("model", "optimizer", "scheduler", "history", "epoch")
    if (not isinstance(saved, dict) or any(k not in saved for k in keys)
            or saved.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT):
        found = [str(k) for k in saved][:12] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"training checkpoint {path} is not a train_classifier training state "
                         f"(format {CHECKPOINT_FORMAT!r} or its per-epoch predecessor; found {found}); {_RESTART}")
    differ = []
    if "recipe" in saved:
        differ += [f"{k}: saved {saved['recipe'].get(k)!r}, asked {v!r}" for k, v in recipe.items()
                   if saved["recipe"].get(k) != v]
    if checkpoint_tag is not None or saved.get("tag") is not None:
        asked, tagged = checkpoint_tag or {}, saved.get("tag") or {}
        differ += [f"{k}: saved {str(tagged.get(k))[:16]!r}, asked {str(asked.get(k))[:16]!r}"
                   for k in sorted(set(asked) | set(tagged), key=str) if tagged.get(k) != asked.get(k)]
    if differ:
        raise ValueError(f"training checkpoint {path} was made for another training ({'; '.join(differ)}); "
                         f"pass the same model, data and recipe, or: {_RESTART}")
    partial = saved.get("partial")
    if partial is not None and not (isinstance(partial, dict) and 0 < partial.get("step", -1) < steps_per_epoch
                                    and "sums" in partial and "rng" in saved):
        raise ValueError(f"training checkpoint {path} holds an unusable within-epoch state "
                         f"(step {partial.get('step') if isinstance(partial, dict) else partial!r} of "
                         f"{steps_per_epoch}); {_RESTART}")
    return saved


def train_classifier(model: nn.Module, train_set, *, epochs: int, batch_size: int = 128, lr: float = 2e-3,
                     weight_decay: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu",
                     mode: str | Mode = "standard", checkpoint: str | Path | None = None,
                     max_steps: int | None = None, progress: bool = True, distributed: bool | None = None,
                     task: str = "classification", checkpoint_minutes: float | None = None,
                     checkpoint_tag: dict | None = None) -> dict:
    """Train ``model`` on ``train_set`` (a ``DigitDataset``; for ``task="segmentation"`` or
    ``"detection"`` a ``gatlib.scenes.SceneSet``) with AdamW and a one-cycle schedule.

    ``checkpoint``: a file written atomically after every epoch (model, optimiser, scheduler, history,
    the RNG states and the mode's ``state_dict()`` if it has one); when it exists the run resumes
    from it, so a killed run loses at most one epoch. ``checkpoint_minutes`` (with a checkpoint, in
    one process): also save within an epoch, after a step, at most every that many minutes (``0``:
    after every step) — the step reached, the running loss / accuracy sums and the torch / numpy /
    Python RNG states too — and a resumed run skips the batches already done of the epoch's seeded
    order, with the weights of an uninterrupted run bit for bit. ``checkpoint_tag``: facts the
    checkpoint must agree with beyond the recipe (e.g. fingerprints of the starting model and data).
    An unreadable checkpoint, or one of another training (recipe or tag), is refused with a
    ValueError naming the file, which is left in place.

    ``max_steps`` caps the number of optimiser steps per epoch (the ``smoke`` profile). Returns the
    history ``{"epoch": [...], "loss": [...], "train_accuracy": [...]}``.

    ``distributed``: train data-parallel with DDP over the initialised ``torch.distributed`` process
    group (``None``, the default: exactly when one with more than one rank is initialised, e.g. under
    ``torchrun``). ``batch_size`` is then the global batch, each rank training on its
    ``1 / world_size`` share; only rank 0 writes the checkpoint. See ``gatlib.distributed``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if checkpoint_minutes is not None and (not checkpoint or checkpoint_minutes < 0):
        raise ValueError(f"checkpoint_minutes ({checkpoint_minutes}) must be non-negative and needs a checkpoint")
    task_fn = TASKS[task]
    mode_fn = MODES[mode] if isinstance(mode, str) else mode
    if isinstance(mode, str) and mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(MODES)}")
    device = torch.device(device)
    model.to(device)
    ddp = _distributed.context(distributed, device)   # None: a single process
    if ddp is not None and checkpoint_minutes is not None:
        raise ValueError("checkpoint_minutes (within-epoch checkpoints) needs a single process; under DDP the "
                         "checkpoint is written at epoch ends only")
    steps_per_epoch = len(train_set) // batch_size
    if max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training images are fewer than one batch of {batch_size}")
    local_batch = batch_size if ddp is None else ddp.local_batch_size(batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history = {"epoch": [], "loss": [], "train_accuracy": []}
    first_epoch = 0
    partial = None   # a within-epoch state to go on from
    recipe = {"task": task, "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
              "weight_decay": float(weight_decay), "seed": int(seed), "steps_per_epoch": int(steps_per_epoch),
              "train_size": len(train_set)}

    checkpoint = Path(checkpoint) if checkpoint else None
    resume = checkpoint and checkpoint.exists()
    if ddp is not None and checkpoint:
        resume = ddp.agree(resume, f"whether {checkpoint} exists")
    if resume:
        state = _read_checkpoint(checkpoint, device, recipe, checkpoint_tag, steps_per_epoch)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("mode") is not None and hasattr(mode_fn, "load_state_dict"):
                mode_fn.load_state_dict(state["mode"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"training checkpoint {checkpoint} does not fit this model, optimiser or mode "
                             f"({type(err).__name__}: {err}); {_RESTART}") from err
        history, first_epoch = state["history"], state["epoch"] + 1
        partial = state.get("partial")
        if partial is not None:
            partial = {**partial, "rng": state["rng"]}
        if partial is not None and ddp is not None:
            raise ValueError(f"training checkpoint {checkpoint} was saved within an epoch: resume it in a single "
                             "process (without DDP)")
        if "rng" in state and partial is None and ddp is None:   # (rank 0's states would not fit other ranks)
            _set_rng_states(state["rng"], device)   # the global RNGs where an uninterrupted run had them
    elif checkpoint and (ddp is None or ddp.is_main):
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    net = model if ddp is None else ddp.wrap(model)   # modes (attacks) always get the bare model
    if ddp is not None:
        mode_fn = ddp.wrap_mode(mode_fn, seed)

    def save(epoch_done: int, within: dict | None = None) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "recipe": recipe, "tag": checkpoint_tag,
                   "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch_done,
                   "partial": within, "rng": _rng_states(device)}
        if hasattr(mode_fn, "state_dict"):
            payload["mode"] = mode_fn.state_dict()
        save_atomic(payload, checkpoint)

    last_save = time.monotonic()
    for epoch in range(first_epoch, epochs):
        model.train()
        order = _epoch_order(len(train_set), seed, epoch)
        if ddp is not None:
            order = ddp.shard(order)
        first_step = 0
        if partial is not None:   # go on within this epoch: its RNG states and running sums as saved
            first_step = partial["step"]
            _set_rng_states(partial["rng"], device)   # the states saved with it
            total_loss, correct, counted, seen = (partial["sums"][k] for k in ("total_loss", "correct", "counted",
                                                                               "seen"))
            partial = None
        else:
            # dropout / attack randomness, reproducible on resume (and its own stream on each DDP rank)
            torch.manual_seed(seed * 100_003 + epoch + (0 if ddp is None else ddp.seed_offset))
            total_loss, correct, counted, seen = 0.0, 0, 0, 0
        quiet = not progress or (ddp is not None and not ddp.is_main)
        bar = tqdm(range(first_step, steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=quiet,
                   leave=False, total=steps_per_epoch, initial=first_step)
        for step in bar:
            index = order[step * local_batch:(step + 1) * local_batch]
            images, labels = task_fn.batch(train_set, index, device)
            inputs, targets = mode_fn(model, images, labels, epoch * steps_per_epoch + step)
            loss, step_correct, step_count = task_fn.loss(net, inputs, targets)
            if not (torch.isfinite(loss) if ddp is None else ddp.all_finite(loss)):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, step {step}: "
                                         "lower the learning rate; the last good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(inputs)
            correct += step_correct
            counted += step_count
            seen += len(inputs)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}",   # detection counts no accuracy
                            **({"acc": f"{correct / counted:.4f}"} if counted else {}))
            if (checkpoint_minutes is not None and step + 1 < steps_per_epoch
                    and time.monotonic() - last_save >= checkpoint_minutes * 60):
                save(epoch - 1, {"step": step + 1, "sums": {"total_loss": total_loss, "correct": correct,
                                                            "counted": counted, "seen": seen}})
                last_save = time.monotonic()
        if ddp is not None:   # the global numbers on every rank; rank 0's BatchNorm statistics everywhere
            total_loss, correct, counted, seen = ddp.sum(total_loss, correct, counted, seen)
            ddp.sync_buffers(model)
        history["epoch"].append(epoch + 1)
        history["loss"].append(total_loss / seen)
        history["train_accuracy"].append(correct / counted if counted else None)   # detection: none
        if checkpoint and (ddp is None or ddp.is_main):
            save(epoch)
            last_save = time.monotonic()
    model.eval()
    return history
