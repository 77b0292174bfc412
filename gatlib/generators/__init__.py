"""Generative models whose latent variables the GAT attacks perturb.

``stylegan2`` — a pure-PyTorch StyleGAN2 (generator + discriminator) whose style variables y and
noise variables eta (paper §3.1, eq. 1-4) are first-class: ``G.styles(w)``, ``G.make_noise(B)``,
``G.synthesize(styles, noises, start_layer=..., cache=...)``.

``checkpoints`` — safe loaders (nothing in a file is executed) mapping rosinality ``.pt`` and
NVlabs stylegan2-ada ``.pkl`` checkpoints onto the same ``Generator`` (``layout="stylegan2"``):
``load_generator(path)``.
"""
from .checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_generator,
    load_nvlabs_pkl,
    load_rosinality,
)
from .stylegan2 import (
    EMBEDDED_CHANNELS,
    LAYOUTS,
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
    "LAYOUTS",
    "CheckpointError",
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "Styles",
    "UnsafeCheckpointError",
    "count_parameters",
    "from_unit_range",
    "load_generator",
    "load_nvlabs_pkl",
    "load_rosinality",
    "to_unit_range",
]
