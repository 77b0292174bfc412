"""The pool of generated training examples shared by the training modes that make their examples
against the *current* model (``gatlib.gat.GATMode``, ``gatlib.attacks.song.SongMode``).

Making an adversarial example costs far more than a training step, so the examples come from a
pool re-made every ``refresh_every`` steps. A refresh draws chunks of fresh conditioning classes
(one new latent seed per chunk) and asks the mode's ``make`` for the examples of each chunk, until
the pool holds ``pool_size`` of them or ``max_attempts × pool_size`` latents were tried; a pool that
is not full is used as it is. Every training batch is the clean batch followed by as many pool
examples (half and half). ``log`` records every refresh: latents tried, examples kept, the share
that succeeded, seconds spent.
"""
from __future__ import annotations

import time

import torch

from .attacks.latent import class_labels


class PoolMode:
    """Base of a training mode ``mode(model, images, labels, step)`` for ``train_classifier``.

    Subclasses implement :meth:`make` and name their success share in the log (``rate_key``)."""

    rate_key = "success_rate"

    def __init__(self, G, *, pool_size: int, refresh_every: int, chunk: int, max_attempts: int, seed: int):
        if pool_size < 1 or refresh_every < 1 or chunk < 1 or max_attempts < 1:
            raise ValueError("pool_size, refresh_every, chunk and max_attempts must be positive, got "
                             f"{pool_size}, {refresh_every}, {chunk}, {max_attempts}")
        self.G = G
        self.pool_size, self.refresh_every, self.chunk = pool_size, refresh_every, chunk
        self.max_attempts, self.seed = max_attempts, seed
        self.pool_images = self.pool_labels = None
        self.log: list[dict] = []
        self._latent_seed = seed * 1_000_003

    def make(self, model, labels: torch.Tensor, latent_seed: int):
        """The examples of one chunk: ``(images, labels, keep, succeeded)`` — ``keep`` a boolean mask
        of the rows that join the pool, ``succeeded`` the count for the log (``None``: not an attack)."""
        raise NotImplementedError

    def refresh(self, model, step: int) -> None:
        """Fill the pool with new examples made against the current ``model``."""
        started = time.time()
        kept_images, kept_labels, attacked, succeeded = [], [], 0, 0
        while sum(len(x) for x in kept_images) < self.pool_size and attacked < self.max_attempts * self.pool_size:
            self._latent_seed += 1
            labels = class_labels(self.G, self.chunk, generator=torch.Generator().manual_seed(self._latent_seed))
            images, labels, keep, chunk_succeeded = self.make(model, labels, self._latent_seed)
            attacked += len(labels)
            succeeded = None if chunk_succeeded is None else succeeded + chunk_succeeded
            kept_images.append(images[keep])
            kept_labels.append(labels[keep])
        images, labels = torch.cat(kept_images)[:self.pool_size], torch.cat(kept_labels)[:self.pool_size]
        if len(images) or self.pool_images is None:
            self.pool_images, self.pool_labels = images, labels
        self.log.append({"step": step, "attacked": attacked, "kept": len(images),
                         self.rate_key: float("nan") if succeeded is None else succeeded / max(attacked, 1),
                         "seconds": time.time() - started})

    def __call__(self, model, images, labels, step):
        if step % self.refresh_every == 0 or self.pool_images is None:
            self.refresh(model, step)
        if self.pool_images is None or len(self.pool_images) == 0:
            return images, labels   # nothing in the pool yet: a clean batch
        generator = torch.Generator().manual_seed(self.seed * 7919 + step)
        pick = torch.randint(len(self.pool_images), (len(images),), generator=generator)
        device = images.device
        return (torch.cat([images, self.pool_images[pick].to(device)]),
                torch.cat([labels, self.pool_labels[pick].to(device)]))

    def seconds_generating(self) -> float:
        return sum(entry["seconds"] for entry in self.log)
