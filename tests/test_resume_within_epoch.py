"""train_classifier's within-epoch checkpoints (``checkpoint_minutes``): a run stopped part-way
through an epoch and resumed gives the weights of an uninterrupted run bit for bit; without them the
per-epoch checkpoint behaves as before (and old per-epoch files still load); a corrupt or mismatched
checkpoint is refused with a ValueError naming the file, which is left in place. Then the same for
``spade_gat.fine_tune(checkpoint=...)`` on tiny scenes."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from gatlib import resumable, scenes, spade_gat, training

pytestmark = pytest.mark.usefixtures("one_thread")


class _Digits:
    def __init__(self, count=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 1, 8, 8, generator=g)
        self.labels = torch.randint(0, 3, (count,), generator=g)

    def __len__(self):
        return len(self.images)


DATA = _Digits()
RECIPE = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "weight_decay": 1e-4, "seed": 3, "progress": False}


def _classifier(seed=0):
    """BatchNorm (running statistics) and dropout (draws from the global torch RNG)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.Flatten(), nn.Linear(4 * 64, 3))


class _NoisyMode:
    """A mode with state (a counter) that also draws from numpy and Python's global RNGs, so a resume
    must restore them and the mode's state; ``die_at``: raise at that global step (a kill)."""

    def __init__(self, die_at=None):
        self.calls, self.die_at = 0, die_at

    def __call__(self, model, images, labels, step):
        if step == self.die_at:
            raise KeyboardInterrupt(f"killed at step {step}")
        self.calls += 1
        import random
        noise = torch.from_numpy(np.random.rand(*images.shape).astype(np.float32)) * 0.01 * random.random()
        return images + noise, labels

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _train(mode=None, model_seed=0, **kwargs):
    model = _classifier(model_seed)
    mode = mode or _NoisyMode()
    history = training.train_classifier(model, DATA, mode=mode, **{**RECIPE, **kwargs})
    return model, history, mode


def _assert_same(a, b):
    state_a, state_b = a[0].state_dict(), b[0].state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{key} differs"
    assert a[1] == b[1]


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0), np.random.seed(0)
    __import__("random").seed(0)
    run = _train()
    return run, torch.get_rng_state(), np.random.get_state()[1].copy()


def _reseed():
    torch.manual_seed(0), np.random.seed(0)
    __import__("random").seed(0)


def test_checkpoints_every_step_give_the_plain_weights(plain, tmp_path):
    _reseed()
    path = tmp_path / "sub" / "state.pt"          # its folder is made
    run = _train(checkpoint=path, checkpoint_minutes=0)
    _assert_same(plain[0], run)
    assert run[2].calls == 10 and torch.equal(torch.get_rng_state(), plain[1])
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"] is None and saved["mode"] == {"calls": 10}
    assert not path.with_name(path.name + ".tmp").exists()
    # per-epoch only (the default): the same too
    _reseed()
    _assert_same(plain[0], _train(checkpoint=tmp_path / "epochs.pt"))


@pytest.mark.parametrize("die_at", [2, 5, 7])   # within epoch 1, at epoch 2's first step, within epoch 2
def test_a_run_killed_within_an_epoch_resumes_to_the_uninterrupted_weights(plain, die_at, tmp_path):
    _reseed()
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(mode=_NoisyMode(die_at=die_at), checkpoint=path, checkpoint_minutes=0)
    saved = torch.load(path, weights_only=True)
    steps_per_epoch = len(DATA) // RECIPE["batch_size"]
    assert (saved["epoch"] + 1) * steps_per_epoch + (saved["partial"] or {}).get("step", 0) == die_at
    torch.manual_seed(12345), np.random.seed(54321)   # a new process: other global RNG states
    resumed = _train(checkpoint=path, checkpoint_minutes=0)
    _assert_same(plain[0], resumed)
    assert resumed[2].calls == 10    # the mode's state came back with the checkpoint
    assert torch.equal(torch.get_rng_state(), plain[1])
    assert np.array_equal(np.random.get_state()[1], plain[2])


