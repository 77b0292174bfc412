"""Fine-tuning the Original models: GAT, its two controls, the ablations (chapters 04 and 06).

Each trained row of Table 1 starts from the **Original** model of the same seed k (the zoo's
``mnist-classifier-s{k}``) and is fine-tuned for exactly ``steps`` optimiser steps on MNIST train
with ``gatlib.training.train_classifier`` (AdamW, one-cycle schedule peaking at ``lr``, a clean
batch of ``batch_size`` real digits per step) in one *mode*:

* ``control-real`` — ``standard``: the real batch only (does more training alone help?);
* ``control-generated`` — ``GATMode(attack=False)``: the real batch plus as many *unperturbed*
  generated digits from the pool (does extra generated data alone help?);
* ``gat`` — ``GATMode``: the real batch plus as many adversarial digits that fooled the current
  model within ``max_iters`` steps, from a pool of ``pool_size`` refreshed every ``refresh_every``
  steps (§3.1 last paragraph, §4.1);
* ``ABLATIONS`` — GAT with one setting changed: what moves (style / noise / both only), which
  layers (all at once instead of groups of ``group_size`` consecutive layers), no ≤ 10-iteration
  filter (keep every attacked sample), the pool refresh interval K, an oracle filter, and one
  with two settings changed: all layers, trained three times as long (``gat-all-layers-long``).
  ``MULTI_SEED_ABLATIONS`` are trained on every seed (chapter 04 shows them as Table 1 rows).
* ``DEFENSE_ROWS`` — Table 2's baseline defenses (``gatlib.defenses``), fine-tuned from the same
  Original with the same step budget as GAT, so that Table 2 compares training objectives and not
  training lengths: ``at-pgd``, ``at-spatial``, ``at-recolor``, ``pat`` (each attack against the
  current model replaces the batch, Madry's min–max) and ``advprop`` (clean + PGD batch through
  separate BatchNorms; the auxiliary BN is dropped after training by ``collapse_mix_batchnorm``).
  Their recipes record the training attack's settings; they need no generator.

Exactly ``steps`` steps: ``train_classifier`` runs ``epochs × max_steps`` steps, so ``fine_tune``
picks the fewest epochs ``e`` with ``steps % e == 0`` and ``steps / e`` at most one pass over the
data (a single one-cycle schedule over all ``steps``).

Learning curves: ``train_classifier`` has no callback, so the mode is wrapped: every
``eval_every`` steps, before the step, a ``LearningCurve`` measures clean accuracy on
``curve_images`` MNIST *valid* digits and the white-box attack (both, all layers, ≤ ``max_iters``)
on ``curve_samples`` latents from ``CURVE_SEED_BASE + k`` (disjoint from training and from the
Table 1 latents), then restores the model's train mode; a last point is taken after the final step.

The zoo (``gatlib/zoo.py``) registers ``{row}-s{k}`` with ``zoo_recipe(row, k)`` and builds it with
``zoo_payload(row, k)``; chapters get every row with ``row_models`` (from the zoo, checked against
the recipe, or ``retrain=True``).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import classifiers
from .robustness import CURVE_SEED_BASE, white_box_accuracy

ORIGINAL = "original"
TRAINED_ROWS = ("control-real", "control-generated", "gat")
TABLE_ROWS = (ORIGINAL,) + TRAINED_ROWS          # Table 1 / Table 3 row order

# the recipe of every fine-tuned zoo model; eps and delta MUST equal chapter 02's chosen step sizes
DEFAULTS = {
    "generator": "mnist-stylegan2",
    "eps": 0.04,            # chapter 02's `step_sizes.eps` (default run on mnist-stylegan2)
    "delta": 3.2,           # chapter 02's `step_sizes.delta`
    "max_iters": 10,
    "steps": 400,
    "batch_size": 128,
    "lr": 5e-4,
    "weight_decay": 1e-4,
    "pool_size": 1024,
    "refresh_every": 50,
    "chunk": 128,
    "group_size": 2,        # consecutive layers moved together; 0 = all layers at once
    "moves": ["style", "noise", "both"],
    "keep_only_fooled": True,
    "oracle_filter": [],    # zoo classifiers whose majority must still see c (empty: the paper's GAT)
    "random_keep": 1.0,     # share of the fooled samples kept at random (1: the paper's GAT)
    "eval_every": 50,
    "curve_samples": 200,
    "curve_images": 1000,
}
_COMMON = ("generator", "eps", "delta", "max_iters", "steps", "batch_size", "lr", "weight_decay", "eval_every",
           "curve_samples", "curve_images")
_POOL = ("pool_size", "refresh_every", "chunk")
_ATTACK = ("group_size", "moves", "keep_only_fooled", "oracle_filter", "random_keep")
#: attack settings added after the first zoo models were trained
_ADDED_LATER = ("oracle_filter", "random_keep")
_DEFENSE = ("steps", "batch_size", "lr", "weight_decay", "eval_every", "curve_images")
MODE_KEYS = {"standard": _COMMON, "generated": _COMMON + _POOL, "gat": _COMMON + _POOL + _ATTACK,
             **{mode: _DEFENSE for mode in ("at_pgd", "at_spatial", "at_recolor", "pat", "advprop")}}

ROWS = {"control-real": {"mode": "standard"}, "control-generated": {"mode": "generated"}, "gat": {"mode": "gat"}}
#: the zoo's label oracles (gatlib.oracles) whose majority must still see c in a kept example (the oracle filter)
LABEL_ORACLES = ("oracle-mlp", "oracle-widecnn", "oracle-shufflenet")
#: the share of the fooled samples that each oracle-filtered row kept while training (its zoo models' pool
#: logs, seeds 0-2: gat-oracle-filter 33.2, 38.0, 36.2 %; gat-all-layers-oracle-filter 24.7, 26.7, 27.4 %);
#: each random-filter twin keeps its oracle twin's share at random
ORACLE_KEEP_SHARES = {"gat-oracle-filter": 0.36, "gat-all-layers-oracle-filter": 0.26}
ABLATIONS = {
    "gat-style": {"mode": "gat", "moves": ["style"]},
    "gat-noise": {"mode": "gat", "moves": ["noise"]},
    "gat-both": {"mode": "gat", "moves": ["both"]},
    "gat-all-layers": {"mode": "gat", "group_size": 0},
    "gat-no-filter": {"mode": "gat", "keep_only_fooled": False},
    # K = 10 at GAT's generation budget: a refresh attacks at most 4 x pool_size latents, so five times as
    # many refreshes with a fifth of the pool cost what K = 50 costs (40 x 820 vs 8 x 4096 latents); at the
    # full pool K = 10 would take about 2.5 hours of generation on one core.
    "gat-refresh-10": {"mode": "gat", "refresh_every": 10,
                       "pool_size": round(DEFAULTS["pool_size"] * 10 / DEFAULTS["refresh_every"])},   # 205
    "gat-refresh-200": {"mode": "gat", "refresh_every": 200},
    "gat-oracle-filter": {"mode": "gat", "oracle_filter": list(LABEL_ORACLES)},
    # length: gat-all-layers' white-box accuracy was still climbing at step 400 (about 7 points per
    # 100 steps on its learning curve), so the same recipe three times as long (a factor, so that a
    # chapter's own `steps`, e.g. the smoke profile's 4, scales it too)
    "gat-all-layers-long": {"mode": "gat", "group_size": 0, "steps_factor": 3},
    # the label test (chapters 04 and 06): gat-all-layers trains on the strongest attack and loses the most
    # out-of-domain accuracy; with the oracle filter it keeps only the examples whose digit did not change
    "gat-all-layers-oracle-filter": {"mode": "gat", "group_size": 0, "oracle_filter": list(LABEL_ORACLES)},
    # the control of the label test: the oracle filter also shrinks the pool (fewer distinct adversarial
    # digits, each drawn more often); this row shrinks it as much with labels left as they are, keeping
    # each fooled sample with the oracle filter's measured keep share, blind to what the digit looks like
    "gat-random-filter": {"mode": "gat", "random_keep": ORACLE_KEEP_SHARES["gat-oracle-filter"]},
    # the same control for the all-layer recipe, whose oracle filter costs white-box accuracy: the labels
    # or the smaller pool?
    "gat-all-layers-random-filter": {"mode": "gat", "group_size": 0,
                                     "random_keep": ORACLE_KEEP_SHARES["gat-all-layers-oracle-filter"]},
}
#: ablations also trained on every Original seed: Table 1 shows them as rows of their own
#: (all layers at once is the white-box column's own attack, so it tests the training attack as a cause;
#: the oracle filter tests the labels as a cause, in Table 1 and in Table 3)
MULTI_SEED_ABLATIONS = ("gat-all-layers", "gat-all-layers-long", "gat-oracle-filter", "gat-all-layers-oracle-filter",
                        "gat-random-filter", "gat-all-layers-random-filter")
#: the label test's comparisons (chapters 04 and 06): a filtered row minus the row it differs from in one
#: thing, per seed; the oracle filter against its unfiltered twin, the random filter against GAT (what a
#: smaller pool alone does), and the oracle filter against the random one (what correct labels do at a
#: pool of the same size)
LABEL_TEST_PAIRS = {"gat-oracle-filter": ("gat-oracle-filter", "gat"),
                    "gat-all-layers-oracle-filter": ("gat-all-layers-oracle-filter", "gat-all-layers"),
                    "gat-random-filter": ("gat-random-filter", "gat"),
                    "oracle-vs-random-filter": ("gat-oracle-filter", "gat-random-filter"),
                    "gat-all-layers-random-filter": ("gat-all-layers-random-filter", "gat-all-layers"),
                    "all-layers-oracle-vs-random-filter": ("gat-all-layers-oracle-filter",
                                                           "gat-all-layers-random-filter")}
DEFENSE_ROWS = {"at-pgd": {"mode": "at_pgd"}, "advprop": {"mode": "advprop"}, "at-spatial": {"mode": "at_spatial"},
                "at-recolor": {"mode": "at_recolor"}, "pat": {"mode": "pat"}}
ALL_ROWS = {**ROWS, **ABLATIONS, **DEFENSE_ROWS}
DEFENSE_MODES = tuple(row["mode"] for row in DEFENSE_ROWS.values())


def defense_attack_settings(mode: str) -> dict:
    """The training attack of a defense mode, as its recipe records it (``gatlib.defenses`` defaults)."""
    from . import defenses

    defaults = {"at_pgd": defenses.AT_PGD_DEFAULTS, "advprop": defenses.AT_PGD_DEFAULTS,
                "at_spatial": defenses.AT_SPATIAL_DEFAULTS, "at_recolor": defenses.AT_RECOLOR_DEFAULTS,
                "pat": defenses.PAT_DEFAULTS}[mode]
    return {"attack": dict(defaults), "mix": "split" if mode == "advprop" else "replace"}


def original_name(seed: int) -> str:
    return f"mnist-classifier-s{seed}"


def zoo_name(row: str, seed: int) -> str:
    """The zoo entry of ``row`` and seed k: ``mnist-classifier-s{k}`` for Original, else ``{row}-s{k}``."""
    return original_name(seed) if row == ORIGINAL else f"{row}-s{seed}"


def zoo_recipe(row: str, seed: int, **overrides) -> dict:
    """The recipe of a fine-tuned row: ``DEFAULTS`` < ``overrides`` < the row's own settings, keeping
    only the keys its mode uses (so a chapter may pass all its parameters for every row)."""
    if row not in ALL_ROWS:
        raise ValueError(f"unknown fine-tuned row {row!r}; known: {', '.join(ALL_ROWS)}")
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown recipe settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **overrides, **ALL_ROWS[row]}
    mode = settings.pop("mode")
    settings["steps"] *= settings.pop("steps_factor", 1)
    recipe = {"row": row, "mode": mode, "seed": int(seed), "base": original_name(seed)}
    recipe.update({key: settings[key] for key in MODE_KEYS[mode]})
    if mode in DEFENSE_MODES:
        recipe.update(defense_attack_settings(mode))
    recipe = _as_stored(recipe)
    for key in _ADDED_LATER:   # at the paper's default the key is left out, so earlier recipes read as before
        if key in recipe and recipe[key] == _as_stored(DEFAULTS[key]):
            del recipe[key]
    return recipe


def _as_stored(value):
    """``value`` as the manifest's JSON will hold it (tuples become lists)."""
    return json.loads(json.dumps(value))


