"""Table 2 machinery: the unseen-mean rule, the paper table, the strength/transfer/bound checks,
and the defenses as fine-tuned zoo rows."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from gatlib import classifiers, finetune, unforeseen, zoo
from gatlib.data import DigitDataset
from gatlib.attacks import pgd, spatial

ROOT = Path(__file__).resolve().parents[1]


def test_mean_unseen_leaves_out_the_rows_own_attack():
    wide = pd.DataFrame({"clean": [0.9, 0.9, 0.9], "gat": [0.1, 0.8, 0.2], "pgd": [0.0, 0.4, 0.6],
                         "spatial": [0.0, 0.5, 0.1], "recolor": [0.6, 0.5, 0.4], "perceptual": [0.0, 0.3, 0.1]},
                        index=["original", "gat", "at-pgd"])
    means = unforeseen.mean_unseen(wide)
    assert means["original"] == pytest.approx((0.1 + 0.0 + 0.0 + 0.6 + 0.0) / 5)   # trained on nothing: all five
    assert means["gat"] == pytest.approx((0.4 + 0.5 + 0.5 + 0.3) / 4)              # GAT column left out
    assert means["at-pgd"] == pytest.approx((0.2 + 0.1 + 0.4 + 0.1) / 4)           # PGD column left out
    assert "clean" not in unforeseen.ATTACK_COLUMNS


def test_paper_table_recomputes_the_printed_means_where_they_follow_the_rule():
    table = unforeseen.paper_table()
    assert set(table.index) == set(unforeseen.PAPER_NAMES)
    assert table.loc["gat", "mean_recomputed"] == pytest.approx(42.1, abs=0.01)
    assert table.loc["at-pgd", "mean_recomputed"] == pytest.approx(13.03, abs=0.01)
    # AdvProp's printed 22.7 is the mean of all five (22.68); the rule (PGD left out) gives 13.95
    assert table.loc["advprop", "mean_printed"] == 22.7
    assert table.loc["advprop", "mean_recomputed"] == pytest.approx(13.95, abs=0.001)
    assert table.loc["advprop", ["gat", "pgd", "spatial", "recolor", "perceptual"]].mean() == pytest.approx(22.68)


def test_table2_and_own_attack_winners():
    per_seed = pd.DataFrame([
        {"row": "original", "seed": 0, "column": "clean", "accuracy": 0.99},
        {"row": "original", "seed": 0, "column": "pgd", "accuracy": 0.0},
        {"row": "at-pgd", "seed": 0, "column": "clean", "accuracy": 0.98},
        {"row": "at-pgd", "seed": 0, "column": "pgd", "accuracy": 0.7},
        {"row": "at-pgd", "seed": 1, "column": "pgd", "accuracy": 0.9},
        {"row": "at-spatial", "seed": 0, "column": "clean", "accuracy": 0.97},
        {"row": "at-spatial", "seed": 0, "column": "pgd", "accuracy": 0.85},
    ])
    wide = unforeseen.table2(per_seed)
    assert list(wide.index) == ["original", "at-pgd", "at-spatial"]
    assert wide.loc["at-pgd", "pgd"] == pytest.approx(0.8)                     # mean over seeds
    winners = unforeseen.own_attack_winners(wide)
    assert winners["at-pgd"]["most_robust"] is False and winners["at-pgd"]["best_other_row"] == "at-spatial"
    assert "original" not in winners and "at-spatial" not in winners          # no spatial column here


def test_own_attack_rule_leaves_rows_with_the_same_training_attack_out():
    wide = pd.DataFrame({"pgd": [0.0, 0.6, 0.7, 0.2]}, index=["original", "at-pgd", "advprop", "gat"])
    winners = unforeseen.own_attack_winners(wide)
    # AdvProp beats AT-PGD on PGD, but both trained on PGD: each is compared with the others only
    assert winners["at-pgd"]["most_robust"] and winners["at-pgd"]["best_other_row"] == "gat"
    assert winners["at-pgd"]["same_attack_rows"] == ["advprop"] and winners["advprop"]["same_attack_rows"] == ["at-pgd"]
    wide.loc["gat", "pgd"] = 0.65
    winners = unforeseen.own_attack_winners(wide)
    assert not winners["at-pgd"]["most_robust"] and winners["advprop"]["most_robust"]


def test_own_attack_rule_holds_on_the_papers_table2():
    """Under our rule every row of the paper's Table 2 wins on its own attack; under the strict
    reading (all other rows) AT-PGD would lose to AdvProp (56.7 against 57.6)."""
    table = unforeseen.paper_table() / 100
    winners = unforeseen.own_attack_winners(table)
    assert set(winners) == set(table.index) and all(w["most_robust"] for w in winners.values())
    assert table.loc["advprop", "pgd"] > table.loc["at-pgd", "pgd"]


def test_table2_ci_takes_the_unseen_mean_per_seed():
    per_seed = pd.DataFrame([{"row": row, "seed": seed, "column": column, "accuracy": value}
                             for row, seed, column, value in [
                                 ("original", 0, "clean", 0.99), ("original", 0, "pgd", 0.0), ("original", 0, "gat", 0.2),
                                 ("original", 1, "clean", 0.97), ("original", 1, "pgd", 0.1), ("original", 1, "gat", 0.4),
                                 ("at-pgd", 0, "clean", 0.98), ("at-pgd", 0, "pgd", 0.8), ("at-pgd", 0, "gat", 0.3),
                                 ("at-pgd", 1, "clean", 0.96), ("at-pgd", 1, "pgd", 0.9), ("at-pgd", 1, "gat", 0.5)]])
    table = unforeseen.table2_ci(per_seed)
    assert list(table.index) == ["original", "at-pgd"] and (table.seeds == 2).all()
    assert table.loc["original", "mean_unseen_mean"] == pytest.approx((0.1 + 0.25) / 2)   # both attacks
    assert table.loc["at-pgd", "mean_unseen_mean"] == pytest.approx(0.4)                  # PGD left out
    assert table.loc["at-pgd", "pgd_ci"] > 0 and "±" in table.loc["at-pgd", "pgd"]
    assert table.loc["at-pgd", "mean_unseen_mean"] == pytest.approx(unforeseen.table2(per_seed).loc["at-pgd", "mean_unseen"])


def test_stronger_copies_budget_without_touching_the_original():
    attack = pgd.mnist(random_start=False)
    strong = unforeseen.stronger(attack, steps_factor=5, restarts=3)
    assert (strong.steps, strong.restarts, strong.random_start) == (5 * attack.steps, 3, True)
    assert (attack.steps, attack.restarts, attack.random_start) == (pgd.MNIST_DEFAULTS["steps"], 1, False)
    assert strong.step_size == attack.step_size
    single = unforeseen.stronger(attack, random_start=True)     # one extra run, from a random start
    assert (single.steps, single.restarts, single.random_start, attack.random_start) == (attack.steps, 1, True, False)
    several = spatial.StAdv(steps=20, restarts=5)               # restarts scale an attack's own starts
    assert (unforeseen.stronger(several, restarts=5).restarts, unforeseen.stronger(several, restarts=4).restarts,
            unforeseen.stronger(several, steps_factor=5).steps) == (25, 20, 100)
    with pytest.raises(ValueError, match="restarts"):
        unforeseen.stronger(attack, restarts=0)


def test_image_attacks_refuses_unknown_perceptual_kind():
    with pytest.raises(ValueError, match="perceptual_kind"):
        unforeseen.image_attacks("default", "lpips")
    with pytest.raises(ValueError, match="AlexNet-LPIPS"):
        unforeseen.image_attacks("paper")


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {"original": classifiers.build("small_cnn").eval(), "other": classifiers.build("small_cnn").eval()}


@pytest.fixture(scope="module")
def tiny_set():
    generator = torch.Generator().manual_seed(0)
    return DigitDataset(torch.rand(12, 1, 32, 32, generator=generator), torch.arange(12) % 10, "random")


def test_strength_transfer_and_bound_curve_run_on_tiny_models(tiny_models, tiny_set, one_thread):
    attacks = {"pgd": pgd.mnist(steps=2)}
    base = unforeseen.evaluate_rows(tiny_models, tiny_set, attacks, seeds=[0], count=8, progress=False)
    assert set(base.column) == {"clean", "pgd"} and (base.samples == 8).all()
    strength = unforeseen.strength_checks(tiny_models, tiny_set, attacks, count=8, min_accuracy=0.0,
                                          steps_factor=2, restarts=2, progress=False)
    assert {"steps_x2", "worst", "drop_steps_x2", "drop_restarts_2", "drop_total"} <= set(strength.columns)
    assert (strength.worst <= strength.steps_x2).all() and (strength.steps_x2 <= strength.standard).all()
    pgd_base = base[base.column == "pgd"].set_index("row").accuracy
    for line in strength.itertuples():   # the standard column is evaluate's number on the same images
        assert line.standard == pytest.approx(pgd_base[line.row])
    transfer = unforeseen.transfer_check(tiny_models, tiny_set, attacks, count=8, white_box=base)
    assert list(transfer.row) == ["other"] and transfer.transfer.between(0, 1).all()
    curve = unforeseen.bound_curve(tiny_models, tiny_set, lambda b: pgd.mnist(bound=b, steps=1), [0.0, 0.3],
                                   count=8, progress=False)
    accuracy = curve.set_index(["row", "bound"]).accuracy
    for row in tiny_models:   # bound 0 changes nothing: accuracy equals the clean one
        clean = base[(base.row == row) & (base.column == "clean")].accuracy.iloc[0]
        assert accuracy[(row, 0.0)] == pytest.approx(clean)


def test_defense_rows_are_zoo_entries_with_their_attack_in_the_recipe():
    for row, mode in {"at-pgd": "at_pgd", "advprop": "advprop", "at-spatial": "at_spatial",
                      "at-recolor": "at_recolor", "pat": "pat"}.items():
        recipe = zoo.entry(f"{row}-s0").recipe
        assert recipe["mode"] == mode and recipe["base"] == "mnist-classifier-s0"
        assert "generator" not in recipe and "eps" not in recipe     # no generator involved
        assert recipe["steps"] == finetune.DEFAULTS["steps"]          # GAT's budget
        assert "bound" in recipe["attack"]
    assert zoo.entry("advprop-s0").recipe["mix"] == "split"


def test_advprop_row_trains_and_collapses_to_a_plain_classifier(one_thread):
    generator = torch.Generator().manual_seed(1)
    train_set = DigitDataset(torch.rand(64, 1, 32, 32, generator=generator), torch.arange(64) % 10, "random")
    original = classifiers.build("small_cnn")
    model, history, log, seconds = finetune.train_zoo_model(
        "advprop", 0, original=original, train_set=train_set, curve_set=train_set, steps=2, batch_size=16,
        eval_every=1, progress=False)
    assert history["steps"] == 2 and len(history["curve"]) == 3 and log == []
    assert not any(type(m).__name__ == "MixBatchNorm2d" for m in model.modules())
    classifiers.build("small_cnn").load_state_dict(model.state_dict())   # loads as a plain SmallCNN
    assert not torch.equal(model.head[-1].weight, original.head[-1].weight)


def test_gat_mode_refuses_zero_step_sizes(tiny_generator):
    with pytest.raises(ValueError, match="positive"):
        finetune.make_mode("gat", tiny_generator, eps=0.0, delta=0.0)


class _LabelModel(nn.Module):
    """Reads the class off the image: image k is filled with (k + 0.5) / 10."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images):
        value = images.flatten(1).mean(1, keepdim=True) * 10 * self.scale
        return -(value - 0.5 - torch.arange(10)).abs()