def test_a_per_epoch_checkpoint_of_the_old_format_still_loads(tmp_path):
    """Files written before within-epoch checkpoints (no format, recipe, RNG or mode state) resume at
    the next epoch as they did; with a mode that draws only from torch the weights are the plain ones."""
    _reseed()
    plain_run = _train(mode="standard")
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(mode=lambda model, images, labels, step: _NoisyMode(die_at=6)(model, images, labels, step) and
               (images, labels), checkpoint=path)
    saved = torch.load(path, weights_only=True)
    old = {k: saved[k] for k in ("model", "optimizer", "scheduler", "history", "epoch")}
    torch.save(old, path)
    resumed = _train(mode="standard", checkpoint=path)
    _assert_same(plain_run, resumed)


def test_a_crash_mid_save_keeps_the_previous_checkpoint(plain, tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    real_save, saves = torch.save, []

    def dies_writing_the_fourth(payload, target):
        saves.append(target)
        if len(saves) == 4:
            with open(target, "wb") as handle:
                handle.write(b"PK\x03\x04 half written")
            raise KeyboardInterrupt("killed mid-save")
        real_save(payload, target)

    _reseed()
    monkeypatch.setattr(resumable.torch, "save", dies_writing_the_fourth)
    with pytest.raises(KeyboardInterrupt, match="mid-save"):
        _train(checkpoint=path, checkpoint_minutes=0)
    monkeypatch.setattr(resumable.torch, "save", real_save)
    assert all(target.name == path.name + ".tmp" for target in saves)
    assert torch.load(path, weights_only=True)["partial"]["step"] == 3     # the third save, intact
    _assert_same(plain[0], _train(checkpoint=path))


def test_a_corrupt_checkpoint_is_refused_by_name_and_left_in_place(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="unreadable or corrupt") as err:
        _train(checkpoint=garbage)
    assert str(garbage) in str(err.value) and garbage.read_bytes() == b"not a torch file"

    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(mode=_NoisyMode(die_at=3), checkpoint=path, checkpoint_minutes=0)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = cut.read_bytes()
    with pytest.raises(ValueError, match="unreadable or corrupt") as err:
        _train(checkpoint=cut)
    assert str(cut) in str(err.value) and cut.read_bytes() == before

    other = tmp_path / "other.pt"
    torch.save({"state_dict": _classifier().state_dict()}, other)
    with pytest.raises(ValueError, match="not a train_classifier training state") as err:
        _train(checkpoint=other)
    assert str(other) in str(err.value)

    bad_step = tmp_path / "bad_step.pt"
    state = torch.load(path, weights_only=True)
    state["partial"]["step"] = 99
    torch.save(state, bad_step)
    with pytest.raises(ValueError, match="unusable within-epoch state") as err:
        _train(checkpoint=bad_step)
    assert str(bad_step) in str(err.value)


@pytest.mark.parametrize("change,named", [
    ({"lr": 1e-3}, "lr: saved 0.01, asked 0.001"),
    ({"seed": 4}, "seed: saved 3, asked 4"),
    ({"batch_size": 4}, "batch_size: saved 8, asked 4"),
    ({"epochs": 3}, "epochs: saved 2, asked 3"),
    ({"checkpoint_tag": {"data": "other"}}, "data: saved 'None', asked 'other'"),
])
def test_a_checkpoint_of_another_training_is_refused_by_name_and_left_in_place(change, named, tmp_path):
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(mode=_NoisyMode(die_at=3), checkpoint=path, checkpoint_minutes=0)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="made for another training") as err:
        _train(checkpoint=path, **change)
    assert str(path) in str(err.value) and named in str(err.value)
    assert path.read_bytes() == before


