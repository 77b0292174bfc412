"""Speed of the pure-PyTorch StyleGAN2 (gatlib.generators.stylegan2) on the current device.

Prints images/s of
  * G forward+backward, training-style (mapping -> styles -> synthesis -> backward to all params),
  * G forward+backward, attack-style (backward to the styles y and noises eta only, frozen G),
  * D forward+backward,
  * synthesis from ``start_layer`` = first fine layer with a cache vs the full synthesis (ratio),
  * the naive grouped-conv modulation (NVlabs ``fused_modconv=True``; defined here only) vs ours.

Timings: median (and best) over ``--repeats`` runs of ``--iters`` steps each, after warm-up; the
machine may be shared, so compare the numbers of one run only. ``--profile`` prints the top ops.

    python benchmarks/bench_stylegan2.py --threads 2 --batch 32

``run(quick)`` returns its two ratios for ``python -m benchmarks``: the fine-layer attack step with
``start_layer`` + cache ÷ the full synthesis (target < 1.00), and our modulation ÷ the naive
grouped-conv modulation, G training step (target ≤ 1.00).
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from gatlib.generators.stylegan2 import (LRELU_SLOPE, Discriminator, Generator, ModulatedConv,
                                         count_parameters)


def naive_modconv_forward(self: ModulatedConv, x, style, noise, noise_space="input"):
    """NVlabs ``fused_modconv=True``: per-sample weights W * y, demodulated, one grouped conv."""
    B = style.shape[0]
    x = x.expand(B, -1, -1, -1)        # layer 0 reads the (1, C, 4, 4) constant
    w = self.weight[None] * (style * self.input_gain)[:, None, :, None, None]      # (B, O, I, 3, 3)
    d = (w.square().sum([2, 3, 4]) / self.input_gain ** 2 + 1e-8).rsqrt()
    w = w * d[:, :, None, None, None]
    x = x.reshape(1, B * self.in_channels, *x.shape[2:])
    if self.up:
        wt = w.transpose(1, 2).flip([3, 4]).reshape(B * self.in_channels, self.out_channels, 3, 3)
        x = F.conv_transpose2d(x, wt, stride=2, groups=B)
        x = x.reshape(B, self.out_channels, *x.shape[2:])
        x = F.conv2d(x, self.fir, padding=1, groups=self.out_channels)
    else:
        x = F.conv2d(x, w.reshape(B * self.out_channels, self.in_channels, 3, 3), padding=1, groups=B)
        x = x.reshape(B, self.out_channels, *x.shape[2:])
    x = x + self.bias[None, :, None, None]
    if noise is not None:
        x = x + (noise * self.noise_strength if noise_space == "input" else noise)
    return F.leaky_relu(x, LRELU_SLOPE)


@contextmanager
def naive_modulation():
    original = ModulatedConv.forward
    ModulatedConv.forward = naive_modconv_forward
    try:
        yield
    finally:
        ModulatedConv.forward = original


def timeit(step, iters, repeats, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            step()
        times.append((time.perf_counter() - t) / iters)
    return statistics.median(times), min(times)


def _parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profile", action="store_true", help="print the top ops of a G training step")
    ap.add_argument("--skip-naive", action="store_true")
    return ap


def main(argv=None, ratios: dict | None = None):
    """Prints the table; returns its rows. ``ratios`` (a dict), when given, receives the two ratios."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = {} if ratios is None else ratios
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    B = args.batch
    G, D = Generator().to(dev), Discriminator().to(dev)
    for layer in G.layers:           # trained generators have non-zero noise strengths
        layer.noise_strength.data.fill_(0.1)
    print(f"device={dev} threads={torch.get_num_threads()} batch={B} torch={torch.__version__}")
    print(f"G params {count_parameters(G):,} (mapping {count_parameters(G.mapping):,}), D params {count_parameters(D):,}")
    print(f"G layers {G.num_layers} at {G.layer_resolutions}, groups {G.layer_groups()}")
    z = torch.randn(B, G.z_dim, device=dev)
    c = torch.randint(10, (B,), device=dev)
    noises = G.make_noise(B)
    real = torch.rand(B, 1, 32, 32, device=dev) * 2 - 1
    rows = []

    def report(name, secs):
        med, best = secs
        rows.append((name, med))
        print(f"{name:<48s} {B / med:8.1f} img/s  (median {med * 1e3:7.1f} ms/batch, best {B / best:7.1f} img/s)")

    def g_train_step():
        G.zero_grad(set_to_none=True)
        img = G.synthesize(G.styles(G.mapping(z, c)), noises)
        img.square().mean().backward()
        sync()

    report("G fwd+bwd (train: grads to all params)", timeit(g_train_step, args.iters, args.repeats))

    def g_forward():
        with torch.no_grad():
            G.synthesize(G.styles(G.mapping(z, c)), noises)
        sync()

    report("G forward only (no grad)", timeit(g_forward, args.iters, args.repeats))

    G.requires_grad_(False)
    with torch.no_grad():
        styles0 = G.styles(G.mapping(z, c))

    def attack_step(layers, start_layer=0, cache=None):
        styles = styles0.clone()
        ys = [styles.conv[i].requires_grad_() for i in layers]
        etas = [n.clone().requires_grad_() if i in layers else n for i, n in enumerate(noises)]
        img = G.synthesize(styles, etas, start_layer=start_layer, cache=cache)
        img.square().mean().backward()
        sync()
        return ys

    all_layers = list(range(G.num_layers))
    fine = G.layer_groups()["fine"]
    k = fine[0]
    cache = G.cache(styles0, noises, k)
    report("G fwd+bwd (attack: grads to all y, eta)", timeit(lambda: attack_step(all_layers), args.iters, args.repeats))
    full = timeit(lambda: attack_step(fine), args.iters, args.repeats)
    part = timeit(lambda: attack_step(fine, k, cache), args.iters, args.repeats)
    report("G fwd+bwd (attack fine y, eta; full synthesis)", full)
    report(f"G fwd+bwd (attack fine y, eta; start_layer={k} + cache)", part)

    def fwd(start_layer=0, cache=None):
        with torch.no_grad():
            G.synthesize(styles0, noises, start_layer=start_layer, cache=cache)
        sync()

    full_f = timeit(fwd, args.iters, args.repeats)
    part_f = timeit(lambda: fwd(k, cache), args.iters, args.repeats)
    report("G synthesis forward, full", full_f)
    report(f"G synthesis forward, start_layer={k} + cache", part_f)
    print(f"  -> full / start_layer={k}: fwd+bwd {full[0] / part[0]:.2f}x, forward {full_f[0] / part_f[0]:.2f}x")
    ratios["stylegan2_cached_over_full"] = part[0] / full[0]
    G.requires_grad_(True)

    def d_step():
        D.zero_grad(set_to_none=True)
        D(real, c).sum().backward()
        sync()

    report("D fwd+bwd (grads to all params)", timeit(d_step, args.iters, args.repeats))

    if not args.skip_naive:
        ours = timeit(g_train_step, args.iters, args.repeats)
        with naive_modulation():
            with torch.no_grad():   # the same function: compare the images
                a = G.synthesize(styles0, noises)
            naive = timeit(g_train_step, args.iters, args.repeats)
        with torch.no_grad():
            b = G.synthesize(styles0, noises)
        report("G fwd+bwd train, ours (scale input + demod output)", ours)
        report("G fwd+bwd train, naive grouped-conv modulation", naive)
        print(f"  -> naive / ours time: {naive[0] / ours[0]:.2f}x  (max |diff| of images {float((a - b).abs().max()):.2e})")
        ratios["stylegan2_ours_over_naive"] = ours[0] / naive[0]

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(args.iters):
                g_train_step()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=40))
    return rows


def run(quick: bool = False) -> dict:
    """For ``python -m benchmarks`` (see ``benchmarks/__init__.py``); keeps the caller's thread count."""
    from benchmarks import QUICK_REPEATS, REPEATS, result, row

    argv = ["--threads", "0", "--batch", "4" if quick else "32", "--iters", "1" if quick else "3",
            "--repeats", str(QUICK_REPEATS if quick else REPEATS)]
    ratios: dict = {}
    rows = main(argv, ratios)
    labels = {
        "stylegan2_cached_over_full": ("G fwd+bwd, fine-layer attack: start_layer + cache ÷ full synthesis", "< 1.00"),
        "stylegan2_ours_over_naive": ("G training fwd+bwd: our modulation ÷ naive grouped-conv", "≤ 1.00"),
    }
    batch = int(argv[3])
    return result([row(key, labels[key][0], value, labels[key][1]) for key, value in ratios.items()],
                  {"img_per_s": {name: batch / seconds for name, seconds in rows}, "batch": batch})


if __name__ == "__main__":
    main()