class _ScriptedAttack:
    """Fools the labels below ``reach`` (4 at the standard budget, 6 with 5x the steps; restarts
    also fool 9) and records its budget, random start and batch size at every call."""
    bound, step_size, loss, random_start = 0.1, 0.01, "ce", False

    def __init__(self, seen):
        self.steps, self.restarts, self.seen = 10, 1, seen

    def __call__(self, model, images, labels, generator=None):
        self.seen.append((self.steps, self.restarts, self.random_start, len(labels)))
        fooled = labels < (6 if self.steps > 10 else 4)
        if self.restarts > 1:
            fooled |= labels == 9
        shown = torch.where(fooled, (labels + 1) % 10, labels)
        return ((shown.float() + 0.5) / 10).view(-1, 1, 1, 1).expand_as(images).clone()


def test_strength_checks_attack_only_the_survivors_and_count_the_worst_case():
    images = ((torch.arange(10).float() + 0.5) / 10).view(-1, 1, 1, 1).expand(10, 1, 32, 32).clone()
    test_set = DigitDataset(images, torch.arange(10), "scripted")
    seen = []
    strength = unforeseen.strength_checks({"model": _LabelModel()}, test_set, {"scripted": _ScriptedAttack(seen)},
                                          count=None, progress=False)
    line = strength.iloc[0]
    assert line.standard == pytest.approx(0.6)                  # labels 0-3 fooled
    assert line.steps_x5 == pytest.approx(0.4)                  # 4 and 5 fall too
    assert line.worst == pytest.approx(0.3)                     # then 9 falls to the restarts
    assert line.drop_steps_x5 == pytest.approx(0.2) and line.drop_restarts_5 == pytest.approx(0.1)
    assert line.drop_total == pytest.approx(0.3)                # the worst case over every stage
    assert line.drop_restarts_5 == 1 / 10          # shares are count ratios: no float residue at a bar's edge
    # the standard attack sees all 10 images, the 5x-steps one its 6 survivors, and the 4 further
    # random starts (5 in all, the standard run being the first) the 4 digits both left correct
    assert seen == [(10, 1, False, 10), (50, 1, False, 6), (10, 4, True, 4)]