def recipe_settings(parameters: dict) -> dict:
    """The recipe settings among a chapter's parameters (a notebook passes ``globals()``): every key
    of ``DEFAULTS`` the chapter defines, so its ``row_models(..., **recipe_settings(globals()))`` is
    checked against the zoo's recipes without each chapter listing the keys again."""
    return {key: parameters[key] for key in DEFAULTS if key in parameters}


def make_mode(row: str, G, *, eps: float = 0.0, delta: float = 0.0, seed: int = 0, pool_size: int = 1024, refresh_every: int = 50,
              moves=("style", "noise", "both"), keep_only_fooled: bool = True, group_size: int = 2,
              max_iters: int = 10, chunk: int = 128, mode: str | None = None, oracle_filter=(),
              random_keep: float = 1.0):
    """The training mode of ``row``: ``"standard"``, or a ``GATMode`` (``attack=False`` for the
    generated-data control). ``group_size=0`` moves all layers at once."""
    from .gat import GATMode

    mode = mode or ALL_ROWS[row]["mode"]
    if mode == "standard":
        return "standard"
    if mode in DEFENSE_MODES:
        from . import defenses

        if mode == "advprop":
            return defenses.advprop(seed=seed)
        return {"at_pgd": defenses.at_pgd, "at_spatial": defenses.at_spatial, "at_recolor": defenses.at_recolor,
                "pat": defenses.pat}[mode](seed=seed)
    if mode not in ("generated", "gat"):
        raise ValueError(f"unknown fine-tuning mode {mode!r}")
    if mode == "gat" and eps <= 0 and delta <= 0:
        raise ValueError("GAT needs a positive style step eps and/or noise step delta (chapter 02's choice)")
    label_oracles = None
    if oracle_filter:
        from . import zoo

        label_oracles = {name: zoo.load(name) for name in oracle_filter}
    return GATMode(G, eps=eps, delta=delta, max_iters=max_iters, pool_size=pool_size, refresh_every=refresh_every,
                   chunk=chunk, group_size=group_size if group_size > 0 else G.num_layers, moves=tuple(moves),
                   keep_only_fooled=keep_only_fooled, attack=mode == "gat", seed=seed, label_oracles=label_oracles,
                   random_keep=random_keep)