def test_a_checkpoint_of_another_model_is_refused_by_name_and_left_in_place(tmp_path):
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(mode=_NoisyMode(die_at=3), checkpoint=path, checkpoint_minutes=0)
    before = path.read_bytes()
    wider = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                          nn.Linear(5 * 64, 3))
    with pytest.raises(ValueError, match="does not fit") as err:
        training.train_classifier(wider, DATA, checkpoint=path, **RECIPE)
    assert str(path) in str(err.value) and path.read_bytes() == before


def test_checkpoint_minutes_needs_a_checkpoint():
    with pytest.raises(ValueError, match="needs a checkpoint"):
        _train(checkpoint_minutes=1)


# ------------------------------------------------------------------ spade_gat.fine_tune(checkpoint=...)

FT_RECIPE = {"steps": 5, "batch_size": 4, "lr": 5e-3, "weight_decay": 1e-4, "eps": 0.01, "iterates": 2, "seed": 3}


@pytest.fixture(scope="module")
def scene_set():
    return scenes.make_scenes(24, "train", seed=5)


@pytest.fixture(scope="module")
def G():
    from gatlib.generators.spade import SPADEGenerator

    torch.manual_seed(1)
    return SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                          spectral=False, hidden=8).eval()


def _segmenter(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.2),
                         nn.Conv2d(8, 11, 3, padding=1))


@pytest.fixture(scope="module")
def label_filter():
    torch.manual_seed(9)
    return nn.Sequential(nn.Conv2d(1, 11, 3, padding=1)).eval()


def _fine_tune(G, scene_set, label_filter, start=None, **kwargs):
    model = copy.deepcopy(start) if start is not None else _segmenter()
    history = spade_gat.fine_tune(model, G, scene_set, "segmentation", label_filter=label_filter, progress=False,
                                  **{**FT_RECIPE, **kwargs})
    return model, history


def _assert_same_fine_tune(a, b):
    for key, value in a[0].state_dict().items():
        assert torch.equal(value, b[0].state_dict()[key]), f"{key} differs"
    for key in ("epoch", "loss", "train_accuracy", "pixels_kept"):
        assert a[1].get(key) == b[1].get(key), key

    def timeless(log):
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in log]
    assert timeless(a[1]["mode_log"]) == timeless(b[1]["mode_log"]) and len(a[1]["mode_log"]) == FT_RECIPE["steps"]


def test_fine_tune_killed_at_step_k_resumes_to_the_uninterrupted_weights(G, scene_set, label_filter, tmp_path,
                                                                         monkeypatch):
    torch.manual_seed(0)
    plain = _fine_tune(G, scene_set, label_filter)
    plain_rng = torch.get_rng_state()
    path = tmp_path / "fine_tune.pt"
    original_call = spade_gat.SpadeGATMode.__call__

    def dies_at_step_3(self, model, images, targets, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return original_call(self, model, images, targets, step)

    monkeypatch.setattr(spade_gat.SpadeGATMode, "__call__", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _fine_tune(G, scene_set, label_filter, checkpoint=path, checkpoint_minutes=0)
    saved = torch.load(path, weights_only=True)
    assert saved["partial"]["step"] == 3 and len(saved["mode"]["log"]) == 3
    monkeypatch.setattr(spade_gat.SpadeGATMode, "__call__", original_call)
    torch.manual_seed(777)
    _assert_same_fine_tune(plain, _fine_tune(G, scene_set, label_filter, checkpoint=path))
    assert torch.equal(torch.get_rng_state(), plain_rng)

    # another starting model, generator or filter: refused by name, the file left in place
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(spade_gat.SpadeGATMode, "__call__", dies_at_step_3)
        _fine_tune(G, scene_set, label_filter, checkpoint=tmp_path / "part.pt", checkpoint_minutes=0)
    monkeypatch.setattr(spade_gat.SpadeGATMode, "__call__", original_call)
    before = (tmp_path / "part.pt").read_bytes()
    other_G = copy.deepcopy(G)
    with torch.no_grad():
        next(other_G.parameters()).add_(1e-3)
    for kwargs, named in (({"start": _segmenter(seed=1)}, "model: saved"), ({"G": other_G}, "generator: saved"),
                          ({"label_filter": None}, "label_filter: saved"), ({"eps": 0.02}, "eps: saved")):
        args = {"G": G, "scene_set": scene_set, "label_filter": label_filter, **kwargs}
        with pytest.raises(ValueError, match="made for another training") as err:
            _fine_tune(checkpoint=tmp_path / "part.pt", **args)
        assert str(tmp_path / "part.pt") in str(err.value) and named in str(err.value)
        assert (tmp_path / "part.pt").read_bytes() == before


# ------------------------------------------------------------------ a GATMode (gatlib.pool.PoolMode) resumed

GAT_DATA_SIZE, GAT_RECIPE = 32, {"epochs": 2, "batch_size": 8, "lr": 1e-2, "weight_decay": 1e-4, "seed": 3,
                                 "progress": False}


@pytest.fixture(scope="module")
def gat_data():
    from gatlib.data import DigitDataset

    g = torch.Generator().manual_seed(2)
    return DigitDataset(torch.rand(GAT_DATA_SIZE, 1, 32, 32, generator=g), torch.arange(GAT_DATA_SIZE) % 10)


def _gat_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 32, 10))


