"""gatlib: the library behind gat-book (Generative Adversarial Training, Poursaeed et al., ICCV 2021).

``gatlib.evaluate(model, dataset, attacks)`` is the one-call robustness table (``gatlib.evaluation``);
everything else lives in its own module. Nothing heavy is imported here, so ``gat`` (the runner's
command line) starts without loading torch.
"""


def evaluate(*args, **kwargs):
    """Accuracy of ``model`` under each attack, as a tidy DataFrame; see ``gatlib.evaluation.evaluate``."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