# ------------------------------------------------------------------------------ fine-tuning
class LearningCurve:
    """Clean accuracy and white-box robustness measured during training (see the module docstring)."""

    def __init__(self, G, eval_set, *, eps: float, delta: float, samples: int = 200, max_iters: int = 10,
                 seed: int = 0, every: int = 50, batch_size: int = 250):
        if every < 1:
            raise ValueError(f"eval_every must be positive, got {every}")
        self.G, self.eval_set, self.eps, self.delta = G, eval_set, eps, delta
        self.samples, self.max_iters, self.seed, self.every, self.batch_size = samples, max_iters, seed, every, batch_size
        self.points: list[dict] = []

    def measure(self, model: nn.Module, step: int) -> dict:
        training = model.training
        point = {"step": int(step), "clean_accuracy": classifiers.accuracy(model, self.eval_set)}
        if self.G is not None and self.samples > 0:
            white = white_box_accuracy(self.G, model, self.samples, CURVE_SEED_BASE + self.seed, self.eps, self.delta,
                                       self.max_iters, self.batch_size)
            point.update(adversarial_accuracy=white["accuracy"], attack_success=white["success_rate"])
        model.train(training)
        self.points.append(point)
        return point


class _Tracked:
    """Wraps a mode: counts the optimiser steps and takes learning-curve points before a step."""

    def __init__(self, mode, curve: LearningCurve | None):
        from .training import MODES

        self.mode = MODES[mode] if isinstance(mode, str) else mode
        self.curve, self.calls = curve, 0

    def __call__(self, model, images, labels, step):
        if self.curve is not None and step % self.curve.every == 0:
            self.curve.measure(model, step)
        self.calls += 1
        return self.mode(model, images, labels, step)


