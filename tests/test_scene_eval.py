"""Figure 5's curve and Table 1's segmentation/detection columns (gatlib.scene_eval), and the
scene rows of chapter 07 trained here (gatlib.spade_gat.scene_rows)."""
import pandas as pd
import pytest
import torch
from torch import nn

from gatlib import scene_eval, scenes, spade_gat
from gatlib.generators.spade import SPADEGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                       spectral=False, hidden=8).eval()
    return G, scenes.make_scenes(24, "train", seed=0), scenes.make_scenes(6, "test", seed=1)


def tiny_segmenter():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 11, 3, padding=1))


def test_attack_curve_has_every_iteration_and_starts_at_the_clean_render(setup):
    G, _, test = setup
    torch.manual_seed(1)
    model = tiny_segmenter().eval()
    curve = scene_eval.attack_curve(G, model, "segmentation", test, eps=0.05, max_iters=3, batch_size=4, seed=0)
    assert list(curve.iteration) == [0, 1, 2, 3]
    assert set(curve.columns) >= {"pixel_accuracy", "foreground_accuracy", "miou"}
    iterates = scene_eval.attack_iterates(G, model, "segmentation", test, eps=0.05, max_iters=3, batch_size=4, seed=0)
    rng = torch.Generator().manual_seed(0)
    from gatlib.generators.spade import one_hot

    first = G(one_hot(test.masks[:4], 11), G.sample_z(4, generator=rng))
    torch.testing.assert_close(iterates[0][:4], first)


def test_scene_rows_retrained_and_table1_columns(setup):
    G, train, test = setup
    rows = spade_gat.scene_rows("segmenter", [0, 1], retrain=True, G=G, train_scenes=train, progress=False,
                                original_recipe={"epochs": 1, "batch_size": 8, "lr": 1e-2, "model": tiny_segmenter},
                                gat_recipe={"steps": 2, "batch_size": 4, "iterates": 2, "eps": 0.01})
    assert list(rows) == ["original", "control-generated", "gat", "control-generated-filtered", "gat-filtered"]
    assert all(len(m) == 2 for m in rows.values())
    # the control and GAT start from the same Original and take the same steps, on different images;
    # their filtered twins see the same images with filtered labels
    for row in ("control-generated", "gat"):
        assert any(not torch.equal(a, b) for a, b in zip(rows["original"][0].state_dict().values(),
                                                         rows[row][0].state_dict().values()))
        assert any(not torch.equal(a, b) for a, b in zip(rows[row][0].state_dict().values(),
                                                         rows[f"{row}-filtered"][0].state_dict().values()))
    rows = {row: rows[row] for row in spade_gat.ROWS}
    summary, per_seed, curves = scene_eval.table1_columns(rows, G, "segmentation", test, seeds=[0, 1], eps=0.01,
                                                          max_iters=2, batch_size=3)
    assert list(summary.index) == ["original", "control-generated", "gat"] and (summary.seeds == 2).all()
    assert {"clean_foreground_accuracy", "adversarial_miou"} <= set(per_seed.columns)
    # the curves are the same attack runs: their last iteration is the adversarial column
    assert len(curves) == 3 * 2 * 3 and set(curves.iteration) == {0, 1, 2}
    last = curves[curves.iteration == 2].set_index(["row", "seed"])["miou"]
    for _, line in per_seed.iterrows():
        assert last[(line.row, line.seed)] == pytest.approx(line.adversarial_miou)
    curve = scene_eval.attack_curve(G, rows["original"][1], "segmentation", test, eps=0.01, max_iters=2, batch_size=3,
                                    seed=1)
    assert curves[(curves.row == "original") & (curves.seed == 1)].miou.tolist() == pytest.approx(curve.miou.tolist())
    with pytest.raises(ValueError, match="kind"):
        spade_gat.scene_rows("classifier", [0])
    with pytest.raises(ValueError, match="needs G"):
        spade_gat.scene_rows("segmenter", [0], retrain=True)


