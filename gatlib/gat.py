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
attacked latents, fooled share, seconds spent (the pool itself: ``gatlib.pool``).

``label_oracles`` (a dict of classifiers, default none) adds a second filter that the paper does not
need: a kept sample must also be seen as its class c by the oracles' majority. The paper's
per-category LSUN generators cannot leave their category; a class-conditional generator can (an
attack may turn a 7 into a 9, chapter 02), and then the ≤ ``max_iters`` filter alone keeps
examples whose label is wrong. Two rows trained on every seed measure the difference:
``gat-oracle-filter`` and ``gat-all-layers-oracle-filter`` (chapter 04: robustness; chapter 06: out of
domain, each against its unfiltered twin).

``random_keep`` (default 1) is that filter's control: each fooled sample joins the pool with this
probability, blind to the digit. ``gat-random-filter`` keeps the share the oracle filter kept
(``finetune.ORACLE_KEEP_SHARES``), so its pool is as small as gat-oracle-filter's while its labels are
as GAT's: the oracle filter's gain over it is what correct labels add at an equal pool size.

``GATMode(..., attack=False)`` is the control of chapter 04: the same number of *unperturbed*
generated images, so that a gain can be credited to the adversarial part and not to extra data.
"""
from __future__ import annotations

import random

import torch

from .attacks.latent import MOVES, latent_attack, sample_latents
from .pool import PoolMode


class GATMode(PoolMode):
    """A training mode for ``gatlib.training.train_classifier``: ``mode(model, images, labels, step)``
    returns the clean batch followed by as many adversarial (or, with ``attack=False``, clean
    generated) images with their conditioning classes (the pool: ``gatlib.pool.PoolMode``)."""

    rate_key = "fooled_rate"

    def __init__(self, G, *, eps: float, delta: float, max_iters: int = 10, pool_size: int = 1024,
                 refresh_every: int = 50, chunk: int = 128, group_size: int = 2, moves=MOVES,
                 keep_only_fooled: bool = True, attack: bool = True, max_attempts: int = 4, seed: int = 0,
                 label_oracles: dict | None = None, random_keep: float = 1.0):
        super().__init__(G, pool_size=pool_size, refresh_every=refresh_every, chunk=chunk,
                         max_attempts=max_attempts, seed=seed)
        if not 0 < random_keep <= 1:
            raise ValueError(f"random_keep is the share of fooled samples kept, in (0, 1]; got {random_keep}")
        unknown = set(moves) - set(MOVES)
        if unknown:
            raise ValueError(f"unknown moves {sorted(unknown)}; choose among {MOVES}")
        self.eps, self.delta, self.max_iters = eps, delta, max_iters
        self.groups = G.consecutive_groups(group_size)
        self.moves = list(moves)
        self.keep_only_fooled, self.attack = keep_only_fooled, attack
        self.label_oracles = dict(label_oracles or {})
        self.random_keep = random_keep
        self.rng = random.Random(seed)

    def make(self, model, labels, latent_seed):
        """One chunk: the latent attack with a random group of layers and a random choice of what
        moves; kept are the samples that fooled ``model`` (and, with ``label_oracles``, that the
        oracles still see as c). ``attack=False``: the unperturbed images, all kept."""
        styles, noises = sample_latents(self.G, labels, latent_seed)
        if not self.attack:
            with torch.no_grad():
                images = self.G.to_unit(self.G.synthesize(styles, noises)).cpu()
            return images, labels, torch.ones(len(labels), dtype=torch.bool), None
        result = latent_attack(self.G, model, styles, noises, labels, eps=self.eps, delta=self.delta,
                               moves=self.rng.choice(self.moves), layers=self.rng.choice(self.groups),
                               max_iters=self.max_iters)
        keep = result.success if self.keep_only_fooled else result.valid
        if self.label_oracles and keep.any():
            keep = keep & self._oracles_see_class(result.images, result.labels)
        if self.random_keep < 1:   # its own generator per chunk: the moves/layers draws stay as GAT's
            draws = torch.rand(len(keep), generator=torch.Generator().manual_seed(latent_seed * 7 + 3))
            keep = keep & (draws < self.random_keep).to(keep.device)
        return result.images, result.labels, keep, int(result.success.sum())

    def _oracles_see_class(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per sample: more than half of ``label_oracles`` predict its conditioning class."""
        from .classifiers import predict

        votes = torch.stack([predict(oracle, images) == labels.cpu() for oracle in self.label_oracles.values()])
        return (votes.sum(0) * 2 > len(self.label_oracles)).to(labels.device)
