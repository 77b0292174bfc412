"""Clean accuracy at ``gatlib.classifiers.PREDICT_BATCH`` images per forward pass against 1,000.

Every chapter measures clean accuracy: Table 1 and Table 3 read the 10,000 MNIST test digits once per
row and seed, so how they are batched shows in the book's time. Same model (the zoo's
``mnist-classifier-s0``, eval mode), same digits, in one process run:

* **batch PREDICT_BATCH ÷ batch 1,000** — median wall time of ``classifiers.accuracy`` with the
  default batch size ÷ the same call in batches of 1,000 (the default before it was measured).
  Target ≤ 1.00. On a 2-core CPU the small batch's activations stay in cache.
* beside it, whether both give the same accuracy (they must: eval mode, the same predictions).

    OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --images 10000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import QUICK_REPEATS, REPEATS, interleaved, result, row

TARGET = "≤ 1.00"
LARGE_BATCH = 1000


def run(quick: bool = False, images: int | None = None, repeats: int | None = None) -> dict:
    from gatlib import classifiers, data, zoo

    images = images or (1000 if quick else 10_000)
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    model = zoo.load("mnist-classifier-s0").eval().requires_grad_(False)
    digits = data.mnist("test").subset(images, seed=0)
    accuracies = {}

    def small():
        accuracies["small"] = classifiers.accuracy(model, digits)

    def large():
        accuracies["large"] = classifiers.accuracy(model, digits, batch_size=LARGE_BATCH)

    timings = interleaved({"small": small, "large": large}, repeats)
    rows = [row("predict_small_over_large_batch",
                f"clean accuracy of {images:,} digits: batches of {classifiers.PREDICT_BATCH} ÷ batches of {LARGE_BATCH:,}",
                timings["small"] / timings["large"], TARGET)]
    return result(rows, {"images": images, "repeats": repeats, "batch": classifiers.PREDICT_BATCH,
                         "small_s": timings["small"], "large_s": timings["large"],
                         "same_accuracy": accuracies["small"] == accuracies["large"]})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 digits, 2 repeats: only checks that it runs")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    out = run(quick=args.quick, images=args.images, repeats=args.repeats)
    for r in out["rows"]:
        print(f"{r['label']}: {r['value']:.2f} (target {r['target']})")
    print(out["details"])
    return out


if __name__ == "__main__":
    main()
