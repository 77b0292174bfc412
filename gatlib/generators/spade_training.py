"""Training the embedded SPADE generator on MNIST scenes, resumable in chunks.

SPADE's recipe (Park et al., CVPR 2019, §4 and NVlabs' ``pix2pix_model.py``) cut down for 64x64
digit scenes on a CPU:

* a **multi-scale PatchGAN discriminator** (``num_D`` copies of NVlabs' ``NLayerDiscriminator``
  on the image concatenated with its one-hot label map, each on a 2x average-pooled input of the
  previous; spectral norm and instance norm in its hidden layers);
* the **hinge loss** for D and G, plus D's **feature matching** loss for G (L1 between the
  discriminators' intermediate features on real and generated scenes, weight ``lambda_feat`` = 10);
* **no VGG perceptual loss** — its ImageNet weights cannot be downloaded here (``book/deviations.md``);
* a Gaussian z input (``z_dim``; NVlabs' ``use_vae`` generator without its encoder), so one label
  map gives many scenes; Adam with TTUR (G 1e-4, D 4e-4, betas (0, 0.9)) as SPADE.

``train_spade(recipe, scenes, state_path, max_minutes=...)`` runs until ``recipe.total_steps`` or
``max_minutes``, saving the whole state atomically every ``checkpoint_minutes`` and at the end;
called again with the same path it resumes.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm
from tqdm.auto import tqdm

from ..resumable import SaveSchedule, save_atomic
from .spade import SPADEGenerator, one_hot


@dataclass
class SpadeRecipe:
    """Every hyper-parameter of the embedded SPADE generator's training (stored in its checkpoint)."""
    label_nc: int = 11
    image_nc: int = 1
    crop_size: int = 64
    ngf: int = 8
    hidden: int = 32
    z_dim: int = 32
    ndf: int = 32
    n_layers_D: int = 3
    num_D: int = 2
    batch_size: int = 16
    total_steps: int = 20_000
    lr_G: float = 1e-4
    lr_D: float = 4e-4
    betas: tuple = (0.0, 0.9)
    lambda_feat: float = 10.0
    seed: int = 0
    checkpoint_minutes: float = 5.0

    def generator(self) -> SPADEGenerator:
        # instance norm: our batches are small, and the attack then needs no running statistics
        return SPADEGenerator(self.label_nc, self.image_nc, self.ngf, self.crop_size, z_dim=self.z_dim,
                              param_free_norm="instance", spectral=True, hidden=self.hidden)

    def discriminator(self) -> "MultiscaleDiscriminator":
        return MultiscaleDiscriminator(self.label_nc + self.image_nc, self.ndf, self.n_layers_D, self.num_D)