def step_schedule(train_size: int, batch_size: int, steps: int) -> tuple[int, int]:
    """``(epochs, steps per epoch)`` with ``epochs * per_epoch == steps`` exactly, ``per_epoch`` at
    most one pass over ``train_size`` images, and as few epochs as possible."""
    per_pass = train_size // batch_size
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if per_pass < 1:
        raise ValueError(f"{train_size} training images are fewer than one batch of {batch_size}")
    for epochs in range(math.ceil(steps / per_pass), steps + 1):
        if steps % epochs == 0:
            return epochs, steps // epochs
    raise AssertionError("unreachable: epochs == steps always divides")


def fine_tune(original: nn.Module, train_set, mode="standard", steps: int = 400, *, batch_size: int = 128,
              lr: float = 5e-4, weight_decay: float = 1e-4, seed: int = 0, device="cpu", checkpoint=None,
              curve: LearningCurve | None = None, progress: bool = True) -> tuple[nn.Module, dict]:
    """A copy of ``original`` trained for exactly ``steps`` optimiser steps in ``mode``; the
    original is left untouched. Returns ``(model in eval mode, history)`` with ``history`` =
    ``train_classifier``'s per-epoch loss/accuracy plus ``steps``, ``seconds`` and ``curve`` (the
    learning-curve points, when ``curve`` is given; a last point after the final step)."""
    from .training import train_classifier

    model = copy.deepcopy(original).to(device)
    epochs, per_epoch = step_schedule(len(train_set), batch_size, steps)
    tracked = _Tracked(mode, curve)
    started = time.time()
    history = train_classifier(model, train_set, epochs=epochs, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, seed=seed, device=device, mode=tracked,
                               checkpoint=checkpoint, max_steps=per_epoch, progress=progress)
    if curve is not None and (not curve.points or curve.points[-1]["step"] != steps):
        curve.measure(model, steps)
    model.eval()
    history = {**history, "steps": tracked.calls, "seconds": time.time() - started,
               "curve": list(curve.points) if curve is not None else []}
    return model, history