def test_worst_case_table_lowers_the_checked_cells_and_recomputes_the_unseen_mean():
    wide = pd.DataFrame({"clean": [0.99, 0.98], "gat": [0.1, 0.5], "pgd": [0.0, 0.6], "spatial": [0.3, 0.4],
                         "recolor": [0.8, 0.9], "perceptual": [0.02, 0.3]}, index=["original", "at-pgd"])
    wide["mean_unseen"] = unforeseen.mean_unseen(wide)
    strength = pd.DataFrame([{"row": "original", "attack": "spatial", "drop_total": 0.1},
                             {"row": "original", "attack": "perceptual", "drop_total": 0.06},   # floored at 0
                             {"row": "at-pgd", "attack": "pgd", "drop_total": 0.2}])
    worst = unforeseen.worst_case_table(wide, strength)
    assert worst.loc["original", "spatial"] == pytest.approx(0.2)
    assert worst.loc["original", "perceptual"] == 0.0
    assert worst.loc["original", "mean_unseen"] == pytest.approx((0.1 + 0.0 + 0.2 + 0.8 + 0.0) / 5)
    # AT-PGD's own attack is lowered but stays out of its unseen mean, which therefore does not move
    assert worst.loc["at-pgd", "pgd"] == pytest.approx(0.4)
    assert worst.loc["at-pgd", "mean_unseen"] == pytest.approx(wide.loc["at-pgd", "mean_unseen"])
    assert list(worst.checked) == ["spatial, perceptual", "pgd"]
    assert wide.loc["original", "spatial"] == 0.3                 # the measured table is left alone
    with pytest.raises(ValueError, match="not a cell of Table 2"):
        unforeseen.worst_case_table(wide, pd.DataFrame([{"row": "pat", "attack": "pgd", "drop_total": 0.1}]))
    with pytest.raises(ValueError, match="drop_total"):
        unforeseen.worst_case_table(wide, pd.DataFrame([{"row": "original", "attack": "pgd"}]))


