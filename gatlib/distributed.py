"""Data-parallel training: ``gatlib.training.train_classifier`` (every mode) under PyTorch DDP.

Launch one process per GPU (or several CPU processes) with ``torchrun``; each process calls
:func:`init_from_env` (NCCL on GPU, gloo on CPU) and then ``train_classifier`` exactly as in a single
process — the loop notices the initialised process group (or is told with ``distributed=True``)::

    torchrun --nproc_per_node=2 -m gatlib.distributed --arch small_cnn --mode at_pgd --epochs 1 --out at-pgd-ddp.pt

What changes under DDP (:class:`DataParallel`, used by ``train_classifier``):

* **``batch_size`` stays the global batch.** Every rank takes the same seeded epoch order and keeps
  ``order[rank::world_size]`` (``DistributedSampler``'s sharding), in local batches of
  ``batch_size / world_size`` (it must divide). Step ``s`` of rank ``r`` therefore trains on exactly
  the images ``order[s*B + r :: world_size]`` of the single-process batch ``s``: the union over ranks
  *is* the single-process batch, the number of steps and the one-cycle schedule are unchanged, and
  since DDP averages the gradients of equal-sized local batches, standard training of a model
  without BatchNorm/dropout follows the single-process run up to float rounding
  (``tests/test_distributed.py`` checks it).
* The model is wrapped in ``DistributedDataParallel`` for the training forward/backward; **modes
  (attacks) run on the bare module**, so an attack's own backward passes never trigger gradient
  all-reduces (ranks may take different numbers of attack iterations). BatchNorm statistics are
  rank 0's: DDP broadcasts buffers at every forward, and the loop broadcasts them once more at the
  end of each epoch so that every rank ends with identical parameters *and* buffers.
* Only rank 0 shows progress and writes the checkpoint; on resume every rank reads the same file
  (a shared filesystem), and the ranks must agree that it exists. The per-epoch loss and accuracy
  are summed over ranks, so the history is the global one on every rank.
* Randomness (dropout, random starts) is seeded per rank: rank 0 keeps the single-process seeds,
  rank ``r`` adds ``r * RANK_SEED_STRIDE``. A ``GATMode`` (also inside a wrapper with a ``.mode``
  attribute, such as ``finetune``'s tracker) is re-seeded the same way once, so the ranks attack
  different latents instead of all building the same pool.
* **GAT balance.** GAT keeps only the samples that fool within ``max_iters`` steps, so one rank can
  end up with adversarial images when another has none (an empty pool makes ``GATMode`` return a
  clean batch). A global 50/50 batch is restored after every mode call (:func:`balance_adversarial`):
  the per-rank adversarial counts are all-reduced; when they differ, every rank's adversarial part
  is trimmed or padded (resampling its own, with replacement, as GAT's pool draw does) to its clean
  count, and a rank with none draws from the adversarial images of the other ranks (all-gathered).
  Equal counts — the usual case, and every fixed-size mode (AT-PGD, AdvProp, ...) — pass unchanged.
  A batch whose length differs across ranks is taken to be ``cat(clean, extra)``, GAT's layout.

:func:`spawn` runs a function in N local processes with an initialised process group (gloo on CPU,
free port on 127.0.0.1): the tests use it, and so can a notebook on a multi-core machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import random
import socket
import sys
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

#: rank r adds r * RANK_SEED_STRIDE to every seed (rank 0 keeps the single-process seeds)
RANK_SEED_STRIDE = 100_000_007

__all__ = ["RANK_SEED_STRIDE", "is_initialized", "rank", "world_size", "is_main", "rank_seed", "init_from_env",
           "cleanup", "free_port", "spawn", "DataParallel", "context", "balance_adversarial", "reseed_for_rank"]


# ------------------------------------------------------------------------------------- process group
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 and in a single process: the one process that writes files and prints."""
    return rank() == 0


def rank_seed(seed: int, of_rank: int | None = None) -> int:
    """``seed`` for this rank (or ``of_rank``): unchanged on rank 0, shifted by ``rank * RANK_SEED_STRIDE``."""
    return int(seed) + RANK_SEED_STRIDE * (rank() if of_rank is None else int(of_rank))


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Initialise the default process group from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) and return this rank's device: ``cuda:LOCAL_RANK``
    with NCCL when CUDA is available, else the CPU with gloo. Outside ``torchrun`` (no ``WORLD_SIZE``)
    it initialises nothing and returns the single-process device, so one script serves both."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and not is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"),
                                timeout=_dt.timedelta(seconds=timeout_s))
    return device


