"""jemalloc against the system's malloc on the chapters' attack workload: peak memory and time.

The runner starts every notebook kernel with jemalloc when the machine has it (``gatlib.allocator``).
This benchmark checks that choice on the workload that holds the book's peak: chapter 02's latent
attacks, several ``attack_batches`` calls in one process on the chapters' batch size, moving the
style, the noise, then both. Each allocator gets fresh processes (an allocator is chosen when a process
starts), run in turns (glibc, jemalloc, jemalloc with its default decay, glibc, ...) so that a change
of load hits all three.

Figures: jemalloc's peak resident memory ÷ the system's, and its wall time ÷ the system's (medians
over the repeats), for the runner's jemalloc settings (no decay) and, without a target, for
jemalloc's own default decay; the attack results must be bit-identical (an allocator does not change what is
computed), which the benchmark checks on a digest of every adversarial image.

    python benchmarks/bench_allocator.py --latents 500 --repeats 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVES = ("style", "noise", "both")


def workload(latents: int, progress: bool = False) -> dict:
    """The child process: three latent attacks of ``latents`` samples each; its peak RSS, time, digest."""
    import torch

    from benchmarks.bench_attack import ATTACK_BATCH, _models
    from gatlib import allocator
    from gatlib.attacks.latent import attack_batches
    from gatlib.chapter import peak_rss_bytes

    G, model, models = _models()
    labels = torch.arange(latents) % 10
    digest = hashlib.sha256()
    started = time.perf_counter()
    for number, moves in enumerate(MOVES):
        result = attack_batches(G, model, labels, seed=number, batch_size=ATTACK_BATCH, eps=0.05, delta=0.5,
                                moves=moves, max_iters=10, progress=progress)
        digest.update(result.images.numpy().tobytes())
        digest.update(result.iterations.numpy().tobytes())
        del result
    return {"wall_s": time.perf_counter() - started, "peak_rss_bytes": peak_rss_bytes(),
            "allocator": allocator.loaded(), "digest": digest.hexdigest(), "models": models,
            "threads": torch.get_num_threads()}


#: jemalloc's own defaults (5.x): freed pages decay back to the OS over 10 s, and allocations of 8 MiB
#: and more go to an arena that returns them at once. The third contender, to show why the runner
#: turns decay off (gatlib.allocator.JEMALLOC_CONF)
JEMALLOC_DEFAULT_DECAY = "dirty_decay_ms:10000,muzzy_decay_ms:0"


def child(choice: str, latents: int, malloc_conf: str | None = None) -> dict:
    """Run ``workload`` in a fresh process started with allocator ``choice`` ("system" or "auto"),
    with ``malloc_conf`` instead of the runner's jemalloc settings when given."""
    from gatlib import allocator

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    if malloc_conf:
        env["MALLOC_CONF"] = malloc_conf
    env.update(allocator.kernel_env(choice, environ=env))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # as the runner's kernels
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_allocator", "--child", "--latents", str(latents)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {choice} allocator's workload failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(latents: int, repeats: int) -> dict:
    from gatlib import allocator

    library = allocator.find_jemalloc()
    if library is None:
        return {"jemalloc": None, "reason": "no libjemalloc.so.2 on this machine (Debian: apt-get install libjemalloc2)"}
    runs = {"system": [], "jemalloc": [], "jemalloc_decay": []}
    for _ in range(repeats):
        runs["system"].append(child("system", latents))
        runs["jemalloc"].append(child("auto", latents))
        runs["jemalloc_decay"].append(child("auto", latents, JEMALLOC_DEFAULT_DECAY))
    got = {name: {r["allocator"] for r in rs} for name, rs in runs.items()}
    if got != {"system": {"system"}, "jemalloc": {"jemalloc"}, "jemalloc_decay": {"jemalloc"}}:
        raise RuntimeError(f"the children did not run with the allocators asked for: {got}")
    median = lambda name, key: statistics.median(r[key] for r in runs[name])  # noqa: E731
    digests = {r["digest"] for rs in runs.values() for r in rs}
    return {"jemalloc": str(library), "latents": latents, "attacks": list(MOVES), "repeats": repeats,
            "models": runs["system"][0]["models"], "threads": runs["system"][0]["threads"],
            "peak_gib": {name: median(name, "peak_rss_bytes") / 2**30 for name in runs},
            "wall_s": {name: median(name, "wall_s") for name in runs},
            "identical": len(digests) == 1, "runs": runs}


def run(quick: bool = False, latents: int | None = None, repeats: int | None = None) -> dict:
    """For ``python -m benchmarks`` (see ``benchmarks/__init__.py``): one process per allocator and
    repeat, so the default is 3 repeats of 500 latents (about 8 minutes on 2 cores), not 5."""
    from benchmarks import result, row

    out = measure(latents or (8 if quick else 500), repeats or (1 if quick else 3))
    if out["jemalloc"] is None:
        rows = [row("allocator_peak_jemalloc_over_system", "allocator: jemalloc ÷ glibc peak RSS, "
                    "attack workload (not measured: no jemalloc)", None, "≤ 1.00")]
        return result(rows, out)
    what = f"{len(out['attacks'])} latent attacks × {out['latents']} latents in one process"
    rows = [
        row("allocator_peak_jemalloc_over_system", f"allocator: jemalloc ÷ glibc peak RSS, {what}",
            out["peak_gib"]["jemalloc"] / out["peak_gib"]["system"], "≤ 1.00"),
        row("allocator_time_jemalloc_over_system", f"allocator: jemalloc ÷ glibc wall time, {what}",
            out["wall_s"]["jemalloc"] / out["wall_s"]["system"], "≤ 1.00"),
        row("allocator_decay_peak_over_system", f"allocator: jemalloc with its default decay ÷ glibc peak RSS, {what}",
            out["peak_gib"]["jemalloc_decay"] / out["peak_gib"]["system"]),
        row("allocator_decay_time_over_system", f"allocator: jemalloc with its default decay ÷ glibc wall time, {what}",
            out["wall_s"]["jemalloc_decay"] / out["wall_s"]["system"]),
        row("allocator_identical_results", "allocator: adversarial images and iterations bit-identical (1 = yes)",
            1.0 if out["identical"] else 0.0, "≥ 1"),
    ]
    return result(rows, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(workload(args.latents)))
        return
    out = run(latents=args.latents, repeats=args.repeats)
    for r in out["rows"]:
        print(f"{r['label']}: {r['value']} (target {r['target']})")
    details = out["details"]
    if details.get("jemalloc"):
        print(f"peak GiB {details['peak_gib']}, wall s {details['wall_s']}")


if __name__ == "__main__":
    main()
