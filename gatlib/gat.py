"""Generative adversarial training (GAT): the training mode of §3.1 (last paragraph) and §4.1.

Every training batch holds an **equal number of clean images and adversarial images**. The
adversarial images come from the latent attack (eq. 1–4, ``gatlib.attacks.latent``) run on freshly
sampled latents against the *current* classifier; for diversity each attack moves a randomly drawn
group of consecutive layers (the paper's "layers 1–2, 3–4, etc.") and randomly the styles, the noise
or both; **only the samples that fool the model within ``max_iters`` (10) steps are kept** (the
paper discards the rest as likely unrealistic); their label is the generator's conditioning class.

Generating adversarial examples costs far more than a training step, so they come from a **pool**
refreshed against the current model every ``refresh_every`` steps; each batch draws its adversarial
half from the pool. ``refresh_every=1`` attacks the model afresh at every step (the most faithful,
the most expensive); the chapter reports the trade-off. ``GATMode.log`` records every refresh:
attacked latents, fooled share, seconds spent.

``label_oracles`` (a dict of classifiers, default none) adds a second filter that the paper does not
need: a kept sample must also be seen as its class c by the oracles' majority. The paper's
per-category LSUN generators cannot leave their category; a class-conditional generator can (an
attack may turn a 7 into a 9, chapter 02), and then the ≤ ``max_iters`` filter alone keeps
examples whose label is wrong. Chapter 04's ablation ``gat-oracle-filter`` measures the difference.

``GATMode(..., attack=False)`` is the control of chapter 04: the same number of *unperturbed*
generated images, so that a gain can be credited to the adversarial part and not to extra data.
"""
from __future__ import annotations

import random
import time

import torch

from .attacks.latent import MOVES, latent_attack, sample_latents


class GATMode:
    """A training mode for ``gatlib.training.train_classifier``: ``mode(model, images, labels, step)``
    returns the clean batch followed by as many adversarial (or, with ``attack=False``, clean
    generated) images with their conditioning classes."""

    def __init__(self, G, *, eps: float, delta: float, max_iters: int = 10, pool_size: int = 1024,
                 refresh_every: int = 50, chunk: int = 128, group_size: int = 2, moves=MOVES,
                 keep_only_fooled: bool = True, attack: bool = True, max_attempts: int = 4, seed: int = 0,
                 label_oracles: dict | None = None):
        if pool_size < 1 or refresh_every < 1 or chunk < 1:
            raise ValueError("pool_size, refresh_every and chunk must be positive")
        unknown = set(moves) - set(MOVES)
        if unknown:
            raise ValueError(f"unknown moves {sorted(unknown)}; choose among {MOVES}")
        self.G, self.eps, self.delta, self.max_iters = G, eps, delta, max_iters
        self.pool_size, self.refresh_every, self.chunk = pool_size, refresh_every, chunk
        self.groups = G.consecutive_groups(group_size)
        self.moves = list(moves)
        self.keep_only_fooled, self.attack, self.max_attempts = keep_only_fooled, attack, max_attempts
        self.label_oracles = dict(label_oracles or {})
        self.rng = random.Random(seed)
        self.seed = seed
        self.pool_images = self.pool_labels = None
        self.log: list[dict] = []
        self._latent_seed = seed * 1_000_003

    def _fresh_labels(self, count: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self._latent_seed)
        return torch.randint(max(self.G.num_classes, 1), (count,), generator=generator)

    def refresh(self, model, step: int) -> None:
        """Fill the pool with new examples made against the current ``model``."""
        started = time.time()
        kept_images, kept_labels, attacked, fooled = [], [], 0, 0
        while sum(len(x) for x in kept_images) < self.pool_size and attacked < self.max_attempts * self.pool_size:
            self._latent_seed += 1
            labels = self._fresh_labels(self.chunk)
            styles, noises = sample_latents(self.G, labels, self._latent_seed)
            attacked += len(labels)
            if not self.attack:
                with torch.no_grad():
                    images = self.G.to_unit(self.G.synthesize(styles, noises)).cpu()
                kept_images.append(images)
                kept_labels.append(labels)
                continue
            result = latent_attack(self.G, model, styles, noises, labels, eps=self.eps, delta=self.delta,
                                   moves=self.rng.choice(self.moves), layers=self.rng.choice(self.groups),
                                   max_iters=self.max_iters)
            keep = result.success if self.keep_only_fooled else result.valid
            fooled += int(result.success.sum())
            if self.label_oracles and keep.any():
                keep = keep & self._oracles_see_class(result.images, result.labels)
            kept_images.append(result.images[keep])
            kept_labels.append(result.labels[keep])
        images, labels = torch.cat(kept_images)[:self.pool_size], torch.cat(kept_labels)[:self.pool_size]
        if len(images) or self.pool_images is None:
            self.pool_images, self.pool_labels = images, labels
        self.log.append({"step": step, "attacked": attacked, "kept": len(images),
                         "fooled_rate": fooled / attacked if self.attack else float("nan"),
                         "seconds": time.time() - started})

    def _oracles_see_class(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per sample: more than half of ``label_oracles`` predict its conditioning class."""
        from .classifiers import predict

        votes = torch.stack([predict(oracle, images) == labels.cpu() for oracle in self.label_oracles.values()])
        return (votes.sum(0) * 2 > len(self.label_oracles)).to(labels.device)

    def __call__(self, model, images, labels, step):
        if step % self.refresh_every == 0 or self.pool_images is None:
            self.refresh(model, step)
        if self.pool_images is None or len(self.pool_images) == 0:
            return images, labels   # nothing fooled the model yet: a clean batch
        generator = torch.Generator().manual_seed(self.seed * 7919 + step)
        pick = torch.randint(len(self.pool_images), (len(images),), generator=generator)
        device = images.device
        return (torch.cat([images, self.pool_images[pick].to(device)]),
                torch.cat([labels, self.pool_labels[pick].to(device)]))

    def seconds_generating(self) -> float:
        return sum(entry["seconds"] for entry in self.log)
