"""Generative models whose latent variables the GAT attacks perturb.

``stylegan2`` — a pure-PyTorch StyleGAN2 (generator + discriminator) whose style variables y and
noise variables eta (paper §3.1, eq. 1-4) are first-class: ``G.styles(w)``, ``G.make_noise(B)``,
``G.synthesize(styles, noises, start_layer=..., cache=...)``.
"""
from .stylegan2 import (
    EMBEDDED_CHANNELS,
    Discriminator,
    Generator,
    MappingNetwork,
    Styles,
    count_parameters,
    from_unit_range,
    to_unit_range,
)

__all__ = [
    "EMBEDDED_CHANNELS",
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "Styles",
    "count_parameters",
    "from_unit_range",
    "to_unit_range",
]