def _all_rows_run(run):
    """Table 2, its worst case and the run's numbers, from a committed chapter-05 run that checked
    all seven rows."""
    numbers = json.loads((ROOT / "runs/05_unforeseen_attacks" / run / "results.json").read_text())["numbers"]
    measured = unforeseen.table2_from_numbers(numbers)
    assert list(measured.index) == list(unforeseen.ROWS)
    assert len(numbers["strength.table"]) > 5           # every row checked, not only the default two
    return measured, unforeseen.worst_case_table(measured, pd.DataFrame(numbers["strength.table"])), numbers


def _book_text(page):
    return " ".join((ROOT / page).read_text().split())


def test_worst_case_means_quoted_in_the_book_come_from_the_all_rows_run():
    """Chapter 05 and deviations.md quote the worst-case unseen means of the run that checked all
    seven rows with the current budgets; they must be what worst_case_table computes from that
    run's own numbers, and so must the claims about the order of the leading rows."""
    run = "default-dd3be83d95"
    measured, worst, numbers = _all_rows_run(run)
    means, worst_means = measured.drop(index="original").mean_unseen, worst.drop(index="original").mean_unseen
    # Table 2 and its worst case: AT-PGD, PAT, AdvProp in that order; GAT's and PAT's means unmoved
    assert list(means.sort_values(ascending=False).index[:3]) == ["at-pgd", "pat", "advprop"]
    assert list(worst_means.sort_values(ascending=False).index[:3]) == ["at-pgd", "pat", "advprop"]
    assert worst.loc["gat", "mean_unseen"] == pytest.approx(measured.loc["gat", "mean_unseen"])
    assert worst.loc["pat", "mean_unseen"] == pytest.approx(measured.loc["pat", "mean_unseen"])
    beyond = [line for line in numbers["strength.table"] if line["drop_total"] > 0.02]
    # both cells beyond the bar are a row under its own training attack
    assert sorted((line["row"], line["attack"]) for line in beyond) == [("at-spatial", "spatial"), ("pat", "perceptual")]
    assert all(unforeseen.TRAINED_AGAINST[line["row"]] == line["attack"] for line in beyond)
    assert max(line["drop_total"] for line in numbers["strength.table"]) == pytest.approx(0.08)
    for page in ("notebooks/05_unforeseen_attacks.md", "book/deviations.md"):
        text = _book_text(page)
        assert run in text, page
        for line in beyond:          # every cell beyond the bar, quoted as standard → worst
            stated = f"({100 * line['standard']:.0f} % → {100 * line['worst']:.0f} %)"
            assert stated in text, f"{page} does not quote {line['row']} under {line['attack']} as {stated}"
        for row, digits in (("at-pgd", 1), ("advprop", 2)):
            stated = (f"from {100 * measured.loc[row, 'mean_unseen']:.{digits}f} % to "
                      f"{100 * worst.loc[row, 'mean_unseen']:.{digits}f} %")
            assert stated in text, f"{page} does not say {row}'s mean goes {stated}"
        assert f"PAT's {100 * measured.loc['pat', 'mean_unseen']:.2f} %" in text, page


