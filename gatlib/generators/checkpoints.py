"""Safe loaders for the StyleGAN / StyleGAN2 checkpoints users have, mapped onto gatlib's generators.

StyleGAN2 loaders return a ``gatlib.generators.stylegan2.Generator`` in ``layout="stylegan2"`` (one
conv at 4x4, as upstream; see the ``stylegan2`` module docstring, "Layouts"); StyleGAN v1 (the
paper's own generators) loads into ``gatlib.generators.stylegan.GeneratorV1``. Either way the
paper's style variables y (``G.styles(w)``) and noise variables eta (``G.make_noise(B)``) work for
them as for the embedded model::

    from gatlib.generators.checkpoints import load_generator
    G = load_generator("stylegan2-ffhq-config-f.pt")        # rosinality
    G = load_generator("cifar10.pkl")                       # NVlabs stylegan2-ada-pytorch
    G = load_generator("karras2019stylegan-cars-512x384.pkl")   # TensorFlow era, StyleGAN v1
    G = load_generator("stylegan2-car-config-f.pkl")        # TensorFlow era, StyleGAN2
    z = G.sample_z(4)
    images = G(z, truncation_psi=0.7, noises=G.const_noise())   # conditional models: G(z, labels, ...)

Supported
    * **rosinality/stylegan2-pytorch** ``.pt`` / ``.pth``: training checkpoints (``{"g", "d",
      "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``; ``g_ema`` is used) and converted or
      ``g_ema``-only files (``{"g_ema", "latent_avg"}``), any size, channel multiplier, ``n_mlp``
      and ``latent`` (read from the tensor shapes; ``args`` is cross-checked when present).
    * **NVlabs stylegan2-ada-pytorch** ``.pkl`` snapshots (``{"G", "D", "G_ema", "augment_pipe",
      "training_set_kwargs"}``; ``G_ema`` is used), unconditional and class-conditional
      (``c_dim > 0``, e.g. their CIFAR-10 model), ``architecture="skip"`` generators, with
      ``conv_clamp``. The StyleGAN2 networks of the stylegan3 repository (``networks_stylegan2``)
      pickle the same way and load too.
    * gatlib's own ``{"state_dict", "config"}`` files (``gatlib.zoo``), any layout (StyleGAN v1 too).
    * **TensorFlow-era NVlabs pickles** (``dnnlib.tflib.network.Network`` objects, ``(G, D, Gs)``
      snapshots or a single Network; ``Gs`` is used): StyleGAN v1 generators (``G_style``, e.g.
      ``karras2019stylegan-{ffhq,celebahq}-1024x1024.pkl``, ``-bedrooms-256x256``, ``-cats-256x256``,
      ``-cars-512x384``; unconditional or ``label_size > 0``) -> ``GeneratorV1``; StyleGAN2
      generators (``G_main`` + ``G_synthesis_stylegan2``, ``architecture="skip"``: the
      ``stylegan2-*-config-f.pkl`` files; conditional only with stylegan2-ada's ``LabelEmbed``) ->
      ``Generator(layout="stylegan2")``. Detected by the first global of the pickle stream.

Not supported (refused with a message saying so)
    StyleGAN3 (alias-free) synthesis networks (``SynthesisInput``, ``L0_...`` layers); ``"orig"`` /
    ``"resnet"`` generator architectures (and TF StyleGAN2 configs B-D); TF progressive-growing
    snapshots taken between resolutions (``lod != 0``); StyleGAN2 TF mappings with ``LabelConcat``;
    rosinality's SWAGAN; forks whose keys, filters or TF keyword arguments differ (unknown keys are
    listed in the error rather than silently dropped).

Safety: nothing in a file is ever executed
    * ``.pt`` files are read with ``torch.load(weights_only=True)``, whose allow-list is widened for
      the duration of the call only (``torch.serialization.safe_globals``) by exactly one class,
      ``argparse.Namespace`` (rosinality's ``args``). Any other global -> ``UnsafeCheckpointError``
      naming it. ``weights_only=False`` is never used.
    * NVlabs ``.pkl`` files are plain pickles of persistent classes whose *source code travels in
      the file* (``torch_utils.persistence``: each module reduces to
      ``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name,
      state}``, and NVlabs' own loader ``exec``s ``module_src``). ``SafeUnpickler`` resolves only
      the globals in ``NVLABS_ALLOWED_GLOBALS``, each to a local, data-only replacement: persistent
      objects become ``PersistentRecord(class_name, state, module_src)`` (the source is kept as text,
      never executed), tensor storages (pickled by torch as ``torch.storage._load_from_bytes(b)``,
      ``b`` a legacy ``torch.save`` blob) are read with ``torch.load(weights_only=True)``, numpy
      scalars/arrays and dtypes are rebuilt from raw bytes for plain numeric dtypes only,
      ``dnnlib.util.EasyDict`` becomes a dict, a few torch containers become ``TorchModuleRecord``.
      Any other global -> ``UnsafeCheckpointError`` naming it, before anything is called. The
      allowed callables and classes are immutable (a pickle's BUILD cannot patch them), and a
      tensor must fit inside its storage (torch would otherwise grow it with uninitialised memory).
    * TensorFlow-era ``.pkl`` files pickle ``dnnlib.tflib.network.Network`` objects whose state
      (``version``, ``name``, ``static_kwargs``, ``components``, ``build_module_src`` -- Python
      source that TF's loader ``exec``s --, ``build_func_name``, ``variables`` = (name, numpy array)
      pairs) goes to ``__setstate__``. ``read_tf_pkl`` uses the same ``SafeUnpickler`` with the
      smaller allow-list ``TF_ALLOWED_GLOBALS``: the Network becomes a ``TFNetworkRecord`` (state
      validated, source kept as text, variables as numeric numpy arrays), numpy arrays/scalars/dtypes
      as above, protocol 2's ``_codecs.encode`` and ``dnnlib.util.EasyDict``. Nothing else, no torch
      global either: anything else anywhere in the file (e.g. in ``static_kwargs``) ->
      ``UnsafeCheckpointError`` naming it; a Network without a state is refused as malformed.

Conversions (upstream formula -> gatlib module; outputs match upstream to float rounding, see
``tests/test_checkpoints.py``, which re-implements both upstream forward passes)
    * Mapping: rosinality ``style.0`` is PixelNorm (= our ``normalize_2nd_moment``), ``style.{i+1}``
      -> ``mapping.fcs.{i}``; NVlabs ``fc{i}`` -> ``mapping.fcs.{i}``, ``embed`` -> ``mapping.embed``
      (both embed c, normalise and concatenate as our ``MappingNetwork``). Weights are stored
      unscaled with the same equalized-lr run-time gain ``lr_mul / sqrt(fan_in)`` and bias gain
      ``lr_mul`` (rosinality ``lr_mlp``, NVlabs ``bias_gain``), leaky ReLU x sqrt(2): copied as is.
    * Affine maps A (rosinality ``modulation``, NVlabs ``affine``): copied (bias init 1, gain
      1/sqrt(w_dim) on both sides).
    * Modulated 3x3 convs: our module drops the equalized-lr gain of demodulated convs, so
      rosinality weights (scaled at run time by ``1/sqrt(in*9)`` *before* demodulation) are stored
      pre-multiplied by that scale (which also keeps the 1e-8 of the demodulation in the same
      place); NVlabs demodulates the raw weight: copied. Up-sampling convs: both upstreams run
      ``conv_transpose2d`` with the *unflipped* weight then the [1,3,3,1] filter with padding 1;
      ours flips the kernel inside (``conv_transpose2d(x, W.T.flip)``), so those weights are
      stored spatially flipped. The sqrt(2) of each leaky ReLU is applied by our ``input_gain``.
    * Noise: rosinality ``noise.weight`` (1,) / NVlabs ``noise_strength`` () -> ``noise_strength``;
      rosinality ``noises.noise_i`` / NVlabs ``noise_const`` -> ``G.const_noise()``
      (``randomize_noise=False`` / ``noise_mode='const'``). Bias + leaky ReLU x sqrt(2)
      (``FusedLeakyReLU`` / ``bias_act``) -> ``bias``.
    * ToRGB (modulated 1x1, no demodulation, gain ``1/sqrt(in)``, reads ``sqrt(2) * lrelu``):
      weight ``(1, C_img, C, 1, 1)`` / ``(C_img, C, 1, 1)`` -> ``(C_img, C)``, bias; the skip image
      is up-sampled with the same [1,3,3,1] filter (upfirdn2d up=2, pad (2, 1)) as ours.
    * ``latent_avg`` / ``w_avg`` -> ``mapping.w_avg``; a rosinality file without ``latent_avg``
      (training checkpoints) gets it estimated from ``w_avg_samples`` latents (seed 0), like
      rosinality's ``mean_latent(4096)``. ``w_avg_class`` (per-class truncation centres, a gatlib
      notion) is filled with ``w_avg``, so ``truncation_psi`` with ``c`` reproduces NVlabs'
      truncation until ``G.estimate_w_avg(n)`` refines it. ``conv_clamp`` -> ``G.conv_clamp``.
    * TensorFlow variables (``tf_params``: ``mapping/Dense0/weight``, ``synthesis/4x4/Const/const``,
      ``dlatent_avg``, ...): see ``tf_stylegan1_generator`` and ``tf_stylegan2_generator``. TF
      dense weights are [in, out] and conv weights [kh, kw, in, out] (transposed to ours), v1's
      AdaIN scale ``1 + A_s(w)`` and StyleGAN2's ``mod_bias + 1`` put their 1 into the affine bias,
      ``noise{i}`` variables become ``G.const_noise()``. Checked in ``tests/test_tf_pickles.py``
      against forward passes written from NVlabs' TF code.
    The loaded ``G.checkpoint_info`` records the source format and path.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import io
import math
import pickle
import pickletools
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .stylegan import GeneratorV1
from .stylegan2 import Generator, _fir_kernel

PathLike = Union[str, Path]

#: The only global ``torch.load(weights_only=True)`` may resolve beyond torch's defaults.
ROSINALITY_SAFE_GLOBALS = [argparse.Namespace]

_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"   # pickled magic number of old torch.save


class CheckpointError(ValueError):
    """The file is not a checkpoint we can read: corrupt, an unknown format, or an unsupported
    architecture (the message names what was found)."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file asks to import or run something outside the allow-list (the message names it).
    Nothing from the file was executed."""


# ----------------------------------------------------------------------------------------------
# Plain-data records of pickled modules


class _Frozen(type):
    """Metaclass of the classes a pickle may instantiate (NEWOBJ): their attributes cannot be
    changed (a pickle's BUILD opcode with slot state would otherwise ``setattr`` on them)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise UnsafeCheckpointError(f"refused to modify {cls.__name__}.{name}")

    def __delattr__(cls, name: str) -> None:
        raise UnsafeCheckpointError(f"refused to modify {cls.__name__}.{name}")


class _Allowed:
    """An allow-listed callable handed to the unpickler; immutable for the same reason."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafeCheckpointError(f"refused to modify {self._name}")

    def __repr__(self) -> str:
        return f"<allowed {self._name}>"


class ModuleRecord(metaclass=_Frozen):
    """A module read from a pickle as plain data: its class name and its ``__dict__`` (``state``),
    which holds ``_parameters``, ``_buffers``, ``_modules`` and the attributes set in ``__init__``."""

    class_name: str = "?"

    def __init__(self, class_name: str, state: Dict[str, Any]):
        self.class_name, self.state = class_name, state

    def _part(self, key: str) -> Dict[str, Any]:
        part = self.state.get(key)
        return part if isinstance(part, dict) else {}

    @property
    def parameters(self) -> Dict[str, Any]:
        return self._part("_parameters")

    @property
    def buffers(self) -> Dict[str, Any]:
        return self._part("_buffers")

    @property
    def modules(self) -> Dict[str, Any]:
        return self._part("_modules")

    def get(self, name: str, default: Any = None) -> Any:
        for part in (self.parameters, self.buffers, self.modules, self.state):
            if name in part:
                return part[name]
        return default

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise CheckpointError(f"{self.class_name} has no {name!r} (it has parameters {sorted(self.parameters)}, "
                                  f"buffers {sorted(self.buffers)}, submodules {sorted(self.modules)})")
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.class_name!r}, submodules={sorted(self.modules)})"


_MISSING = object()


class PersistentRecord(ModuleRecord):
    """An NVlabs persistent object (``torch_utils.persistence``), never instantiated: ``module_src``
    is the source code that travelled with it, kept as text and never executed."""

    def __init__(self, class_name: str, state: Dict[str, Any], module_src: str = "", version: Any = None):
        super().__init__(class_name, state)
        self.module_src, self.version = module_src, version


class TorchModuleRecord(ModuleRecord):
    """A plain ``torch.nn`` container pickled by reference (``ModuleList``, ``Sequential``, ...),
    rebuilt as data: pickle creates it empty and hands its ``__dict__`` to ``__setstate__``."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __init__(self, *args, **kwargs):   # never called by pickle (NEWOBJ)
        pass

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"{self.class_name}: unexpected state of type {type(state).__name__}")
        self.state = state


