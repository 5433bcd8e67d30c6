"""Base weights: how a frozen backbone gets its pretrained tensors back when
a task file leaves them out.

A task file (:mod:`mmseg_vpt.checkpoint`) stores only what trained and
records which base weights file provides the rest: a :class:`BaseRecord`
in the state dict's metadata (``state_dict._metadata['backbone']
['vpt_base_weights']``, where torch keeps per-module versions). A VPT
backbone's own ``_load_from_state_dict`` calls :func:`load_into_backbone`,
which reads that record and loads the base file the way training does
(:func:`run_base_init`, i.e. the module's ``init_weights``), so mmseg's
``init_model`` and mmengine's ``load_checkpoint`` load task files with no
tool of this project in the call chain. :func:`load_base_weights` is the
one loader of base weights; the task-file tools call it too.
"""
import copy
import dataclasses
import hashlib
import logging
import os
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.checkpoints import check_checkpoint_file, local_checkpoint_path
from ..utils.state_fit import preview

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


class FrozenWeightsNotLoaded(TunedCheckpointError):
    """A load would leave a frozen backbone's weights at random values."""


def pretrained_checkpoint(init_cfg: Any) -> Optional[str]:
    """The file of a ``Pretrained`` init_cfg (a dict or a list of them)."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if isinstance(cfg, Mapping) and cfg.get('type') == 'Pretrained' and \
                isinstance(cfg.get('checkpoint'), str):
            return cfg['checkpoint']
    return None


def with_checkpoint(init_cfg: Any, path: str) -> Any:
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


def run_base_init(module: nn.Module, path: str) -> None:
    """Load the base weights ``path`` into ``module`` the way training does:
    the module's own ``init_weights`` with a ``Pretrained`` init_cfg."""
    saved_cfg = getattr(module, 'init_cfg', None)
    saved_is_init = getattr(module, '_is_init', None)
    module.init_cfg = with_checkpoint(saved_cfg, path)
    if saved_is_init is not None:
        module._is_init = False  # BaseModule.init_weights runs only once
    try:
        module.init_weights()
    finally:
        module.init_cfg = saved_cfg
        if saved_is_init is not None:
            module._is_init = saved_is_init


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
    # the module's ``frozen_dtype`` when saving (None: float32); the
    # digests are of the omitted tensors as stored in it
    frozen_dtype: Optional[str] = None

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
            version=meta.get('version'),
            frozen_dtype=meta.get('policy', {}).get('frozen_dtype'))
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



