"""Training the embedded class-conditional StyleGAN2 on MNIST, resumable in chunks.

The recipe is StyleGAN2's (Karras et al., 2020) cut down for 32x32 digits on a CPU:

* non-saturating logistic loss for G and D;
* **lazy R1** on real images every ``r1_interval`` D steps (weight ``r1_gamma / 2 * interval``),
  with Adam's lr and betas corrected for the lazy schedule as NVlabs do;
* **no path-length regularisation** (it doubles the G step and matters little at 32 px);
* **style mixing** with probability ``mixing_prob`` (two w's, a random crossover layer), so that
  styles of different layers stay separable — chapter 01 mixes them;
* an exponential moving average ``G_ema`` of G (half-life ``ema_kimg`` thousand images, ramped up
  at the start): the zoo stores ``G_ema``, as NVlabs' pickles do.

``train_gan(recipe, state_path, max_minutes=...)`` runs until ``recipe.total_kimg`` thousand real
images have been shown or ``max_minutes`` have passed, saving the whole state (G, D, G_ema,
optimisers, RNG states, history) atomically every ``checkpoint_minutes`` and at the end. Called
again with the same ``state_path`` it resumes where it stopped, so a 6-hour budget can be spent in
chunks that fit a session.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..resumable import SaveSchedule, save_atomic
from .stylegan2 import Discriminator, Generator, from_unit_range


@dataclass
class GANRecipe:
    """Every hyper-parameter of the embedded generator's training (stored in its checkpoint)."""
    resolution: int = 32
    num_classes: int = 10
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 3
    channels: dict = field(default_factory=lambda: {4: 128, 8: 128, 16: 64, 32: 64})
    batch_size: int = 32
    total_kimg: float = 600.0
    lr: float = 0.0025
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = 0.05
    r1_interval: int = 16
    mixing_prob: float = 0.5
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    seed: int = 0
    checkpoint_minutes: float = 5.0

    def generator(self) -> Generator:
        return Generator(self.resolution, self.num_classes, self.z_dim, self.w_dim, self.mapping_layers,
                         channels={int(k): v for k, v in self.channels.items()})

    def discriminator(self) -> Discriminator:
        return Discriminator(self.resolution, self.num_classes, channels={int(k): v for k, v in self.channels.items()})


def mixed_styles(G: Generator, z: torch.Tensor, c: torch.Tensor, mixing_prob: float):
    """Styles for a batch, with style mixing: with probability ``mixing_prob`` the layers from a
    random crossover on take the w of a second latent (same class)."""
    w = G.mapping(z, c)
    if mixing_prob > 0 and random.random() < mixing_prob:
        ws = G.broadcast(w)
        crossover = random.randrange(1, G.num_ws)
        ws[:, crossover:] = G.mapping(torch.randn_like(z), c)[:, None, :]
        return G.styles(ws)
    return G.styles(w)


def generate_raw(G: Generator, z: torch.Tensor, c: torch.Tensor, mixing_prob: float = 0.0) -> torch.Tensor:
    styles = mixed_styles(G, z, c, mixing_prob)
    return G.synthesize(styles, G.make_noise(len(z)))


def r1_penalty(D: Discriminator, real: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): squared gradient norm of D's logits at real images."""
    real = real.detach().requires_grad_(True)
    logits = D(real, c)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


@torch.no_grad()
def _ema_update(G_ema: Generator, G: Generator, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _fresh_state(recipe: GANRecipe) -> dict:
    torch.manual_seed(recipe.seed)
    G, D = recipe.generator(), recipe.discriminator()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    mb = recipe.r1_interval / (recipe.r1_interval + 1)   # lazy-regularisation correction (NVlabs)
    opt_G = torch.optim.Adam(G.parameters(), lr=recipe.lr, betas=recipe.betas, eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=recipe.lr * mb,
                             betas=(recipe.betas[0] ** mb, recipe.betas[1] ** mb), eps=1e-8)
    return {"G": G, "D": D, "G_ema": G_ema, "opt_G": opt_G, "opt_D": opt_D, "step": 0, "images_seen": 0,
            "train_seconds": 0.0, "history": {"step": [], "kimg": [], "loss_G": [], "loss_D": [], "r1": [],
                                              "D_real": [], "D_fake": []}}


def _load_state(recipe: GANRecipe, path: Path) -> dict:
    state = _fresh_state(recipe)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"GAN training state {path} is unreadable ({err}); move it away to restart") from err
    # the length of training may change between chunks (train longer or stop earlier); nothing else may
    same = {k: v for k, v in (saved.get("recipe") or {}).items() if k != "total_kimg"} == \
        {k: v for k, v in _recipe_dict(recipe).items() if k != "total_kimg"}
    if not same:
        raise ValueError(f"GAN training state {path} was made with another recipe; move it away to restart "
                         f"(saved {saved.get('recipe')}, asked {_recipe_dict(recipe)})")
    for key in ("G", "D", "G_ema", "opt_G", "opt_D"):
        state[key].load_state_dict(saved[key])
    for key in ("step", "images_seen", "train_seconds", "history"):
        state[key] = saved[key]
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(tuple(_to_tuple(saved["python_rng"])))
    np.random.set_state(tuple(saved["numpy_rng"]))
    return state


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _recipe_dict(recipe: GANRecipe) -> dict:
    out = asdict(recipe)
    out["channels"] = {int(k): int(v) for k, v in out["channels"].items()}
    out["betas"] = list(out["betas"])
    out.pop("checkpoint_minutes")
    return out