def _gat_mode(G, **kwargs):
    from gatlib.gat import GATMode

    return GATMode(G, **{"eps": 0.2, "delta": 1.0, "pool_size": 8, "chunk": 8, "refresh_every": 2, "seed": 5,
                         **kwargs})


def _train_gat(G, data, **kwargs):
    model, mode = _gat_classifier(), _gat_mode(G)
    history = training.train_classifier(model, data, mode=mode, **{**GAT_RECIPE, **kwargs})
    return model, history, mode


def _timeless(log):
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in log]


def _assert_same_gat(a, b):
    _assert_same(a, b)
    assert _timeless(a[2].log) == _timeless(b[2].log) and len(a[2].log) == 4   # refreshes at steps 0, 2, 4, 6
    assert torch.equal(a[2].pool_images, b[2].pool_images) and torch.equal(a[2].pool_labels, b[2].pool_labels)
    assert a[2]._latent_seed == b[2]._latent_seed and a[2].rng.getstate() == b[2].rng.getstate()


@pytest.fixture(scope="module")
def plain_gat(tiny_generator, gat_data):
    torch.manual_seed(0)
    return _train_gat(tiny_generator, gat_data), torch.get_rng_state()


def _killed_at(monkeypatch, die_at):
    from gatlib.gat import GATMode

    original_call = GATMode.__call__

    def dies(self, model, images, labels, step):
        if step == die_at:
            raise KeyboardInterrupt(f"killed at step {die_at}")
        return original_call(self, model, images, labels, step)

    monkeypatch.setattr(GATMode, "__call__", dies)
    return lambda: monkeypatch.setattr(GATMode, "__call__", original_call)


# 3: within epoch 1, on the pool of step 2; 4: epoch 2's first step; 5: within epoch 2, on the pool of step 4
@pytest.mark.parametrize("die_at", [3, 4, 5])
def test_a_gat_run_killed_within_an_epoch_resumes_to_the_uninterrupted_run(plain_gat, tiny_generator, gat_data,
                                                                           die_at, tmp_path, monkeypatch):
    path = tmp_path / "gat.pt"
    revive = _killed_at(monkeypatch, die_at)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _train_gat(tiny_generator, gat_data, checkpoint=path, checkpoint_minutes=0)
    revive()
    saved = torch.load(path, weights_only=True)   # the mode's state reads back with weights_only
    assert (saved["epoch"] + 1) * 4 + (saved["partial"] or {}).get("step", 0) == die_at
    assert len(saved["mode"]["log"]) == die_at // 2 + 1 - (die_at % 2 == 0)
    assert saved["mode"]["pool_images"].shape[1:] == (1, 32, 32)
    torch.manual_seed(4321)   # a new process: other global RNG states
    resumed = _train_gat(tiny_generator, gat_data, checkpoint=path, checkpoint_minutes=0)
    _assert_same_gat(plain_gat[0], resumed)
    assert torch.equal(torch.get_rng_state(), plain_gat[1])


