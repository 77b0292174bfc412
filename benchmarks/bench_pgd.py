"""Our L∞ PGD (gatlib.attacks.pgd.LinfPGD) against foolbox's LinfPGD, in one process run.

Same model (the zoo's ``mnist-classifier-s0``, eval mode, frozen parameters for both), same batch of
MNIST test digits, same budget (ε = 0.3, ``--steps`` steps of ``abs_stepsize`` 0.01, no random
start; ours with ``early_stop=False`` so both run every step on every sample).

* **ours ÷ foolbox** — median wall time of our attack ÷ foolbox's. Target ≤ 1.00.
* beside it, the share of samples on which both attacks agree (they are the same algorithm step for
  step; ``tests/test_attacks.py`` checks ≥ 99 % agreement).

    OMP_NUM_THREADS=1 python benchmarks/bench_pgd.py --batch 256 --steps 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import QUICK_REPEATS, REPEATS, interleaved, result, row

TARGET = "≤ 1.00"


def run(quick: bool = False, batch: int | None = None, steps: int | None = None, repeats: int | None = None) -> dict:
    import foolbox as fb

    from gatlib import data, zoo
    from gatlib.attacks.pgd import LinfPGD

    batch = batch or (16 if quick else 256)
    steps = steps or (5 if quick else 40)
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    eps, step_size = 0.3, 0.01
    model = zoo.load("mnist-classifier-s0").eval().requires_grad_(False)
    test_set = data.mnist("test")
    images, labels = test_set.images[:batch], test_set.labels[:batch]

    ours_attack = LinfPGD(bound=eps, steps=steps, step_size=step_size, random_start=False, early_stop=False)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    theirs_attack = fb.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=False)
    outputs = {}

    def ours():
        outputs["ours"] = ours_attack(model, images, labels)

    def theirs():
        outputs["theirs"] = theirs_attack(fmodel, images, labels, epsilons=eps)[1]

    timings = interleaved({"ours": ours, "theirs": theirs}, repeats)
    ours_s, theirs_s = timings["ours"], timings["theirs"]
    with torch.no_grad():
        agreement = (model(outputs["ours"]).argmax(1) == model(outputs["theirs"]).argmax(1)).float().mean().item()
    rows = [row("pgd_ours_over_foolbox", f"L∞ PGD ({steps} steps), ours ÷ foolbox", ours_s / theirs_s, TARGET)]
    return result(rows, {"batch": batch, "steps": steps, "repeats": repeats, "ours_s": ours_s,
                         "foolbox_s": theirs_s, "agreement": agreement, "foolbox": fb.__version__})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(args.quick, None if args.quick else args.batch, None if args.quick else args.steps,
              None if args.quick else args.repeats)
    d = out["details"]
    print(f"batch {d['batch']}, {d['steps']} steps, threads {torch.get_num_threads()}: "
          f"ours {d['ours_s'] * 1e3:.1f} ms, "
          f"foolbox {d['foolbox_s'] * 1e3:.1f} ms, agreement {d['agreement']:.3f}")
    for r in out["rows"]:
        print(f"| {r['label']} | {r['value']:.2f} | {r['target']} |")
    return out


if __name__ == "__main__":
    main()
