"""What the ``paper`` profile of each chapter will cost on a GPU: an **estimate**, not a measurement.

We have no GPU (and no paper checkpoints), so this runs nothing at the paper's sizes. It combines
two things that it does compute:

* **the work**, counted from each chapter's resolved ``paper`` parameters (``gatlib.runbook``) with the
  loops of the chapter and of ``gatlib``: latent-attack iterations, image-attack iterations,
  classifier and generator forwards, SPADE-attack iterations. Every count is an upper bound:
  no early stop, every attack runs its full budget, the row and seed counts a user would pass
  (four Table 1 rows and three seeds; Table 2's seven rows);
* **the FLOPs of one unit of work**, counted by ``torch.utils.flop_counter.FlopCounterMode`` on
  the paper's architectures built on the ``meta`` device (no memory, no arithmetic): StyleGAN v1
  at 256 px (LSUN cats; cars are 512 × 384, about 3× the generator cost) and at 1024 px
  (CelebA-HQ), torchvision's ResNet-50 / Inception-v3 on the generator's 256 px output, AlexNet
  for LPIPS, SPADE (COCO-stuff, 256 px) with DeepLabV3-ResNet-101 and FCOS-ResNet-50-FPN; for the
  Colab flagship sweep, NVlabs' conditional CIFAR-10 StyleGAN2-ADA (32 px) with ResNet-18 (CIFAR stem).

GPU-hours = FLOPs ÷ an *assumed* sustained throughput (``ASSUMED_TFLOPS``; pass ``--tflops``):
real runs lose time to data loading, Python and small batches, so treat the hours as a floor for
a well-fed GPU, and the FLOPs column as the figure to scale by your own GPU. Chapters 08 and 09 have
no ``paper`` preset (the user study and realism analysis run on our MNIST models whatever the
profile), so they have no estimate here; their cost is the book budget's.

    python benchmarks/bench_paper_cost.py [--tflops 10]
"""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import result, row

ROOT = Path(__file__).resolve().parents[1]
ASSUMED_TFLOPS = 10.0     # sustained FP32/TF32 throughput of a good GPU on these models (an A100 at modest
                          # utilisation; a Colab T4 sustains perhaps a third of it)
TABLE1_ROWS = 4           # Original, GAT, control-real, control-generated (gatlib.finetune.ROWS)
TABLE2_ROWS = 7           # Original and Table 2's six defenses (gatlib.unforeseen.PAPER_NAMES)
LSUN_RES, CELEBA_RES, SCENE_RES = 256, 1024, 256


# ------------------------------------------------------------------ FLOPs of one unit, on the meta device

def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _frozen(model: nn.Module) -> nn.Module:
    """An attacked network: gradients flow to its input only, not to its weights."""
    return model.requires_grad_(False).eval()