def _torch_module_record(module: str, name: str) -> type:
    return _Frozen(f"{name}Record", (TorchModuleRecord,), {"class_name": f"{module}.{name}"})


class EasyDictRecord(dict, metaclass=_Frozen):
    """``dnnlib.util.EasyDict`` read as a plain dict (with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# ----------------------------------------------------------------------------------------------
# Data-only replacements of the globals NVlabs pickles reference


def _persistent_object(meta: Any) -> PersistentRecord:
    """Replacement of ``torch_utils.persistence._reconstruct_persistent_obj``: no ``exec``."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafeCheckpointError("malformed NVlabs persistent object: expected meta = {'type': 'class', ...}, "
                                    f"got {type(meta).__name__} {str(meta)[:80]}")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict) or not isinstance(src, str):
        raise UnsafeCheckpointError("malformed NVlabs persistent object (class_name/state/module_src)")
    return PersistentRecord(class_name, dict(state), src, meta.get("version"))


def _storage_from_bytes(blob: Any):
    """Replacement of ``torch.storage._load_from_bytes``: the blob is read with
    ``torch.load(weights_only=True)`` and must hold a tensor storage."""
    if not isinstance(blob, (bytes, bytearray)):
        raise UnsafeCheckpointError(f"tensor storage blob is a {type(blob).__name__}, not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # TypedStorage deprecation notices
            storage = torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(err, "a tensor storage blob inside the pickle") from None
    except Exception as err:                          # corrupt blob
        raise CheckpointError(f"unreadable tensor storage blob inside the pickle: {err}") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafeCheckpointError(f"a tensor storage blob holds a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None) -> Tensor:
    """Replacement of ``torch._utils._rebuild_tensor_v2`` (hooks and metadata are ignored)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafeCheckpointError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise UnsafeCheckpointError("tensor with a negative or non-integer offset, size or stride")
    extent = storage_offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if all(size) else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # TypedStorage deprecation notices
        if extent > storage.size():              # set_() would silently grow the storage (uninitialised memory)
            raise UnsafeCheckpointError(f"tensor of size {tuple(size)} reaches beyond its storage ({storage.size()})")
        tensor = torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))
    if requires_grad and tensor.is_floating_point():
        tensor.requires_grad_(True)
    return tensor


def _rebuild_parameter(data, requires_grad, backward_hooks=None, state=None) -> torch.nn.Parameter:
    """Replacement of ``torch._utils._rebuild_parameter(_with_state)`` (hooks/state ignored)."""
    if not isinstance(data, Tensor):
        raise UnsafeCheckpointError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad) and data.is_floating_point())


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how pickle protocol 2 writes bytes; nothing else allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class NumpyDType(metaclass=_Frozen):
    """A numpy dtype pickled as ``numpy.dtype(name, align, copy)`` + state, kept as data: only plain
    numeric dtypes (bool, int, uint, float, complex) and a byte order are accepted."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True):
        if not isinstance(name, str):
            raise UnsafeCheckpointError(f"numpy dtype named by a {type(name).__name__}")
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise UnsafeCheckpointError(f"unknown numpy dtype {name!r}") from None
        if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafeCheckpointError(f"refused numpy dtype {name!r} (only plain numeric dtypes are read)")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise UnsafeCheckpointError("refused a structured or sub-array numpy dtype")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: Any, data: Any = None):
    """Replacement of ``numpy.core.multiarray.scalar``: a numeric scalar read from its raw bytes."""
    if not (isinstance(dtype, NumpyDType) and isinstance(data, (bytes, bytearray))
            and len(data) == dtype.dtype.itemsize):
        raise UnsafeCheckpointError("refused a numpy scalar that is not a plain numeric value")
    return np.frombuffer(bytes(data), dtype=dtype.dtype)[0]


class NumpyArray(metaclass=_Frozen):
    """A numpy array pickled as ``_reconstruct(ndarray, ...)`` + state, rebuilt from raw bytes
    (numeric dtypes only); the array is ``.array``."""

    def __init__(self, *args):
        self.array = None

    def __setstate__(self, state: Any) -> None:
        ok = isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], NumpyDType) \
            and isinstance(state[4], (bytes, bytearray)) and all(isinstance(s, int) for s in state[1])
        if not ok:
            raise UnsafeCheckpointError("refused a numpy array that is not a plain numeric array")
        _, shape, dtype, fortran, data = state
        count = int(np.prod(shape)) if len(shape) else 1
        if len(data) != count * dtype.dtype.itemsize:
            raise UnsafeCheckpointError("numpy array with inconsistent size")
        self.array = np.frombuffer(bytes(data), dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C").copy()

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def _numpy_reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> NumpyArray:
    if cls is not NumpyArray:
        raise UnsafeCheckpointError("numpy _reconstruct of something other than numpy.ndarray")
    return NumpyArray()


_TORCH_CONTAINERS = [("torch.nn.modules.container", n) for n in ("ModuleList", "ModuleDict", "Sequential",
                                                                   "ParameterList", "ParameterDict")]
_TORCH_CONTAINERS.append(("torch.nn.modules.linear", "Identity"))

_ALLOWED_GLOBALS: Dict[str, Any] = {
    "torch_utils.persistence._reconstruct_persistent_obj": _persistent_object,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _storage_from_bytes,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "_codecs.encode": _codecs_encode,
    "dnnlib.util.EasyDict": EasyDictRecord,
    "dnnlib.EasyDict": EasyDictRecord,
    "numpy.dtype": NumpyDType,
    "numpy.ndarray": NumpyArray,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
    **{f"{m}.{n}": _torch_module_record(m, n) for m, n in _TORCH_CONTAINERS},
}
#: ``module.name`` -> the local, data-only object it resolves to in NVlabs pickles. Nothing else.
#: Functions are wrapped in immutable ``_Allowed`` objects; classes are immutable (``_Frozen``) or
#: built-in types.
NVLABS_ALLOWED_GLOBALS: Dict[str, Any] = {
    key: value if isinstance(value, type) else _Allowed(value, key) for key, value in _ALLOWED_GLOBALS.items()}


# ----------------------------------------------------------------------------------------------
# TensorFlow-era pickles: dnnlib.tflib.network.Network objects, read as data

TF_NETWORK = "dnnlib.tflib.network.Network"


def _tf_array(value: Any, what: str) -> np.ndarray:
    """A TF variable's value (a numpy array or scalar from the pickle) as a plain numeric array."""
    if isinstance(value, NumpyArray):
        arr = value.array
    elif isinstance(value, (np.generic, int, float)) and not isinstance(value, bool):
        arr = np.asarray(value)
    else:
        arr = None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise UnsafeCheckpointError(f"TensorFlow-era Network: variable {what} is a {type(value).__name__}, "
                                    "not a plain numeric numpy array")
    return arr


class TFNetworkRecord(metaclass=_Frozen):
    """A ``dnnlib.tflib.network.Network`` (StyleGAN v1 / StyleGAN2 TensorFlow pickles), never
    instantiated: pickle creates it empty and hands its state to ``__setstate__``, which keeps it as
    data. ``version``, ``name``, ``static_kwargs`` (the build function's keyword arguments),
    ``components`` (name -> sub-network, e.g. ``mapping`` and ``synthesis``), ``variables`` (TF
    variable name relative to the network -> numpy array), ``build_func_name`` and
    ``build_module_src`` (the network's Python source, which TF's loader ``exec``s: kept as text,
    never executed); any further state (``input_shapes``, ... of version 5) is in ``extra``."""

    class_name = TF_NETWORK

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = None                 # set by __setstate__; a Network without state is malformed
        return obj

    def __init__(self, *args, **kwargs):   # never called by pickle (NEWOBJ)
        pass

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"malformed TensorFlow-era Network: state is a {type(state).__name__}")
        version, name = state.get("version"), state.get("name")
        kwargs, components = state.get("static_kwargs", {}), state.get("components", {})
        src, func = state.get("build_module_src", ""), state.get("build_func_name", "")
        variables = state.get("variables")
        ok = (type(version) is int and version in (2, 3, 4, 5) and isinstance(name, str) and isinstance(kwargs, dict)
              and all(isinstance(k, str) for k in kwargs) and isinstance(components, dict)
              and all(isinstance(k, str) and isinstance(v, TFNetworkRecord) for k, v in components.items())
              and isinstance(src, str) and isinstance(func, str) and isinstance(variables, (list, tuple)))
        if not ok:
            raise UnsafeCheckpointError("malformed TensorFlow-era Network state (expected version 2-5, name, "
                                        "static_kwargs, components of Networks, build_module_src, build_func_name, "
                                        "variables)")
        table: Dict[str, np.ndarray] = OrderedDict()
        for item in variables:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)) or item[0] in table:
                raise UnsafeCheckpointError(f"malformed TensorFlow-era Network {name!r}: variables must be unique "
                                            "(name, array) pairs")
            table[item[0]] = _tf_array(item[1], f"{name}/{item[0]}")
        self.version, self.name, self.static_kwargs, self.components = version, name, dict(kwargs), dict(components)
        self.build_module_src, self.build_func_name, self.variables = src, func, table
        known = {"version", "name", "static_kwargs", "components", "build_module_src", "build_func_name", "variables"}
        self.extra = {k: v for k, v in state.items() if k not in known}
        self.state = state

    def __repr__(self) -> str:
        if self.state is None:
            return "TFNetworkRecord(<no state>)"
        return (f"TFNetworkRecord({self.name!r}, {self.build_func_name!r}, {len(self.variables)} variables, "
                f"components={sorted(self.components)})")


