"""One training loop (tqdm, seeded, checkpointed every epoch, resumable) with pluggable modes and tasks.

A *mode* turns each clean mini-batch into the batch the model is trained on:

* ``standard`` — the clean batch itself (the paper's "Original" models).

Later chapters register more modes on this same loop (``register_mode``): ``gat`` (half clean, half
latent-attack images, §3.1 and §4.1), adversarial training with PGD, spatial, recolor, perceptual
attacks (Table 2 baselines). A mode is a callable ``mode(model, images, labels, step) -> (inputs,
targets)``; it may run attacks against the current ``model`` (which it must leave in train mode).

A *task* says what the targets are and which loss the loop minimises (``TASKS``):
``classification`` (labels, cross-entropy; the default), ``segmentation`` (label maps
``train_set.masks``, per-pixel cross-entropy) and ``detection`` (``train_set.targets`` of boxes
and labels; the sum of a torchvision detector's training losses) — §3.2's segmentation and
detection experiments train on the same loop, with their own modes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

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


def train_classifier(model: nn.Module, train_set, *, epochs: int, batch_size: int = 128, lr: float = 2e-3,
                     weight_decay: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu",
                     mode: str | Mode = "standard", checkpoint: str | Path | None = None,
                     max_steps: int | None = None, progress: bool = True, distributed: bool | None = None,
                     task: str = "classification") -> dict:
    """Train ``model`` on ``train_set`` (a ``DigitDataset``; for ``task="segmentation"`` or
    ``"detection"`` a ``gatlib.scenes.SceneSet``) with AdamW and a one-cycle schedule.

    ``checkpoint``: a file written after every epoch (model, optimiser, scheduler, history); when it
    exists the run resumes from it, so a killed run loses at most one epoch. ``max_steps`` caps the
    number of optimiser steps per epoch (the ``smoke`` profile). Returns the history
    ``{"epoch": [...], "loss": [...], "train_accuracy": [...]}``.

    ``distributed``: train data-parallel with DDP over the initialised ``torch.distributed`` process
    group (``None``, the default: exactly when one with more than one rank is initialised, e.g. under
    ``torchrun``). ``batch_size`` is then the global batch, each rank training on its
    ``1 / world_size`` share; only rank 0 writes the checkpoint. See ``gatlib.distributed``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    task_fn = TASKS[task]
    mode_fn = MODES[mode] if isinstance(mode, str) else mode
    if isinstance(mode, str) and mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(MODES)}")
    device = torch.device(device)
    model.to(device)
    ddp = _distributed.context(distributed, device)   # None: a single process
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

    checkpoint = Path(checkpoint) if checkpoint else None
    resume = checkpoint and checkpoint.exists()
    if ddp is not None and checkpoint:
        resume = ddp.agree(resume, f"whether {checkpoint} exists")
    if resume:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, first_epoch = state["history"], state["epoch"] + 1
    net = model if ddp is None else ddp.wrap(model)   # modes (attacks) always get the bare model
    if ddp is not None:
        mode_fn = ddp.wrap_mode(mode_fn, seed)

    for epoch in range(first_epoch, epochs):
        model.train()
        order = _epoch_order(len(train_set), seed, epoch)
        if ddp is not None:
            order = ddp.shard(order)
        # dropout / attack randomness, reproducible on resume (and its own stream on each DDP rank)
        torch.manual_seed(seed * 100_003 + epoch + (0 if ddp is None else ddp.seed_offset))
        total_loss, correct, counted, seen = 0.0, 0, 0, 0
        quiet = not progress or (ddp is not None and not ddp.is_main)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=quiet, leave=False)
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
        if ddp is not None:   # the global numbers on every rank; rank 0's BatchNorm statistics everywhere
            total_loss, correct, counted, seen = ddp.sum(total_loss, correct, counted, seen)
            ddp.sync_buffers(model)
        history["epoch"].append(epoch + 1)
        history["loss"].append(total_loss / seen)
        history["train_accuracy"].append(correct / counted if counted else None)   # detection: none
        if checkpoint and (ddp is None or ddp.is_main):
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch}, checkpoint)
    model.eval()
    return history
