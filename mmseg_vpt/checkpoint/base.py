"""The base weights of tuned-only checkpoints: constants, errors, where a
model's base file is, hashing it and loading it the way training does."""
import copy
import dataclasses
import hashlib
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

import torch
import torch.nn as nn
from mmengine.model import BaseTTAModel, is_model_wrapper

from ..models.convert import (ConversionInfo, convert_to_mmseg, detect_format,
                              load_checkpoint_file)

TUNED_META_KEY = 'vpt_tuned'
MERGED_META_KEY = 'vpt_merged_from'
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
BASE_MODULE = 'backbone'
# key of the base record in ``state_dict._metadata[module]``
BASE_RECORD_KEY = 'vpt_base_weights'
BASE_WEIGHTS_ENV = 'MMSEG_VPT_BASE_WEIGHTS'
DIGEST_CHARS = 16

StateDict = Dict[str, torch.Tensor]


class TunedCheckpointError(ValueError):
    """A tuned checkpoint does not fit the model or its base weights."""


class BaseWeightsMismatch(TunedCheckpointError):
    """The base weights file is not the one a tuned checkpoint was saved
    with."""


class CheckpointMismatch(TunedCheckpointError):
    """A checkpoint's tensors do not fit the model (keys or shapes)."""


class FrozenWeightsNotLoaded(TunedCheckpointError):
    """A load would leave a frozen backbone's weights at random values."""


def _preview(keys: Iterable[str], n: int = 8) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP / TTA wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


# --------------------------------------------------------------------------
# the base weights
# --------------------------------------------------------------------------
def pretrained_checkpoint(init_cfg: Any) -> Optional[str]:
    """The file of a ``Pretrained`` init_cfg (a dict or a list of them)."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if isinstance(cfg, Mapping) and cfg.get('type') == 'Pretrained' and \
                isinstance(cfg.get('checkpoint'), str):
            return cfg['checkpoint']
    return None


def _with_checkpoint(init_cfg: Any, path: str) -> Any:
    """``init_cfg`` with its Pretrained file replaced by ``path`` (or a new
    Pretrained init_cfg)."""
    if isinstance(init_cfg, (list, tuple)):
        out = [copy.deepcopy(c) for c in init_cfg]
        for c in out:
            if isinstance(c, Mapping) and c.get('type') == 'Pretrained':
                c['checkpoint'] = path
                return out
        return out + [dict(type='Pretrained', checkpoint=path)]
    if isinstance(init_cfg, Mapping) and init_cfg.get('type') == 'Pretrained':
        out = copy.deepcopy(init_cfg)
        out['checkpoint'] = path
        return out
    return dict(type='Pretrained', checkpoint=path)


@dataclass
class BaseSpec:
    """Where a model's base weights come from."""
    module: str  # attribute of the segmentor, e.g. 'backbone'
    checkpoint: str
    config_key: str


def find_base(model: nn.Module, module: str = BASE_MODULE
              ) -> Optional[BaseSpec]:
    """The base weights file named by ``model.<module>.init_cfg``, or None
    when the module is randomly initialised (no ``Pretrained`` init_cfg)."""
    sub = getattr(unwrap_model(model), module, None)
    path = pretrained_checkpoint(getattr(sub, 'init_cfg', None))
    if path is None:
        return None
    return BaseSpec(module, path, f'model.{module}.init_cfg.checkpoint')


_HASH_CACHE: Dict[tuple, str] = {}


def file_sha256(path: str, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes, cached per process by (real path, size,
    mtime): base files can be over 1 GB and are hashed once per run."""
    stat = os.stat(path)
    key = (osp.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(chunk_bytes), b''):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def tensor_digest(tensor: torch.Tensor) -> str:
    """Short SHA-256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f'{t.dtype}{tuple(t.shape)}'.encode())
    if t.numel():
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:DIGEST_CHARS]


