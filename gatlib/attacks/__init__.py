"""Attacks, one per file (like torchattacks): ``latent`` is the paper's GAT attack (eq. 1–4)."""