def cleanup() -> None:
    """Destroy the default process group, if any (call it at the end of a torchrun script)."""
    if is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(local_rank: int, fn: Callable, nprocs: int, backend: str, port: int, threads: int | None, args: tuple):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(nprocs), LOCAL_RANK=str(local_rank))
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, rank=local_rank, world_size=nprocs, timeout=_dt.timedelta(seconds=120))
    try:
        fn(local_rank, nprocs, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, nprocs: int = 2, *args, backend: str = "gloo", threads: int | None = 1) -> None:
    """Run ``fn(rank, nprocs, *args)`` in ``nprocs`` fresh local processes that share an initialised
    process group (``backend``, ``MASTER_ADDR=127.0.0.1``, a free port); ``threads`` torch threads
    each. ``fn`` must be importable (a module-level function). Raises if any process fails."""
    import torch.multiprocessing as mp

    mp.spawn(_spawned, args=(fn, nprocs, backend, free_port(), threads, args), nprocs=nprocs, join=True)


# ------------------------------------------------------------------------------ the loop's helpers
def _all_gather_rows(tensor: torch.Tensor, counts: list[int], comm_device: torch.device) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (``counts[r]`` rows each, same trailing shape), via one all-gather of
    tensors padded to the largest count."""
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]), device=comm_device)
    padded[:len(tensor)] = tensor.to(comm_device)
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [g[:c].to(tensor.device) for g, c in zip(gathered, counts)]


def _comm_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def balance_adversarial(inputs: torch.Tensor, targets: torch.Tensor, clean_count: int, *, step: int = 0,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore the global 50/50 clean/adversarial balance of a ``cat(clean, adversarial)`` batch when
    the ranks hold different numbers of adversarial rows (see the module docstring).

    Collective: every rank of the default group must call it at the same step. Returns the batch
    unchanged when all ranks have the same count; otherwise every rank returns its ``clean_count``
    clean rows followed by exactly ``clean_count`` adversarial rows: its own first ones (more than
    needed), its own resampled with replacement (fewer), or — with none — rows drawn from the other
    ranks' adversarial images (all-gathered). Draws use a generator seeded by ``(seed, step, rank)``.
    """
    me, world = dist.get_rank(), dist.get_world_size()
    comm = _comm_device(inputs.device)
    extra = len(inputs) - clean_count
    counts = torch.zeros(world, dtype=torch.long, device=comm)
    counts[me] = extra
    dist.all_reduce(counts)
    counts = counts.tolist()
    if all(c == counts[0] for c in counts):
        return inputs, targets
    if min(counts) < 0:   # raised on every rank alike (they all see the counts), never a hang
        raise ValueError(f"the mode returned batches of different lengths on the ranks (extra rows {counts} beyond "
                         f"the {clean_count} clean images): only a cat(clean, extra) layout can be balanced")
    clean_x, clean_y = inputs[:clean_count], targets[:clean_count]
    adv_x, adv_y = inputs[clean_count:], targets[clean_count:]
    generator = torch.Generator().manual_seed(rank_seed(seed * 7919 + step, me))
    if min(counts) == 0:   # a rank has none: everyone shares (all ranks take part in the gather)
        all_x, all_y = _all_gather_rows(adv_x, counts, comm), _all_gather_rows(adv_y, counts, comm)
        if extra == 0:
            adv_x, adv_y = torch.cat(all_x), torch.cat(all_y)
    if extra >= clean_count:          # more than needed: its own first ones
        pick = torch.arange(clean_count)
    elif extra > 0:                   # fewer: its own, padded by resampling them
        pick = torch.cat([torch.arange(extra), torch.randint(extra, (clean_count - extra,), generator=generator)])
    elif len(adv_x) >= clean_count:   # none: drawn from the other ranks' images
        pick = torch.randperm(len(adv_x), generator=generator)[:clean_count]
    else:
        pick = torch.randint(len(adv_x), (clean_count,), generator=generator)
    pick = pick.to(adv_x.device)
    return torch.cat([clean_x, adv_x[pick]]), torch.cat([clean_y, adv_y[pick]])


def reseed_for_rank(mode, of_rank: int) -> None:
    """Shift the seeds of a ``GATMode`` (found directly or through ``.mode`` wrappers) by
    ``of_rank * RANK_SEED_STRIDE``, once per object: without it every rank would attack the same
    latents and build the same pool. Rank 0 is left as it is."""
    from .gat import GATMode

    seen: set[int] = set()
    while mode is not None and not isinstance(mode, str) and id(mode) not in seen:
        seen.add(id(mode))
        if isinstance(mode, GATMode) and of_rank and getattr(mode, "_distributed_rank", 0) != of_rank:
            shift = RANK_SEED_STRIDE * (of_rank - getattr(mode, "_distributed_rank", 0))
            mode.seed += shift
            mode.rng = random.Random(mode.seed)
            mode._latent_seed += shift * 1_000_003
            mode._distributed_rank = of_rank
        mode = getattr(mode, "mode", None)