def test_a_gat_run_resumes_from_its_per_epoch_checkpoint(plain_gat, tiny_generator, gat_data, tmp_path, monkeypatch):
    """Killed within epoch 2 with per-epoch checkpoints only: epoch 2 is run again from epoch 1's end,
    with the pool, latent seed counter, attack draws and log as they were there."""
    path = tmp_path / "gat.pt"
    revive = _killed_at(monkeypatch, 7)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _train_gat(tiny_generator, gat_data, checkpoint=path)
    revive()
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 0 and saved["partial"] is None and len(saved["mode"]["log"]) == 2
    torch.manual_seed(4321)
    resumed = _train_gat(tiny_generator, gat_data, checkpoint=path)
    _assert_same_gat(plain_gat[0], resumed)


def test_a_run_without_checkpoint_never_asks_the_mode_for_its_state(plain_gat, tiny_generator, gat_data,
                                                                   monkeypatch):
    from gatlib.gat import GATMode

    def refuses(self):
        raise AssertionError("state_dict called without a checkpoint")

    monkeypatch.setattr(GATMode, "state_dict", refuses)
    torch.manual_seed(0)
    _assert_same_gat(plain_gat[0], _train_gat(tiny_generator, gat_data))


def test_a_pool_state_that_does_not_fit_is_refused_and_changes_nothing(plain_gat, tiny_generator, gat_data,
                                                                      tmp_path, monkeypatch):
    state = plain_gat[0][2].state_dict()
    mode = _gat_mode(tiny_generator)
    mode.load_state_dict(state)
    assert torch.equal(mode.pool_images, state["pool_images"]) and mode._latent_seed == state["latent_seed"]
    before = (mode.pool_images, mode._latent_seed, list(mode.log), mode.rng.getstate())
    kept = len(state["pool_images"])
    bad = [({**state, "pool_images": torch.zeros(kept, 3, 32, 32)}, "examples have shape"),
           ({**state, "pool_labels": torch.zeros(5, dtype=torch.long)}, "one label per image"),
           ({**state, "pool_images": torch.zeros(9, 1, 32, 32), "pool_labels": torch.zeros(9, dtype=torch.long)},
            "more than this mode's pool_size 8"),
           ({**state, "seed": 6}, "with seed 6, this one has seed 5"),
           ({k: v for k, v in state.items() if k != "latent_seed"}, "lacks latent_seed"),
           ({**state, "extra": {"generators": {}}}, "random generators"),
           ({**state, "extra": {"generators": {"rng": {"kind": "random", "state": [3, [1, 2], None]}}}},
            "'rng' does not fit")]
    for wrong, named in bad:
        with pytest.raises(ValueError, match=named):
            mode.load_state_dict(wrong)
        assert (mode.pool_images, mode._latent_seed, list(mode.log), mode.rng.getstate()) == before
    # through train_classifier: refused by name, the file left in place
    path = tmp_path / "gat.pt"
    revive = _killed_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _train_gat(tiny_generator, gat_data, checkpoint=path, checkpoint_minutes=0)
    revive()
    saved = torch.load(path, weights_only=True)
    saved["mode"]["pool_images"] = saved["mode"]["pool_images"][:, :, :16]
    torch.save(saved, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="does not fit this model, optimiser or mode") as err:
        training.train_classifier(_gat_classifier(), gat_data, mode=_gat_mode(tiny_generator), checkpoint=path,
                                  **GAT_RECIPE)
    assert str(path) in str(err.value) and path.read_bytes() == before