#: ``module.name`` -> local replacement in TensorFlow-era pickles: the Network record, numpy arrays,
#: scalars and dtypes (plain numeric only), the bytes helper of pickle protocol 2 and
#: ``dnnlib.util.EasyDict`` (as a dict). Nothing else -- no torch globals either.
TF_ALLOWED_GLOBALS: Dict[str, Any] = {
    "dnnlib.tflib.network.Network": TFNetworkRecord,
    **{key: NVLABS_ALLOWED_GLOBALS[key] for key in (
        "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "_codecs.encode",
        "dnnlib.util.EasyDict", "dnnlib.EasyDict")},
}


def _refused_message(name: str, where: str, tf: bool = False) -> str:
    msg = f"refused to load {where}: it references the global `{name}`, which is not on the allow-list"
    if name.startswith("dnnlib.tflib") and tf:
        msg += f" -- TensorFlow-era pickles may hold only `{TF_NETWORK}` objects and numpy arrays"
    elif name.startswith("dnnlib.tflib"):
        msg += (" -- this is a TensorFlow-era StyleGAN/StyleGAN2 pickle: read it with `load_generator` or "
                "`load_tf_pkl` (content: `read_tf_pkl`)")
    return msg + ". Nothing from the file was executed."


def _refusal(err: BaseException, where: str) -> CheckpointError:
    """A ``torch.load(weights_only=True)`` failure -> UnsafeCheckpointError naming the global, or
    CheckpointError if the data is simply not readable."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    if match:
        return UnsafeCheckpointError(_refused_message(match.group(1), where) +
                                     " (torch.load(weights_only=True) refused it; gatlib never retries with "
                                     "weights_only=False, which would run code from the file.)")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation"))]
    return CheckpointError(f"unreadable or corrupt {where}: {(detail or lines or [repr(err)])[0]}")


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of ``allowed`` (default ``NVLABS_ALLOWED_GLOBALS``;
    ``TF_ALLOWED_GLOBALS`` for TensorFlow-era pickles), each to a data-only replacement."""

    def __init__(self, file, where: str = "the pickle", allowed: Optional[Dict[str, Any]] = None):
        super().__init__(file)
        self.where = where
        self.allowed = NVLABS_ALLOWED_GLOBALS if allowed is None else allowed

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (pickle protocols < 3 with fix_imports), e.g. __builtin__.set -> builtins.set
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in self.allowed:
            return self.allowed[key]
        raise UnsafeCheckpointError(_refused_message(key, self.where, tf=self.allowed is TF_ALLOWED_GLOBALS))

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"refused to load {self.where}: unexpected persistent id {str(pid)[:60]}")


# ----------------------------------------------------------------------------------------------
# File-level readers


def _check_file(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    return path


def read_nvlabs_pkl(path: PathLike) -> Any:
    """The content of an NVlabs ``.pkl`` (usually a dict with ``G``, ``D``, ``G_ema``, ...), with
    every persistent module as a ``PersistentRecord``; see the module docstring, "Safety"."""
    path = _check_file(path)
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, where=str(path)).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt pickle ({type(err).__name__}: {err})") from None


