"""DDP training (gatlib.distributed): 2 gloo processes on the CPU, each test a few seconds.

The workers are module-level functions (``torch.multiprocessing.spawn`` pickles them by name); they
write what they saw to ``out_dir`` and the test compares it in the parent process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gatlib import classifiers, distributed
from gatlib.data import DigitDataset
from gatlib.training import train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
BATCH = 16          # the global batch: 8 images per rank


def digits(count=64, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return DigitDataset(torch.rand(count, 1, 32, 32, generator=generator).to(dtype),
                        torch.randint(10, (count,), generator=generator))


def mlp_without_dropout():
    """The MLP oracle (no BatchNorm) with its dropout off, in float64: its DDP run must equal the single
    run up to rounding. (In float32 AdamW's normalised update turns the rounding of near-zero gradient
    entries into differences of up to ~lr; float64 keeps the comparison sharp.)"""
    torch.manual_seed(0)
    model = classifiers.build("mlp").double()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def tiny_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))


# ------------------------------------------------------------------------------------------ workers
def _standard_worker(rank, world, out_dir):
    model = mlp_without_dropout()
    torch.manual_seed(100 + rank)          # a different init on rank 1: DDP must start every rank from rank 0's
    if rank:
        for p in model.parameters():
            p.data.normal_()
    history = train_classifier(model, digits(dtype=torch.float64), epochs=2, batch_size=BATCH, lr=1e-3,
                               progress=False, checkpoint=Path(out_dir) / f"checkpoint-rank{rank}.pt")
    torch.save({"state": model.state_dict(), "history": history}, Path(out_dir) / f"rank{rank}.pt")


def _small_cnn_worker(rank, world, out_dir):
    from gatlib import defenses

    torch.manual_seed(0)
    model = classifiers.build("small_cnn")        # BatchNorm + dropout, attacked by PGD at every step
    mode = defenses.at_pgd(steps=1, mix="half")
    train_classifier(model, digits(32), epochs=1, batch_size=BATCH, mode=mode, progress=False)
    torch.save({"state": model.state_dict()}, Path(out_dir) / f"rank{rank}.pt")


def _balance_worker(rank, world, out_dir):
    clean = torch.full((4, 1, 2, 2), -1.0 - rank)
    labels = torch.full((4,), 100 + rank)

    def batch(count):    # adversarial rows numbered rank*100 + k, so their origin can be read back
        adv = (rank * 100 + torch.arange(count, dtype=torch.float32)).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
        return torch.cat([clean, adv]), torch.cat([labels, rank * 100 + torch.arange(count)])

    results = {}
    for name, counts in {"one_empty": (4, 0), "trim_and_pad": (6, 2), "equal": (3, 3), "all_empty": (0, 0)}.items():
        inputs, targets = batch(counts[rank])
        results[name] = distributed.balance_adversarial(inputs, targets, 4, step=1, seed=0)
    # inside the training loop: rank 1's mode never finds an adversarial example
    seen = []

    def half_on_rank0(model, images, labels, step):
        if rank == 0:
            return torch.cat([images, images.flip(0) * 0.5]), torch.cat([labels, labels.flip(0)])
        return images, labels

    model = tiny_classifier()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
    train_classifier(model, digits(32), epochs=1, batch_size=BATCH, mode=half_on_rank0, progress=False)
    torch.save({"results": results, "seen": seen, "state": model.state_dict()}, Path(out_dir) / f"rank{rank}.pt")


def _gat_worker(rank, world, out_dir):
    from gatlib import zoo
    from gatlib.gat import GATMode

    G = zoo.generator("random-tiny", seed=0)
    mode = GATMode(G, eps=0.2, delta=1.0, pool_size=16, chunk=16, refresh_every=2, seed=4)
    rows = []
    model = tiny_classifier()
    model.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])) if module.training else None)
    history = train_classifier(model, digits(32), epochs=1, batch_size=BATCH, mode=mode, progress=False)
    torch.save({"state": model.state_dict(), "rows": rows, "log": mode.log, "pool": mode.pool_images,
                "history": history}, Path(out_dir) / f"rank{rank}.pt")


def _load(out_dir):
    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def assert_same_state(a, b, **tol):
    assert a.keys() == b.keys()
    for key in a:
        if tol:
            torch.testing.assert_close(a[key], b[key], **tol, msg=lambda m: f"{key}: {m}")
        else:
            assert torch.equal(a[key], b[key]), key


# -------------------------------------------------------------------------------------------- tests
def test_ddp_standard_training_equals_the_single_process_run(tmp_path):
    distributed.spawn(_standard_worker, WORLD, str(tmp_path))
    rank0, rank1 = _load(tmp_path)
    assert_same_state(rank0["state"], rank1["state"])
    assert rank0["history"] == rank1["history"]
    single = mlp_without_dropout()
    history = train_classifier(single, digits(dtype=torch.float64), epochs=2, batch_size=BATCH, lr=1e-3,
                               progress=False)
    assert_same_state(rank0["state"], single.state_dict(), rtol=1e-7, atol=1e-9)
    assert rank0["history"]["loss"] == pytest.approx(history["loss"], rel=1e-9)
    assert rank0["history"]["train_accuracy"] == pytest.approx(history["train_accuracy"])
    # only rank 0 writes the checkpoint, and it holds the final weights
    assert (tmp_path / "checkpoint-rank0.pt").exists() and not (tmp_path / "checkpoint-rank1.pt").exists()
    saved = torch.load(tmp_path / "checkpoint-rank0.pt", weights_only=True)
    assert_same_state(saved["model"], rank0["state"])


def test_ddp_ranks_end_identical_with_batchnorm_and_an_attack_mode(tmp_path):
    distributed.spawn(_small_cnn_worker, WORLD, str(tmp_path))
    rank0, rank1 = _load(tmp_path)
    assert_same_state(rank0["state"], rank1["state"])      # parameters and BatchNorm statistics


def test_gat_balance_with_unequal_per_rank_counts(tmp_path):
    distributed.spawn(_balance_worker, WORLD, str(tmp_path))
    ranks = _load(tmp_path)
    for rank, saved in enumerate(ranks):
        for name, (inputs, targets) in saved["results"].items():
            assert torch.equal(inputs[:4], torch.full((4, 1, 2, 2), -1.0 - rank)), name   # clean rows kept, first
            assert torch.equal(targets[:4], torch.full((4,), 100 + rank)), name
    # rank 0 had 4 = its clean count: unchanged; rank 1 had none: 4 rows borrowed from rank 0
    inputs, targets = ranks[0]["results"]["one_empty"]
    assert targets[4:].tolist() == [0, 1, 2, 3]
    inputs, targets = ranks[1]["results"]["one_empty"]
    assert len(targets) == 8 and set(targets[4:].tolist()) <= {0, 1, 2, 3}
    assert torch.equal(inputs[4:, 0, 0, 0], targets[4:].float())
    # 6 vs 2: trimmed to 4 on rank 0, padded to 4 (resampling its own) on rank 1
    assert ranks[0]["results"]["trim_and_pad"][1][4:].tolist() == [0, 1, 2, 3]
    padded = ranks[1]["results"]["trim_and_pad"][1][4:].tolist()
    assert padded[:2] == [100, 101] and set(padded) <= {100, 101} and len(padded) == 4
    # equal counts (3 and 3, or none anywhere) pass unchanged
    assert [len(ranks[r]["results"]["equal"][0]) for r in range(WORLD)] == [7, 7]
    assert [len(ranks[r]["results"]["all_empty"][0]) for r in range(WORLD)] == [4, 4]
    # in the loop: every forward of both ranks is 8 clean + 8 adversarial; rank 1's come from rank 0
    for rank in range(WORLD):
        assert [len(x) for x in ranks[rank]["seen"]] == [16, 16]
    for x0, x1 in zip(ranks[0]["seen"], ranks[1]["seen"]):
        adv0 = {tuple(row.flatten().tolist()) for row in x0[8:]}
        assert all(tuple(row.flatten().tolist()) in adv0 for row in x1[8:])
    assert_same_state(ranks[0]["state"], ranks[1]["state"])


def test_gat_mode_under_ddp(tmp_path):
    distributed.spawn(_gat_worker, WORLD, str(tmp_path))
    rank0, rank1 = _load(tmp_path)
    assert_same_state(rank0["state"], rank1["state"])
    assert rank0["rows"] == rank1["rows"] == [16, 16]     # 8 clean + 8 adversarial on each rank, each step
    assert len(rank0["log"]) == len(rank1["log"]) == 1    # two steps, refreshed every 2
    assert rank0["history"] == rank1["history"]
    # each rank attacked its own latents (reseeded per rank), not the same pool twice
    assert rank0["pool"].shape[1:] == rank1["pool"].shape[1:]
    assert len(rank0["pool"]) != len(rank1["pool"]) or not torch.equal(rank0["pool"], rank1["pool"])


def test_rank_seed_and_single_process_context():
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) == 5 + distributed.RANK_SEED_STRIDE
    assert distributed.context(None, "cpu") is None          # no process group: a single process
    with pytest.raises(RuntimeError, match="process group"):
        distributed.context(True, "cpu")
    assert distributed.init_from_env() == torch.device("cpu") or torch.cuda.is_available()


def test_torchrun_command_line(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "mlp.pt"
    proc = subprocess.run(
        [str(torchrun), f"--nproc_per_node={WORLD}", "--master_addr=127.0.0.1",
         f"--master_port={distributed.free_port()}", "-m", "gatlib.distributed", "--random-data", "--arch", "mlp",
         "--epochs", "1", "--batch-size", str(BATCH), "--train-images", "32", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "world size 2" in proc.stdout and out.exists()