class DataParallel:
    """What ``train_classifier`` needs from the process group (one object per training run)."""

    def __init__(self, device: torch.device):
        if not is_initialized():
            raise RuntimeError("distributed training needs an initialised torch.distributed process group: "
                               "run under torchrun and call gatlib.distributed.init_from_env() first")
        self.rank, self.world_size, self.device = dist.get_rank(), dist.get_world_size(), torch.device(device)
        self.comm_device = _comm_device(self.device)
        self.is_main = self.rank == 0
        self.seed_offset = RANK_SEED_STRIDE * self.rank

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(f"the global batch_size {batch_size} must be a multiple of the world size "
                             f"{self.world_size} (each rank trains on an equal share)")
        return batch_size // self.world_size

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch order (``DistributedSampler``'s ``order[rank::world]``)."""
        return order[self.rank::self.world_size]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)``; its construction copies rank 0's weights to every rank."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def wrap_mode(self, mode_fn: Callable, seed: int = 0) -> Callable:
        """The mode, re-seeded for this rank, followed by :func:`balance_adversarial`."""
        reseed_for_rank(mode_fn, self.rank)

        def balanced(model, images, labels, step):
            inputs, targets = mode_fn(model, images, labels, step)
            return balance_adversarial(inputs, targets, len(images), step=step, seed=seed)

        return balanced

    def agree(self, flag: bool, what: str) -> bool:
        """``flag`` when every rank has the same, else a clear error (instead of a hang later)."""
        votes = torch.tensor([int(bool(flag)), 1], dtype=torch.long, device=self.comm_device)
        dist.all_reduce(votes)
        if votes[0].item() not in (0, votes[1].item()):
            raise RuntimeError(f"ranks disagree on {what} (true on {votes[0].item()} of {votes[1].item()}); "
                               "a checkpoint must be on a filesystem every rank sees")
        return bool(flag)

    def all_finite(self, loss: torch.Tensor) -> bool:
        flag = torch.isfinite(loss.detach()).to(device=self.comm_device, dtype=torch.long).reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def sum(self, *values: float) -> list[float]:
        totals = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(totals)
        return totals.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Broadcast rank 0's buffers (BatchNorm running statistics) to every rank."""
        for buffer in model.buffers():
            if buffer.device == self.comm_device:
                dist.broadcast(buffer, 0)
            else:
                moved = buffer.to(self.comm_device)
                dist.broadcast(moved, 0)
                buffer.copy_(moved)


def context(distributed: bool | None, device) -> DataParallel | None:
    """The loop's DDP helper, or None for a single process. ``distributed=None``: DDP exactly when a
    process group with more than one rank is initialised."""
    if distributed is None:
        distributed = is_initialized() and world_size() > 1
    return DataParallel(torch.device(device)) if distributed else None


# ------------------------------------------------------------------------------------------ command
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m gatlib.distributed",
        description="Train a digit classifier with train_classifier under DDP (also runs as a single process).")
    parser.add_argument("--arch", default="small_cnn", help="gatlib.classifiers architecture")
    parser.add_argument("--init", default=None, help="start from this zoo model (e.g. mnist-classifier-s0)")
    parser.add_argument("--mode", default="standard", help="a registered mode (standard, at_pgd, at_spatial, "
                        "at_recolor, pat) or gat")
    parser.add_argument("--generator", default="random-tiny", help="gat: zoo name, checkpoint file or random-tiny")
    parser.add_argument("--eps", type=float, default=0.05, help="gat: style step")
    parser.add_argument("--delta", type=float, default=0.5, help="gat: noise step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (split over the ranks)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on the steps per epoch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=0, help="use the first N MNIST train images (0: all)")
    parser.add_argument("--random-data", action="store_true", help="random images instead of MNIST (plumbing checks)")
    parser.add_argument("--checkpoint", default=None, help="per-epoch checkpoint (resumable), written by rank 0")
    parser.add_argument("--out", default=None, help="final state dict, written by rank 0")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = init_from_env()
    try:
        from . import classifiers, data, defenses  # noqa: F401 - defenses registers the AT modes
        from .training import train_classifier

        if args.random_data:
            count = args.train_images or 4 * args.batch_size
            generator = torch.Generator().manual_seed(args.seed)
            train_set = data.DigitDataset(torch.rand(count, 1, 32, 32, generator=generator),
                                          torch.randint(10, (count,), generator=generator))
        else:
            train_set = data.mnist("train")
            if args.train_images:
                keep = slice(0, args.train_images)
                train_set = data.DigitDataset(train_set.images[keep], train_set.labels[keep])
        torch.manual_seed(args.seed)
        if args.init:
            from . import zoo

            model = zoo.load(args.init, device)
        else:
            model = classifiers.build(args.arch)
        mode = args.mode
        if mode == "gat":
            from . import zoo
            from .gat import GATMode

            mode = GATMode(zoo.generator(args.generator, device, seed=args.seed), eps=args.eps, delta=args.delta,
                           seed=args.seed)
        history = train_classifier(model, train_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                   seed=args.seed, device=device, mode=mode, checkpoint=args.checkpoint,
                                   max_steps=args.max_steps, progress=is_main())
        if is_main():
            print(f"world size {world_size()}, history {history}")
            if args.out:
                torch.save(model.state_dict(), args.out)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