def train_zoo_model(row: str, seed: int, G=None, *, train_set=None, curve_set=None, original: nn.Module | None = None,
                    device="cpu", progress: bool = True, **overrides):
    """Fine-tune ``row`` for seed k by its ``zoo_recipe(row, k, **overrides)``.

    ``G`` defaults to the recipe's generator, ``original`` to the zoo's ``mnist-classifier-s{k}``,
    ``train_set`` to MNIST train, ``curve_set`` to ``curve_images`` MNIST valid digits.
    Returns ``(model, history, mode_log, seconds)``; ``mode_log`` is ``GATMode.log`` (one entry per
    pool refresh: attacked, kept, fooled rate, seconds), empty for ``standard``."""
    from . import data, zoo
    from .chapter import seed_everything

    recipe = zoo_recipe(row, seed, **overrides)
    defense = recipe["mode"] in DEFENSE_MODES       # Table 2's baselines: no generator involved
    started = time.time()
    seed_everything(seed)
    if G is None and not defense:
        G = zoo.generator(recipe["generator"], device=device, seed=seed)
    original = original if original is not None else zoo.load(recipe["base"], device=device)
    train_set = train_set if train_set is not None else data.mnist("train")
    curve_set = curve_set if curve_set is not None else data.mnist("valid").subset(recipe["curve_images"], seed)
    mode = make_mode(row, G, seed=seed, mode=recipe["mode"],
                     **{k: recipe[k] for k in ("eps", "delta", "max_iters", *_POOL, *_ATTACK) if k in recipe})
    if defense:   # clean-accuracy curve only (the defenses' own attacks are measured in chapter 05)
        curve = LearningCurve(None, curve_set, eps=0.0, delta=0.0, samples=0, seed=seed, every=recipe["eval_every"])
    else:
        curve = LearningCurve(G, curve_set, eps=recipe["eps"], delta=recipe["delta"], samples=recipe["curve_samples"],
                              max_iters=recipe["max_iters"], seed=seed, every=recipe["eval_every"])
    if recipe["mode"] == "advprop":   # auxiliary BNs while training, the clean BNs only afterwards
        from .defenses import use_mix_batchnorm

        original = use_mix_batchnorm(copy.deepcopy(original))
    model, history = fine_tune(original, train_set, mode, recipe["steps"], batch_size=recipe["batch_size"],
                               lr=recipe["lr"], weight_decay=recipe["weight_decay"], seed=seed, device=device,
                               curve=curve, progress=progress)
    if recipe["mode"] == "advprop":
        from .defenses import collapse_mix_batchnorm

        model = collapse_mix_batchnorm(model).eval()
    mode_log = list(mode.log) if hasattr(mode, "log") else []
    return model, history, mode_log, time.time() - started


