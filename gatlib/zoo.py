"""The model zoo: our own small checkpoints, committed with the package, each reproducible by one command.

    python -m gatlib.zoo list                       # names, sha256, the command that made each
    python -m gatlib.zoo train mnist-classifier     # retrain a group (all seeds) or one entry
    python -m gatlib.zoo verify                     # check every file against its recorded sha256

``load(name)`` returns the model in eval mode after checking the file's sha256 against the manifest
(``checkpoints/manifest.json``) and reading it with ``torch.load(weights_only=True)``: a corrupted or
swapped file is refused with an error that names it. Later issues add generators here.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = CHECKPOINT_DIR / "manifest.json"
WORK_DIR = Path(__file__).resolve().parent / "zoo_work"  # resumable training state, not committed


class ZooIntegrityError(ValueError):
    """A zoo file is missing, or its bytes are not the ones recorded in the manifest."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    group: str
    kind: str                 # "classifier" or "generator"
    arch: str
    seed: int
    description: str
    recipe: dict = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.name}.pt"

    @property
    def path(self) -> Path:
        return CHECKPOINT_DIR / self.filename

    @property
    def command(self) -> str:
        return f"python -m gatlib.zoo train {self.name}"


_CLASSIFIER_RECIPE = {"epochs": 3, "batch_size": 128, "lr": 2e-3, "weight_decay": 1e-4}

ENTRIES: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    ENTRIES[entry.name] = entry
    return entry


for _seed in range(3):
    register(ZooEntry(f"mnist-classifier-s{_seed}", "mnist-classifier", "classifier", "small_cnn", _seed,
                      "The attacked classifier F (SmallCNN with BatchNorm) trained on MNIST train, "
                      f"seed {_seed}: the paper's 'Original' model.", _CLASSIFIER_RECIPE))
register(ZooEntry("oracle-mlp", "oracle", "classifier", "mlp", 10,
                  "Label oracle, never attacked: a 3-layer MLP.", {**_CLASSIFIER_RECIPE, "epochs": 5}))
register(ZooEntry("oracle-widecnn", "oracle", "classifier", "wide_cnn", 11,
                  "Label oracle, never attacked: a wider CNN without BatchNorm.", _CLASSIFIER_RECIPE))
register(ZooEntry("oracle-shufflenet", "oracle", "classifier", "shufflenet", 12,
                  "Label oracle, never attacked: torchvision ShuffleNetV2 x0.5 (weights=None) on 64x64 upsampled digits.",
                  _CLASSIFIER_RECIPE))
register(ZooEntry("mnist-stylegan2", "generator", "generator", "stylegan2", 0,
                  "Class-conditional StyleGAN2 at 32x32 trained on MNIST train (G_ema): the generator g whose "
                  "styles y and noises eta the attacks perturb.", {"total_kimg": 500.0}))
# A control for chapter 02: is it because our generator can draw every digit that the attack turns
# digits into other digits? The same generator, trained on 7s only for 50 kimg more (resumed from its
# own training state, with its discriminator and optimisers), draws 7s better and the other nine
# digits worse; chapter 02 attacks its 7s.
register(ZooEntry("mnist-stylegan2-sevens", "generator-control", "generator", "stylegan2", 0,
                  "mnist-stylegan2 trained 50 kimg more on MNIST train's 7s only (G_ema): chapter 02's "
                  "specialised-generator control.", {"base": "mnist-stylegan2", "digit": 7, "total_kimg": 550.0}))

