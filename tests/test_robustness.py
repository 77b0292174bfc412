"""Table 1 / Table 3 evaluation (gatlib.robustness) and fine-tuning of the Original (gatlib.finetune)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from gatlib import finetune, robustness, zoo
from gatlib.attacks.latent import attack_batches
from gatlib.data import DigitDataset

EPS, DELTA = 0.2, 1.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


def classifier(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))


class Constant(nn.Module):
    """Always predicts ``label`` (with a parameter, so an attack can take gradients)."""

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images):
        logits = torch.zeros(len(images), 10) + images.flatten(1).mean(1, keepdim=True) * 0 * self.scale
        logits[:, self.label] = 10.0
        return logits


# ------------------------------------------------------------------------------ white box
def test_white_box_counts_misclassified_at_start_as_errors(G):
    model = classifier()
    labels = torch.arange(40) % 10
    out = robustness.white_box_accuracy(G, model, labels, seed=5, eps=EPS, delta=DELTA, max_iters=3)
    result = attack_batches(G, model, labels, seed=5, progress=False, eps=EPS, delta=DELTA, moves="both",
                            max_iters=3)
    survivors = (result.valid & ~result.success).sum().item()
    assert out["samples"] == 40 and out["correct"] == survivors
    assert out["accuracy"] == pytest.approx(survivors / 40)
    assert out["misclassified_at_start"] == pytest.approx(1 - result.valid.float().mean().item())
    assert out["misclassified_at_start"] > 0, "the test needs samples that are wrong at t=0"
    # a model that is wrong on every clean sample scores 0, whatever the attack does
    wrong = robustness.white_box_accuracy(G, Constant(3), torch.full((10,), 5), seed=5, eps=EPS, delta=DELTA)
    assert wrong["accuracy"] == 0.0 and wrong["misclassified_at_start"] == 1.0


def test_white_box_is_one_minus_success_when_all_valid(G):
    from gatlib.generators.stylegan2 import Generator

    model = classifier()
    general = robustness.white_box_accuracy(G, model, 40, seed=6, eps=EPS, delta=DELTA, max_iters=4)
    assert general["accuracy"] == pytest.approx((1 - general["misclassified_at_start"]) * (1 - general["success_rate"]))
    # an unconditional generator renders the same images whatever the labels: label every latent with
    # the model's clean prediction, so every sample is valid
    torch.manual_seed(1)
    unconditional = Generator(channels={4: 32, 8: 32, 16: 16, 32: 16}, z_dim=32, w_dim=32, mapping_layers=2,
                              num_classes=0).eval()
    with torch.no_grad():
        for layer in unconditional.layers:
            layer.noise_strength.fill_(0.1)
    probe = attack_batches(unconditional, model, torch.zeros(30, dtype=torch.long), seed=6, progress=False,
                           eps=EPS, delta=DELTA, max_iters=1)
    labels = model(probe.clean_images).argmax(1)
    out = robustness.white_box_accuracy(unconditional, model, labels, seed=6, eps=EPS, delta=DELTA, max_iters=4)
    assert out["misclassified_at_start"] == 0.0
    assert out["accuracy"] == pytest.approx(1 - out["success_rate"])
    # a constant model cannot be fooled: accuracy 1 when it is right
    robust = robustness.white_box_accuracy(G, Constant(2), torch.full((8,), 2), seed=6, eps=EPS, delta=DELTA)
    assert robust["accuracy"] == 1.0 and robust["success_rate"] == 0.0


def test_white_box_with_oracles_counts_only_label_preserving_successes(G):
    model = classifier()
    labels = torch.arange(60) % 10
    # one oracle that always answers 3: it "still sees c" exactly on the successes of class 3
    out = robustness.white_box_accuracy(G, model, labels, seed=5, eps=EPS, delta=DELTA, max_iters=3,
                                        oracles={"threes": Constant(3)})
    result = attack_batches(G, model, labels, seed=5, progress=False, eps=EPS, delta=DELTA, moves="both",
                            max_iters=3)
    fooled = result.success & result.valid
    assert fooled.sum() > 0 and (fooled & (labels != 3)).any(), "the test needs successes off class 3"
    correct = result.predictions == labels
    expected = (correct | (fooled & (labels != 3))).float().mean().item()
    assert out["accuracy_preserved"] == pytest.approx(expected)
    assert out["accuracy_preserved"] >= out["accuracy"]
    assert out["preservation"] == pytest.approx((fooled & (labels == 3)).sum().item() / fooled.sum().item())
    assert out["preserved_success_rate"] == pytest.approx((fooled & (labels == 3)).sum().item() / result.valid.sum().item())
    # an oracle panel that agrees with every label: every success counts, as without oracles
    agree = robustness.white_box_accuracy(G, model, torch.full((20,), 5), seed=5, eps=EPS, delta=DELTA,
                                          max_iters=3, oracles={"fives": Constant(5), "also": Constant(5)})
    assert agree["accuracy_preserved"] == pytest.approx(agree["accuracy"])


def test_fixed_set_keeps_every_sample_and_transfers(G):
    original = classifier(1)
    fixed = robustness.craft_fixed_set(G, original, 30, seed=7, eps=EPS, delta=DELTA, max_iters=4)
    assert len(fixed) == 30 and fixed.images.shape == (30, 1, 32, 32)
    # against its own source, transfer accuracy is the white-box accuracy (same latents, every sample kept)
    assert robustness.transfer_accuracy(original, fixed) == pytest.approx(fixed.white_box["accuracy"])
    white = robustness.white_box_accuracy(G, original, 30, seed=7, eps=EPS, delta=DELTA, max_iters=4)
    assert white["accuracy"] == pytest.approx(fixed.white_box["accuracy"])
    if fixed.fooled.any():
        assert robustness.transfer_accuracy(original, fixed, only_fooled=True) == 0.0
    # another model is scored on the very same images
    other = classifier(2)
    expected = (other(fixed.images).argmax(1) == fixed.labels).float().mean().item()
    assert robustness.transfer_accuracy(other, fixed) == pytest.approx(expected)
    assert robustness.transfer_accuracy(Constant(4), fixed) == pytest.approx((fixed.labels == 4).float().mean().item())


# ------------------------------------------------------------------------------- intervals
def test_mean_ci_matches_the_t_interval():
    values = [0.91, 0.95, 0.93]
    mean, half = robustness.mean_ci(values)
    s = np.std(values, ddof=1)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * s / math.sqrt(3))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    one_mean, one_half = robustness.mean_ci([0.5])
    assert one_mean == 0.5 and math.isnan(one_half)
    assert robustness.format_ci(0.5, float("nan")) == "50.0"
    assert robustness.format_ci(0.5, 0.012) == "50.0 ± 1.2"



def test_paired_differences_pair_rows_by_seed():
    per_seed = pd.DataFrame([
        {"row": "gat", "seed": 0, "ood": 0.80}, {"row": "gat", "seed": 1, "ood": 0.90}, {"row": "gat", "seed": 2, "ood": 0.85},
        # listed in another seed order, and with a seed gat lacks: pairs go by seed, unshared seeds drop out
        {"row": "filtered", "seed": 2, "ood": 0.88}, {"row": "filtered", "seed": 0, "ood": 0.84},
        {"row": "filtered", "seed": 1, "ood": 0.91}, {"row": "filtered", "seed": 7, "ood": 0.10}])
    table = robustness.paired_differences(per_seed, {"label test": ("filtered", "gat")}, ["ood"])
    line = table.loc["label test"]
    assert line.seeds == 3 and line.ood_per_seed == pytest.approx([0.04, 0.01, 0.03])
    mean, half = robustness.mean_ci([0.04, 0.01, 0.03])
    assert (line.ood_mean, line.ood_ci) == pytest.approx((mean, half))
    assert line.ood == f"{100 * mean:+.1f} ± {100 * half:.1f}"
    with pytest.raises(ValueError, match="no row"):
        robustness.paired_differences(per_seed, {"x": ("missing", "gat")}, ["ood"])
    lone = pd.DataFrame([{"row": "a", "seed": 0, "ood": 0.5}, {"row": "b", "seed": 1, "ood": 0.5}])
    with pytest.raises(ValueError, match="share no seed"):
        robustness.paired_differences(lone, {"x": ("a", "b")}, ["ood"])


def test_table1_and_table3_shapes(G):
    digits = DigitDataset(torch.rand(20, 1, 32, 32), torch.arange(20) % 10)
    models = {"original": [classifier(0), classifier(1)], "gat": [classifier(2), classifier(3)]}
    table = robustness.table1(models, G, digits, seeds=[0, 1], eps=EPS, delta=DELTA, samples=10, max_iters=2,
                              progress=False)
    assert list(table.summary.index) == ["original", "gat"] and len(table.per_seed) == 4
    assert set(robustness.TABLE1_COLUMNS) <= set(table.summary.columns)
    original = table.per_seed[table.per_seed.row == "original"]
    assert (original.adversarial == original.transfer).all()
    ood = robustness.out_of_domain_table(models, digits, digits, seeds=[0, 1])
    assert (ood.per_seed.in_domain == ood.per_seed.out_of_domain).all()
    matrices = robustness.confusion_matrices(models, digits, 10)
    assert matrices["gat"].sum() == 2 * len(digits)



def test_ablation_table_on_table1_latents_reuses_its_attack_results(G, monkeypatch):
    digits = DigitDataset(torch.rand(20, 1, 32, 32), torch.arange(20) % 10)
    models = {"original": [classifier(0)], "gat": [classifier(2)]}
    table = robustness.table1(models, G, digits, seeds=[0], eps=EPS, delta=DELTA, samples=10, max_iters=2,
                              progress=False)
    fresh = robustness.model_table({"gat": models["gat"][0]}, G, digits, seed=0, eps=EPS, delta=DELTA, samples=10,
                                   max_iters=2)
    known = {"gat": robustness.table1_white_box(table, "gat", 0)}
    attacked = []
    monkeypatch.setattr(robustness, "white_box_accuracy", lambda *a, **k: attacked.append(a) or {})
    reused = robustness.model_table({"gat": models["gat"][0]}, G, digits, seed=0, eps=EPS, delta=DELTA, samples=10,
                                    max_iters=2, known=known)
    assert attacked == []                                   # nothing attacked twice
    assert reused.astype(float).equals(fresh.astype(float))  # same latents: the same numbers
    with pytest.raises(ValueError, match="no single line"):
        robustness.table1_white_box(table, "gat", 5)
    with pytest.raises(ValueError, match="label-preserving"):
        robustness.robustness_row(G, models["gat"][0], digits, seed=0, eps=EPS, delta=DELTA, samples=10,
                                  oracles={"o": classifier(4)}, white=known["gat"])


# ------------------------------------------------------------------------------ fine-tuning
def test_fine_tune_runs_exactly_steps_and_leaves_the_original(G):
    digits = DigitDataset(torch.rand(64, 1, 32, 32), torch.arange(64) % 10)
    original = classifier()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    curve = finetune.LearningCurve(G, digits, eps=EPS, delta=DELTA, samples=6, max_iters=2, every=2)
    # 7 steps with 4 batches per pass: 7 epochs of 1 step (7 is prime), one schedule
    model, history = finetune.fine_tune(original, digits, "standard", 7, batch_size=16, lr=1e-2, curve=curve,
                                        progress=False)
    assert history["steps"] == 7 and len(history["epoch"]) == 7
    assert [p["step"] for p in history["curve"]] == [0, 2, 4, 6, 7]
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert finetune.step_schedule(50_000, 128, 390) == (1, 390)
    assert finetune.step_schedule(50_000, 128, 400) == (2, 200)
    assert finetune.step_schedule(50_000, 128, 1000) == (4, 250)


def test_recipe_settings_picks_only_the_recipe_keys_a_chapter_defines():
    chapter_globals = {"eps": 0.05, "steps": 7, "seed": 3, "profile": "smoke", "test_images": 100, "In": []}
    assert finetune.recipe_settings(chapter_globals) == {"eps": 0.05, "steps": 7}
    assert finetune.zoo_recipe("gat", 0, **finetune.recipe_settings(chapter_globals))["eps"] == 0.05


def test_gat_mode_fine_tune_and_recipes(G):
    digits = DigitDataset(torch.rand(48, 1, 32, 32), torch.arange(48) % 10)
    recipe = finetune.zoo_recipe("gat", 1, generator="random-tiny", steps=3, pool_size=8, refresh_every=2)
    assert recipe["base"] == "mnist-classifier-s1" and recipe["steps"] == 3 and recipe["mode"] == "gat"
    assert "pool_size" not in finetune.zoo_recipe("control-real", 0)
    assert finetune.zoo_recipe("gat-style", 0, moves=["both"])["moves"] == ["style"], "the ablation's own setting wins"
    with pytest.raises(ValueError, match="unknown recipe settings"):
        finetune.zoo_recipe("gat", 0, epsilon=1)
    model, history, log, seconds = finetune.train_zoo_model(
        "gat", 1, G, train_set=digits, curve_set=digits, original=classifier(), progress=False,
        generator="random-tiny", eps=EPS, delta=DELTA, steps=3, batch_size=16, pool_size=8, chunk=16,
        refresh_every=2, eval_every=10, curve_samples=4)
    assert history["steps"] == 3 and [entry["step"] for entry in log] == [0, 2] and seconds > 0
    all_layers = finetune.make_mode("gat-all-layers", G, eps=EPS, delta=DELTA, seed=0, group_size=0)
    assert all_layers.groups == [list(range(G.num_layers))]
    assert finetune.make_mode("control-real", G, eps=EPS, delta=DELTA, seed=0) == "standard"
    assert finetune.make_mode("control-generated", G, eps=EPS, delta=DELTA, seed=0).attack is False


def test_table1_variant_ablations_are_registered_on_every_seed_with_their_own_settings():
    for row in finetune.MULTI_SEED_ABLATIONS:
        assert row in finetune.ABLATIONS
        for seed in range(3):
            entry = zoo.entry(f"{row}-s{seed}")
            assert entry.recipe == finetune.zoo_recipe(row, seed) and entry.recipe["base"] == f"mnist-classifier-s{seed}"
    # every label-test comparison is between rows trained on every seed, differing only in their filter
    for treated, reference in finetune.LABEL_TEST_PAIRS.values():
        assert {treated, reference} <= set(finetune.MULTI_SEED_ABLATIONS) | set(finetune.TRAINED_ROWS)
        a, b = finetune.zoo_recipe(treated, 0), finetune.zoo_recipe(reference, 0)
        differ = {key for key in set(a) | set(b) if a.get(key) != b.get(key)} - {"row"}
        assert differ and differ <= {"oracle_filter", "random_keep"}, (treated, reference, differ)
    single = [name for name in finetune.ABLATIONS if name not in finetune.MULTI_SEED_ABLATIONS]
    assert single and all(f"{name}-s1" not in zoo.ENTRIES for name in single)
    # the long ablation is three times the chapter's own `steps` (the smoke profile's 4 included)
    long = finetune.zoo_recipe("gat-all-layers-long", 0, steps=400)
    assert long["steps"] == 1200 and long["group_size"] == 0 and "steps_factor" not in long
    assert finetune.zoo_recipe("gat-all-layers-long", 0, steps=4)["steps"] == 12
    assert finetune.zoo_recipe("gat-all-layers", 0, steps=400)["steps"] == 400


@pytest.mark.parametrize("chapter", ["04_adversarial_training", "06_out_of_domain"])
def test_the_chapters_show_every_multi_seed_ablation_as_a_row(chapter):
    from pathlib import Path

    from gatlib import runbook

    # the parameter is a literal (papermill overrides it); it must not drift from the zoo's list
    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{chapter}.md"
    defaults, _ = runbook.notebook_parameters(runbook.read_notebook(path), path)
    assert tuple(defaults["variant_rows"]) == finetune.MULTI_SEED_ABLATIONS


def test_missing_zoo_model_names_the_command():
    with pytest.raises(LookupError, match=r"python -m gatlib.zoo train gat-s7"):
        finetune.row_models(["gat"], [7])


# ------------------------------------------------------------------------- paper profile
def test_group_classes_maps_folders_and_names_unknown_ones(tmp_path):
    from PIL import Image

    for wnid, count in [("n02123045", 2), ("n02123159", 1), ("n04285008", 2), ("n09999999", 1)]:
        (tmp_path / wnid).mkdir()
        for i in range(count):
            Image.new("RGB", (8, 8), color=(i * 40, 0, 0)).save(tmp_path / wnid / f"{i}.png")
    grouped = robustness.group_classes(tmp_path, {"car": ["n04285008"], "cat": ["n02123045", "n02123159"]})
    assert len(grouped) == 5 and grouped.classes == ["car", "cat"]
    assert grouped.counts() == {"car": 2, "cat": 3}
    image, label = grouped[0]
    assert label in (0, 1) and image.size == (8, 8)
    assert sorted(grouped.targets) == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="'n99' .* is not a class folder"):
        robustness.group_classes(tmp_path, {"car": ["n04285008"], "cat": ["n99"]})
    with pytest.raises(ValueError, match="in two groups"):
        robustness.group_classes(tmp_path, {"car": ["n04285008"], "cat": ["n04285008"]})


def test_zoo_model_with_another_recipe_is_refused(monkeypatch, tmp_path):
    entry = zoo.ZooEntry("gat-s0", "gat", "classifier", "small_cnn", 0, "test entry", finetune.zoo_recipe("gat", 0))
    monkeypatch.setitem(zoo.ENTRIES, "gat-s0", entry)
    monkeypatch.setattr(zoo, "verified_path", lambda name, path=None: tmp_path / "gat-s0.pt")
    monkeypatch.setattr(zoo, "read_manifest", lambda: {"gat-s0": {"recipe": finetune.zoo_recipe("gat", 0, eps=0.1)}})
    with pytest.raises(ValueError, match=r"eps: zoo 0.1 vs asked 0.2"):
        finetune.row_models(["gat"], [0], eps=0.2)


def test_the_label_test_quoted_in_deviations_comes_from_the_cited_chapter_06_run():
    """book/deviations.md quotes chapter 06's label test (filtered rows against their twins); the
    numbers and the reading the text gives must be that run's."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = "default-f47dc568b3"
    numbers = json.loads((root / "runs/06_out_of_domain" / run / "results.json").read_text())["numbers"]
    text = " ".join((root / "book/deviations.md").read_text().split())
    assert f"run `{run}`" in text

    def points(key):
        return numbers[f"label_test.{key}.out_of_domain"], numbers[f"label_test.{key}.out_of_domain.ci95"]

    for filtered, twin in (("gat_oracle_filter", "gat"), ("gat_all_layers_oracle_filter", "gat_all_layers")):
        regained, half = points(f"{filtered}_minus_{twin}")
        lost = -numbers[f"label_test.{twin}_minus_original.out_of_domain"]
        assert f"{100 * regained:.1f} ± {100 * half:.1f}" in text
        assert f"{100 * lost:.1f}-point loss" in text
        assert regained - half > 0, "the text says both intervals exclude zero"
        below, below_half = points(f"{filtered}_minus_original")
        assert below < 0 and below + below_half > 0, "the text says the filtered rows' gap to Original includes zero"
        assert f"{-100 * below:.1f}" in text and f"±{100 * below_half:.1f}" in text
        for row in (filtered, twin):
            assert f"{100 * numbers[f'table3.{row}.out_of_domain']:.1f} %" in text
    # the random-filter control: the smaller pool alone, and the labels alone at an equal pool
    pool_alone, labels_alone = points("gat_random_filter_minus_gat"), points("gat_oracle_filter_minus_gat_random_filter")
    assert f"**{100 * pool_alone[0]:.1f} ± {100 * pool_alone[1]:.1f} points** ({100 * numbers['table3.gat_random_filter.out_of_domain']:.1f} %)" in text
    assert f"**{100 * labels_alone[0]:.1f} ± {100 * labels_alone[1]:.1f} points**" in text
    assert all(abs(mean) < half for mean, half in (pool_alone, labels_alone)), "the text says: neither interval excludes zero"
    assert pool_alone[0] > labels_alone[0], "the text says: the point estimates put most of the gain on the pool"
    assert f"most of the filter's {100 * numbers['label_test.gat_oracle_filter_minus_gat.out_of_domain']:.1f} points " \
           f"({100 * pool_alone[0]:.1f} of" in text
    # the all-layer recipe's control: the pool alone regains optdigits accuracy; the labels' share is noise
    all_layer_pool, all_layer_labels = (points("gat_all_layers_random_filter_minus_gat_all_layers"),
                                        points("gat_all_layers_oracle_filter_minus_gat_all_layers_random_filter"))
    assert (f"**{100 * all_layer_pool[0]:.1f} ± {100 * all_layer_pool[1]:.1f} points** over gat-all-layers "
            f"({100 * numbers['table3.gat_all_layers_random_filter.out_of_domain']:.1f} %), an interval that excludes zero"
            ) in text and all_layer_pool[0] - all_layer_pool[1] > 0
    assert f"it is {100 * all_layer_labels[0]:.1f} ± {100 * all_layer_labels[1]:.1f} points" in text
    assert abs(all_layer_labels[0]) < all_layer_labels[1], "the text says: the labels' share is not separable from noise"
    below_rows = ("gat_oracle_filter", "gat_all_layers_oracle_filter", "gat_random_filter", "gat_all_layers_random_filter")
    below = [points(f"{row}_minus_original") for row in below_rows]
    assert (f"{-100 * below[0][0]:.1f}, {-100 * below[1][0]:.1f}, {-100 * below[2][0]:.1f} and {-100 * below[3][0]:.1f} "
            f"points (intervals ±{100 * below[0][1]:.1f}, ±{100 * below[1][1]:.1f}, ±{100 * below[2][1]:.1f} and "
            f"±{100 * below[3][1]:.1f}; the two random filters' exclude zero) below Original") in text
    assert [mean + half < 0 for mean, half in below] == [False, False, True, True]
    for row in ("gat", "gat_oracle_filter", "gat_random_filter"):
        assert f"{100 * numbers[f'table3.{row}.in_domain']:.2f} %" in text
    clean = [numbers[f"label_test.gat_oracle_filter_minus_gat_random_filter.in_domain{suffix}"] for suffix in ("", ".ci95")]
    assert f"filter's {100 * clean[0]:.1f} ± {100 * clean[1]:.1f} points over the random one" in text
    assert abs(clean[0]) < clean[1], "the text says: within noise"
    share = numbers["label_test.gat_all_layers_oracle_filter_minus_gat_all_layers.out_of_domain"] / \
        -numbers["label_test.gat_all_layers_minus_original.out_of_domain"]
    assert f"{100 * share:.0f} % of a" in text
    by_row = numbers["ood_errors.gat_top_error"]["by_row"]
    assert numbers["ood_errors.gat_top_error"]["error"] == "9 → 3"
    assert (f"{by_row['gat']} of GAT's optdigits errors, {by_row['gat-oracle-filter']} of gat-oracle-filter's, "
            f"{by_row['gat-random-filter']} of gat-random-filter's, "
            f"{by_row['gat-all-layers']} of gat-all-layers', {by_row['gat-all-layers-oracle-filter']} of "
            f"gat-all-layers-oracle-filter's and {by_row['gat-all-layers-random-filter']} of "
            f"gat-all-layers-random-filter's, against {by_row['original']} of the Original's") in text
    assert by_row["gat-random-filter"] < by_row["gat"] / 2 and by_row["gat-all-layers-random-filter"] >= by_row["gat-all-layers"], \
        "the text says: the random filter cuts this error for GAT but not for the all-layer recipe"


