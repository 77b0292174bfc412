"""Interactive explorers for Jupyter (ipywidgets). In a live kernel they re-run the computation on
every change. In a batch run (``gat run``, papermill through our runner, the book build) no one is at
the controls: they draw the figure of their starting values as a plain static image, which is what
the rendered book shows."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import torch

from . import plots
from .runbook import BATCH_ENV
from .attacks.evaluation import layer_groups_with_all
from .attacks.latent import MOVES, class_labels, latent_attack, sample_latents


def show_attack(G, classifier, labels: torch.Tensor, seed: int, layers: str, moves: str, eps: float, delta: float,
                max_iters: int, target: int):
    """Clean and adversarial images of ``labels`` with F's predictions and iterations (``target`` < 0:
    non-targeted). Returns the figure."""
    groups = layer_groups_with_all(G)
    styles, noises = sample_latents(G, labels, seed)
    kept = labels if target < 0 else labels[labels != target]
    if target >= 0 and len(kept) < len(labels):
        styles, noises = sample_latents(G, kept, seed)
    result = latent_attack(G, classifier, styles, noises, kept, eps=eps, delta=delta, moves=moves,
                           layers=groups[layers], max_iters=max_iters, target=None if target < 0 else target)
    clean_predictions = [f"c={int(c)}" for c in result.labels]
    adversarial = result.captions()
    kind = "non-targeted" if target < 0 else f"targeted, T={target}"
    return plots.labelled_grid({"clean": result.clean_images, "adversarial": result.images},
                               {"clean": clean_predictions, "adversarial": adversarial},
                               title=f"{moves} · {layers} layers · ε={eps:g} δ={delta:g} · {kind}")


def batch_run() -> bool:
    """True inside a kernel started by the runner (see :data:`gatlib.runbook.BATCH_ENV`)."""
    return os.environ.get(BATCH_ENV) == "1"


def attack_explorer(G, classifier, count: int = 8, seed: int = 0, eps: float = 0.05, delta: float = 0.5,
                    max_iters: int = 10, live: bool | None = None):
    """Sliders and menus for layers, what moves, ε, δ, iterations and target; the figure updates live.

    ``live=None`` builds the controls unless this is a batch run; there (and with ``live=False``) it
    shows the figure of the starting values and returns ``None``. Returns the controls otherwise."""
    labels = class_labels(G, count)
    if live is None:
        live = not batch_run()
    if not live:
        show_attack(G, classifier, labels, seed, layers="all", moves="both", eps=eps, delta=delta,
                    max_iters=max_iters, target=-1)
        plt.show()
        return None

    import ipywidgets as widgets
    from IPython.display import display

    controls = {
        "layers": widgets.Dropdown(options=list(layer_groups_with_all(G)), value="all", description="layers"),
        "moves": widgets.Dropdown(options=list(MOVES), value="both", description="moves"),
        "eps": widgets.FloatLogSlider(value=eps, base=10, min=-4, max=0, step=0.1, description="ε (style)"),
        "delta": widgets.FloatLogSlider(value=delta, base=10, min=-3, max=1, step=0.1, description="δ (noise)"),
        "max_iters": widgets.IntSlider(value=max_iters, min=1, max=30, description="iterations"),
        "target": widgets.Dropdown(options=[("non-targeted", -1)] + [(str(k), k) for k in range(max(G.num_classes, 1))],
                                   value=-1, description="target"),
    }
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            show_attack(G, classifier, labels, seed, **{name: control.value for name, control in controls.items()})
            plt.show()

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    display(widgets.VBox([widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:]), output]))
    return controls
