"""Generative models whose latent variables the GAT attacks perturb.

``stylegan2`` — a pure-PyTorch StyleGAN2 (generator + discriminator) whose style variables y and
noise variables eta (paper §3.1, eq. 1-4) are first-class: ``G.styles(w)``, ``G.make_noise(B)``,
``G.synthesize(styles, noises, start_layer=..., cache=...)``.

``stylegan`` — StyleGAN v1 (``GeneratorV1``: AdaIN styles y = (y_s, y_b), per-channel noise
scales), the generator the paper attacks, behind the same API; ``PAPER_LAYER_RANGES`` and
``paper_settings`` give the paper's layer groups and step sizes for the official checkpoints.

``checkpoints`` — safe loaders (nothing in a file is executed) mapping rosinality ``.pt``, NVlabs
stylegan2-ada ``.pkl`` and TensorFlow-era NVlabs ``.pkl`` checkpoints (StyleGAN v1 ->
``GeneratorV1``; StyleGAN2 -> ``Generator(layout="stylegan2")``): ``load_generator(path)``.
"""
from .checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_generator,
    load_nvlabs_pkl,
    load_rosinality,
    load_tf_pkl,
)
from .stylegan import PAPER_GENERATORS, PAPER_LAYER_RANGES, GeneratorV1, paper_layer_groups, paper_settings
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
    "GeneratorV1",
    "MappingNetwork",
    "PAPER_GENERATORS",
    "PAPER_LAYER_RANGES",
    "Styles",
    "UnsafeCheckpointError",
    "count_parameters",
    "from_unit_range",
    "load_generator",
    "load_nvlabs_pkl",
    "load_rosinality",
    "load_tf_pkl",
    "paper_layer_groups",
    "paper_settings",
    "to_unit_range",
]