class NLayerDiscriminator(nn.Module):
    """NVlabs' PatchGAN: 4x4 convs, stride 2 except the last two, LeakyReLU(0.2); returns every
    layer's output (the last is the patch logits) for feature matching."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(input_nc, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers):
            previous, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            layers.append(nn.Sequential(spectral_norm(nn.Conv2d(previous, nf, 4, stride=stride, padding=2)),
                                        nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs, the k-th on the input average-pooled k times (NVlabs' ``MultiscaleDiscriminator``)."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4, num_D: int = 2):
        super().__init__()
        self.discriminators = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers) for _ in range(num_D))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for D in self.discriminators:
            out.append(D(x))
            x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        return out


def hinge_d_loss(real: list, fake: list) -> torch.Tensor:
    return sum(F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake)) / len(real)


def hinge_g_loss(fake: list) -> torch.Tensor:
    return -sum(f[-1].mean() for f in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """L1 between D's intermediate features (logits excluded) on real and fake, averaged over D's."""
    loss = 0.0
    for r, f in zip(real, fake):
        for real_feature, fake_feature in zip(r[:-1], f[:-1]):
            loss = loss + F.l1_loss(fake_feature, real_feature.detach()) / (len(r) - 1)
    return loss / len(real)


def _recipe_dict(recipe: SpadeRecipe) -> dict:
    out = asdict(recipe)
    out["betas"] = list(out["betas"])
    out.pop("checkpoint_minutes")
    return out


def _fresh_state(recipe: SpadeRecipe) -> dict:
    torch.manual_seed(recipe.seed)
    G, D = recipe.generator(), recipe.discriminator()
    return {"G": G, "D": D,
            "opt_G": torch.optim.Adam(G.parameters(), lr=recipe.lr_G, betas=recipe.betas),
            "opt_D": torch.optim.Adam(D.parameters(), lr=recipe.lr_D, betas=recipe.betas),
            "step": 0, "train_seconds": 0.0,
            "history": {"step": [], "loss_G": [], "loss_D": [], "feature_matching": []}}


def _load_state(recipe: SpadeRecipe, path: Path) -> dict:
    state = _fresh_state(recipe)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"SPADE training state {path} is unreadable ({err}); move it away to restart") from err
    asked = {k: v for k, v in _recipe_dict(recipe).items() if k != "total_steps"}
    if {k: v for k, v in (saved.get("recipe") or {}).items() if k != "total_steps"} != asked:
        raise ValueError(f"SPADE training state {path} was made with another recipe; move it away to restart "
                         f"(saved {saved.get('recipe')}, asked {_recipe_dict(recipe)})")
    for key in ("G", "D", "opt_G", "opt_D"):
        state[key].load_state_dict(saved[key])
    for key in ("step", "train_seconds", "history"):
        state[key] = saved[key]
    torch.set_rng_state(saved["torch_rng"])
    return state


def _save_state(state: dict, recipe: SpadeRecipe, path: Path) -> None:
    save_atomic({"recipe": _recipe_dict(recipe),
                  **{key: state[key].state_dict() for key in ("G", "D", "opt_G", "opt_D")},
                  **{key: state[key] for key in ("step", "train_seconds", "history")},
                  "torch_rng": torch.get_rng_state()}, path)


def train_spade(recipe: SpadeRecipe, scenes, state_path: str | Path, max_minutes: float | None = None,
                max_steps: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) the SPADE generator on ``scenes`` (a ``gatlib.scenes.SceneSet``: real
    scene images and their label maps). Returns the state; ``state["done"]`` says whether
    ``recipe.total_steps`` was reached."""
    state_path = Path(state_path)
    state = _load_state(recipe, state_path) if state_path.exists() else _fresh_state(recipe)
    if state["step"] == 0:
        random.seed(recipe.seed)
        np.random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
    G, D, opt_G, opt_D = (state[k] for k in ("G", "D", "opt_G", "opt_D"))
    G.train()
    D.train()
    images = scenes.images * 2 - 1                 # the generator's range
    maps = scenes.masks
    batch = recipe.batch_size
    schedule = SaveSchedule(recipe.checkpoint_minutes, max_minutes, max_steps)
    bar = tqdm(total=recipe.total_steps, initial=state["step"], desc="SPADE", disable=not progress)
    while state["step"] < recipe.total_steps:
        step = state["step"]
        index = torch.randint(len(images), (batch,))
        real, segmap = images[index], one_hot(maps[index], recipe.label_nc)

        # --- G: hinge + feature matching
        fake = G.synthesize(segmap, G.modulations(segmap), G.sample_z(batch))
        for p in D.parameters():
            p.requires_grad_(False)
        fake_out = D(torch.cat([segmap, fake], 1))
        with torch.no_grad():
            real_out = D(torch.cat([segmap, real], 1))
        loss_gan = hinge_g_loss(fake_out)
        loss_fm = feature_matching_loss(real_out, fake_out)
        loss_G = loss_gan + recipe.lambda_feat * loss_fm
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        for p in D.parameters():
            p.requires_grad_(True)

        # --- D: hinge on real and (detached) fake
        loss_D = hinge_d_loss(D(torch.cat([segmap, real], 1)), D(torch.cat([segmap, fake.detach()], 1)))
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()

        if not (math.isfinite(loss_D.item()) and math.isfinite(loss_G.item())):
            raise FloatingPointError(f"SPADE training diverged at step {step} (loss_D={loss_D.item()}, "
                                     f"loss_G={loss_G.item()}); the last good state is in {state_path}")
        state["step"] += 1
        bar.update(1)
        if step % 50 == 0:
            history = state["history"]
            history["step"].append(step)
            history["loss_G"].append(loss_gan.item())
            history["loss_D"].append(loss_D.item())
            history["feature_matching"].append(float(loss_fm.detach()))
            bar.set_postfix(loss_G=f"{loss_gan.item():.3f}", loss_D=f"{loss_D.item():.3f}", fm=f"{float(loss_fm.detach()):.3f}")
        save, stop = schedule.tick(state)
        if save:
            _save_state(state, recipe, state_path)
        if stop:
            break
    else:
        schedule.finish(state)
        _save_state(state, recipe, state_path)
    bar.close()
    G.eval()
    state["done"] = state["step"] >= recipe.total_steps
    return state