def test_the_bisection_projection_run_quoted_in_the_book():
    """The all-rows run before perceptual PGD's Newton projection: its perceptual drops on AdvProp and
    AT-PGD, and its Table 2 cells and means that chapter 05 compares with the current run's."""
    old, new = "default-c4b1416b12", "default-dd3be83d95"
    before, _, numbers = _all_rows_run(old)
    after, _, _ = _all_rows_run(new)
    perceptual = {line["row"]: (line["standard"], line["worst"]) for line in numbers["strength.table"]
                  if line["attack"] == "perceptual" and line["drop_total"] > 0.02}
    assert sorted(perceptual) == ["advprop", "at-pgd"]
    chapter, deviations = _book_text("notebooks/05_unforeseen_attacks.md"), _book_text("book/deviations.md")
    for text in (chapter, deviations):
        assert old in text
        for standard, worst in perceptual.values():
            assert f"({100 * standard:.0f} % → {100 * worst:.0f} %)" in text
    for row, name in (("advprop", "AdvProp"), ("at-pgd", "AT-PGD"), ("pat", "PAT")):
        stated = f"from {100 * before.loc[row, 'perceptual']:.1f} % to {100 * after.loc[row, 'perceptual']:.1f} % for {name}"
        assert stated in chapter, stated
    assert f"from {100 * before.loc['at-pgd', 'mean_unseen']:.1f} % to {100 * after.loc['at-pgd', 'mean_unseen']:.1f} %" in chapter
    assert f"from {100 * before.loc['advprop', 'mean_unseen']:.2f} % to {100 * after.loc['advprop', 'mean_unseen']:.2f} %" in chapter


def test_the_five_start_stadv_run_quoted_in_the_book_fell_short_on_pat_and_at_spatial():
    """The run with StAdv's previous budget (5 starts of 20), which the book cites as the reason
    for 10 starts: its StAdv cells beyond the bar are exactly the two the book quotes."""
    run = "default-50691ea43a"
    _, _, numbers = _all_rows_run(run)
    short = {line["row"]: (line["standard"], line["worst"]) for line in numbers["strength.table"]
             if line["attack"] == "spatial" and line["drop_total"] > 0.02}
    assert sorted(short) == ["at-spatial", "pat"]
    for page in ("notebooks/05_unforeseen_attacks.md", "book/deviations.md"):
        text = _book_text(page)
        assert run in text, page
        for standard, worst in short.values():
            assert f"({100 * standard:.0f} % → {100 * worst:.0f} %)" in text, page


def test_the_old_budgets_run_quoted_in_the_book_moved_advprop_from_first_to_third():
    """The run with PAT's way of spending the budgets, which the book cites as the reason for ours."""
    run = "default-f757bd8684"
    measured, worst, _ = _all_rows_run(run)
    assert measured.mean_unseen.idxmax() == "advprop"
    assert list(worst.drop(index="original").mean_unseen.sort_values(ascending=False).index[:3]) == \
        ["at-pgd", "pat", "advprop"]
    text = _book_text("book/deviations.md")
    assert run in text and f"first ({100 * measured.loc['advprop', 'mean_unseen']:.1f} %) to third" in text
    assert run in _book_text("notebooks/05_unforeseen_attacks.md")
