"""Throughput of the classifier training modes (gatlib.training.train_classifier), in one process run.

Same model (a copy of the zoo's ``mnist-classifier-s0``, the Original that GAT and the Table 2
defenses fine-tune), same batch size, same MNIST train digits, through the real loop
(``train_classifier`` with ``max_steps``), each mode timed in turns with the others:

* ``standard`` — the clean batch;
* ``at_pgd`` — AT-PGD: 10-step L∞ PGD against the current model at every step (``defenses.at_pgd``);
* ``gat`` — GAT (``gatlib.gat.GATMode``) with the fine-tuning recipe's pool settings
  (``finetune.DEFAULTS``: pool, refresh interval, chunk, layer groups, moves, ≤ 10 iterations); one
  timed repeat is one refresh period, so the pool refresh is amortised as in training.

Figures are **clean training images per second** (the data the loop consumes; GAT adds as many
adversarial images to each batch) as ratios: GAT ÷ standard, AT-PGD ÷ standard, GAT ÷ AT-PGD.
They are reported without a target. The generator is the zoo's ``mnist-stylegan2`` when its
checkpoint is there, else ``random-tiny`` (the smoke profile's; recorded in ``details``).

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --batch 128
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import QUICK_REPEATS, REPEATS, interleaved, result, row


def load_generator(name: str | None = None):
    """``(G, name)``: ``name``, else the zoo's trained generator when present, else ``random-tiny``."""
    from gatlib import zoo

    if name:
        return zoo.generator(name), name
    try:
        return zoo.generator("mnist-stylegan2"), "mnist-stylegan2"
    except zoo.ZooIntegrityError:
        return zoo.generator("random-tiny"), "random-tiny"


def run(quick: bool = False, batch: int | None = None, repeats: int | None = None,
        generator: str | None = None) -> dict:
    from gatlib import data, defenses, finetune, zoo
    from gatlib.gat import GATMode
    from gatlib.training import train_classifier

    batch = batch or (16 if quick else 128)
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    recipe = dict(finetune.DEFAULTS)
    if quick:
        recipe.update(pool_size=32, chunk=16, refresh_every=4)
    G, generator_name = load_generator(generator)
    original = zoo.load("mnist-classifier-s0")
    train_set = data.mnist("train")
    steps = {"standard": 2 if quick else 20, "at_pgd": 1 if quick else 5, "gat": recipe["refresh_every"]}

    def gat_mode():
        return GATMode(G, eps=recipe["eps"], delta=recipe["delta"], max_iters=recipe["max_iters"],
                       pool_size=recipe["pool_size"], refresh_every=recipe["refresh_every"], chunk=recipe["chunk"],
                       group_size=recipe["group_size"], moves=tuple(recipe["moves"]), seed=0)

    modes = {"standard": lambda: "standard", "at_pgd": lambda: defenses.at_pgd(), "gat": gat_mode}
    def trainer(name):
        def train(model):
            train_classifier(model, train_set, epochs=1, batch_size=batch, lr=recipe["lr"], mode=modes[name](),
                             max_steps=steps[name], progress=False)
        return train

    # the loop's own time: the fresh copy of Original for every call is set up untimed
    timings = interleaved({name: trainer(name) for name in modes}, repeats, warmup=1,
                          setup=lambda: copy.deepcopy(original))
    rate = {name: batch * steps[name] / timings[name] for name in modes}    # clean images per second
    rows = [
        row("training_gat_over_standard", f"GAT (G: {generator_name}) ÷ standard training, images/s",
            rate["gat"] / rate["standard"]),
        row("training_at_pgd_over_standard", "AT-PGD (10 steps) ÷ standard training, images/s",
            rate["at_pgd"] / rate["standard"]),
        row("training_gat_over_at_pgd", f"GAT (G: {generator_name}) ÷ AT-PGD (10 steps) training, images/s",
            rate["gat"] / rate["at_pgd"]),
    ]
    return result(rows, {"batch": batch, "repeats": repeats, "steps_per_repeat": steps, "images_per_s": rate,
                         "generator": generator_name,
                         "gat": {k: recipe[k] for k in ("eps", "delta", "max_iters", "pool_size", "refresh_every",
                                                        "chunk", "group_size", "moves")}})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--generator", default=None, help="zoo name, checkpoint file or random-tiny")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(args.quick, None if args.quick else args.batch, None if args.quick else args.repeats, args.generator)
    d = out["details"]
    print(f"batch {d['batch']}, generator {d['generator']}, threads {torch.get_num_threads()}: "
          + ", ".join(f"{k} {v:.1f} img/s" for k, v in d["images_per_s"].items()))
    for r in out["rows"]:
        print(f"| {r['label']} | {r['value']:.3f} |")
    return out


if __name__ == "__main__":
    main()