def test_choose_step_takes_the_smallest_step_that_does_the_job(setup, monkeypatch):
    G, _, test = setup
    # on the real attack: the table's columns; a random segmenter gets no foreground right, so no step "works"
    table, chosen = scene_eval.choose_step(G, tiny_segmenter().eval(), "segmentation", test, grid=[0.2, 0.05],
                                           max_iters=2, batch_size=4)
    assert table.eps.tolist() == [0.05, 0.2] and chosen is None
    assert {"foreground_accuracy_iteration_0", "foreground_accuracy_iteration_2", "relative_drop"} <= set(table.columns)

    # the rule, on curves whose drop after max_iters steps is 10 * eps (capped at all of it)
    def fake_curve(G, model, task, scene_set, *, eps, max_iters, batch_size, seed):
        final = 0.8 * (1 - min(1.0, 10 * eps))
        return pd.DataFrame({"iteration": range(max_iters + 1),
                             "foreground_accuracy": [0.8] + [0.8 - (0.8 - final) * t / max_iters for t in range(1, max_iters + 1)]})

    monkeypatch.setattr(scene_eval, "attack_curve", fake_curve)
    grid = [0.2, 0.01, 0.1, 0.05]
    assert scene_eval.choose_step(G, None, "segmentation", test, grid=grid, drop=0.5)[1] == 0.05
    assert scene_eval.choose_step(G, None, "segmentation", test, grid=grid, drop=0.95)[1] == 0.1
    assert scene_eval.choose_step(G, None, "segmentation", test, grid=[0.01], drop=0.5)[1] is None
    with pytest.raises(ValueError, match="positive"):
        scene_eval.choose_step(G, None, "segmentation", test, grid=[0.0])


def test_zoo_scene_models_must_match_the_chapters_recipe(monkeypatch):
    from gatlib import zoo

    monkeypatch.setattr(zoo, "read_manifest", lambda: {"scene-segmenter-gat-s0": {"recipe": {"eps": 0.005, "steps": 300}}})
    spade_gat._check_zoo_recipe("scene-segmenter-gat-s0", {"eps": 0.005, "steps": 300, "unrecorded": 1})
    with pytest.raises(ValueError, match=r"eps: zoo 0.005 vs asked 0.001.*python -m gatlib.zoo train scene-segmenter-gat-s0"):
        spade_gat._check_zoo_recipe("scene-segmenter-gat-s0", {"eps": 0.001, "steps": 300})


def test_table1_findings_reads_the_targets_and_gains_off_the_tables():
    rows = ["original", "gat", "control-generated", "gat-filtered", "control-generated-filtered"]
    segmentation = pd.DataFrame({"clean_foreground_accuracy_mean": [0.98, 0.96, 0.97, 0.978, 0.98],
                                 "adversarial_foreground_accuracy_mean": [0.40, 0.73, 0.765, 0.80, 0.812]}, index=rows)
    detection = pd.DataFrame({"clean_map_mean": [0.84, 0.82, 0.84], "adversarial_map_mean": [0.50, 0.50, 0.49]},
                             index=rows[:3])
    findings = scene_eval.table1_findings({"segmentation": segmentation, "detection": detection},
                                          {"segmentation": "foreground_accuracy", "detection": "map"}, max_iters=10)
    # 98 → 40: a 58-point drop meets the segmentation bar; 84 → 50 mAP is a 40 % drop, short of 50 %
    assert findings["targets"] == {"segmentation_drop_at_least_50_points": True,
                                   "detection_ap_drop_at_least_50pct": False}
    numbers = findings["numbers"]
    assert numbers["gat_minus_control.segmentation"] == pytest.approx(0.73 - 0.765)
    assert numbers["gat_minus_control.detection"] == pytest.approx(0.01)
    assert numbers["gat_filtered_minus_control_filtered.segmentation"] == pytest.approx(0.80 - 0.812)
    assert numbers["label_filter_gain.gat.segmentation"] == pytest.approx(0.80 - 0.73)
    assert "label_filter_gain.gat.detection" not in numbers   # detection has no filtered rows
    segmentation_text, detection_text = findings["sentences"]
    assert "falls by **58.0 points** (98.0 → 40.0 %)" in segmentation_text
    assert "the filter is worth **+7.0 points**" in segmentation_text
    assert "falls by **40 %** (84.0 → 50.0)" in detection_text and "filter" not in detection_text