# A control for chapter 02: does the attack change the digit because F is so good? The paper's LSUN
# classifier scores 88.9 %; ours 99.6 %. The same SmallCNN trained on only a few MNIST digits (nested
# seeded subsets of MNIST train, about 100 optimiser steps each) is weaker by design; chapter 02
# attacks each one with the same step sizes and asks the oracles what the fooled digits show.
FEW_DIGITS = (100, 300, 1000, 3000)
for _digits in FEW_DIGITS:
    register(ZooEntry(f"mnist-classifier-few-{_digits}", "classifier-control", "classifier", "small_cnn", 0,
                      f"SmallCNN trained on {_digits} MNIST train digits only (seed 0): chapter 02's weaker-F "
                      "control.", {**_CLASSIFIER_RECIPE, "train_digits": _digits, "batch_size": 64,
                                   "epochs": -(-6400 // _digits)}))

# §3.2: the SPADE generator, segmenters and detectors on MNIST scenes (gatlib.scenes). Their names follow
# spade_gat's rule, which chapter 07 uses to find each row (spade_gat imports zoo lazily: no cycle).
from .spade_gat import GAT_RECIPE as _SCENE_GAT, label_filter_name as _label_filter_name  # noqa: E402
from .spade_gat import zoo_name as scene_zoo_name  # noqa: E402

SCENE_TRAIN = {"scenes": 20_000, "scene_seed": 0}          # training scenes: MNIST train digits
SCENE_TEST = {"count": 1000, "seed": 10_000}                 # evaluation scenes: MNIST test digits
register(ZooEntry("mnist-spade", "scene-generator", "spade", "spade", 0,
                  "SPADE generator (z input, instance norm) trained on MNIST scenes with hinge + feature "
                  "matching: the generator whose gamma and beta the segmentation/detection attacks perturb.",
                  {"total_steps": 6000, **SCENE_TRAIN}))
_SCENE_ARCH = {"segmenter": "small_unet", "detector": "fcos_resnet18_fpn"}
for _seed in range(3):
    register(ZooEntry(scene_zoo_name("segmenter", "original", _seed), "scene-segmenter", "segmenter",
                      _SCENE_ARCH["segmenter"], _seed,
                      f"Small U-Net segmenting MNIST scenes (11 classes), seed {_seed}: the 'Original' segmenter.",
                      {"epochs": 3, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, **SCENE_TRAIN}))
    register(ZooEntry(scene_zoo_name("detector", "original", _seed), "scene-detector", "detector",
                      _SCENE_ARCH["detector"], _seed,
                      f"FCOS (ResNet-18 trunk to layer3, 64-channel FPN, weights=None) detecting digits in MNIST scenes, seed {_seed}: the "
                      "'Original' detector.",
                      {"epochs": 3, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4, **SCENE_TRAIN}))
    for _kind, _arch in _SCENE_ARCH.items():   # Table 1's "Adv. Trained" rows: GAT on γ/β iterates
        _base = scene_zoo_name(_kind, "original", _seed)
        register(ZooEntry(scene_zoo_name(_kind, "gat", _seed), f"scene-{_kind}-gat", _kind, _arch, _seed,
                          f"{_base} fine-tuned with GAT on SPADE gamma/beta attack iterates "
                          "(gatlib.spade_gat): Table 1's adversarially trained row.",
                          {"base": _base, "generator": "mnist-spade", **_SCENE_GAT, **SCENE_TRAIN}))
        # its control: the same fine-tuning on unperturbed renders (no eps, no iterates: nothing is attacked)
        register(ZooEntry(scene_zoo_name(_kind, "control-generated", _seed), f"scene-{_kind}-control", _kind, _arch,
                          _seed,
                          f"{_base} fine-tuned like its GAT row on unperturbed SPADE renders "
                          "(gatlib.spade_gat, attack=False): the control that separates render training from the attack.",
                          {"base": _base, "generator": "mnist-spade", "attack": False,
                           **{k: v for k, v in _SCENE_GAT.items() if k not in ("eps", "iterates")}, **SCENE_TRAIN}))
    # the segmenter's filtered rows: the same two fine-tunings, labels kept only where another seed's
    # Original segmenter agrees with the map (gatlib.spade_gat, label_filter)
    _base, _filter = scene_zoo_name("segmenter", "original", _seed), _label_filter_name(_seed)
    register(ZooEntry(scene_zoo_name("segmenter", "gat-filtered", _seed), "scene-segmenter-gat-filtered", "segmenter",
                      _SCENE_ARCH["segmenter"], _seed,
                      f"{_base} fine-tuned like its GAT row, the iterates' map labels kept only on pixels where "
                      f"{_filter} agrees with the map (gatlib.spade_gat, label_filter).",
                      {"base": _base, "generator": "mnist-spade", "label_filter": _filter, **_SCENE_GAT,
                       **SCENE_TRAIN}))
    register(ZooEntry(scene_zoo_name("segmenter", "control-generated-filtered", _seed), "scene-segmenter-control-filtered",
                      "segmenter", _SCENE_ARCH["segmenter"], _seed,
                      f"{_base} fine-tuned like its control on unperturbed renders, labels filtered by {_filter} "
                      "(gatlib.spade_gat, attack=False, label_filter).",
                      {"base": _base, "generator": "mnist-spade", "attack": False, "label_filter": _filter,
                       **{k: v for k, v in _SCENE_GAT.items() if k not in ("eps", "iterates")}, **SCENE_TRAIN}))


def _register_fine_tuned() -> None:
    """Table 1's fine-tuned rows (GAT and its two controls) on the three Original seeds, GAT's
    ablations on seed 0 (those in ``finetune.MULTI_SEED_ABLATIONS`` on all three) and Table 2's
    defenses on seed 0: each fine-tunes ``mnist-classifier-s{k}``
    (``gatlib.finetune``)."""
    from . import finetune

    for row in finetune.TRAINED_ROWS:
        for seed in range(3):
            register(ZooEntry(f"{row}-s{seed}", row, "classifier", "small_cnn", seed,
                              f"mnist-classifier-s{seed} fine-tuned: Table 1 row '{row}'", finetune.zoo_recipe(row, seed)))
    for row in finetune.ABLATIONS:
        for seed in range(3) if row in finetune.MULTI_SEED_ABLATIONS else (0,):
            register(ZooEntry(f"{row}-s{seed}", "gat-ablation", "classifier", "small_cnn", seed,
                              f"GAT ablation '{row}' (fine-tunes mnist-classifier-s{seed})",
                              finetune.zoo_recipe(row, seed)))
    for row in finetune.DEFENSE_ROWS:   # Table 2's baselines, seed 0 like the paper's single-run table
        register(ZooEntry(f"{row}-s0", "defense", "classifier", "small_cnn", 0,
                          f"Table 2 defense '{row}' (fine-tunes mnist-classifier-s0, same steps as GAT)",
                          finetune.zoo_recipe(row, 0)))


_register_fine_tuned()


# ------------------------------------------------------------------------------- manifest
def read_manifest() -> dict:
    if not MANIFEST.exists():
        return {}
    return json.loads(MANIFEST.read_text())


def _write_manifest(manifest: dict) -> None:
    tmp = MANIFEST.with_name(MANIFEST.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, MANIFEST)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise KeyError(f"no zoo entry {name!r}; known: {', '.join(ENTRIES)}")
    return ENTRIES[name]


def names(group: str | None = None) -> list[str]:
    return [n for n, e in ENTRIES.items() if group is None or e.group == group]


def is_trained(name: str) -> bool:
    """Whether ``name`` has a checkpoint in the manifest and on disk (not checked against its sha256)."""
    return name in read_manifest() and entry(name).path.exists()


def verified_path(name: str, path: Path | None = None) -> Path:
    """The checkpoint file of ``name`` after checking its sha256 against the manifest."""
    zoo_entry = entry(name)
    path = Path(path) if path else zoo_entry.path
    recorded = read_manifest().get(name)
    if recorded is None:
        raise ZooIntegrityError(f"zoo entry {name!r} has no recorded checkpoint; make it with `{zoo_entry.command}`")
    if not path.is_file():
        raise ZooIntegrityError(f"zoo checkpoint {path} is missing; make it with `{zoo_entry.command}`")
    actual = sha256_of(path)
    if actual != recorded["sha256"]:
        raise ZooIntegrityError(f"zoo checkpoint {path} has sha256 {actual[:16]}…, the manifest records "
                                f"{recorded['sha256'][:16]}…: the file is corrupt or not ours; "
                                f"restore it from git or rebuild it with `{zoo_entry.command}`")
    return path


def load(name: str, device: str | torch.device = "cpu", path: Path | None = None):
    """The zoo model ``name`` in eval mode, its bytes verified and loaded with ``weights_only=True``."""
    from . import classifiers

    zoo_entry = entry(name)
    checkpoint = torch.load(verified_path(name, path), map_location=device, weights_only=True)
    if zoo_entry.kind == "generator":
        from .generators.stylegan2 import Generator

        model = Generator(**checkpoint["config"])
    elif zoo_entry.kind == "spade":
        from .generators.spade import SPADEGenerator

        model = SPADEGenerator(**checkpoint["config"])
    elif zoo_entry.kind in ("segmenter", "detector"):
        model = _scene_model(zoo_entry.kind)
    else:
        model = classifiers.build(zoo_entry.arch)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def generator(source: str, device: str | torch.device = "cpu", seed: int = 0, category: int | None = None):
    """The generator a chapter asks for: a zoo name (``mnist-stylegan2``), a checkpoint file
    (rosinality ``.pt``, NVlabs ``.pkl``, or ours; read by ``gatlib.generators.checkpoints``), or
    ``random-tiny`` — a small randomly initialised StyleGAN2 for the ``smoke`` profile (its noise
    strengths are set non-zero so that noise moves the image, as in a trained generator).

    ``category``: for an *unconditional* generator (one category, like the paper's LSUN models),
    the attacked classifier's class index of that category — the label of every image it makes
    (``attacks.latent.class_labels``). ``None`` or a negative value: not given. A conditional
    generator's labels are its classes, so a category there is an error."""
    G = _generator(source, device, seed)
    if category is not None and int(category) >= 0:
        if G.num_classes:
            raise ValueError(f"generator {source!r} is class-conditional ({G.num_classes} classes): its labels are its "
                             f"classes, so generator_class / category must stay unset (got {category})")
        G.category = int(category)
    return G


def spade_generator(source: str, device: str | torch.device = "cpu", seed: int = 0, crop_size: int = 256):
    """The SPADE generator a chapter asks for: a zoo name (``mnist-spade``), an NVlabs
    ``latest_net_G.pth`` (``crop_size`` is not in the file: COCO-stuff's is 256), or ``random-tiny``
    — a small random SPADE on MNIST scenes' 11 classes for the ``smoke`` profile."""
    from .generators.spade import SPADEGenerator, load_nvlabs

    if source == "random-tiny":
        torch.manual_seed(seed)
        return SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                              spectral=False, hidden=8).to(device).eval()
    if source in ENTRIES:
        if entry(source).kind != "spade":
            raise ValueError(f"zoo entry {source!r} is a {entry(source).kind}, not a SPADE generator")
        return load(source, device)
    return load_nvlabs(source, crop_size=crop_size, device=device)


def _generator(source: str, device, seed: int):
    from .generators.stylegan2 import Generator

    if source == "random-tiny":
        torch.manual_seed(seed)
        G = Generator(channels={4: 32, 8: 32, 16: 16, 32: 16}, z_dim=32, w_dim=32, mapping_layers=2)
        with torch.no_grad():
            for layer in G.layers:
                layer.noise_strength.fill_(0.1)
        return G.to(device).eval()
    if source in ENTRIES:
        if entry(source).kind != "generator":
            raise ValueError(f"zoo entry {source!r} is a {entry(source).kind}, not a generator")
        return load(source, device)
    from .generators.checkpoints import load_generator

    return load_generator(source, device=device).eval()


def info(name: str) -> dict:
    """What the manifest records of ``name`` (sha256, size, the metrics measured when it was trained)."""
    return {"name": name, "command": entry(name).command, **read_manifest().get(name, {})}


# ------------------------------------------------------------------------------- training
def train(name: str, progress: bool = True, max_minutes: float | None = None) -> dict | None:
    """(Re)train one zoo entry with its recipe, save it, record its sha256 and metrics.

    Classifiers train from scratch in minutes. The generator resumes from its training state in
    ``zoo_work/`` and stops after ``max_minutes`` (returning None while unfinished): run the same
    command again to go on."""
    from . import classifiers, data
    from .chapter import seed_everything
    from .training import train_classifier

    zoo_entry = entry(name)
    if zoo_entry.kind == "generator":
        return _train_generator(zoo_entry, progress, max_minutes)
    if zoo_entry.kind == "spade":
        return _train_spade(zoo_entry, progress, max_minutes)
    if zoo_entry.kind in ("segmenter", "detector"):
        return _train_scene_model(zoo_entry, progress)
    if "base" in zoo_entry.recipe:   # a fine-tuned row of Table 1 (needs the generator)
        from .finetune import zoo_payload

        payload, metrics, seconds, recipe = zoo_payload(zoo_entry.recipe["row"], zoo_entry.seed, progress=progress)
        return _record(zoo_entry, payload, metrics, seconds, recipe)
    recipe = zoo_entry.recipe
    seed_everything(zoo_entry.seed)
    model = classifiers.build(zoo_entry.arch)
    WORK_DIR.mkdir(exist_ok=True)
    started = time.time()
    # "train_digits": a seeded subset of MNIST train (the subsets of one seed are nested)
    train_set = data.mnist("train").subset(recipe.get("train_digits", 0), seed=zoo_entry.seed)
    history = train_classifier(model, train_set, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                               lr=recipe["lr"], weight_decay=recipe["weight_decay"], seed=zoo_entry.seed,
                               checkpoint=WORK_DIR / f"{name}.state.pt", progress=progress)
    metrics = {
        "mnist_valid_accuracy": classifiers.accuracy(model, data.mnist("valid")),
        "mnist_test_accuracy": classifiers.accuracy(model, data.mnist("test")),
        "optdigits_accuracy": classifiers.accuracy(model, data.optdigits()),
        "final_train_loss": history["loss"][-1],
    }
    recorded = _record(zoo_entry, {"state_dict": model.state_dict(), "arch": zoo_entry.arch, "name": name},
                       metrics, time.time() - started, recipe)
    (WORK_DIR / f"{name}.state.pt").unlink(missing_ok=True)
    return recorded


def _record(zoo_entry: ZooEntry, payload: dict, metrics: dict, train_seconds: float, recipe: dict) -> dict:
    """Write the checkpoint atomically and record its sha256, metrics and provenance."""
    from .chapter import git_commit

    CHECKPOINT_DIR.mkdir(exist_ok=True)
    tmp = zoo_entry.path.with_name(zoo_entry.filename + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, zoo_entry.path)
    with _manifest_lock():   # two trainings may finish together: neither entry may be lost
        manifest = read_manifest()
        manifest[zoo_entry.name] = {"sha256": sha256_of(zoo_entry.path), "bytes": zoo_entry.path.stat().st_size,
                                    "arch": zoo_entry.arch, "seed": zoo_entry.seed, "recipe": recipe,
                                    "metrics": metrics, "train_seconds": round(train_seconds, 1),
                                    "git_commit": git_commit(), "torch": torch.__version__,
                                    "command": zoo_entry.command}
        _write_manifest(manifest)
    return manifest[zoo_entry.name]


@contextlib.contextmanager
def _manifest_lock():
    """An exclusive lock (``flock``) around a read-modify-write of the manifest."""
    import fcntl

    lock = MANIFEST.with_name(MANIFEST.name + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_generator(zoo_entry: ZooEntry, progress: bool, max_minutes: float | None) -> dict | None:
    from . import data
    from .generators.training import GANRecipe, train_gan

    recipe = dict(zoo_entry.recipe)
    base, digit = recipe.pop("base", None), recipe.pop("digit", None)
    train_set = data.mnist("train") if digit is None else data.mnist("train").of_class(digit)
    WORK_DIR.mkdir(exist_ok=True)
    state_path = WORK_DIR / f"{zoo_entry.name}.state.pt"
    base_seconds = 0.0
    if base is not None:
        # go on from the base generator's final training state (G, D, G_ema, optimisers, RNGs); its
        # recipe must match but for the length, which _load_state checks
        base_state = WORK_DIR / f"{base}.state.pt"
        if not base_state.is_file():
            raise FileNotFoundError(f"{zoo_entry.name} continues {base}'s training: its state {base_state} is "
                                    f"missing (train {base} first: `{entry(base).command}`)")
        if not state_path.exists():
            shutil.copyfile(base_state, state_path)
        recipe = {**entry(base).recipe, **recipe}
        # the resumed state counts the base's training time too; this entry records only its own
        base_seconds = torch.load(base_state, map_location="cpu", weights_only=True)["train_seconds"]
    recipe = GANRecipe(seed=zoo_entry.seed, **recipe)
    state = train_gan(recipe, train_set, state_path, max_minutes=max_minutes, progress=progress)
    if not state["done"]:
        return None
    G_ema = state["G_ema"]
    G_ema.estimate_w_avg(n=4096, generator=torch.Generator().manual_seed(zoo_entry.seed))
    metrics = {"kimg": state["images_seen"] / 1000, "steps": state["step"]}
    payload = {"state_dict": G_ema.state_dict(), "config": G_ema.config, "name": zoo_entry.name,
               "history": state["history"]}
    return _record(zoo_entry, payload, metrics, state["train_seconds"] - base_seconds, zoo_entry.recipe)


def _scene_model(kind: str) -> torch.nn.Module:
    from . import segdet

    return segdet.SmallUNet() if kind == "segmenter" else segdet.detector()


def _train_spade(zoo_entry: ZooEntry, progress: bool, max_minutes: float | None) -> dict | None:
    from . import scenes
    from .generators.spade_training import SpadeRecipe, train_spade

    recipe = SpadeRecipe(seed=zoo_entry.seed, total_steps=zoo_entry.recipe["total_steps"])
    train_scenes = scenes.make_scenes(zoo_entry.recipe["scenes"], "train", seed=zoo_entry.recipe["scene_seed"])
    WORK_DIR.mkdir(exist_ok=True)
    state = train_spade(recipe, train_scenes, WORK_DIR / f"{zoo_entry.name}.state.pt", max_minutes=max_minutes,
                        progress=progress)
    if not state["done"]:
        return None
    G = state["G"].eval()
    # spectral norm folded into plain weights: the zoo file loads into SPADEGenerator(spectral=False)
    from .generators.spade import SPADEGenerator, _fold_spectral_norm

    config = {**G.config, "spectral": False}
    plain = SPADEGenerator(**config)
    plain.load_state_dict(_fold_spectral_norm(G.state_dict()))
    payload = {"state_dict": plain.state_dict(), "config": config, "name": zoo_entry.name, "history": state["history"]}
    metrics = {"steps": state["step"]}
    return _record(zoo_entry, payload, metrics, state["train_seconds"], zoo_entry.recipe)


def _train_scene_model(zoo_entry: ZooEntry, progress: bool) -> dict:
    """A segmenter or detector on MNIST scenes (``task`` of the one training loop), evaluated on
    test scenes of MNIST test digits and of optdigits."""
    from . import scenes, segdet
    from .chapter import seed_everything
    from .training import train_classifier

    recipe = zoo_entry.recipe
    seed_everything(zoo_entry.seed)
    train_scenes = scenes.make_scenes(recipe["scenes"], "train", seed=recipe["scene_seed"])
    task = "segmentation" if zoo_entry.kind == "segmenter" else "detection"
    WORK_DIR.mkdir(exist_ok=True)
    started = time.time()
    if "base" in recipe:     # GAT fine-tuning of a trained scene model (gatlib.spade_gat)
        from .spade_gat import fine_tune

        model = load(recipe["base"]).train()
        G = load(recipe["generator"])
        history = fine_tune(model, G, train_scenes, task, steps=recipe["steps"], batch_size=recipe["batch_size"],
                            lr=recipe["lr"], weight_decay=recipe["weight_decay"], eps=recipe.get("eps", 0.0),
                            iterates=recipe.get("iterates", 1), seed=zoo_entry.seed, progress=progress,
                            attack=recipe.get("attack", True),
                            label_filter=load(recipe["label_filter"]).eval() if "label_filter" in recipe else None,
                            checkpoint=WORK_DIR / f"{zoo_entry.name}.state.pt")
    else:
        model = _scene_model(zoo_entry.kind)
        history = train_classifier(model, train_scenes, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                                   lr=recipe["lr"], weight_decay=recipe["weight_decay"], seed=zoo_entry.seed,
                                   checkpoint=WORK_DIR / f"{zoo_entry.name}.state.pt", progress=progress, task=task)
    metrics = {"final_train_loss": history["loss"][-1]}
    if history.get("pixels_kept") is not None:
        metrics["label_filter_pixels_kept"] = history["pixels_kept"]
    for source in ("mnist", "optdigits"):
        test = scenes.make_scenes(SCENE_TEST["count"], "test", seed=SCENE_TEST["seed"], source=source)
        if task == "segmentation":
            numbers = segdet.segmentation_metrics(segdet.segmentation_predictions(model, test.images), test.masks)
        else:
            numbers = segdet.detection_metrics(segdet.detections(model, test.images), test.targets())
        metrics.update({f"{source}_scenes_{key}": value for key, value in numbers.items()})
    recorded = _record(zoo_entry, {"state_dict": model.state_dict(), "arch": zoo_entry.arch, "name": zoo_entry.name},
                       metrics, time.time() - started, recipe)
    (WORK_DIR / f"{zoo_entry.name}.state.pt").unlink(missing_ok=True)
    return recorded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatlib.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list zoo entries")
    sub.add_parser("verify", help="check every committed checkpoint against its sha256")
    train_parser = sub.add_parser("train", help="retrain an entry, a group or 'all'")
    train_parser.add_argument("target")
    train_parser.add_argument("--max-minutes", type=float, default=None,
                              help="stop a long (generator) training after this many minutes; rerun to resume")
    args = parser.parse_args(argv)

    if args.command == "list":
        manifest = read_manifest()
        for name, zoo_entry in ENTRIES.items():
            sha = manifest.get(name, {}).get("sha256", "not trained")[:16]
            print(f"{name:22s} {sha:16s}  {zoo_entry.command}\n{'':22s} {zoo_entry.description}")
        return 0
    if args.command == "verify":
        failed = 0
        for name in ENTRIES:
            try:
                verified_path(name)
                print(f"ok      {name}")
            except ZooIntegrityError as err:
                failed += 1
                print(f"FAILED  {name}: {err}")
        return 1 if failed else 0
    targets = list(ENTRIES) if args.target == "all" else names(args.target) or [args.target]
    for name in targets:
        try:
            result = train(name, max_minutes=args.max_minutes)
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 2
        if result is None:
            print(f"{name}: not finished; its state is in {WORK_DIR}; run the same command again to resume")
            return 3
        print(f"{name}: {json.dumps(result['metrics'])}  sha256 {result['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