@lru_cache(maxsize=None)
def unit_flops() -> dict[str, int]:
    """FLOPs per image of each unit of work, at the paper's architectures and sizes."""
    import torchvision.models as tvm
    from torchvision.models import detection, segmentation

    from gatlib.classifiers import paper_classifier
    from gatlib.generators.spade import SPADEGenerator
    from gatlib.generators.stylegan import GeneratorV1
    from gatlib.generators.stylegan2 import Generator

    units = {}
    with torch.device("meta"):
        def forward(model, *shape):
            return lambda: model(torch.empty(*shape))

        def input_backward(model, *shape):          # an attack iteration: forward + gradient w.r.t. the input
            def run():
                x = torch.empty(*shape, requires_grad=True)
                out = model(x)
                (out if torch.is_tensor(out) else out["out"]).sum().backward()
            return run

        def chain_backward(G, F, *label):             # a latent-attack iteration: F(G(z)), gradient to G's input
            def run():
                z = torch.empty(1, G.z_dim, requires_grad=True)
                F(G(z, *label)).sum().backward()
            return run

        for res, name in ((LSUN_RES, "lsun"), (CELEBA_RES, "celeba")):
            G = _frozen(GeneratorV1(resolution=res, num_classes=0, image_channels=3))
            units[f"gen_forward_{name}"] = count_flops(lambda: G(torch.empty(1, G.z_dim)))
            for arch in ("resnet50", "inception_v3"):
                F = _frozen(paper_classifier(arch, 10))
                units[f"latent_step_{name}_{arch}"] = count_flops(chain_backward(G, F))
                units[f"clf_forward_{name}_{arch}"] = count_flops(forward(F, 1, 3, res, res))
                units[f"image_attack_step_{name}_{arch}"] = count_flops(input_backward(F, 1, 3, res, res))
            units[f"gen_backward_{name}"] = count_flops(input_backward(G, 1, G.z_dim))
        # the Colab flagship: NVlabs' conditional CIFAR-10 StyleGAN2-ADA (32 px, 512 channels, 2 mapping
        # layers) and ResNet-18 with the CIFAR stem
        G = _frozen(Generator(resolution=32, num_classes=10, z_dim=512, w_dim=512, mapping_layers=2,
                              channel_base=32768, image_channels=3, layout="stylegan2"))
        label = torch.zeros(1, dtype=torch.long)
        F = paper_classifier("resnet18_cifar", 10)
        units["clf_train_image_cifar_resnet18_cifar"] = count_flops(lambda: F(torch.empty(1, 3, 32, 32)).sum().backward())
        F = _frozen(F)
        units["gen_forward_cifar"] = count_flops(lambda: G(torch.empty(1, 512), label))
        units["latent_step_cifar_resnet18_cifar"] = count_flops(chain_backward(G, F, label))
        units["clf_forward_cifar_resnet18_cifar"] = count_flops(forward(F, 1, 3, 32, 32))
        lpips = _frozen(tvm.alexnet().features)
        units["lpips_forward"] = count_flops(forward(lpips, 1, 3, LSUN_RES, LSUN_RES))
        units["lpips_step"] = count_flops(input_backward(lpips, 1, 3, LSUN_RES, LSUN_RES))
        spade = _frozen(SPADEGenerator(label_nc=184, crop_size=SCENE_RES, z_dim=0, spectral=False))
        segmenter = _frozen(segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=182,
                                                              aux_loss=False))
        segmap = (1, 184, SCENE_RES, SCENE_RES)
        units["spade_forward"] = count_flops(forward(spade, *segmap))

        def spade_step(model, size):             # a γ/β attack iteration: model(SPADE(map)), gradient into SPADE
            def run():
                image = spade(torch.empty(*segmap, requires_grad=True))
                if size != SCENE_RES:
                    image = nn.functional.interpolate(image, size=size)
                out = model(image)
                (out if torch.is_tensor(out) else sum(f.sum() for f in out.values())).backward()
            return run

        units["spade_step_segmenter"] = count_flops(spade_step(segmenter, SCENE_RES))
        units["segmenter_forward"] = count_flops(forward(segmenter, 1, 3, SCENE_RES, SCENE_RES))
        # FCOS resizes a 256 px scene to 800 px before its ResNet-50-FPN; its head's post-processing is
        # data-dependent (it does not run on meta tensors): count the backbone + FPN, the bulk of it
        backbone = _frozen(detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).backbone)
        units["spade_step_detector"] = count_flops(spade_step(backbone, 800))
        units["detector_forward"] = count_flops(forward(backbone, 1, 3, 800, 800))
    return units


# ------------------------------------------------------------------ the work of each chapter's paper profile

def paper_parameters(stem: str) -> dict:
    from gatlib.runbook import PreparedRun

    return PreparedRun(ROOT / "notebooks" / f"{stem}.md", "paper").parameters


def image_attack_budget() -> dict[str, int]:
    """Iterations per image of Table 2's four attacks at the paper's budgets (``gatlib.unforeseen``),
    and the LPA iterations among them (each adds one LPIPS forward+backward and one forward)."""
    from gatlib import unforeseen

    attacks = unforeseen.image_attacks("paper", "lpa", distance=nn.Identity())
    steps = {name: attack.steps * getattr(attack, "lagrange_steps", 1) * attack.restarts
             for name, attack in attacks.items()}
    return {"all": sum(steps.values()), "lpa": steps["perceptual"]}


TRAIN_SET_SIZE = {"cifar": 50_000}          # CIFAR-10's training split (the flagship sweep retrains on it)
TEST_SET_SIZE = {"cifar": 10_000}            # CIFAR-10's test split; a user's LSUN folder has no known size