def zoo_payload(row: str, seed: int, progress: bool = True, device="cpu", **overrides):
    """Everything ``gatlib.zoo`` needs to record ``{row}-s{k}``: ``(payload, metrics, seconds, recipe)``
    (payload: ``state_dict``, ``arch``, ``name``, ``history``, ``mode_log``, ``recipe``)."""
    from . import data

    recipe = zoo_recipe(row, seed, **overrides)
    model, history, mode_log, seconds = train_zoo_model(row, seed, progress=progress, device=device, **overrides)
    last = history["curve"][-1] if history["curve"] else {}
    metrics = {"mnist_test_accuracy": classifiers.accuracy(model, data.mnist("test")),
               "optdigits_accuracy": classifiers.accuracy(model, data.optdigits()),
               "curve_adversarial_accuracy": last.get("adversarial_accuracy"),
               "steps": history["steps"], "seconds_generating": sum(e["seconds"] for e in mode_log)}
    payload = {"state_dict": model.state_dict(), "arch": "small_cnn", "name": zoo_name(row, seed),
               "history": history, "mode_log": mode_log, "recipe": recipe}
    return payload, metrics, seconds, recipe


# ------------------------------------------------------------------------- chapters' models
@dataclass
class RowModels:
    """Models of several rows and seeds, with how each came to be."""
    seeds: list
    models: dict = field(default_factory=dict)      # row -> [model per seed]
    histories: dict = field(default_factory=dict)   # row -> [history per seed] (None for Original)
    mode_logs: dict = field(default_factory=dict)   # row -> [GATMode log per seed]
    seconds: dict = field(default_factory=dict)     # row -> [training seconds per seed]
    sources: dict = field(default_factory=dict)     # row -> [zoo name + command, or "retrained"]

    def add(self, row: str, model, history=None, mode_log=None, seconds=None, source: str = "") -> None:
        """Append one seed's model of ``row`` with how it came to be (rows keep their first-seen order)."""
        self.models.setdefault(row, []).append(model)
        self.histories.setdefault(row, []).append(history)
        self.mode_logs.setdefault(row, []).append(mode_log if mode_log is not None else [])
        self.seconds.setdefault(row, []).append(seconds)
        self.sources.setdefault(row, []).append(source)

    def provenance(self):
        import pandas as pd

        return pd.DataFrame([{"row": row, "seed": seed, "source": source, "train_seconds": seconds}
                             for row in self.models for seed, source, seconds
                             in zip(self.seeds, self.sources[row], self.seconds[row])])

    def total_train_seconds(self) -> float:
        return float(sum(s for values in self.seconds.values() for s in values if s is not None))