def test_the_filtered_rows_quoted_in_deviations_come_from_the_cited_chapter_04_run():
    """book/deviations.md quotes chapter 04's filtered rows and their per-seed differences from their
    twins, and the pool sizes of seed 0's refresh log; all must be that run's."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = "default-9fafa66644"
    numbers = json.loads((root / "runs/04_adversarial_training" / run / "results.json").read_text())["numbers"]
    text = " ".join((root / "book/deviations.md").read_text().split())
    assert f"run `{run}`" in text
    table = lambda row, column: numbers[f"table1.{row}.{column}"]   # noqa: E731
    gat_change = numbers["label_test.gat_oracle_filter.adversarial"], numbers["label_test.gat_oracle_filter.adversarial.ci95"]
    assert f"{100 * gat_change[0]:.1f} ± {100 * gat_change[1]:.1f} points)".replace("-", "−") in text
    assert abs(gat_change[0]) < gat_change[1], "the text says the filter leaves GAT's white-box accuracy where it was"
    cost = numbers["label_test.gat_all_layers_oracle_filter.adversarial"], \
        numbers["label_test.gat_all_layers_oracle_filter.adversarial.ci95"]
    assert f"{-100 * cost[0]:.1f} ± {100 * cost[1]:.1f} points of it" in text and cost[0] + cost[1] < 0
    for filtered, twin in (("gat_oracle_filter", "gat"), ("gat_all_layers_oracle_filter", "gat_all_layers")):
        assert f"({100 * table(filtered, 'adversarial'):.1f} % against {100 * table(twin, 'adversarial'):.1f} %" in text
        gain = numbers[f"label_test.{filtered}.adversarial_preserved"]
        half = numbers[f"label_test.{filtered}.adversarial_preserved.ci95"]
        assert f"{100 * gain:.1f} ± {100 * half:.1f}" in text and gain - half > 0
        assert f"{100 * table(filtered, 'adversarial_preserved'):.1f} %" in text
        assert f"{100 * table(filtered, 'clean'):.2f} %" in text
    preserved = {key.split(".")[1]: value for key, value in numbers.items()
                 if key.startswith("table1.") and key.endswith(".adversarial_preserved")}
    assert max(preserved, key=preserved.get) == "gat_all_layers_oracle_filter", "the text says: the highest of any row"
    assert (f"only {100 * table('gat_oracle_filter', 'preservation'):.0f} % and "
            f"{100 * table('gat_all_layers_oracle_filter', 'preservation'):.0f} % leave a digit") in text
    random_change = [numbers[f"label_test.gat_random_filter.adversarial_preserved{suffix}"] for suffix in ("", ".ci95")]
    assert f"({100 * random_change[0]:.1f} ± {100 * random_change[1]:.1f} points against GAT)".replace("-", "−") in text
    assert abs(random_change[0]) < random_change[1], "the text says: the random filter gains nothing"
    assert (f"{100 * table('gat_random_filter', 'adversarial'):.1f} % white-box and "
            f"{100 * table('gat_random_filter', 'adversarial_preserved'):.1f} % label-preserving") in text
    labels = [numbers[f"label_test.oracle_vs_random_filter.adversarial_preserved{suffix}"] for suffix in ("", ".ci95")]
    assert f"**{100 * labels[0]:.1f} ± {100 * labels[1]:.1f}**" in text and labels[0] - labels[1] > 0
    # the all-layer recipe's random-filter control (white-box, label-preserving, clean; pool sizes)
    minus = lambda value: f"{100 * value:.1f}".replace("-", "−")   # noqa: E731
    al_random = [numbers[f"label_test.gat_all_layers_random_filter.adversarial{suffix}"] for suffix in ("", ".ci95")]
    assert (f"It keeps {100 * table('gat_all_layers_random_filter', 'adversarial'):.1f} % white-box "
            f"({minus(al_random[0])} ± {100 * al_random[1]:.1f} points against gat-all-layers) and "
            f"{100 * table('gat_all_layers_random_filter', 'adversarial_preserved'):.1f} % label-preserving") in text
    assert abs(al_random[0]) < al_random[1], "the text says: the cost is not the smaller pool's"
    assert f"random {100 * finetune.ORACLE_KEEP_SHARES['gat-all-layers-oracle-filter']:.0f} % of its fooled digits" in text
    versus = {column: [numbers[f"label_test.all_layers_oracle_vs_random_filter.{column}{suffix}"] for suffix in ("", ".ci95")]
              for column in ("adversarial", "adversarial_preserved", "clean")}
    assert (f"the oracle filter loses **{-100 * versus['adversarial'][0]:.1f} ± {100 * versus['adversarial'][1]:.1f}** "
            f"white-box points and gains {100 * versus['adversarial_preserved'][0]:.1f} ± "
            f"{100 * versus['adversarial_preserved'][1]:.1f} label-preserving points and {100 * versus['clean'][0]:.1f} ± "
            f"{100 * versus['clean'][1]:.1f} points of clean accuracy "
            f"({100 * table('gat_all_layers_oracle_filter', 'clean'):.2f} % against "
            f"{100 * table('gat_all_layers_random_filter', 'clean'):.2f} %)") in text
    assert all(abs(mean) > half for mean, half in versus.values()), "the text says: every interval excludes zero"
    assert f"all-layer filter's {-100 * cost[0]:.1f}-point white-box cost" in text
    kept = numbers["pool.kept"]
    assert (f"seed 0: {kept['gat-all-layers-random-filter/s0']['min']}–{kept['gat-all-layers-random-filter/s0']['max']} "
            f"adversarial digits per refresh against gat-all-layers-oracle-filter's "
            f"{kept['gat-all-layers-oracle-filter/s0']['min']}–{kept['gat-all-layers-oracle-filter/s0']['max']}") in text
    assert kept["gat-all-layers/s0"] == {"min": 1024, "max": 1024}, "the text says: full at every refresh"
    assert (f"seed 0: {kept['gat-random-filter/s0']['min']}–{kept['gat-random-filter/s0']['max']} adversarial digits "
            f"against gat-oracle-filter's {kept['gat-oracle-filter/s0']['min']}–{kept['gat-oracle-filter/s0']['max']}") in text
    assert (f"GAT's pool held {kept['gat/s0']['min']}–{kept['gat/s0']['max']} adversarial digits and "
            f"gat-oracle-filter's {kept['gat-oracle-filter/s0']['min']}–{kept['gat-oracle-filter/s0']['max']}") in text
    assert f"{100 * table('original', 'clean'):.2f} %" in text and f"{100 * table('gat', 'adversarial'):.1f} %" in text