def gat_max_attempts() -> int:
    """A GAT pool refresh attacks at most ``max_attempts × pool_size`` latents (``gatlib.gat.GATMode``)."""
    import inspect

    from gatlib.gat import GATMode

    return inspect.signature(GATMode.__init__).parameters["max_attempts"].default


def chapter_work(stem: str, p: dict) -> dict[str, float] | None:
    """Units of work of one chapter's ``paper`` run (upper bounds; see the module docstring)."""
    T = p.get("max_iters", 10)
    if stem == "00_setup":                 # each classifier on the in-domain and the out-of-domain test images
        return {"clf_forward_lsun_resnet50": 2 * p["eval_count"]}
    if stem == "01_generators":            # class grid, style mixing, noise draws, truncation: generator forwards
        m, d = p["mix_count"], p["noise_draws"]
        return {"gen_forward_lsun": 6 + 3 * (2 * m + m * m) + 3 * (2 * m + 1) + 4 * d + 4 * p["per_class"]}
    gen, arch = ("cifar", "resnet18_cifar") if p.get("classifier_arch") == "resnet18_cifar" else \
        ("lsun", p.get("classifier_arch", "resnet50"))
    if stem == "02_latent_attacks":        # headline (3 moves) + Figure 3 (2 moves x 3 groups) + targeted (3) + explorer
        latents = 3 * p["samples"] + 10 * p["figure_count"] + p.get("targeted_samples", 0)   # + targeted success rate
        if not (p["eps"] > 0 and p["delta"] > 0):          # the step-size search
            grid = [g for g in (p["eps_grid"] + "," + p["delta_grid"]).split(",") if g.strip()]
            latents += len(grid) * p["search_samples"]
        latents += 3 * 4 * len(str(p["seeds"]).split(",")) * p["table_samples"]   # moves x layer groups x seeds
        return {f"latent_step_{gen}_{arch}": T * latents, f"clf_forward_{gen}_{arch}": latents,
                f"gen_forward_{gen}": latents}
    if stem == "03_input_conditioned":     # projection (G fwd+bwd + LPIPS) of each image, then the attack
        n = p["image_count"]
        return {"gen_backward_celeba": n * p["steps"], "lpips_step": n * p["steps"],
                "latent_step_celeba_resnet50": n * T, "gen_forward_celeba": 3 * n}
    if stem == "04_adversarial_training":  # Table 1: every row x seed attacked on eval_samples latents
        seeds = len(p["seeds"])
        latent, forward = f"latent_step_{gen}_{arch}", f"clf_forward_{gen}_{arch}"
        if not p["test_images"] and gen not in TEST_SET_SIZE:
            raise ValueError(f"test_images = 0 means the whole {p['in_domain']} test folder, whose size is unknown: "
                             "give test_images to estimate this run")
        test_images = p["test_images"] or TEST_SET_SIZE[gen]
        work = {latent: TABLE1_ROWS * seeds * p["eval_samples"] * T,
                forward: TABLE1_ROWS * seeds * (test_images + 2 * p["eval_samples"])}
        if p.get("ablations"):
            # ablation_samples 0 means eval_samples (the ablations run on Table 1's latents)
            work[latent] += 8 * (p["ablation_samples"] or p["eval_samples"]) * T
        if p.get("retrain"):               # the Original from scratch, then the three fine-tuned rows with their pools
            refreshes = -(-p["steps"] // p["refresh_every"])
            curve_points = p["steps"] // p["eval_every"] + 1
            train_images = p["train_images"] or TRAIN_SET_SIZE[gen] - p["curve_images"]
            work[f"clf_train_image_{gen}_{arch}"] = seeds * (
                p["original_epochs"] * train_images
                + p["steps"] * p["batch_size"] * (1 + 2 + 2))      # control-real B; control-generated, GAT 2B
            work[latent] += seeds * (refreshes * gat_max_attempts() * p["pool_size"] * T   # GAT's pool
                                     + 3 * curve_points * p["curve_samples"] * T)          # learning curves
            work[forward] += seeds * 3 * curve_points * p["curve_images"]
            work[f"gen_forward_{gen}"] = seeds * refreshes * p["pool_size"]              # control-generated pool
        return work
    if stem == "05_unforeseen_attacks":    # Table 2 + figure + strength checks (5x steps, 4 more starts) + transfer
        budget = image_attack_budget()
        runs = (TABLE2_ROWS * len(p["eval_seeds"]) * p["test_images"] + 8
                + len(p["strength_rows"]) * p["strength_images"] * (1 + 5 + 4)
                + (TABLE2_ROWS + 1) * p["transfer_images"])
        return {"image_attack_step_lsun_resnet50": runs * budget["all"], "lpips_step": runs * budget["lpa"],
                "lpips_forward": runs * budget["lpa"],
                "clf_forward_lsun_resnet50": TABLE2_ROWS * len(p["eval_seeds"]) * p["test_images"]}
    if stem == "06_out_of_domain":         # every row x seed on both test sets, plus two confusion matrices
        seeds = len(p["seeds"])
        return {"clf_forward_lsun_resnet50": (TABLE1_ROWS * seeds * 2 + 2 * seeds) * p["eval_count"]}
    if stem == "07_segmentation_detection":   # Original and GAT rows x seeds x test scenes x iterations, both tasks
        scenes = 2 * len(p["seeds"]) * p["test_scenes"]
        return {"spade_step_segmenter": scenes * p["max_iters"], "spade_step_detector": scenes * p["max_iters"],
                "segmenter_forward": scenes * (p["max_iters"] + 2), "detector_forward": scenes * (p["max_iters"] + 2)}
    return None     # 08, 09: no paper preset


SWEEPS = ("colab-cifar10.yaml",)          # sweeps whose runs get their own estimate (the Colab flagship)


def _estimate(work: dict, units: dict, tflops: float) -> tuple[float, float, str]:
    flops = sum(count * units[unit] for unit, count in work.items())
    described = ", ".join(f"{count:,.0f} × {unit}" for unit, count in work.items())
    return flops, flops / (tflops * 1e12) / 3600, described


def run(quick: bool = False, tflops: float = ASSUMED_TFLOPS) -> dict:
    from gatlib.runbook import expand_sweep

    units = unit_flops()
    chapters = sorted(path.stem for path in (ROOT / "notebooks").glob("0*.md"))
    table = [f"| run | work (upper bound) | TFLOPs | GPU-hours at {tflops:g} TFLOP/s (estimate) |",
             "|---|---|---:|---:|"]
    rows, total = [], 0.0
    for stem in chapters:
        work = chapter_work(stem, paper_parameters(stem))
        if work is None:
            table.append(f"| {stem}, `paper` | no `paper` preset: runs on our MNIST models (the book budget) | — | — |")
            continue
        flops, hours, described = _estimate(work, units, tflops)
        total += hours
        table.append(f"| {stem}, `paper` | {described} | {flops / 1e12:,.0f} | {hours:.2f} |")
        rows.append(row(f"paper_gpu_hours_{stem[:2]}", f"paper profile, chapter {stem[:2]}: GPU-hours (estimate)", hours))
    rows.append(row("paper_gpu_hours_total", f"paper profile, all chapters: GPU-hours at {tflops:g} TFLOP/s (estimate)",
                    total))
    for sweep in SWEEPS:
        sweep_hours = 0.0
        for prepared in expand_sweep(ROOT / "sweeps" / sweep, runs_dir=ROOT / "runs"):
            work = chapter_work(prepared.stem, prepared.parameters)
            flops, hours, described = _estimate(work, units, tflops)
            sweep_hours += hours
            table.append(f"| `sweeps/{sweep}`: {prepared.stem} | {described} | {flops / 1e12:,.0f} | {hours:.2f} |")
        key = sweep.removesuffix(".yaml").replace("-", "_")
        rows.append(row(f"sweep_gpu_hours_{key}", f"sweeps/{sweep}: GPU-hours at {tflops:g} TFLOP/s (estimate)",
                        sweep_hours))
    return {**result(rows, {"tflops": tflops, "unit_gflops": {k: v / 1e9 for k, v in units.items()}}), "table": table}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflops", type=float, default=ASSUMED_TFLOPS, help="assumed sustained TFLOP/s of the GPU")
    args = parser.parse_args(argv)
    out = run(tflops=args.tflops)
    print("\n".join(out["table"]))
    return out


if __name__ == "__main__":
    main()