def _save_state(state: dict, recipe: GANRecipe, path: Path) -> None:
    numpy_state = np.random.get_state()
    save_atomic({
        "recipe": _recipe_dict(recipe),
        **{key: state[key].state_dict() for key in ("G", "D", "G_ema", "opt_G", "opt_D")},
        **{key: state[key] for key in ("step", "images_seen", "train_seconds", "history")},
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
    }, path)


def train_gan(recipe: GANRecipe, train_set, state_path: str | Path, max_minutes: float | None = None,
              max_steps: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) G and D on ``train_set`` (images in [0, 1] with labels). Returns the state
    dict (modules, optimisers, counters, history); ``state["done"]`` says whether the recipe's
    ``total_kimg`` was reached."""
    state_path = Path(state_path)
    state = _load_state(recipe, state_path) if state_path.exists() else _fresh_state(recipe)
    if state["step"] == 0:
        random.seed(recipe.seed)
        np.random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
    G, D, G_ema, opt_G, opt_D = (state[k] for k in ("G", "D", "G_ema", "opt_G", "opt_D"))
    G.train()
    D.train()
    images, labels = train_set.images, train_set.labels
    batch = recipe.batch_size
    total_images = int(recipe.total_kimg * 1000)
    ema_beta_full = 0.5 ** (batch / max(recipe.ema_kimg * 1000, 1e-8))
    schedule = SaveSchedule(recipe.checkpoint_minutes, max_minutes, max_steps)
    bar = tqdm(total=total_images, initial=state["images_seen"], unit="img", unit_scale=True,
               desc="StyleGAN2", disable=not progress)

    while state["images_seen"] < total_images:
        step = state["step"]
        index = torch.randint(len(images), (batch,))
        real, c_real = from_unit_range(images[index]), labels[index]
        c_fake = labels[torch.randint(len(labels), (batch,))]

        # --- D: logistic loss on real and fake; lazy R1 every r1_interval steps
        with torch.no_grad():
            fake = generate_raw(G, torch.randn(batch, recipe.z_dim), c_fake, recipe.mixing_prob)
        logits_fake, logits_real = D(fake, c_fake), D(real, c_real)
        loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        r1_value = float("nan")
        if step % recipe.r1_interval == 0:
            penalty = r1_penalty(D, real, c_real)
            opt_D.zero_grad(set_to_none=True)
            (penalty.mean() * (recipe.r1_gamma / 2) * recipe.r1_interval).backward()
            opt_D.step()
            r1_value = penalty.mean().item()

        # --- G: non-saturating loss
        fake = generate_raw(G, torch.randn(batch, recipe.z_dim), c_fake, recipe.mixing_prob)
        loss_G = F.softplus(-D(fake, c_fake)).mean()
        opt_G.zero_grad(set_to_none=True)
        for p in D.parameters():
            p.requires_grad_(False)
        loss_G.backward()
        for p in D.parameters():
            p.requires_grad_(True)
        opt_G.step()

        # --- EMA with NVlabs' ramp-up (short half-life early on)
        ema_images = min(recipe.ema_kimg * 1000, state["images_seen"] * recipe.ema_rampup) if recipe.ema_rampup else recipe.ema_kimg * 1000
        ema_beta = 0.5 ** (batch / max(ema_images, 1e-8)) if ema_images > 0 else 0.0
        _ema_update(G_ema, G, min(ema_beta, ema_beta_full))

        if not (math.isfinite(loss_D.item()) and math.isfinite(loss_G.item())):
            raise FloatingPointError(f"GAN training diverged at step {step} (loss_D={loss_D.item()}, "
                                     f"loss_G={loss_G.item()}); the last good state is in {state_path}")
        state["step"] += 1
        state["images_seen"] += batch
        bar.update(batch)
        if step % 50 == 0:
            history = state["history"]
            history["step"].append(step)
            history["kimg"].append(state["images_seen"] / 1000)
            history["loss_G"].append(loss_G.item())
            history["loss_D"].append(loss_D.item())
            history["r1"].append(r1_value if math.isfinite(r1_value) else None)
            history["D_real"].append(logits_real.mean().item())
            history["D_fake"].append(logits_fake.mean().item())
            bar.set_postfix(loss_G=f"{loss_G.item():.3f}", loss_D=f"{loss_D.item():.3f}")

        save, stop = schedule.tick(state)
        if save:
            _save_state(state, recipe, state_path)
        if stop:
            break
    else:
        schedule.finish(state)
        _save_state(state, recipe, state_path)
    bar.close()
    state["done"] = state["images_seen"] >= total_images
    return state
