"""Speed of the GAT latent attack (gatlib.attacks.latent) against its floor, in one process run.

Ratios (median of ``--repeats`` warm runs on the same batch; the machine may be shared, so only
ratios from one run compare):

* **step vs floor** — one attack iteration (style + noise, all layers, no sample fooled) ÷ one bare
  forward+backward of F∘g to y and η on the same batch. Target ≤ 1.10.
* **fine layers, cached** — an attack on the fine third of the layers re-rendering from the first
  fine layer ÷ the same attack re-rendering every layer (``use_cache=False``). Target ≤ 0.6. Beside
  it, what a cache can save at all: one bare fine-layer F∘g forward+backward with the cache ÷ one
  that re-runs the coarse layers. Nothing flows back into the coarse layers either way, so the
  cache saves their *forward* pass only; at 32 px the fine layers run at the highest resolution
  and hold most of the compute, which puts that ratio far above 0.6.
* **fine layers at the paper's scale** — the same two ratios on the paper's LSUN setting: a
  256 px StyleGAN v1 (``GeneratorV1``, 14 layers, fine = layers 10–13 at 128 and 256 px) attacking
  an Inception-v3 (random weights: only the architecture sets the cost), 3 iterations on a batch of
  2. Beside them, the same floor counted in FLOPs (``torch.utils.flop_counter``) at both scales: the
  share of one fine-layer F∘g forward+backward that is left once the coarse layers' forward is
  skipped. So the 0.6 target is checked where the paper attacks, not only at our 32 px.
* **early stop** — a 10-iteration attack with per-sample early stop ÷ the same number of iterations
  on the whole batch, on the batch the chapters attack in (250, ``attack_batches``'s default); beside
  it, the work early stop leaves: the sample-iterations actually attacked (misclassified samples:
  none; a sample fooled at step t: t) ÷ (batch × 10). The same on the benchmark's small batch is
  reported too: there the shrinking batch runs fewer samples per second, so time falls more slowly
  than work. Run on the zoo's
  trained generator and classifier when they are there (a random classifier misclassifies ~90 % of
  the batch at t = 0, which says nothing about early stopping).

    OMP_NUM_THREADS=1 python benchmarks/bench_attack.py --batch 64

``run(quick)`` returns the same figures for ``python -m benchmarks``.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):   # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import interleaved, median_time
from gatlib import classifiers
from gatlib.attacks.latent import _attack_mode, attack_batches, latent_attack, sample_latents
from gatlib.generators.stylegan import GeneratorV1
from gatlib.generators.stylegan2 import Generator


# the batch the chapters attack in (``attack_batches``'s default): the early-stop figure's batch
ATTACK_BATCH = inspect.signature(attack_batches).parameters["batch_size"].default


def timed(fn, repeats: int) -> float:
    """Median of ``repeats`` warm calls (one untimed warm-up): ``benchmarks.median_time``."""
    return median_time(fn, repeats, warmup=1)


def _models():
    """The zoo's generator and Original classifier when trained, else random ones (and which)."""
    from gatlib import zoo

    if zoo.is_trained("mnist-stylegan2") and zoo.is_trained("mnist-classifier-s0"):
        return zoo.generator("mnist-stylegan2"), zoo.load("mnist-classifier-s0"), "zoo mnist-stylegan2 + mnist-classifier-s0"
    torch.manual_seed(0)
    G = Generator().eval()
    with torch.no_grad():
        for layer in G.layers:          # a trained generator uses its noise; a fresh one has strength 0
            layer.noise_strength.fill_(0.1)
    return G, classifiers.build("small_cnn").eval(), "random generator + random SmallCNN"


class NeverFooled(torch.nn.Module):
    """``model``'s full forward and backward, but logits that always name the true label: an attack on
    it keeps every sample in the batch for all iterations (a timing needs the whole batch each step)."""

    def __init__(self, model, labels, num_classes: int = 10):
        super().__init__()
        self.net, self.labels, self.num_classes = model, labels, num_classes

    def forward(self, images):
        right = F.one_hot(self.labels[:len(images)], self.num_classes).float() * 100
        return self.net(images) * 0 + right


