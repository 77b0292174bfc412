"""Speed of the GAT latent attack (gatlib.attacks.latent) against its floor, in one process run.

Ratios (median of ``--repeats`` warm runs on the same batch; the machine may be shared, so only
ratios from one run compare):

* **step vs floor** — one attack iteration (style + noise, all layers, no sample fooled) ÷ one bare
  forward+backward of F∘g to y and η on the same batch. Target ≤ 1.10.
* **fine layers, cached** — an attack on the fine third of the layers re-rendering from the first
  fine layer ÷ the same attack re-rendering every layer (``use_cache=False``). Target ≤ 0.6.
* **early stop** — a 10-iteration attack with per-sample early stop ÷ the same number of iterations
  on the whole batch; beside it, mean iterations-to-fool ÷ 10 (what early stop can at best save).

    OMP_NUM_THREADS=1 python benchmarks/bench_attack.py --batch 64

``run(quick)`` returns the same figures for ``python -m benchmarks``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):   # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import median_time
from gatlib import classifiers
from gatlib.attacks.latent import _attack_mode, latent_attack, sample_latents
from gatlib.generators.stylegan2 import Generator


def timed(fn, repeats: int) -> float:
    """Median of ``repeats`` warm calls (one untimed warm-up): ``benchmarks.median_time``."""
    return median_time(fn, repeats, warmup=1)


def measure(batch: int, repeats: int) -> dict:
    """The three figures (``rows``: key, label, value, target) and the timings behind them."""
    torch.manual_seed(0)
    G = Generator().eval()
    with torch.no_grad():
        for layer in G.layers:          # a trained generator uses its noise; a fresh one has strength 0
            layer.noise_strength.fill_(0.1)
    model = classifiers.build("small_cnn").eval()
    labels = torch.arange(batch) % 10
    styles, noises = sample_latents(G, labels, seed=1)

    def bare_step():
        with _attack_mode(G, model):
            ys = [y.clone().requires_grad_(True) for y in styles.conv]
            etas = [n.clone().requires_grad_(True) for n in noises]
            images = G.to_unit(G.synthesize(type(styles)(ys, list(styles.torgb)), etas))
            loss = F.cross_entropy(model(images), labels, reduction="sum")
            torch.autograd.grad(loss, ys + etas)

    # a classifier that is never fooled keeps every sample in the batch for all iterations
    with torch.no_grad():
        always_right = lambda images: F.one_hot(labels[:len(images)], 10).float() * 100  # noqa: E731

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, images):
            return self.net(images) * 0 + always_right(images)

    never_fooled = Oracle()

    def attack(iters, layers=None, use_cache=True, classifier=never_fooled):
        return lambda: latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves="both",
                                     layers=layers, max_iters=iters, use_cache=use_cache)

    floor = timed(bare_step, repeats)
    ten = timed(attack(10), repeats)
    # 10 iterations = 10 forward+backward passes + 1 final forward
    step_ratio = (ten / 10) / floor
    fine = G.layer_groups()["fine"]
    cached = timed(attack(10, fine, True), repeats)
    uncached = timed(attack(10, fine, False), repeats)
    real = attack(10, classifier=model)
    result = real()
    mean_iters = result.iterations[result.valid].float().mean().item()
    early = timed(real, repeats)
    rows = [
        ("attack_step_over_floor", "latent attack step ÷ bare F∘g forward+backward", step_ratio, "≤ 1.10"),
        ("attack_fine_cached_over_full", "fine-layer attack, cached ÷ full re-render", cached / uncached, "≤ 0.60"),
        ("attack_early_stop_over_full", "10-step attack with early stop ÷ without", early / ten,
         f"≈ {mean_iters / 10:.2f} (mean iterations ÷ 10)"),
    ]
    return {"rows": rows, "batch": batch, "repeats": repeats, "floor_s": floor, "ten_iterations_s": ten,
            "mean_iterations_to_fool": mean_iters}


def run(quick: bool = False, batch: int | None = None, repeats: int | None = None) -> dict:
    """For ``python -m benchmarks`` (see ``benchmarks/__init__.py``)."""
    from benchmarks import QUICK_REPEATS, REPEATS, result, row

    out = measure(batch or (4 if quick else 64), repeats or (QUICK_REPEATS if quick else REPEATS))
    rows = [row(key, label, value, target) for key, label, value, target in out.pop("rows")]
    return result(rows, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = measure(args.batch, args.repeats)
    print(f"batch {args.batch}, threads {torch.get_num_threads()}, bare step {out['floor_s'] * 1000:.1f} ms")
    print("| ratio | measured | target |\n|---|---:|---|")
    for _, name, value, target in out["rows"]:
        print(f"| {name} | {value:.2f} | {target} |")


if __name__ == "__main__":
    main()