def _load_from_zoo(row: str, seed: int, expected: dict | None, device):
    from . import zoo

    name = zoo_name(row, seed)
    if name not in zoo.ENTRIES:
        raise LookupError(f"the zoo has no model {name!r} yet: register it in gatlib/zoo.py (recipe "
                          f"gatlib.finetune.zoo_recipe({row!r}, {seed})) and build it with "
                          f"`python -m gatlib.zoo train {name}`, or run this chapter with retrain=True")
    path = zoo.verified_path(name)   # names the command when the file is missing or corrupt
    recorded = zoo.read_manifest().get(name, {})
    if expected is not None:
        stored = recorded.get("recipe", {})
        differ = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
        if differ:
            listed = ", ".join(f"{k}: zoo {a!r} vs asked {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"zoo model {name!r} was trained with another recipe ({listed}); set the chapter's "
                             f"parameters to the zoo's recipe, rebuild it with `python -m gatlib.zoo train {name}`, "
                             "or run with retrain=True")
    model = zoo.load(name, device=device)
    extras = torch.load(path, map_location="cpu", weights_only=True)
    return model, extras.get("history"), extras.get("mode_log", []), recorded.get("train_seconds"), \
        f"zoo {name} · `{zoo.entry(name).command}`"


def row_models(rows: Sequence[str], seeds: Sequence[int], *, retrain: bool = False, G=None, train_set=None,
               device="cpu", progress: bool = True, **overrides) -> RowModels:
    """The models of ``rows`` (Original and/or fine-tuned rows) for every seed.

    Original always comes from the zoo (chapter 00's ``mnist-classifier-s{k}``). A fine-tuned row
    comes from the zoo — its recorded recipe must equal ``zoo_recipe(row, k, **overrides)``, else
    an error says what differs — or, with ``retrain=True``, is fine-tuned here (in memory; the zoo
    is never written). There is no silent fallback: a missing zoo model is an error naming the
    command that builds it."""
    out = RowModels(seeds=list(seeds))
    for row in rows:
        for seed in seeds:
            if row == ORIGINAL:
                model, history, log, seconds, source = _load_from_zoo(row, seed, None, device)
            elif retrain:
                original = _load_from_zoo(ORIGINAL, seed, None, device)[0]
                model, history, log, seconds = train_zoo_model(row, seed, G, train_set=train_set, original=original,
                                                               device=device, progress=progress, **overrides)
                source = "retrained in this run"
            else:
                model, history, log, seconds, source = _load_from_zoo(row, seed, zoo_recipe(row, seed, **overrides),
                                                                      device)
            out.add(row, model, history, log, seconds, source)
    return out


def paper_rows(arch: str, num_classes: int, paths_by_row: dict) -> RowModels:
    """``paper`` profile: the user's checkpoints, ``{row: "seed0.pt,seed1.pt,..."}`` (empty rows
    are skipped; Original is required), built with ``classifiers.paper_classifier``."""
    lists = {row: [p.strip() for p in str(paths).split(",") if p.strip()] for row, paths in paths_by_row.items()}
    lists = {row: paths for row, paths in lists.items() if paths}
    if ORIGINAL not in lists:
        raise ValueError("the paper profile needs the Original model's checkpoint(s): set original_paths")
    counts = {len(paths) for paths in lists.values()}
    if len(counts) != 1:
        raise ValueError(f"every row needs one checkpoint per seed; got {({r: len(p) for r, p in lists.items()})}")
    out = RowModels(seeds=list(range(counts.pop())))
    for row, paths in lists.items():
        for path in paths:
            out.add(row, classifiers.paper_classifier(arch, num_classes, Path(path)).eval(),
                    source=f"user checkpoint {path}")
    return out


def curve_table(rows: RowModels):
    """The learning curves of every trained model as one long table: row, seed, step, clean
    accuracy, white-box accuracy and attack success on the curve latents."""
    import pandas as pd

    records = []
    for row, histories in rows.histories.items():
        for seed, history in zip(rows.seeds, histories):
            for point in (history or {}).get("curve", []):
                records.append({"row": row, "seed": seed, **point})
    return pd.DataFrame(records)


def refresh_table(rows: RowModels):
    """Every pool refresh of every GATMode run: row, seed, step, attacked, kept, fooled rate, seconds."""
    import pandas as pd

    records = [{"row": row, "seed": seed, **entry} for row, logs in rows.mode_logs.items()
               for seed, log in zip(rows.seeds, logs) for entry in (log or [])]
    return pd.DataFrame(records, columns=["row", "seed", "step", "attacked", "kept", "fooled_rate", "seconds"])