def bare_fine_step(G, model, styles, noises, labels, moved_from=0, cached=False, accumulate=False):
    """One F∘g forward+backward to the y and η of layers >= moved_from; with ``cached`` the layers
    before it are not re-run (their output comes from G.cache, made once here as the attack makes
    it once per run). ``accumulate``: ``loss.backward(inputs=...)`` instead of ``autograd.grad``, the
    same passes (FlopCounterMode's module hooks refuse ``autograd.grad``)."""
    with _attack_mode(G, model), torch.no_grad():
        cache = G.cache(styles, noises, moved_from) if cached and moved_from else None

    def step():
        with _attack_mode(G, model):
            ys = [y.detach().clone().requires_grad_(i >= moved_from) for i, y in enumerate(styles.conv)]
            etas = [n.detach().clone().requires_grad_(i >= moved_from) for i, n in enumerate(noises)]
            images = G.to_unit(G.synthesize(type(styles)(ys, list(styles.torgb)), etas,
                                            start_layer=moved_from if cache else 0, cache=cache))
            loss = F.cross_entropy(model(images), labels, reduction="sum")
            if accumulate:
                loss.backward(inputs=ys[moved_from:] + etas[moved_from:])
            else:
                torch.autograd.grad(loss, ys[moved_from:] + etas[moved_from:])
    return step


def flop_floor(G, model, styles, noises, labels) -> float:
    """FLOPs of one fine-layer F∘g forward+backward with the cache ÷ without it (counted by
    ``torch.utils.flop_counter``, convolutions and matrix products): the least any cache can reach,
    independent of the machine."""
    from torch.utils.flop_counter import FlopCounterMode

    first_fine = min(G.layer_groups()["fine"])
    counts = []
    for cached in (True, False):
        step = bare_fine_step(G, model, styles, noises, labels, first_fine, cached, accumulate=True)
        with FlopCounterMode(display=False) as counter:
            step()
        counts.append(counter.get_total_flops())
    return counts[0] / counts[1]


def paper_scale(quick: bool, repeats: int) -> dict:
    """The fine-layer cache at the paper's LSUN scale: StyleGAN v1 at 256 px attacking Inception-v3,
    both with random weights, batch 2, 3 iterations (``--quick``: a 128 px, 32-channel v1, the
    smallest input Inception-v3 takes with room to spare; a check that it runs)."""
    from gatlib import classifiers

    torch.manual_seed(0)
    G = (GeneratorV1(resolution=128, num_classes=0, channel_max=32) if quick
         else GeneratorV1(resolution=256, num_classes=0)).eval()
    with torch.no_grad():
        for layer in G.layers:          # v1 starts with zero noise weights; a trained one uses its noise
            layer.noise_strength.fill_(0.1)
    model = classifiers.paper_classifier("inception_v3", 10).eval()
    labels = torch.zeros(2, dtype=torch.long)
    styles, noises = sample_latents(G, labels, seed=1)
    fine = G.layer_groups()["fine"]
    never = NeverFooled(model, labels)

    def attack(use_cache):
        return lambda: latent_attack(G, never, styles, noises, labels, eps=0.05, delta=0.5, moves="both",
                                     layers=fine, max_iters=3, use_cache=use_cache)

    times = interleaved({"cached": attack(True), "uncached": attack(False),
                         "fine_cached": bare_fine_step(G, model, styles, noises, labels, min(fine), True),
                         "fine_full": bare_fine_step(G, model, styles, noises, labels, min(fine))}, repeats)
    return {"resolution": G.resolution, "layers": G.num_layers, "fine": fine, "channels": dict(G.channels),
            "attack_ratio": times["cached"] / times["uncached"],
            "floor": times["fine_cached"] / times["fine_full"],
            "flop_floor": flop_floor(G, model, styles, noises, labels), "times_s": times}


