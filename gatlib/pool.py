"""The pool of generated training examples shared by the training modes that make their examples
against the *current* model (``gatlib.gat.GATMode``, ``gatlib.attacks.song.SongMode``).

Making an adversarial example costs far more than a training step, so the examples come from a
pool re-made every ``refresh_every`` steps. A refresh draws chunks of fresh conditioning classes
(one new latent seed per chunk) and asks the mode's ``make`` for the examples of each chunk, until
the pool holds ``pool_size`` of them or ``max_attempts × pool_size`` latents were tried; a pool that
is not full is used as it is. Every training batch is the clean batch followed by as many pool
examples (half and half). ``log`` records every refresh: latents tried, examples kept, the share
that succeeded, seconds spent.

``state_dict()`` / ``load_state_dict(state)`` carry what a resumed ``train_classifier`` needs to go on
bit for bit as an uninterrupted run (the pool, the latent seed counter, the log, and a subclass's own
state through ``_extra_state`` / ``_load_extra_state``); they are called only when a checkpoint is
saved or resumed, so runs without checkpoints are unchanged.
"""
from __future__ import annotations

import random
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

    def state_dict(self) -> dict:
        """What a resumed training needs (tensors, numbers, strings and plain containers only, so that
        ``torch.load(weights_only=True)`` reads it): the pool, the latent seed counter, the log, the
        seed (with the rank shift of ``gatlib.distributed.reseed_for_rank``) and ``_extra_state()``.
        The per-step draws come from ``(seed, step)`` and need nothing more."""
        return {"pool_images": self.pool_images, "pool_labels": self.pool_labels,
                "latent_seed": int(self._latent_seed), "log": [dict(entry) for entry in self.log],
                "seed": int(self.seed), "distributed_rank": int(getattr(self, "_distributed_rank", 0)),
                "extra": self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s state; a ValueError names what does not fit this mode (nothing is
        changed then)."""
        if not isinstance(state, dict):
            raise ValueError(f"a {type(self).__name__} state is a dict, got {type(state).__name__}")
        missing = [k for k in ("pool_images", "pool_labels", "latent_seed", "log", "seed") if k not in state]
        if missing:
            raise ValueError(f"the {type(self).__name__} state lacks {', '.join(missing)} "
                             f"(found: {', '.join(map(str, state))})")
        images, labels = state["pool_images"], state["pool_labels"]
        if (images is None) != (labels is None):
            raise ValueError("the saved pool has images without labels or labels without images")
        if images is not None:
            if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
                raise ValueError(f"the saved pool is not tensors: {type(images).__name__}, {type(labels).__name__}")
            if images.dim() < 1 or labels.dim() != 1 or len(images) != len(labels):
                raise ValueError(f"the saved pool does not fit: images {tuple(images.shape)}, "
                                 f"labels {tuple(labels.shape)} (one label per image)")
            if len(images) > self.pool_size:
                raise ValueError(f"the saved pool holds {len(images)} examples, more than this mode's "
                                 f"pool_size {self.pool_size}")
            expected = self._example_shape()
            if expected is not None and tuple(images.shape[1:]) != expected:
                raise ValueError(f"the saved pool's examples have shape {tuple(images.shape[1:])}, this "
                                 f"mode's {expected}")
        if not isinstance(state["latent_seed"], int) or not isinstance(state["log"], list):
            raise ValueError("the saved latent seed must be an int and the log a list, got "
                             f"{type(state['latent_seed']).__name__} and {type(state['log']).__name__}")
        from .distributed import RANK_SEED_STRIDE

        saved_rank = int(state.get("distributed_rank", 0))
        own_rank = getattr(self, "_distributed_rank", 0)
        if state["seed"] - RANK_SEED_STRIDE * saved_rank != self.seed - RANK_SEED_STRIDE * own_rank:
            raise ValueError(f"the saved state is of a {type(self).__name__} with seed "
                             f"{state['seed'] - RANK_SEED_STRIDE * saved_rank}, this one has seed "
                             f"{self.seed - RANK_SEED_STRIDE * own_rank}")
        self._check_extra_state(state.get("extra"))
        self.pool_images, self.pool_labels = images, labels
        self._latent_seed = state["latent_seed"]
        self.log[:] = [dict(entry) for entry in state["log"]]
        self.seed = state["seed"]   # (a later reseed_for_rank shifts it from the saved rank)
        if saved_rank or hasattr(self, "_distributed_rank"):
            self._distributed_rank = saved_rank
        self._load_extra_state(state.get("extra"))

    def _example_shape(self) -> tuple | None:
        """The shape of one pool example: its current pool's, else the generator's image
        ``(image_channels, resolution, resolution)`` when it names them; None when unknown."""
        if self.pool_images is not None:
            return tuple(self.pool_images.shape[1:])
        channels, resolution = getattr(self.G, "image_channels", None), getattr(self.G, "resolution", None)
        if isinstance(channels, int) and isinstance(resolution, int):
            return (channels, resolution, resolution)
        return None

    def _generators(self) -> dict:
        """The random generators the mode draws from across steps (its attributes that are a
        ``random.Random`` or a ``torch.Generator``, e.g. ``GATMode.rng``), by attribute name."""
        return {name: value for name, value in sorted(vars(self).items())
                if isinstance(value, (random.Random, torch.Generator))}

    def _extra_state(self):
        """A subclass's own state kept across steps (plain containers / tensors / numbers). Here: the
        states of its random generators (``_generators``); a subclass with more state extends it."""
        states = {}
        for name, generator in self._generators().items():
            if isinstance(generator, random.Random):
                version, internal, gauss_next = generator.getstate()
                states[name] = {"kind": "random", "state": [version, list(internal), gauss_next]}
            else:
                states[name] = {"kind": "torch", "state": generator.get_state()}
        return {"generators": states}

    def _check_extra_state(self, extra) -> None:
        """Raise a ValueError if ``extra`` (from ``_extra_state``) does not fit; called before anything
        is restored."""
        own = self._generators()
        saved = (extra or {}).get("generators", {}) if isinstance(extra, dict) else None
        if not isinstance(saved, dict) or sorted(saved) != sorted(own):
            raise ValueError(f"the saved {type(self).__name__} state has random generators "
                             f"{sorted(saved) if isinstance(saved, dict) else saved!r}, this mode {sorted(own)}")
        for name, generator in own.items():
            kind = "random" if isinstance(generator, random.Random) else "torch"
            entry = saved[name]
            if not isinstance(entry, dict) or entry.get("kind") != kind or "state" not in entry:
                raise ValueError(f"the saved state of the random generator {name!r} is not of a {kind} generator")
            scratch = random.Random() if kind == "random" else torch.Generator(device=generator.device)
            try:
                self._set_generator(scratch, entry["state"])
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"the saved state of the random generator {name!r} does not fit: {err}") from err

    @staticmethod
    def _set_generator(generator, state) -> None:
        if isinstance(generator, random.Random):
            version, internal, gauss_next = state
            generator.setstate((version, tuple(internal), gauss_next))
        else:
            generator.set_state(state.cpu())   # (a checkpoint may be loaded onto another device)

    def _load_extra_state(self, extra) -> None:
        """Restore ``_extra_state()``'s state (checked by ``_check_extra_state``)."""
        for name, generator in self._generators().items():
            self._set_generator(generator, extra["generators"][name]["state"])

    def seconds_generating(self) -> float:
        return sum(entry["seconds"] for entry in self.log)
