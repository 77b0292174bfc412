"""The generator's training step (gatlib.generators.training, the zoo recipe), plain vs channels_last.

One training step of ``train_gan`` as the zoo trains ``mnist-stylegan2`` (``GANRecipe`` with its
batch of 32, style mixing, Adam with NVlabs' lazy-R1 correction): a D step on real and fake digits,
a G step through the frozen D, the EMA update of ``G_ema``, and every ``r1_interval``-th step the R1
penalty. The step is timed without and with R1, and the R1 cost is amortised over
``r1_interval`` steps, as in training.

* **channels_last ÷ plain** — the amortised step with G, D and the real images in
  ``torch.channels_last`` memory format ÷ the same step in the default (contiguous) format.
  Target ≤ 1.00 to be worth switching; reported as measured.
* **torch.compile ÷ plain** — only with ``--compile`` (``python -m benchmarks --compile``): inductor
  compiles G's synthesis and D's forward (the style-mixing branch stays eager). Off by default:
  compiling G and D for forward and backward takes minutes on a small CPU, longer than the whole
  benchmark suite; the runner reports it as skipped with the reason.

    OMP_NUM_THREADS=1 python benchmarks/bench_gan.py
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks import QUICK_REPEATS, REPEATS, interleaved, result, row

COMPILE_SKIPPED = ("skipped: opt-in with --compile (inductor needs minutes to compile G and D for forward and "
                   "backward on a small CPU; D alone took ~70 s on a busy 2-core machine)")


class Trainer:
    """G, D, G_ema and their optimisers as ``train_gan`` builds them, and one training step."""

    def __init__(self, recipe, batch: int, memory_format=torch.contiguous_format, compile: bool = False):
        from gatlib.generators.training import _fresh_state

        state = _fresh_state(recipe)
        self.recipe, self.batch, self.memory_format = recipe, batch, memory_format
        self.G, self.D, self.G_ema = state["G"], state["D"], state["G_ema"]
        self.opt_G, self.opt_D = state["opt_G"], state["opt_D"]
        for module in (self.G, self.D, self.G_ema):
            module.to(memory_format=memory_format)
        self.synthesize, self.discriminate = self.G.synthesize, self.D
        if compile:
            self.synthesize, self.discriminate = torch.compile(self.G.synthesize), torch.compile(self.D)
        generator = torch.Generator().manual_seed(0)
        self.real = (torch.rand(batch, 1, recipe.resolution, recipe.resolution, generator=generator) * 2 - 1)
        self.real = self.real.contiguous(memory_format=memory_format)
        self.c = torch.randint(recipe.num_classes, (batch,), generator=generator)
        self.calls = 0

    def fake(self):
        from gatlib.generators.training import mixed_styles

        z = torch.randn(self.batch, self.recipe.z_dim)
        styles = mixed_styles(self.G, z, self.c, self.recipe.mixing_prob)
        return self.synthesize(styles, self.G.make_noise(self.batch))

    def step(self, with_r1: bool) -> None:
        from gatlib.generators.training import _ema_update, r1_penalty

        G, D, recipe = self.G, self.discriminate, self.recipe
        self.calls += 1
        random.seed(self.calls)        # the same style-mixing draws for every variant, call for call
        torch.manual_seed(self.calls)
        with torch.no_grad():
            fake = self.fake()
        loss_D = F.softplus(D(fake, self.c)).mean() + F.softplus(-D(self.real, self.c)).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        if with_r1:
            penalty = r1_penalty(self.D, self.real, self.c)
            self.opt_D.zero_grad(set_to_none=True)
            (penalty.mean() * (recipe.r1_gamma / 2) * recipe.r1_interval).backward()
            self.opt_D.step()
        loss_G = F.softplus(-D(self.fake(), self.c)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        loss_G.backward()
        self.D.requires_grad_(True)
        self.opt_G.step()
        _ema_update(self.G_ema, G, 0.999)
        if not math.isfinite(loss_G.item()):
            raise FloatingPointError("the benchmark's GAN step diverged")


def run(quick: bool = False, batch: int | None = None, repeats: int | None = None, compile: bool = False) -> dict:
    from gatlib import zoo
    from gatlib.generators.training import GANRecipe

    recipe = GANRecipe(seed=zoo.entry("mnist-stylegan2").seed, **zoo.entry("mnist-stylegan2").recipe)
    batch = batch or (4 if quick else recipe.batch_size)
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    variants = {"plain": Trainer(recipe, batch), "channels_last": Trainer(recipe, batch, torch.channels_last)}
    compile_note = COMPILE_SKIPPED
    if compile:
        started = time.perf_counter()
        try:
            variants["compiled"] = Trainer(recipe, batch, compile=True)
            variants["compiled"].step(True)    # compile both graphs before timing
            variants["compiled"].step(False)
            compile_note = f"compiled in {time.perf_counter() - started:.0f} s"
        except Exception as err:  # noqa: BLE001 - inductor needs a compiler; report why instead of failing
            variants.pop("compiled", None)
            compile_note = f"skipped: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    fns = {}
    for name, trainer in variants.items():
        fns[f"{name}/r1"] = lambda t=trainer: t.step(True)
        fns[f"{name}/no_r1"] = lambda t=trainer: t.step(False)
    timings = interleaved(fns, repeats)
    interval = recipe.r1_interval
    amortised = {name: timings[f"{name}/no_r1"] + (timings[f"{name}/r1"] - timings[f"{name}/no_r1"]) / interval
                 for name in variants}
    rows = [row("gan_channels_last_over_plain", "GAN training step (zoo recipe), channels_last ÷ plain",
                amortised["channels_last"] / amortised["plain"], "≤ 1.00")]
    compiled = amortised["compiled"] / amortised["plain"] if "compiled" in variants else None
    rows.append(row("gan_compiled_over_plain", "GAN training step (zoo recipe), torch.compile ÷ plain"
                    + ("" if compiled is not None else f" — {compile_note}"), compiled, "≤ 1.00"))
    return result(rows, {"batch": batch, "repeats": repeats, "r1_interval": interval, "step_s": amortised,
                         "timings_s": timings, "torch_compile": compile_note})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's (32)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd step (slow to compile)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(args.quick, None if args.quick else args.batch, None if args.quick else args.repeats, args.compile)
    d = out["details"]
    print(f"batch {d['batch']}, threads {torch.get_num_threads()}: "
          + ", ".join(f"{k} {v * 1e3:.0f} ms/step" for k, v in d["step_s"].items())
          + f"; torch.compile {d['torch_compile']}")
    for r in out["rows"]:
        print(f"| {r['label']} | {r['value']:.3f} | {r['target']} |")
    return out


if __name__ == "__main__":
    main()