def measure(batch: int, repeats: int, quick: bool = False) -> dict:
    """The figures (``rows``: key, label, value, target) and the timings behind them; ``quick`` runs
    the paper-scale part on a small v1 (a check that it runs, not a measurement)."""
    G, model, models = _models()
    labels = torch.arange(batch) % 10
    styles, noises = sample_latents(G, labels, seed=1)
    fine = G.layer_groups()["fine"]

    def bare_step(moved_from=0, cached=False):
        return bare_fine_step(G, model, styles, noises, labels, moved_from, cached)

    # a classifier that is never fooled keeps every sample in the batch for all iterations
    never_fooled = NeverFooled(model, labels)

    def attack(iters, layers=None, use_cache=True, classifier=never_fooled):
        return lambda: latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves="both",
                                     layers=layers, max_iters=iters, use_cache=use_cache)

    # timed in turns, so that a change of load on a shared machine hits both sides of a ratio alike
    times = interleaved({"floor": bare_step(), "fine_cached": bare_step(min(fine), cached=True),
                         "fine_full": bare_step(min(fine)), "ten": attack(10),
                         "cached": attack(10, fine, True), "uncached": attack(10, fine, False)}, repeats)
    floor, ten = times["floor"], times["ten"]
    # 10 iterations = 10 forward+backward passes + 1 final forward (did the 10th step fool it?)
    step_ratio = (ten / 10) / floor
    cached, uncached = times["cached"], times["uncached"]
    fine_floor = times["fine_cached"] / times["fine_full"]
    small = early_stop(G, model, batch, repeats)
    book_batch = 4 if quick else ATTACK_BATCH
    book = early_stop(G, model, book_batch, repeats)
    rows = [
        ("attack_step_over_floor", "latent attack step ÷ bare F∘g forward+backward", step_ratio, "≤ 1.10"),
        ("attack_fine_cached_over_full", "fine-layer attack, cached ÷ full re-render", cached / uncached,
         f"≤ 0.60 (floor at this resolution: {fine_floor:.2f})"),
        ("attack_fine_floor", "bare fine-layer F∘g fwd+bwd: cached ÷ re-running the coarse layers", fine_floor,
         "what the cache can save: the coarse layers' forward only"),
        ("attack_early_stop_over_full", f"10-step attack with early stop ÷ without (batch {book_batch}"
         + ("" if quick else ", the chapters' attack batch") + ")", book["ratio"],
         f"within 0.10 of {book['work']:.2f} (the sample-iterations left ÷ batch × 10)"),
        ("attack_early_stop_over_full_small_batch", f"the same on a batch of {batch}", small["ratio"],
         f"beside {small['work']:.2f}: a shrinking small batch runs fewer samples per second on a CPU"),
    ]
    flops_here = flop_floor(G, model, styles, noises, labels)
    paper = paper_scale(quick, repeats)
    scale = f"StyleGAN v1 {paper['resolution']} px + Inception-v3"
    rows += [
        ("attack_fine_flop_floor", "bare fine-layer F∘g fwd+bwd, FLOPs: cached ÷ re-running the coarse layers",
         flops_here, "what the cache can save, counted in FLOPs"),
        ("attack_fine_cached_over_full_paper_scale", f"fine-layer attack at the paper's scale ({scale}): "
         "cached ÷ full re-render", paper["attack_ratio"], f"≤ 0.60 (floor at this scale: {paper['floor']:.2f})"),
        ("attack_fine_floor_paper_scale", f"bare fine-layer F∘g fwd+bwd at the paper's scale ({scale}): "
         "cached ÷ re-running the coarse layers", paper["floor"], "what the cache can save there"),
        ("attack_fine_flop_floor_paper_scale", f"the same at the paper's scale ({scale}), FLOPs",
         paper["flop_floor"], "what the cache can save there, counted in FLOPs"),
    ]
    return {"rows": rows, "batch": batch, "repeats": repeats, "floor_s": floor, "ten_iterations_s": ten,
            "paper_scale": paper,
            "models": models, "early_stop": {"book_batch": book, "small_batch": small}}


def early_stop(G, model, batch: int, repeats: int) -> dict:
    """A 10-iteration attack of ``model`` with per-sample early stop ÷ the same attack on a classifier
    that is never fooled (every sample attacked at every step), on ``batch`` seeded latents; beside
    it the work early stop leaves: the sample-iterations attacked ÷ (batch × 10)."""
    labels = torch.arange(batch) % 10
    styles, noises = sample_latents(G, labels, seed=1)

    def attack(classifier):
        return lambda: latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves="both",
                                     max_iters=10)
    result = attack(model)()
    times = interleaved({"early": attack(model), "ten": attack(NeverFooled(model, labels))}, repeats)
    return {"batch": batch, "ratio": times["early"] / times["ten"],
            "work": result.iterations[result.valid].sum().item() / (batch * 10),
            "valid_fraction": classifiers.fraction(result.valid),
            "success_rate": classifiers.fraction(result.success[result.valid]), "times_s": times}


def run(quick: bool = False, batch: int | None = None, repeats: int | None = None) -> dict:
    """For ``python -m benchmarks`` (see ``benchmarks/__init__.py``)."""
    from benchmarks import QUICK_REPEATS, REPEATS, result, row

    out = measure(batch or (4 if quick else 64), repeats or (QUICK_REPEATS if quick else REPEATS), quick)
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