def _log(msg: str, level=logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


def resolve_base_file(record: BaseRecord, module: nn.Module,
                      base_path: Optional[str] = None,
                      source: str = 'the tuned checkpoint'
                      ) -> Tuple[str, str]:
    """The base weights file for ``record`` and where its name came from.

    An explicit choice wins and must exist: ``base_path``, else
    ``$MMSEG_VPT_BASE_WEIGHTS`` (a file, or a folder holding a file of the
    recorded name), else ``module``'s own Pretrained init_cfg. Without one,
    the recorded path, then its absolute form from the training run.

    Raises:
        FileNotFoundError: naming the file(s) looked for, the recorded path
            and hash, and how to point at the file.
    """
    recorded = (f'It was saved with {record.checkpoint!r} (sha256 '
                f'{record.sha256}).')
    env = os.environ.get(BASE_WEIGHTS_ENV)
    configured = pretrained_checkpoint(getattr(module, 'init_cfg', None))
    if base_path is not None:
        explicit, origin = base_path, 'the base weights argument'
    elif env:
        explicit = osp.join(env, osp.basename(record.checkpoint)) \
            if osp.isdir(env) else env
        origin = f'${BASE_WEIGHTS_ENV}={env}'
    elif configured is not None:
        explicit = configured
        origin = f'`{record.config_key}` (--cfg-options ' \
            f'{record.config_key}=PATH)'
    else:
        explicit = None
    if explicit is not None:
        if osp.isfile(local_checkpoint_path(explicit)):  # a URL's cache
            return explicit, origin
        raise FileNotFoundError(
            f'{source} holds only the tuned tensors; it needs its base '
            f'weights file {explicit!r} (from {origin}; resolved: '
            f'{osp.abspath(explicit)}), which does not exist. {recorded} Put '
            'that file there or point the setting at it, or use a full '
            'checkpoint (tools/merge_tuned.py).')
    candidates = [record.checkpoint] + (
        [record.abspath] if record.abspath not in (None, record.checkpoint)
        else [])
    for path in candidates:
        if osp.isfile(local_checkpoint_path(path)):
            return path, 'the path recorded in the checkpoint'
    raise FileNotFoundError(
        f'{source} holds only the tuned tensors; it needs the base weights '
        f'file it was saved with, {record.checkpoint!r} (sha256 '
        f'{record.sha256}), which is not there (looked for '
        f'{", ".join(repr(osp.abspath(p)) for p in candidates)}). Put the '
        f'file there, or set {BASE_WEIGHTS_ENV}=PATH (the file, or a folder '
        f'holding {osp.basename(record.checkpoint)!r}), or give the config '
        f'`{record.config_key}`; or use a full checkpoint '
        '(tools/merge_tuned.py).')


def load_base_weights(module: nn.Module, record: BaseRecord,
                      base_path: Optional[str] = None,
                      check_base_hash: bool = True,
                      source: str = 'the tuned checkpoint') -> StateDict:
    """Load ``record``'s base weights into ``module`` the way training does
    (:func:`run_base_init`) and return the tensors the checkpoint omitted,
    as ``module`` now holds them (module-relative keys).

    The one loader of base weights for tuned checkpoints: the module's own
    state-dict loading (:func:`load_into_backbone`) and the tools
    (:func:`checkpoint_state`) both call it.

    Raises:
        FileNotFoundError: see :func:`resolve_base_file`.
        BaseWeightsMismatch: the file's SHA-256 is not the recorded one
            (both files and hashes named), or loading it does not reproduce
            every omitted tensor; ``check_base_hash=False`` only warns.
        TunedCheckpointError: ``module`` lacks tensors the checkpoint omits.
    """
    path, origin = resolve_base_file(record, module, base_path, source)
    local = local_checkpoint_path(path)  # a URL's cache
    check_checkpoint_file(local, origin)
    sha = file_sha256(local)
    if sha != record.sha256:
        msg = (f'Base weights mismatch: {source} was saved with base weights '
               f'{record.checkpoint!r} (sha256 {record.sha256}), but '
               f'{origin} gives {path!r} (sha256 {sha}).')
        if check_base_hash:
            raise BaseWeightsMismatch(
                msg + ' Use the base file it was trained with. To load it '
                'anyway, pass --ignore-base-hash to tools/test.py / '
                'tools/train.py / tools/infer.py '
                '(TunedCheckpointHook(check_base_hash=False)).')
        _log(msg + ' Loading anyway (base hash check disabled).',
             logging.WARNING)
    run_base_init(module, path)
    state = module.state_dict()
    absent = [k for k in record.omitted if k not in state]
    if absent:
        raise TunedCheckpointError(
            f'{source} omits tensors model.{record.module} does not have '
            f'(another architecture?): {preview(absent)}')
    differ, rounded, unchecked = [], [], []
    for key, digest in record.omitted.items():
        verdict = _reproduces(state[key], digest, record.frozen_dtype,
                              getattr(module, 'frozen_dtype', None))
        if verdict is False:
            differ.append(key)
        elif verdict == 'rounded':
            rounded.append(key)
        elif verdict == 'unchecked':
            unchecked.append(key)
    _note_frozen_dtype(record, module, source, rounded, unchecked)
    if differ:
        msg = (f'Loading the base weights {path!r} into model.{record.module} '
               f'did not reproduce {len(differ)} of the {len(record.omitted)} '
               f'tensors {source} omitted: {preview(differ)}')
        if check_base_hash:
            raise BaseWeightsMismatch(
                msg + '. The base file or the way it loads has changed; '
                'they would be left with other values.')
        _log(msg + ' (base hash check disabled: using them as loaded).',
             logging.WARNING)
    _log(f'{source}: loaded {len(record.omitted)} tensors from the base '
         f'weights {path} (sha256 {sha[:12]}...)')
    return OrderedDict((k, state[k]) for k in record.omitted)


def _reproduces(tensor: torch.Tensor, digest: str,
                saved_dtype: Optional[str], model_dtype: Optional[str]):
    """Whether a loaded tensor is the one a task file omitted: True;
    ``'rounded'`` when it equals it after rounding to the saved frozen type
    (a float32 model running a task trained with low-precision frozen
    weights); ``'unchecked'`` when the model stores it in a narrower type
    than the float32 it was saved in, so its digest cannot be compared (the
    base file's SHA-256 has been checked); else False."""
    if tensor_digest(tensor) == digest:
        return True
    if not tensor.is_floating_point():
        return False
    if saved_dtype is not None and tensor.dtype != getattr(torch,
                                                           saved_dtype):
        rounded = tensor.to(getattr(torch, saved_dtype))
        return 'rounded' if tensor_digest(rounded) == digest else False
    if saved_dtype is None and model_dtype is not None and \
            tensor.dtype == getattr(torch, model_dtype):
        return 'unchecked'
    return False


def _note_frozen_dtype(record: BaseRecord, module: nn.Module, source: str,
                       rounded: List[str], unchecked: List[str]) -> None:
    """Say when the model stores frozen weights in another type than the
    task was trained with: its outputs then differ by that rounding."""
    model_dtype = getattr(module, 'frozen_dtype', None)
    if (record.frozen_dtype or 'float32') == (model_dtype or 'float32'):
        return
    checked = (f'{len(rounded)} omitted tensors equal the base file\'s '
               f'values rounded to {record.frozen_dtype}' if rounded else
               f'{len(unchecked)} omitted tensors are checked by the base '
               'file\'s SHA-256 only (their recorded digests are of float32'
               ' values)')
    _log(f'Note: {source} was trained with frozen weights in '
         f'{record.frozen_dtype or "float32"}, but model.{record.module} '
         f'stores them in {model_dtype or "float32"} (its frozen_dtype), '
         f'so outputs differ from training\'s by that rounding; {checked}. '
         f'Set frozen_dtype={record.frozen_dtype!r} on the backbone to run '
         'it as trained.', logging.WARNING)


def load_into_backbone(module: nn.Module, state_dict: Dict[str, Any],
                       prefix: str, local_metadata: Mapping) -> None:
    """Run by a VPT backbone's ``_load_from_state_dict`` before its own
    tensors load (``state_dict`` holds the backbone's whole subtree; its
    submodules read from it afterwards).

    * A base record in ``local_metadata`` whose omitted tensors are absent:
      load the base weights (:func:`load_base_weights`) and put them into
      ``state_dict``, so the ordinary load that follows sets exactly what
      the project's own loader sets.
    * While ``module.frozen_weights_set`` is False (neither ``init_weights``
      nor a complete load has run), refuse a state dict that lacks, or
      gives another shape to, a frozen parameter a base file must provide:
      it would keep its random construction-time value.
    """
    where = prefix[:-1] or 'the module'
    record = local_metadata.get(BASE_RECORD_KEY)
    if record is not None:
        source = f'the tuned-only checkpoint loaded into {where}'
        record = BaseRecord.from_dict(record, source)
        absent = [k for k in record.omitted if prefix + k not in state_dict]
        if absent:
            base = load_base_weights(module, record, source=source)
            for key in absent:
                state_dict[prefix + key] = base[key]
    if getattr(module, 'frozen_weights_set', True):
        return
    optional = getattr(module, 'pretrained_optional', ())
    unset = []
    for name, param in module.named_parameters():
        if param.requires_grad or not param.numel() or any(
                re.search(p, name) for p in optional):
            continue
        given = state_dict.get(prefix + name)
        if given is None:
            unset.append(name)
        elif tuple(getattr(given, 'shape', ())) != tuple(param.shape):
            unset.append(f'{name}: {tuple(getattr(given, "shape", ()))} vs '
                         f'model {tuple(param.shape)}')
    if unset:
        raise FrozenWeightsNotLoaded(
            f'{type(module).__name__} ({where}) is frozen and not '
            f'initialised, and the state dict loaded into it lacks '
            f'{len(unset)} of its frozen weights (or has another shape): '
            f'{preview(unset)}. They would keep random values. A '
            'tuned-only checkpoint of format version 1 (meta[\'vpt_tuned\']'
            '[\'version\'] == 1) loads only with tools/test.py, '
            'tools/infer.py or mmseg_vpt.checkpoint.load_tuned_checkpoint; '
            '`tools/extract_tuned.py TASK OUT --config CONFIG` re-saves it '
            'in the current format, which loads here too. Otherwise load a '
            'checkpoint of this model, or call init_weights() first.')
    module.frozen_weights_set = True
