"""The benchmark runner works (``python -m benchmarks --quick``): a functional test, not a timing test."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # `benchmarks` is a folder of the repository, not an installed package

from benchmarks import BENCHES, check  # noqa: E402


def run_benchmarks(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_quick_run_writes_the_ratios_and_fills_the_book(tmp_path):
    out = tmp_path / "results.json"
    proc = run_benchmarks("--quick", "--only", "pgd,book", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"date", "device", "torch", "cpu_count", "threads"} <= set(results["machine"])
    assert results["quick"] is True and set(results["benches"]) == {"pgd", "book"}
    assert results["benches"]["pgd"]["status"] == "ok"
    ratio = results["ratios"]["pgd_ours_over_foolbox"]
    assert isinstance(ratio, float) and ratio > 0
    assert results["benches"]["pgd"]["details"]["agreement"] >= 0.99    # the same attack, step for step
    assert {"book_smoke_total_min", "book_default_total_min", "book_peak_rss_gib"} <= set(results["ratios"])
    assert "| pgd | L∞ PGD" in proc.stdout

    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nbefore\n\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n\nafter\n")
    proc = run_benchmarks("--write-book", "--out", str(out), "--book", str(page))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    assert "old table" not in text and "before" in text and "after" in text
    assert "pgd_ours_over_foolbox" not in text and "L∞ PGD (5 steps), ours ÷ foolbox" in text
    assert "quick check" in text     # a quick run is labelled as such in the book


def test_unknown_benchmark_is_named():
    proc = run_benchmarks("--only", "nonsense", timeout=60)
    assert proc.returncode != 0 and "unknown benchmark" in proc.stderr


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_every_benchmark_module_has_run(name):
    assert callable(getattr(importlib.import_module(BENCHES[name]), "run"))


def test_targets_are_checked():
    assert check(0.9, "≤ 1.00") is True and check(1.1, "≤ 1.00") is False
    assert check(2.0, "≥ 1.5") is True and check(0.5, "< 1.00") is True
    assert check(0.5, None) is None and check(None, "≤ 1") is None and check(0.3, "≈ 0.30 (mean)") is None
    assert check(0.55, "≤ 0.60 (floor here: 0.70)") is True and check(0.65, "≤ 0.60 (floor here: 0.70)") is False
    assert check(0.31, "within 0.10 of 0.25 (the work left)") is True and check(0.40, "within 0.10 of 0.25") is False


def test_interleaved_times_only_the_function_not_its_setup():
    import time

    from benchmarks import interleaved

    calls = []

    def work(argument):
        calls.append(argument)
        time.sleep(0.01)

    timings = interleaved({"a": work, "b": work}, repeats=3, warmup=1, setup=lambda: time.sleep(0.05) or "fresh")
    assert calls == ["fresh"] * 8          # one warm-up and three timed calls of each, each with a fresh setup
    assert all(0.009 < t < 0.04 for t in timings.values()), timings


def test_only_keeps_the_other_benchmarks_of_an_earlier_run_with_their_date():
    from benchmarks.__main__ import header, markdown, merge_kept, previous_results

    earlier = {"machine": {"date": "2026-11-01T00:00:00", "device": "cpu", "cpu_count": 2, "threads": 1,
                           "torch": "x"}, "quick": False, "benches": {
        "attack": {"status": "ok", "ratios": {"attack_step_over_floor": 1.08},
                   "rows": [{"key": "attack_step_over_floor", "label": "attack step", "value": 1.08, "target": "≤ 1.10",
                             "ok": True}]},
        "pgd": {"status": "ok", "ratios": {"pgd_ours_over_foolbox": 1.5}, "rows": []}}}
    now = {"machine": {**earlier["machine"], "date": "2026-11-26T00:00:00"}, "quick": False, "benches": {
        "pgd": {"status": "ok", "ratios": {"pgd_ours_over_foolbox": 0.9}, "rows": []}}, "ratios": {}}
    merged = merge_kept(now, earlier)
    assert set(merged["benches"]) == {"pgd"} and set(merged["kept"]) == {"attack"}
    # the rerun's figure wins; the kept one carries the machine and date that measured it
    assert merged["ratios"] == {"attack_step_over_floor": 1.08, "pgd_ours_over_foolbox": 0.9}
    assert merged["kept"]["attack"]["machine"]["date"] == "2026-11-01T00:00:00"
    assert "Kept from earlier runs: attack (2026-11-01T00:00:00)." in header(merged)
    other_machine = merge_kept(now, {**earlier, "machine": {**earlier["machine"], "device": "gpu"}})
    assert "attack (2026-11-01T00:00:00, on gpu)" in header(other_machine)   # another machine is named
    assert "| attack | attack step | 1.08 |" in markdown(merged)
    # kept figures survive a second --only run; a quick run keeps nothing and is never kept
    again = merge_kept({**now, "benches": {"book": {"status": "ok", "ratios": {}, "rows": []}}}, merged)
    assert set(again["kept"]) == {"attack", "pgd"}
    assert "kept" not in merge_kept({**now, "quick": True}, earlier)
    assert "kept" not in merge_kept(now, {**earlier, "quick": True})


def test_previous_results_ignores_a_missing_or_foreign_file(tmp_path):
    from benchmarks.__main__ import previous_results

    assert previous_results(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert previous_results(tmp_path / "bad.json") == {}
    (tmp_path / "other.json").write_text('{"something": 1}')
    assert previous_results(tmp_path / "other.json") == {}


def test_userstudy_benchmark_reports_the_analysis_time():
    from benchmarks import bench_userstudy

    out = bench_userstudy.run(quick=True)
    assert out["ratios"]["userstudy_analyse_seconds"] > 0
    assert out["details"]["rows"] == 2_000 and out["details"]["bad_rows"] > 0


def test_book_budget_sums_canonical_runs_and_names_each_chapters_slowest_cell(tmp_path):
    bench_book = importlib.import_module("benchmarks.bench_book")

    def write(stem, run_id, **fields):
        path = tmp_path / stem / run_id / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"stem": stem, "status": "ok", "overrides": {}, "profile": "default", **fields}))

    write("02_latent_attacks", "default-a", wall_time_s=600.0, finished="2026-01-02", peak_rss_bytes=2 ** 31,
          slowest_cells=[{"cell": 16, "seconds": 209.4, "source": "if a | b:"}, {"cell": 6, "seconds": 183.0, "source": "x"}])
    write("02_latent_attacks", "default-old", wall_time_s=900.0, finished="2026-01-01")          # superseded
    write("02_latent_attacks", "default-p", wall_time_s=50.0, finished="2026-01-03", overrides={"samples": 5})
    write("04_adversarial_training", "default-b", wall_time_s=300.0, finished="2026-01-02")       # an older runner
    out = bench_book.run(runs_dir=tmp_path)
    ratios = out["ratios"]
    assert ratios["book_default_total_min"] == pytest.approx(15.0)      # 10 + 5: latest canonical runs only
    assert ratios["book_peak_rss_gib"] == pytest.approx(2.0)
    by_stem = {line.split(" | ")[0].lstrip("| "): line for line in out["table"][2:]}
    assert "cell 16 (209 s): `if a \\| b:`" in by_stem["02_latent_attacks"]
    assert by_stem["04_adversarial_training"].endswith("| not recorded |")
    assert "| 5.0 | 10 | yes |" in by_stem["04_adversarial_training"]      # 300 s within its 10 minutes
    assert "| 10.0 | — |  |" in by_stem["02_latent_attacks"]                 # no budget of its own
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"a": {"train_seconds": 5400.0}, "b": {"train_seconds": 1800}, "c": {}}))
    assert bench_book.zoo_rebuild_hours(manifest) == (pytest.approx(2.0), 2)
    assert ratios["zoo_rebuild_hours"] > 1      # the committed zoo: hours of CPU training


def test_paper_cost_counts_the_work_from_the_parameters_and_flops_on_meta():
    cost = importlib.import_module("benchmarks.bench_paper_cost")
    import torchvision

    # FLOPs come from FlopCounterMode on meta tensors: ResNet-50 at 224 px is the textbook 4.1 GMACs
    with torch.device("meta"):
        resnet = torchvision.models.resnet50()
        flops = cost.count_flops(lambda: resnet(torch.empty(1, 3, 224, 224)))
    assert 8.0e9 < flops < 8.4e9
    p = cost.paper_parameters("04_adversarial_training")
    work = cost.chapter_work("04_adversarial_training", p)
    assert work["latent_step_lsun_inception_v3"] == 4 * len(p["seeds"]) * p["eval_samples"] * p["max_iters"]
    doubled = cost.chapter_work("04_adversarial_training", {**p, "eval_samples": 2 * p["eval_samples"]})
    assert doubled["latent_step_lsun_inception_v3"] == 2 * work["latent_step_lsun_inception_v3"]
    # retraining adds the Original, the fine-tuning batches and GAT's pool refreshes (at most 4 x pool each)
    retrain = cost.chapter_work("04_adversarial_training", {**p, "retrain": True, "classifier_arch": "resnet18_cifar",
                                                            "steps": 100, "refresh_every": 50, "eval_every": 50,
                                                            "train_images": 1000, "original_epochs": 2})
    seeds = len(p["seeds"])
    assert retrain["clf_train_image_cifar_resnet18_cifar"] == seeds * (2 * 1000 + 100 * p["batch_size"] * 5)
    pool = seeds * 2 * 4 * p["pool_size"] * p["max_iters"]
    curves = seeds * 3 * 3 * p["curve_samples"] * p["max_iters"]
    assert retrain["latent_step_cifar_resnet18_cifar"] == 4 * seeds * p["eval_samples"] * p["max_iters"] + pool + curves
    assert cost.chapter_work("08_user_study", cost.paper_parameters("08_user_study")) is None   # no paper preset


def test_paper_cost_benchmark_reports_every_chapter_and_the_colab_sweep():
    cost = importlib.import_module("benchmarks.bench_paper_cost")
    out = cost.run(tflops=10.0)
    units = out["details"]["unit_gflops"]
    # an attack iteration through G and F costs more than rendering alone, and the 1024 px G more than
    # the 256 px one (v1 halves the channels per doubling, so not 16x more)
    assert units["latent_step_lsun_resnet50"] > units["gen_forward_lsun"] + units["clf_forward_lsun_resnet50"]
    assert units["gen_forward_celeba"] > units["gen_forward_lsun"]
    hours = out["ratios"]
    assert hours["paper_gpu_hours_total"] == pytest.approx(sum(v for k, v in hours.items()
                                                               if k.startswith("paper_gpu_hours_") and k[-2:].isdigit()))
    assert hours["paper_gpu_hours_05"] > hours["paper_gpu_hours_02"] > 0      # 700 image-attack steps per digit
    assert hours["sweep_gpu_hours_colab_cifar10"] > 0
    assert sum("`sweeps/colab-cifar10.yaml`" in line for line in out["table"]) == 2
    # the hours scale with the assumed throughput
    assert cost.run(tflops=5.0)["ratios"]["paper_gpu_hours_total"] == pytest.approx(2 * hours["paper_gpu_hours_total"])


def test_predict_benchmark_compares_batch_sizes_with_equal_accuracy():
    out = importlib.import_module("benchmarks.bench_predict").run(quick=True)
    assert out["details"]["same_accuracy"] is True
    assert out["ratios"]["predict_small_over_large_batch"] > 0


def test_fine_layer_flop_floor_counts_exactly_the_skipped_coarse_forward(tiny_generator, one_thread):
    """The cache's FLOP floor: the uncached fine-layer step minus the cached one is the FLOPs of the
    coarse layers' forward pass (G.cache), nothing more; no gradient reaches them either way."""
    from torch.utils.flop_counter import FlopCounterMode

    from gatlib import classifiers
    from gatlib.attacks.latent import _attack_mode, sample_latents

    bench_attack = importlib.import_module("benchmarks.bench_attack")
    torch.manual_seed(0)
    G, model = tiny_generator, classifiers.build("small_cnn").eval()
    labels = torch.arange(4) % 10
    styles, noises = sample_latents(G, labels, seed=1)
    first_fine = min(G.layer_groups()["fine"])
    counts = {}
    for cached in (True, False):
        step = bench_attack.bare_fine_step(G, model, styles, noises, labels, first_fine, cached, accumulate=True)
        with FlopCounterMode(display=False) as counter:     # the cache is made before, once, as the attack does
            step()
        counts[cached] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter, _attack_mode(G, model), torch.no_grad():
        G.cache(styles, noises, first_fine)
    assert 0 < counts[True] < counts[False]
    assert counts[False] - counts[True] == counter.get_total_flops()
    assert bench_attack.flop_floor(G, model, styles, noises, labels) == pytest.approx(counts[True] / counts[False])
