"""Attacks, one per file (like torchattacks), each citing its paper.

* ``latent`` — the GAT latent attack on a generator's styles y and noises η (eq. 1–4);
* ``pgd`` — L∞ PGD (Madry et al., 2018);
* ``spatial`` — StAdv flow-field attack (Xiao et al., 2018), as PAT evaluates it;
* ``recolor`` — ReColorAdv (Laidlaw & Feizi, 2019);
* ``perceptual`` — Perceptual PGD and the Lagrangian perceptual attack (Laidlaw et al., 2021);
* ``song`` — unrestricted adversarial examples searched in a conditional GAN's z space (Song et al., 2018),
  the baseline of the paper's supplementary.

``step_sizes`` chooses the latent attack's ε and δ; ``evaluation`` tabulates latent attacks over
layers and seeds; ``gatlib.evaluate`` runs the image-space attacks on any model.
"""