def torch_load_safe(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with ``argparse.Namespace`` allowed for this call
    only; refusals and corrupt files become ``UnsafeCheckpointError`` / ``CheckpointError``."""
    path = _check_file(path)
    try:
        with torch.serialization.safe_globals(ROSINALITY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(err, str(path)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt PyTorch checkpoint "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def load_generator(source: PathLike, device: Union[str, torch.device] = "cpu",
                   w_avg_samples: int = 4096) -> Union[Generator, GeneratorV1]:
    """Any supported checkpoint -> ``Generator`` / ``GeneratorV1`` (eval mode) on ``device``.

    A pickle whose first global is ``dnnlib.tflib.network.Network`` -> TensorFlow-era StyleGAN v1 /
    StyleGAN2 (``load_tf_pkl``); other ``.pkl`` -> NVlabs PyTorch (``load_nvlabs_pkl``); ``.pt`` /
    ``.pth`` -> gatlib's ``{"state_dict", "config"}`` if present, else rosinality
    (``load_rosinality``); other suffixes are recognised by content. Raises FileNotFoundError,
    ``CheckpointError`` (corrupt / unknown format, naming the keys found) or
    ``UnsafeCheckpointError`` (a refused global, named)."""
    path = _check_file(source)
    suffix = path.suffix.lower()
    if _is_tf_pickle(path):
        return load_tf_pkl(path, device, w_avg_samples)
    if suffix == ".pkl" and not _is_torch_file(path):
        return load_nvlabs_pkl(path, device, w_avg_samples)
    if suffix in (".pt", ".pth") or _is_torch_file(path):
        return _from_torch_object(torch_load_safe(path), path, w_avg_samples).to(device).eval()
    if _is_pickle(path):
        return load_nvlabs_pkl(path, device, w_avg_samples)
    raise CheckpointError(f"{path}: unrecognised checkpoint (supported: rosinality or gatlib .pt/.pth, NVlabs .pkl)")


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_torch_file(path: Path) -> bool:
    """A ``torch.save`` file: a zip archive (checked by its *first* bytes: ``zipfile.is_zipfile``
    would also accept a pickle that merely embeds a zipped blob) or the legacy format."""
    head = _head(path)
    return head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_MAGIC)


def _is_pickle(path: Path) -> bool:
    return _head(path, 1) == b"\x80"


def _converting(convert: Callable[..., Generator], path: Path, *args) -> Generator:
    """Run a conversion; malformed content (wrong types or shapes) -> CheckpointError."""
    try:
        return convert(*args)
    except CheckpointError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a generator this loader understands "
                              f"({type(err).__name__}: {err})") from None


def _from_torch_object(obj: Any, path: Path, w_avg_samples: int) -> Generator:
    if isinstance(obj, dict):
        if "state_dict" in obj and "config" in obj:
            return _from_gatlib(obj, path)
        if _rosinality_entry(obj):
            return _converting(_from_rosinality, path, obj, path, w_avg_samples)
        if _is_rosinality_state(obj):
            return _converting(_from_rosinality, path, {"g_ema": obj}, path, w_avg_samples)
        found = sorted(str(k) for k in obj)
        inner = {k: sorted(obj[k])[:8] for k in ("g_ema", "g") if isinstance(obj.get(k), dict)}
        raise CheckpointError(f"{path}: unknown checkpoint format: top-level keys {found[:20]}"
                              + (f", {inner}" if inner else "") +
                              "; expected rosinality ({'g_ema', ...} with 'input.input', 'conv1.conv.weight', ...) "
                              "or gatlib ({'state_dict', 'config'})")
    raise CheckpointError(f"{path}: unknown checkpoint format: a {type(obj).__name__}, not a dict")


def _from_gatlib(obj: dict, path: Path) -> Union[Generator, GeneratorV1]:
    try:
        config = obj["config"]
        G = (GeneratorV1 if isinstance(config, dict) and config.get("layout") == "stylegan1" else Generator)(**config)
        G.load_state_dict(obj["state_dict"])
    except (TypeError, RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: a gatlib checkpoint whose config/state_dict do not fit Generator: "
                              f"{err}") from None
    G.checkpoint_info = {"format": "gatlib", "path": str(path)}
    return G


# ----------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch


def _is_rosinality_state(sd: dict) -> bool:
    return "input.input" in sd and "conv1.conv.weight" in sd


def _rosinality_entry(ckpt: dict) -> Optional[str]:
    """The key of the generator state dict to use: ``g_ema`` (else ``g``), or None."""
    return next((k for k in ("g_ema", "g") if isinstance(ckpt.get(k), dict) and _is_rosinality_state(ckpt[k])), None)


def load_rosinality(path: PathLike, device: Union[str, torch.device] = "cpu", w_avg_samples: int = 4096) -> Generator:
    """A rosinality ``.pt`` (training checkpoint or ``g_ema``-only) -> ``Generator`` (eval mode).
    ``w_avg_samples``: latents used to estimate ``w_avg`` when the file has no ``latent_avg``
    (0 = leave it at zero)."""
    path = _check_file(path)
    obj = torch_load_safe(path)
    if isinstance(obj, dict) and _is_rosinality_state(obj):      # a bare g_ema state dict
        obj = {"g_ema": obj}
    if not (isinstance(obj, dict) and _rosinality_entry(obj)):
        found = f"keys {sorted(map(str, obj))[:20]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{path}: not a rosinality checkpoint ({found}; expected 'g_ema' with 'input.input', "
                              "'conv1.conv.weight', ...); load_generator reads the other formats")
    return _converting(_from_rosinality, path, obj, path, w_avg_samples).to(device).eval()


def _from_rosinality(ckpt: dict, path: Path, w_avg_samples: int) -> Generator:
    key = _rosinality_entry(ckpt)
    sd = {k: v for k, v in ckpt[key].items()}
    args = ckpt.get("args")
    arg = (lambda name, default=None: getattr(args, name, default)) if args is not None else (lambda n, d=None: d)
    if arg("arch", "stylegan2") != "stylegan2":
        raise CheckpointError(f"{path}: rosinality arch {arg('arch')!r} is not supported (only 'stylegan2')")

    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    n_rgbs = 1 + len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    size = 2 ** (n_rgbs + 1)
    style_dim = int(sd["style.1.weight"].shape[1]) if n_mlp else int(sd["conv1.conv.modulation.weight"].shape[1])
    checks = {"size": size, "n_mlp": n_mlp, "latent": style_dim}
    bad = {k: (arg(k), v) for k, v in checks.items() if arg(k) is not None and arg(k) != v}
    if bad:
        raise CheckpointError(f"{path}: args disagree with the weights (args, weights): {bad}")
    channels = {4: int(sd["input.input"].shape[1])}
    for i in range(n_rgbs - 1):
        channels[2 ** (i + 3)] = int(sd[f"convs.{2 * i}.conv.weight"].shape[1])
    image_channels = int(sd["to_rgb1.conv.weight"].shape[1])

    G = Generator(resolution=size, num_classes=0, z_dim=style_dim, w_dim=style_dim, mapping_layers=n_mlp,
                  channels=channels, image_channels=image_channels, mapping_lr_mul=float(arg("lr_mlp", 0.01)),
                  layout="stylegan2")
    used, new = set(), {}

    def take(name: str) -> Tensor:
        if name not in sd:
            raise CheckpointError(f"{path}: rosinality state dict lacks {name!r}")
        used.add(name)
        return sd[name].detach().float()

    for i in range(n_mlp):
        new[f"mapping.fcs.{i}.weight"] = take(f"style.{i + 1}.weight")
        new[f"mapping.fcs.{i}.bias"] = take(f"style.{i + 1}.bias")
    new["const"] = take("input.input")[0]
    fir = _fir_kernel(1, 4.0)[0, 0]
    for k in range(G.num_convs):
        p = "conv1" if k == 0 else f"convs.{k - 1}"
        w = take(f"{p}.conv.weight")[0]
        w = w / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])       # rosinality's run-time scale, pre-applied
        if G.layers[k].up:
            _check_filter(take(f"{p}.conv.blur.kernel"), fir, f"{path}: {p}.conv.blur.kernel")
            w = w.flip([2, 3])                                      # ours flips inside conv_transpose2d
        new[f"layers.{k}.weight"] = w
        new[f"layers.{k}.affine.weight"] = take(f"{p}.conv.modulation.weight")
        new[f"layers.{k}.affine.bias"] = take(f"{p}.conv.modulation.bias")
        new[f"layers.{k}.noise_strength"] = take(f"{p}.noise.weight").reshape(())
        new[f"layers.{k}.bias"] = take(f"{p}.activate.bias")
    for j in range(len(G.torgbs)):
        p = "to_rgb1" if j == 0 else f"to_rgbs.{j - 1}"
        new[f"torgbs.{j}.weight"] = take(f"{p}.conv.weight")[0, :, :, 0, 0]
        new[f"torgbs.{j}.affine.weight"] = take(f"{p}.conv.modulation.weight")
        new[f"torgbs.{j}.affine.bias"] = take(f"{p}.conv.modulation.bias")
        new[f"torgbs.{j}.bias"] = take(f"{p}.bias").reshape(-1)
        if j:
            _check_filter(take(f"{p}.upsample.kernel"), fir, f"{path}: {p}.upsample.kernel")
    noises = [sd.get(f"noises.noise_{i}") for i in range(G.num_convs)]
    used.update(f"noises.noise_{i}" for i in range(G.num_convs))
    unknown = sorted(set(sd) - used)
    if unknown:
        raise CheckpointError(f"{path}: rosinality state dict has keys this loader does not know (a fork?): "
                              f"{unknown[:10]}")

    latent_avg = ckpt.get("latent_avg")
    w_avg = None if latent_avg is None else torch.as_tensor(latent_avg).detach().float().reshape(-1)
    _load_converted(G, new, w_avg, path)
    if w_avg is None and w_avg_samples:
        G.estimate_w_avg(n=w_avg_samples, generator=torch.Generator().manual_seed(0))
        G.mapping.w_avg_class.copy_(G.mapping.w_avg.expand_as(G.mapping.w_avg_class))
    if all(isinstance(n, Tensor) for n in noises):
        G.set_const_noise([n.detach().float() for n in noises])
    G.checkpoint_info = {"format": "rosinality", "path": str(path), "entry": key,
                         "latent_avg": latent_avg is not None}
    return G


def _check_filter(kernel: Tensor, expected: Tensor, what: str) -> None:
    if kernel.shape != expected.shape or not torch.allclose(kernel.float(), expected, atol=1e-6):
        raise CheckpointError(f"{what}: resampling filter is not [1,3,3,1] (a fork?): {kernel.tolist()}")


def _load_converted(G: Generator, new: Dict[str, Tensor], w_avg: Optional[Tensor], path: Path) -> None:
    if w_avg is not None:
        new["mapping.w_avg"] = w_avg
        new["mapping.w_avg_class"] = w_avg.expand_as(G.mapping.w_avg_class).clone()
    else:
        new["mapping.w_avg"] = G.mapping.w_avg.clone()
        new["mapping.w_avg_class"] = G.mapping.w_avg_class.clone()
    try:
        G.load_state_dict(new, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the inferred architecture: {err}") from None


# ----------------------------------------------------------------------------------------------
# NVlabs stylegan2-ada-pytorch


def load_nvlabs_pkl(path: PathLike, device: Union[str, torch.device] = "cpu", w_avg_samples: int = 4096) -> Generator:
    """An NVlabs stylegan2-ada-pytorch ``.pkl`` -> ``Generator`` (eval mode) from its ``G_ema``
    (``G`` if there is no ``G_ema``), read without executing anything from the file."""
    path = _check_file(path)
    if _is_torch_file(path):                       # a torch.save file named .pkl
        return _from_torch_object(torch_load_safe(path), path, w_avg_samples).to(device).eval()
    if _is_tf_pickle(path):                        # TensorFlow era (dnnlib.tflib)
        return load_tf_pkl(path, device, w_avg_samples)
    data = read_nvlabs_pkl(path)
    if isinstance(data, dict):
        key = next((k for k in ("G_ema", "G") if isinstance(data.get(k), ModuleRecord)), None)
        if key is not None:
            G = _converting(nvlabs_generator, path, data[key], f"{path}: {key}", w_avg_samples)
            G.checkpoint_info = {"format": "nvlabs", "path": str(path), "entry": key}
            return G.to(device).eval()
        raise CheckpointError(f"{path}: unknown pickle format: keys {sorted(map(str, data))[:20]}; "
                              "expected an NVlabs snapshot with 'G_ema'")
    if isinstance(data, ModuleRecord):
        G = _converting(nvlabs_generator, path, data, str(path), w_avg_samples)
        G.checkpoint_info = {"format": "nvlabs", "path": str(path), "entry": None}
        return G.to(device).eval()
    raise CheckpointError(f"{path}: unknown pickle format: a {type(data).__name__}")


def _tensor(value: Any, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{what} is a {type(value).__name__}, not a tensor")
    return value.detach().float()


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(abs(a), abs(b), 1e-12)


def nvlabs_generator(rec: ModuleRecord, where: str = "G", w_avg_samples: int = 4096) -> Generator:
    """An NVlabs ``Generator`` record (``read_nvlabs_pkl(path)["G_ema"]``) -> our ``Generator``."""
    if rec.class_name != "Generator":
        raise CheckpointError(f"{where}: expected an NVlabs Generator, got class {rec.class_name!r}")
    synthesis, mapping = rec["synthesis"], rec["mapping"]
    blocks = {name: m for name, m in synthesis.modules.items()}
    if "input" in blocks or any(getattr(m, "class_name", "") == "SynthesisInput" for m in blocks.values()) \
            or "class SynthesisInput" in getattr(synthesis, "module_src", ""):
        raise CheckpointError(f"{where}: a StyleGAN3 (alias-free) synthesis network; only StyleGAN2 "
                              "(stylegan2-ada-pytorch / networks_stylegan2) generators are supported")
    if synthesis.class_name != "SynthesisNetwork":
        raise CheckpointError(f"{where}: unknown synthesis class {synthesis.class_name!r}")
    z_dim, c_dim, w_dim = int(rec["z_dim"]), int(rec["c_dim"]), int(rec["w_dim"])
    resolution, img_channels = int(rec["img_resolution"]), int(rec["img_channels"])
    if z_dim <= 0:
        raise CheckpointError(f"{where}: z_dim = {z_dim} (no latent input) is not supported")
    resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    missing = [f"b{r}" for r in resolutions if f"b{r}" not in blocks]
    if missing:
        raise CheckpointError(f"{where}: synthesis network lacks blocks {missing} (it has {sorted(blocks)})")

    # -- mapping
    num_layers = int(mapping["num_layers"])
    fcs = [mapping[f"fc{i}"] for i in range(num_layers)]
    for i, fc in enumerate(fcs):
        if fc.get("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"{where}: mapping fc{i} activation {fc.get('activation')!r} (only 'lrelu')")
    lr_mul = float(fcs[0].get("bias_gain", 0.01))
    fc0_in = _tensor(fcs[0]["weight"], f"{where}: mapping.fc0.weight").shape[1]
    if "weight_gain" in fcs[0].state and not _close(float(fcs[0]["weight_gain"]), lr_mul / math.sqrt(fc0_in)):
        raise CheckpointError(f"{where}: mapping weight gain {float(fcs[0]['weight_gain'])} is not lr_mul/sqrt(fan_in)")
    if fc0_in != z_dim + (w_dim if c_dim else 0) or any(fc["weight"].shape[0] != w_dim for fc in fcs):
        raise CheckpointError(f"{where}: mapping with embed_features/layer_features != w_dim is not supported")
    w_avg_beta = mapping.get("w_avg_beta", 0.995)
    w_avg_buf = mapping.buffers.get("w_avg")

    # -- synthesis
    layers, torgbs, const = [], [], None
    conv_clamps = set()
    for r in resolutions:
        block = blocks[f"b{r}"]
        arch = block.get("architecture", "skip")
        if arch != "skip":
            raise CheckpointError(f"{where}: generator architecture {arch!r} is not supported (only 'skip')")
        _check_filter(_tensor(block["resample_filter"], f"{where}: b{r}.resample_filter"),
                      _fir_kernel(1, 1.0)[0, 0], f"{where}: b{r}.resample_filter")
        if r == 4:
            const = _tensor(block["const"], f"{where}: b4.const")
        else:
            layers.append((f"b{r}.conv0", block["conv0"]))
        layers.append((f"b{r}.conv1", block["conv1"]))
        torgbs.append((f"b{r}.torgb", block["torgb"]))
    for name, layer in layers:
        if layer.get("activation", "lrelu") != "lrelu" or tuple(layer["weight"].shape[2:]) != (3, 3):
            raise CheckpointError(f"{where}: {name} is not a 3x3 leaky-ReLU SynthesisLayer")
        conv_clamps.add(layer.get("conv_clamp"))
    for name, rgb in torgbs:
        conv_clamps.add(rgb.get("conv_clamp"))
    if len(conv_clamps) != 1:
        raise CheckpointError(f"{where}: layers disagree on conv_clamp: {conv_clamps}")
    conv_clamp = conv_clamps.pop()
    channels = {r: int(const.shape[0]) if r == 4 else int(blocks[f"b{r}"]["conv1"]["weight"].shape[0])
                for r in resolutions}

    G = Generator(resolution=resolution, num_classes=c_dim, z_dim=z_dim, w_dim=w_dim, mapping_layers=num_layers,
                  channels=channels, image_channels=img_channels, mapping_lr_mul=lr_mul,
                  w_avg_beta=0.995 if w_avg_beta is None else float(w_avg_beta), layout="stylegan2",
                  conv_clamp=None if conv_clamp is None else float(conv_clamp))
    new: Dict[str, Tensor] = {}
    for i, fc in enumerate(fcs):
        new[f"mapping.fcs.{i}.weight"] = _tensor(fc["weight"], f"{where}: mapping.fc{i}.weight")
        new[f"mapping.fcs.{i}.bias"] = _tensor(fc["bias"], f"{where}: mapping.fc{i}.bias")
    if c_dim:
        embed = mapping["embed"]
        if not _close(float(embed.get("bias_gain", 1.0)), 1.0) or embed.get("activation", "linear") != "linear":
            raise CheckpointError(f"{where}: mapping.embed is not a linear layer with lr multiplier 1")
        new["mapping.embed.weight"] = _tensor(embed["weight"], f"{where}: mapping.embed.weight")
        new["mapping.embed.bias"] = _tensor(embed["bias"], f"{where}: mapping.embed.bias")
    new["const"] = const
    const_noise = []
    for k, (name, layer) in enumerate(layers):
        w = _tensor(layer["weight"], f"{where}: {name}.weight")
        up = int(layer.get("up", 1))
        if (up == 2) != G.layers[k].up:
            raise CheckpointError(f"{where}: {name} has up={up}, expected {2 if G.layers[k].up else 1}")
        new[f"layers.{k}.weight"] = w.flip([2, 3]) if up == 2 else w     # ours flips inside conv_transpose2d
        new[f"layers.{k}.bias"] = _tensor(layer["bias"], f"{where}: {name}.bias")
        new[f"layers.{k}.affine.weight"] = _tensor(layer["affine"]["weight"], f"{where}: {name}.affine.weight")
        new[f"layers.{k}.affine.bias"] = _tensor(layer["affine"]["bias"], f"{where}: {name}.affine.bias")
        if layer.get("use_noise", True):
            strength = _tensor(layer["noise_strength"], f"{where}: {name}.noise_strength")
            new[f"layers.{k}.noise_strength"] = strength.reshape(())
            nc = layer.buffers.get("noise_const")
            const_noise.append(None if nc is None else _tensor(nc, f"{where}: {name}.noise_const"))
        else:
            new[f"layers.{k}.noise_strength"] = torch.zeros(())
            const_noise.append(None)
    for j, (name, rgb) in enumerate(torgbs):
        w = _tensor(rgb["weight"], f"{where}: {name}.weight")
        if tuple(w.shape[2:]) != (1, 1):
            raise CheckpointError(f"{where}: {name} is not a 1x1 ToRGB")
        new[f"torgbs.{j}.weight"] = w[:, :, 0, 0]
        new[f"torgbs.{j}.bias"] = _tensor(rgb["bias"], f"{where}: {name}.bias")
        new[f"torgbs.{j}.affine.weight"] = _tensor(rgb["affine"]["weight"], f"{where}: {name}.affine.weight")
        new[f"torgbs.{j}.affine.bias"] = _tensor(rgb["affine"]["bias"], f"{where}: {name}.affine.bias")
    w_avg = None if w_avg_buf is None else _tensor(w_avg_buf, f"{where}: mapping.w_avg").reshape(-1)
    _load_converted(G, new, w_avg, Path(where))
    if w_avg is None and w_avg_samples:
        G.estimate_w_avg(n=w_avg_samples, generator=torch.Generator().manual_seed(0))
    if all(n is not None for n in const_noise):
        G.set_const_noise(const_noise)
    return G


# ----------------------------------------------------------------------------------------------
# TensorFlow-era pickles (NVlabs stylegan / stylegan2: dnnlib.tflib)


def _first_global(path: Path, max_ops: int = 100_000) -> Optional[str]:
    """The first global a pickle asks for, read from its opcodes without unpickling anything (None
    if there is none early on or the stream is unreadable). TF pickles of ``(G, D, Gs)`` or of one
    Network start with ``dnnlib.tflib.network.Network``. Only used to choose between the two
    restricted unpicklers, both of which refuse everything outside their allow-lists."""
    pushed: list = []
    memo: Dict[int, Any] = {}
    try:
        with open(path, "rb") as f:
            for count, (op, arg, _) in enumerate(pickletools.genops(f)):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".")
                if name == "STACK_GLOBAL":
                    parts = pushed[-2:]
                    return ".".join(parts) if len(parts) == 2 and all(isinstance(p, str) for p in parts) else None
                if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif name not in ("PROTO", "FRAME", "MARK"):
                    pushed.append(arg if isinstance(arg, str) and "UNICODE" in name else None)
                if count >= max_ops:
                    return None
    except Exception:          # corrupt or not a pickle: the regular reader reports it
        return None
    return None


def _is_tf_pickle(path: Path) -> bool:
    return _is_pickle(path) and _first_global(path) == TF_NETWORK


def _tf_networks(data: Any):
    """Every Network record in what ``read_tf_pkl`` read: top level (a Network, or a tuple / list /
    dict of them) and their components, each once."""
    seen, stack = set(), []
    if isinstance(data, TFNetworkRecord):
        stack.append(data)
    elif isinstance(data, (tuple, list)):
        stack.extend(v for v in data if isinstance(v, TFNetworkRecord))
    elif isinstance(data, dict):
        stack.extend(v for v in data.values() if isinstance(v, TFNetworkRecord))
    while stack:
        net = stack.pop()
        if id(net) in seen:
            continue
        seen.add(id(net))
        yield net
        if net.state is not None:
            stack.extend(net.components.values())


def read_tf_pkl(path: PathLike) -> Any:
    """The content of a TensorFlow-era ``.pkl`` (``(G, D, Gs)`` or one Network) with every
    ``dnnlib.tflib.network.Network`` as a ``TFNetworkRecord``, read by ``SafeUnpickler`` with
    ``TF_ALLOWED_GLOBALS``: any other global -> ``UnsafeCheckpointError`` naming it."""
    path = _check_file(path)
    try:
        with open(path, "rb") as f:
            data = SafeUnpickler(f, where=str(path), allowed=TF_ALLOWED_GLOBALS).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt pickle ({type(err).__name__}: {err})") from None
    for net in _tf_networks(data):
        if net.state is None:
            raise UnsafeCheckpointError(f"refused to load {path}: a TensorFlow-era `{TF_NETWORK}` without its state "
                                        "(a malformed pickle). Nothing from the file was executed.")
    return data


def load_tf_pkl(path: PathLike, device: Union[str, torch.device] = "cpu",
                w_avg_samples: int = 4096) -> Union[Generator, GeneratorV1]:
    """A TensorFlow-era NVlabs pickle -> ``GeneratorV1`` (StyleGAN v1: ``karras2019stylegan-*.pkl``)
    or ``Generator`` with ``layout="stylegan2"`` (StyleGAN2: ``stylegan2-*-config-f.pkl``), eval
    mode, from ``Gs`` of a ``(G, D, Gs)`` snapshot (or the single Network the file holds)."""
    path = _check_file(path)
    data = read_tf_pkl(path)
    if isinstance(data, TFNetworkRecord):
        net, entry = data, None
    elif isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data):
        net, entry = data[2], "Gs"
    else:
        found = (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list, dict))
                 else f"a {type(data).__name__}")
        raise CheckpointError(f"{path}: a TensorFlow-era pickle holding {found}; expected (G, D, Gs) or one "
                              "generator Network")
    G = _converting(tf_generator, path, net, f"{path}" + (f": {entry}" if entry else ""), w_avg_samples)
    G.checkpoint_info = {"format": "tensorflow", "path": str(path), "entry": entry, **G.checkpoint_info}
    return G.to(device).eval()


def tf_params(net: TFNetworkRecord) -> Dict[str, np.ndarray]:
    """All variables of a Network and its components, named ``component/.../variable`` as NVlabs'
    ``legacy._collect_tf_params`` names them (``mapping/Dense0/weight``, ``synthesis/4x4/Const/const``,
    ``dlatent_avg``)."""
    params: Dict[str, np.ndarray] = OrderedDict()

    def collect(prefix: str, n: TFNetworkRecord, depth: int) -> None:
        if depth > 8:
            raise CheckpointError("TensorFlow-era Network components nest too deep (a cycle?)")
        for name, value in n.variables.items():
            params[prefix + name] = value
        for name, component in n.components.items():
            collect(f"{prefix}{name}/", component, depth + 1)

    collect("", net, 0)
    return params


#: static_kwargs of v1's G_style / G_mapping / G_synthesis (``training/networks_stylegan.py``).
_TF_V1_KWARGS = {
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val", "dlatent_avg_beta",
    "style_mixing_prob", "is_training", "is_validation", "is_template_graph", "latent_size", "label_size",
    "dlatent_size", "dlatent_broadcast", "mapping_layers", "mapping_fmaps", "mapping_lrmul", "mapping_nonlinearity",
    "use_wscale", "normalize_latents", "dtype", "num_channels", "resolution", "fmap_base", "fmap_decay", "fmap_max",
    "use_styles", "const_input_layer", "use_noise", "randomize_noise", "nonlinearity", "use_pixel_norm",
    "use_instance_norm", "fused_scale", "blur_filter", "structure", "force_clean_graph"}
#: static_kwargs of StyleGAN2's G_main / G_mapping / G_synthesis_stylegan2 (``training/networks_stylegan2.py``)
#: and those NVlabs' ``legacy.convert_tf_generator`` knows (stylegan2-ada TF).
_TF_SG2_KWARGS = {
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val", "dlatent_avg_beta",
    "style_mixing_prob", "is_training", "is_validation", "return_dlatents", "is_template_graph", "mapping_func",
    "synthesis_func", "latent_size", "label_size", "dlatent_size", "dlatent_broadcast", "mapping_layers",
    "mapping_fmaps", "mapping_lrmul", "mapping_nonlinearity", "normalize_latents", "dtype", "num_channels",
    "resolution", "fmap_base", "fmap_decay", "fmap_min", "fmap_max", "randomize_noise", "architecture",
    "nonlinearity", "resample_kernel", "fused_modconv", "label_fmaps", "embed_size", "w_avg_beta", "num_fp16_res",
    "conv_clamp", "use_noise", "structure"}


class _TFVariables:
    """The flattened variables of a generator, handed out as float tensors; remembers what was used."""

    def __init__(self, params: Dict[str, np.ndarray], where: str):
        self.params, self.where, self.used = params, where, set()

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def __call__(self, name: str) -> Tensor:
        if name not in self.params:
            raise CheckpointError(f"{self.where}: TensorFlow variable {name!r} is missing")
        self.used.add(name)
        return torch.from_numpy(np.array(self.params[name], dtype=np.float32))

    def get(self, name: str) -> Optional[Tensor]:
        return self(name) if name in self.params else None

    def check_all_used(self, ignore: str) -> None:
        unknown = [k for k in self.params if k not in self.used and not re.fullmatch(ignore, k)]
        if unknown:
            raise CheckpointError(f"{self.where}: TensorFlow variables this loader does not know (a fork?): "
                                  f"{unknown[:10]}")


def _tf_kwargs(net: TFNetworkRecord, known: set, where: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    for part in (net.components.get("mapping"), net.components.get("synthesis"), net):
        kwargs.update(part.static_kwargs)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown TensorFlow keyword arguments {unknown} (a fork?)")
    return kwargs


def _tf_require(kwargs: Dict[str, Any], where: str, **supported) -> None:
    """Each ``name=(default, allowed values)``: the kwarg (or its default) must be allowed."""
    for name, (default, allowed) in supported.items():
        value = kwargs.get(name, default)
        value = [float(v) for v in value] if isinstance(value, (list, tuple)) else value
        if value not in allowed:
            raise CheckpointError(f"{where}: {name}={kwargs.get(name, default)!r} is not supported "
                                  f"(supported: {allowed})")


def _tf_resolutions(params: Dict[str, np.ndarray], where: str) -> list:
    found = sorted({int(m.group(1)) for k in params for m in [re.match(r"synthesis/(\d+)x\1/", k)] if m})
    if not found or found != [2 ** i for i in range(2, int(math.log2(found[-1])) + 1)]:
        raise CheckpointError(f"{where}: synthesis resolutions {found} are not 4, 8, ..., 2^k")
    return found


def _tf_check_lod(v: _TFVariables, where: str) -> None:
    for name in ("lod", "synthesis/lod"):
        if name in v and float(v(name).reshape(-1)[0]) != 0:
            raise CheckpointError(f"{where}: {name} = {float(v(name).reshape(-1)[0])}: a progressive-growing snapshot "
                                  "between resolutions; only final networks (lod 0) are supported")


def tf_generator(net: TFNetworkRecord, where: str = "Gs",
                 w_avg_samples: int = 4096) -> Union[Generator, GeneratorV1]:
    """A TF generator Network (``read_tf_pkl(path)[2]``) -> ``GeneratorV1`` (StyleGAN v1) or
    ``Generator`` (StyleGAN2, ``layout="stylegan2"``), told apart by their variable names."""
    mapping, synthesis = net.components.get("mapping"), net.components.get("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(f"{where}: the Network {net.name!r} ({net.build_func_name}) has components "
                              f"{sorted(net.components)}, not a StyleGAN generator's 'mapping' and 'synthesis' "
                              "(a discriminator?)")
    if net.version < 3:
        raise CheckpointError(f"{where}: TensorFlow Network version {net.version} is too old (3-5 supported)")
    names = synthesis.variables
    if "4x4/Const/StyleMod/weight" in names:
        return tf_stylegan1_generator(net, where, w_avg_samples)
    if "4x4/Conv/mod_weight" in names:
        if any(k.startswith("ToRGB_lod") for k in names):
            raise CheckpointError(f"{where}: a StyleGAN2 synthesis network with progressive growing (configs B-D, "
                                  f"{synthesis.build_func_name}); only config E/F ('skip') generators are supported")
        return tf_stylegan2_generator(net, where, w_avg_samples)
    raise CheckpointError(f"{where}: synthesis network {synthesis.build_func_name!r} is neither StyleGAN v1 "
                          "(4x4/Const/StyleMod) nor StyleGAN2 (4x4/Conv/mod_weight)")


def _tf_mapping_shapes(v: _TFVariables, where: str):
    dense = sorted(int(m.group(1)) for k in v.params for m in [re.fullmatch(r"mapping/Dense(\d+)/weight", k)] if m)
    if not dense or dense != list(range(len(dense))):
        raise CheckpointError(f"{where}: mapping Dense layers {dense} are not Dense0..DenseN")
    shapes = [tuple(v.params[f"mapping/Dense{i}/weight"].shape) for i in dense]
    return len(dense), shapes


def _tf_mapping_weights(v: _TFVariables, n_mlp: int) -> Dict[str, Tensor]:
    """``mapping/Dense{i}/weight`` [in, out] -> ``mapping.fcs.{i}.weight`` (transposed), and the biases."""
    new: Dict[str, Tensor] = {}
    for i in range(n_mlp):
        new[f"mapping.fcs.{i}.weight"] = v(f"mapping/Dense{i}/weight").t()
        new[f"mapping.fcs.{i}.bias"] = v(f"mapping/Dense{i}/bias")
    return new


def _tf_synthesis_layout(v: _TFVariables, kw: Dict[str, Any], where: str):
    """``(resolution, const, channels)`` of a TF synthesis network: the output resolution (checked
    against the ``resolution`` kwarg), the learned 4x4 constant and the channels per resolution."""
    resolutions = _tf_resolutions(v.params, where)
    resolution = resolutions[-1]
    if int(kw.get("resolution", resolution)) != resolution:
        raise CheckpointError(f"{where}: resolution {kw['resolution']} but synthesis layers up to {resolution}")
    const = v("synthesis/4x4/Const/const")
    channels = {r: int(const.shape[1]) if r == 4 else int(v.params[f"synthesis/{r}x{r}/Conv1/weight"].shape[3])
                for r in resolutions}
    return resolution, const, channels


def _tf_finish(G, new: Dict[str, Tensor], v: _TFVariables, noise_count: int, use_noise: bool,
               w_avg_samples: int, where: str, unused: str) -> None:
    """Load the converted tensors into ``G`` (every TF variable but the ``unused`` pattern must have been
    read), then ``dlatent_avg`` -> ``mapping.w_avg`` (estimated from ``w_avg_samples`` draws when the
    pickle has none) and ``synthesis/noise{k}`` -> ``G.const_noise()``."""
    noises = [v.get(f"synthesis/noise{k}") for k in range(noise_count)]
    w_avg = v.get("dlatent_avg")
    v.check_all_used(unused)
    _load_converted(G, new, None if w_avg is None else w_avg.reshape(-1), Path(where))
    if w_avg is None and w_avg_samples:
        G.estimate_w_avg(n=w_avg_samples, generator=torch.Generator().manual_seed(0))
    if use_noise and all(n is not None for n in noises):
        G.set_const_noise(noises)


def tf_stylegan1_generator(net: TFNetworkRecord, where: str = "Gs", w_avg_samples: int = 4096) -> GeneratorV1:
    """StyleGAN v1 (``G_style``: ``G_mapping`` + ``G_synthesis``) -> ``GeneratorV1``.

    TF names -> ours: ``mapping/Dense{i}/weight`` [in, out] -> ``mapping.fcs.{i}.weight`` (transposed;
    same run-time gain sqrt(2) * lrmul / sqrt(in)), ``/bias``; ``mapping/LabelConcat/weight`` ->
    ``mapping.label_embed``; ``synthesis/4x4/Const/const`` [1, C, 4, 4] -> ``const``; per layer
    (``4x4/Const``, ``4x4/Conv``, ``{r}x{r}/Conv0_up``, ``{r}x{r}/Conv1``): ``weight`` [3, 3, in, out]
    -> ``layers.{i}.conv.weight`` [out, in, 3, 3], ``Noise/weight`` -> ``noise_strength``, ``bias``,
    ``StyleMod/weight`` [w, 2C] -> ``affine.weight`` (transposed), ``StyleMod/bias`` -> ``affine.bias``
    + 1 on the scale half; ``ToRGB_lod0`` -> ``to_rgb``; ``noise{i}`` -> ``G.const_noise()``;
    ``dlatent_avg`` -> ``mapping.w_avg``. The ToRGBs of lower lods are progressive-growing leftovers:
    not used by the final network, not loaded."""
    kw = _tf_kwargs(net, _TF_V1_KWARGS, where)
    _tf_require(kw, where, use_styles=(True, (True,)), const_input_layer=(True, (True,)),
                use_instance_norm=(True, (True,)), use_pixel_norm=(False, (False,)), use_wscale=(True, (True,)),
                normalize_latents=(True, (True,)), nonlinearity=("lrelu", ("lrelu",)),
                mapping_nonlinearity=("lrelu", ("lrelu",)), blur_filter=([1, 2, 1], ([1.0, 2.0, 1.0], None)),
                fused_scale=("auto", ("auto", True, False)), use_noise=(True, (True, False)))
    v = _TFVariables(tf_params(net), where)
    _tf_check_lod(v, where)
    n_mlp, shapes = _tf_mapping_shapes(v, where)
    label = v.params.get("mapping/LabelConcat/weight")
    num_classes = 0 if label is None else int(label.shape[0])
    z_dim = int(kw.get("latent_size", shapes[0][0] // (2 if num_classes else 1)))
    if shapes[0][0] != z_dim * (2 if num_classes else 1) or (label is not None and label.shape[1] != z_dim):
        raise CheckpointError(f"{where}: mapping input {shapes[0][0]} does not fit latent_size {z_dim} "
                              f"and label_size {num_classes}")
    w_dim, hidden = int(shapes[-1][1]), int(shapes[0][1]) if n_mlp > 1 else int(shapes[-1][1])
    resolution, const, channels = _tf_synthesis_layout(v, kw, where)
    rgb = v("synthesis/ToRGB_lod0/weight")
    cutoff = kw.get("truncation_cutoff", 8)
    blur = kw.get("blur_filter", [1, 2, 1]) is not None
    beta = kw.get("dlatent_avg_beta", 0.995)
    G = GeneratorV1(resolution=resolution, num_classes=num_classes, z_dim=z_dim, w_dim=w_dim, mapping_layers=n_mlp,
                    mapping_fmaps=hidden, channels=channels, image_channels=int(rgb.shape[3]),
                    mapping_lr_mul=float(kw.get("mapping_lrmul", 0.01)),
                    w_avg_beta=0.995 if beta is None else float(beta), blur=blur,
                    fused_scale=kw.get("fused_scale", "auto"),
                    truncation_cutoff=0 if cutoff is None or cutoff <= 0 else int(cutoff))
    new = _tf_mapping_weights(v, n_mlp)
    if num_classes:
        new["mapping.label_embed"] = v("mapping/LabelConcat/weight")
    new["const"] = const[0]
    use_noise = bool(kw.get("use_noise", True))
    for i, layer in enumerate(G.layers):
        r = layer.resolution
        scope = "synthesis/" + ("4x4/Const" if i == 0 else "4x4/Conv" if i == 1 else
                                f"{r}x{r}/Conv0_up" if i % 2 == 0 else f"{r}x{r}/Conv1")
        if layer.conv is not None:
            new[f"layers.{i}.conv.weight"] = v(f"{scope}/weight").permute(3, 2, 0, 1)
        new[f"layers.{i}.noise_strength"] = (v(f"{scope}/Noise/weight") if use_noise
                                             else torch.zeros(layer.out_channels))
        new[f"layers.{i}.bias"] = v(f"{scope}/bias")
        new[f"layers.{i}.affine.weight"] = v(f"{scope}/StyleMod/weight").t()
        bias = v(f"{scope}/StyleMod/bias").clone()
        bias[:layer.out_channels] += 1.0                                 # y_s = 1 + A_s(w)
        new[f"layers.{i}.affine.bias"] = bias
    new["to_rgb.weight"] = rgb.permute(3, 2, 0, 1)
    new["to_rgb.bias"] = v("synthesis/ToRGB_lod0/bias")
    _tf_finish(G, new, v, G.num_layers, use_noise, w_avg_samples, where,
               unused=r"lod|synthesis/lod|synthesis/ToRGB_lod[1-9]\d*/(weight|bias)")
    G.checkpoint_info = {"version": "stylegan1", "build_func_name": net.build_func_name,
                         "truncation_psi": kw.get("truncation_psi", 0.7), "truncation_cutoff": cutoff}
    return G


def tf_stylegan2_generator(net: TFNetworkRecord, where: str = "Gs", w_avg_samples: int = 4096) -> Generator:
    """StyleGAN2 (``G_main``: ``G_mapping`` + ``G_synthesis_stylegan2``, ``architecture='skip'``, e.g.
    ``stylegan2-*-config-f.pkl``) -> ``Generator(layout="stylegan2")``, by the names NVlabs'
    ``legacy.convert_tf_generator`` uses.

    TF names -> ours: ``mapping/Dense{i}`` -> ``mapping.fcs.{i}`` (weight transposed),
    ``mapping/LabelEmbed`` (stylegan2-ada TF) -> ``mapping.embed``; ``synthesis/4x4/Const/const`` ->
    ``const``; conv k (``4x4/Conv``, ``{r}x{r}/Conv0_up``, ``{r}x{r}/Conv1``): ``weight`` [3, 3, in, out]
    -> ``layers.{k}.weight`` [out, in, 3, 3] times TF's run-time gain 1/sqrt(in * 9) (ours drops the
    gain of demodulated convs; pre-applying it keeps the 1e-8 of the demodulation where TF has it).
    Up-sampling convs are *not* flipped: legacy.py flips them for NVlabs' PyTorch layer and our
    converter of NVlabs pickles flips them back. ``mod_weight`` -> ``affine.weight`` (transposed),
    ``mod_bias`` + 1 -> ``affine.bias``, ``noise_strength``, ``bias``; ``{r}x{r}/ToRGB`` ->
    ``torgbs.{j}`` (weight [1, 1, C, img] -> [img, C]); ``noise{k}`` -> ``G.const_noise()``;
    ``dlatent_avg`` -> ``mapping.w_avg``."""
    kw = _tf_kwargs(net, _TF_SG2_KWARGS, where)
    _tf_require(kw, where, architecture=("skip", ("skip",)), nonlinearity=("lrelu", ("lrelu",)),
                mapping_nonlinearity=("lrelu", ("lrelu",)), resample_kernel=([1, 3, 3, 1], ([1.0, 3.0, 3.0, 1.0],)),
                normalize_latents=(True, (True,)), use_noise=(True, (True, False)),
                synthesis_func=("G_synthesis_stylegan2", ("G_synthesis_stylegan2",)),
                mapping_func=("G_mapping", ("G_mapping",)))
    v = _TFVariables(tf_params(net), where)
    _tf_check_lod(v, where)
    if "mapping/LabelConcat/weight" in v:
        raise CheckpointError(f"{where}: a class-conditional StyleGAN2 mapping with 'LabelConcat' (label "
                              "embedding normalised together with z) is not supported")
    n_mlp, shapes = _tf_mapping_shapes(v, where)
    embed = v.params.get("mapping/LabelEmbed/weight")
    num_classes = 0 if embed is None else int(embed.shape[0])
    w_dim = int(shapes[-1][1])
    z_dim = int(kw.get("latent_size", shapes[0][0] - (w_dim if num_classes else 0)))
    if shapes[0][0] != z_dim + (w_dim if num_classes else 0) or any(s[1] != w_dim for s in shapes) \
            or (embed is not None and embed.shape[1] != w_dim):
        raise CheckpointError(f"{where}: mapping with layer or embedding widths != dlatent_size is not supported")
    resolution, const, channels = _tf_synthesis_layout(v, kw, where)
    image_channels = int(v.params["synthesis/4x4/ToRGB/weight"].shape[3]) \
        if "synthesis/4x4/ToRGB/weight" in v else int(kw.get("num_channels", 3))
    beta = kw.get("w_avg_beta", kw.get("dlatent_avg_beta", 0.995))
    clamp = kw.get("conv_clamp")
    G = Generator(resolution=resolution, num_classes=num_classes, z_dim=z_dim, w_dim=w_dim, mapping_layers=n_mlp,
                  channels=channels, image_channels=image_channels,
                  mapping_lr_mul=float(kw.get("mapping_lrmul", 0.01)),
                  w_avg_beta=0.995 if beta is None else float(beta), layout="stylegan2",
                  conv_clamp=None if clamp is None else float(clamp))
    new = _tf_mapping_weights(v, n_mlp)
    if num_classes:
        new["mapping.embed.weight"] = v("mapping/LabelEmbed/weight").t()
        new["mapping.embed.bias"] = v("mapping/LabelEmbed/bias")
    new["const"] = const[0]
    use_noise = bool(kw.get("use_noise", True))
    for k, layer in enumerate(G.layers):
        r = layer.resolution
        scope = "synthesis/" + ("4x4/Conv" if k == 0 else f"{r}x{r}/Conv0_up" if layer.up else f"{r}x{r}/Conv1")
        w = v(f"{scope}/weight")
        new[f"layers.{k}.weight"] = w.permute(3, 2, 0, 1) / math.sqrt(w.shape[0] * w.shape[1] * w.shape[2])
        new[f"layers.{k}.bias"] = v(f"{scope}/bias")
        new[f"layers.{k}.affine.weight"] = v(f"{scope}/mod_weight").t()
        new[f"layers.{k}.affine.bias"] = v(f"{scope}/mod_bias") + 1.0
        new[f"layers.{k}.noise_strength"] = v(f"{scope}/noise_strength").reshape(()) if use_noise else torch.zeros(())
    for j, rgb in enumerate(G.torgbs):
        scope = f"synthesis/{rgb.resolution}x{rgb.resolution}/ToRGB"
        new[f"torgbs.{j}.weight"] = v(f"{scope}/weight")[0, 0].t()
        new[f"torgbs.{j}.bias"] = v(f"{scope}/bias")
        new[f"torgbs.{j}.affine.weight"] = v(f"{scope}/mod_weight").t()
        new[f"torgbs.{j}.affine.bias"] = v(f"{scope}/mod_bias") + 1.0
    _tf_finish(G, new, v, G.num_convs, use_noise, w_avg_samples, where, unused=r"lod|synthesis/lod")
    G.checkpoint_info = {"version": "stylegan2", "build_func_name": net.build_func_name,
                         "truncation_psi": kw.get("truncation_psi", 0.5),
                         "truncation_cutoff": kw.get("truncation_cutoff")}
    return G


__all__ = [
    "CheckpointError",
    "EasyDictRecord",
    "ModuleRecord",
    "NVLABS_ALLOWED_GLOBALS",
    "PersistentRecord",
    "ROSINALITY_SAFE_GLOBALS",
    "SafeUnpickler",
    "TFNetworkRecord",
    "TF_ALLOWED_GLOBALS",
    "TorchModuleRecord",
    "UnsafeCheckpointError",
    "load_generator",
    "load_nvlabs_pkl",
    "load_rosinality",
    "load_tf_pkl",
    "nvlabs_generator",
    "read_nvlabs_pkl",
    "read_tf_pkl",
    "tf_generator",
    "tf_params",
    "tf_stylegan1_generator",
    "tf_stylegan2_generator",
    "torch_load_safe",
]