def base_file_keys(path: str, module: Optional[nn.Module] = None) -> Set[str]:
    """The module keys that a base weights file provides.

    Reads lazily (``mmap``) where the format allows; unwraps
    ``state_dict`` / ``module.`` / ``backbone.`` containers and renames the
    file to ``module``'s keys as its loader does (its
    ``pretrained_layout``); without one, the mmseg layout of timm /
    official Swin files.
    """
    info = ConversionInfo(log=False)
    try:
        state = load_checkpoint_file(path, info=info, mmap=True)
    except ValueError as err:  # the message names the file
        raise TunedCheckpointError(f'Cannot read base weights: {err}') \
            from err
    layout = getattr(module, 'pretrained_layout', None)
    if layout is not None:
        try:
            return set(layout(state, info)[0])
        except ValueError:
            return set(state)  # loading the base reports what is wrong
    try:
        fmt = detect_format(state)
    except ValueError:
        fmt = None
    if fmt is not None and not fmt.startswith('mmseg_'):
        state, _ = convert_to_mmseg(state, fmt, info=info)
    return set(state)


def run_base_init(module: nn.Module, path: str) -> None:
    """Load the base weights ``path`` into ``module`` the way training does:
    the module's own ``init_weights`` with a ``Pretrained`` init_cfg."""
    saved_cfg = getattr(module, 'init_cfg', None)
    saved_is_init = getattr(module, '_is_init', None)
    module.init_cfg = _with_checkpoint(saved_cfg, path)
    if saved_is_init is not None:
        module._is_init = False  # BaseModule.init_weights runs only once
    try:
        module.init_weights()
    finally:
        module.init_cfg = saved_cfg
        if saved_is_init is not None:
            module._is_init = saved_is_init


def base_reference(module: nn.Module, path: str) -> StateDict:
    """The state ``module`` has right after loading ``path`` through
    :func:`run_base_init`, computed on a CPU copy (``module`` is untouched;
    floating tensors the base does not set come back as NaN)."""
    memo: Dict[int, Any] = {}
    for name, tensor in list(module.named_parameters()) + list(
            module.named_buffers()):
        fresh = torch.full_like(tensor, float('nan'), device='cpu') \
            if tensor.is_floating_point() else \
            tensor.detach().to('cpu', copy=True)
        if isinstance(tensor, nn.Parameter):
            fresh = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = fresh
    clone = copy.deepcopy(module, memo)
    with torch.random.fork_rng(devices=[]):  # leave training's RNG alone
        run_base_init(clone, path)
    return clone.state_dict()


@dataclass
class BaseRecord:
    """What a tuned checkpoint needs from its base weights file.

    Written into the state dict's metadata (:meth:`TunedPlan.apply`), so the
    module it belongs to finds it when loading; the same fields, with model
    keys, are in ``meta['vpt_tuned']``, where format-1 files have them only.
    """
    module: str  # segmentor attribute, e.g. 'backbone'
    checkpoint: str  # the path the config named when saving
    sha256: str
    size_bytes: int
    omitted: Dict[str, str]  # module-relative key -> tensor_digest
    abspath: Optional[str] = None  # ``checkpoint`` resolved when saving
    config_key: str = f'model.{BASE_MODULE}.init_cfg.checkpoint'
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """Plain types only, so ``torch.load(weights_only=True)`` reads it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping, source: str) -> 'BaseRecord':
        names = [f.name for f in dataclasses.fields(cls)]
        out = cls(**{k: v for k, v in record.items() if k in names})
        out.check_version(source)
        return out

    @classmethod
    def from_meta(cls, meta: Mapping, source: str) -> 'BaseRecord':
        """The record of ``checkpoint['meta']['vpt_tuned']``."""
        prefix = meta['module'] + '.'
        out = cls(
            module=meta['module'],
            checkpoint=meta['base_checkpoint'],
            sha256=meta['base_sha256'],
            size_bytes=meta.get('base_bytes'),
            omitted={k[len(prefix):]: d for k, d in meta['omitted'].items()},
            abspath=meta.get('base_abspath'),
            config_key=meta.get('base_config_key', cls.config_key),
            version=meta.get('version'))
        out.check_version(source)
        return out

    def check_version(self, source: str) -> None:
        if self.version not in READABLE_VERSIONS:
            raise TunedCheckpointError(
                f'{source} has tuned-checkpoint format version '
                f'{self.version!r}; this code reads versions '
                f'{list(READABLE_VERSIONS)}')

    def model_keys(self) -> List[str]:
        return [f'{self.module}.{k}' for k in self.omitted]


