"""Tuned-only (per-task) checkpoints.

With VPT the backbone stays frozen, so a task's checkpoint only needs what was
trained plus what the shared base weights cannot reproduce. The base weights
are the file the backbone's ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` names. :func:`split_tuned` is the one rule for what a task's
checkpoint contains; everything else here applies it or undoes it:

* :func:`plan_tuned` decides, once per run, which tensors a model's
  checkpoints omit (and fingerprints them); :meth:`TunedPlan.apply` filters a
  checkpoint dict and adds the metadata (``TunedCheckpointHook`` calls it in
  ``before_save_checkpoint``).
* Loading: the base weights are loaded into the module and the omitted
  tensors put back into the state dict before the ordinary load, by one
  function, :func:`load_base_weights`, reached two ways:

  - from the module itself: :meth:`TunedPlan.apply` also writes a
    :class:`BaseRecord` into the state dict's metadata
    (``state_dict._metadata['backbone']['vpt_base_weights']``, where torch
    keeps per-module versions), and the VPT backbones' state-dict loading
    (:func:`load_into_backbone`) reads it. So mmseg's ``init_model``,
    ``MMSegInferencer`` and mmengine's ``load_checkpoint`` load task files
    without any of this project's tools in the call chain;
  - from the tools: :func:`checkpoint_state` (``TunedCheckpointHook``, i.e.
    ``load_from``, ``--resume``, ``tools/test.py``;
    :func:`load_tuned_checkpoint` for ``tools/infer.py`` and the APIs) also
    reads format-1 files (no record) and checks the whole checkpoint against
    the model: any key or shape that does not fit is an error unless a
    partial load is asked for (``--load-partial``).

  A frozen VPT backbone refuses a load that would leave the weights of its
  frozen layers at their random construction-time values.
* :func:`merge_tuned` / :func:`extract_tuned` turn a tuned checkpoint into a
  full standalone one and back, bit-exactly (``tools/merge_tuned.py``,
  ``tools/extract_tuned.py``).

Base weights always load through the backbone's own ``init_weights`` (the
path training takes, including mmseg's position-embedding resizing), never
through a second implementation. A tensor is omitted only if that path,
run on a copy of the backbone, gives back exactly the value the model holds;
its SHA-256 is recorded, and loading fails unless the base reproduces it.

The metadata lives in ``checkpoint['meta']['vpt_tuned']``::

    version          2 (1: written before the base record existed)
    module           'backbone' (the submodule the base file initialises)
    base_checkpoint  the path the config's init_cfg named when saving
    base_abspath     that path made absolute in the training run
    base_config_key  'model.backbone.init_cfg.checkpoint'
    base_sha256      SHA-256 of the base file's bytes
    base_bytes       its size
    omitted          {model key: sha256[:16] of the tensor}, in model order
    omitted_numel    elements in the omitted tensors
    num_tuned        tensors stored in the checkpoint
    policy           what trained: backbone type, frozen_exclude,
                     prompt_length / layers / init, trainable and total
                     parameter counts

The base record in the state dict's metadata holds the base fields again,
with module-relative keys, so that the module needs nothing else.

Where the base file is looked for, first match wins: an explicit argument
(``base_path``), the environment variable ``MMSEG_VPT_BASE_WEIGHTS`` (a file,
or a folder holding a file of the recorded name), the module's own
``Pretrained`` init_cfg; only when none of these is set, the recorded path
and then its absolute form. Its SHA-256 must match the recorded one.
"""
import copy
import dataclasses
import hashlib
import logging
import os
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Set,
                    Tuple, Union)

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import CheckpointLoader

from .models.convert import (ConversionInfo, convert_to_mmseg, detect_format,
                             load_checkpoint_file)
from .models.prompts import has_frozen_parameters
from .utils.checkpoints import (check_checkpoint_file, is_remote,
                                local_checkpoint_path, not_a_checkpoint,
                                unreadable_checkpoint)

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


def base_file_keys(path: str) -> Set[str]:
    """The module keys (mmseg layout) that a base weights file provides.

    Reads lazily (``mmap``) where the format allows; unwraps
    ``state_dict`` / ``module.`` / ``backbone.`` containers and renames
    timm / official Swin layouts with the converter, as the loaders do.
    """
    info = ConversionInfo(log=False)
    try:
        state = load_checkpoint_file(path, info=info, mmap=True)
    except ValueError as err:  # the message names the file
        raise TunedCheckpointError(f'Cannot read base weights: {err}') \
            from err
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


# --------------------------------------------------------------------------
# what a task's checkpoint contains
# --------------------------------------------------------------------------
@dataclass
class TunedSplit:
    """The result of :func:`split_tuned`."""
    tuned: StateDict = field(default_factory=OrderedDict)
    omitted: List[str] = field(default_factory=list)
    # kept although frozen and in the base file: it gives other values
    differ_from_base: List[str] = field(default_factory=list)


def trainable_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of the parameters that train."""
    return {n for n, p in unwrap_model(model).named_parameters()
            if p.requires_grad}


def split_tuned(state_dict: Mapping[str, torch.Tensor],
                model: nn.Module,
                base_keys: Optional[Set[str]] = None,
                base_state: Optional[Mapping[str, torch.Tensor]] = None,
                module: str = BASE_MODULE) -> TunedSplit:
    """What a task's checkpoint contains: the one rule.

    A tensor of ``state_dict`` (the model's full state) is stored unless all
    of these hold, in which case the base weights provide it:

    * it belongs to ``model.<module>`` (the backbone),
    * it does not train (a frozen parameter or a buffer),
    * the base file has it (``base_keys``, module-relative names),
    * loading the base gives exactly this value (``base_state``,
      module-relative, as from :func:`base_reference`).

    So prompts, unfrozen biases, every head tensor (BN statistics included)
    and backbone tensors the base file lacks (e.g. Swin's ``norm0`` ..
    ``norm2``, which converted releases do not have) are stored.

    ``base_keys=None`` / ``base_state=None`` assume a base that provides
    every frozen backbone tensor with its current value, i.e. the size of a
    task's checkpoint computed from the model alone (``param_report``).
    """
    trainable = trainable_keys(model)
    prefix = module + '.'
    split = TunedSplit()
    for key, value in state_dict.items():
        rel = key[len(prefix):] if key.startswith(prefix) else None
        keep = rel is None or key in trainable or (
            base_keys is not None and rel not in base_keys)
        if not keep and base_state is not None:
            ref = base_state.get(rel)
            if ref is None or ref.dtype != value.dtype or \
                    ref.shape != value.shape or \
                    not torch.equal(ref, value.detach().to(ref.device)):
                split.differ_from_base.append(key)
                keep = True
        if keep:
            split.tuned[key] = value
        else:
            split.omitted.append(key)
    return split


def freeze_policy(model: nn.Module, module: str = BASE_MODULE) -> dict:
    """What trained, for the metadata."""
    model = unwrap_model(model)
    sub = getattr(model, module)
    params = list(model.named_parameters())
    policy = dict(
        module_type=type(sub).__name__,
        trainable_params=sum(p.numel() for _, p in params if p.requires_grad),
        total_params=sum(p.numel() for _, p in params))
    for attr in ('frozen_exclude', 'prompt_length', 'prompt_layers',
                 'prompt_init', 'frozen_eval'):
        if hasattr(sub, attr):
            value = getattr(sub, attr)
            policy[attr] = list(value) if isinstance(value,
                                                     (list, tuple)) else value
    if hasattr(sub, 'prompt_dropout') and isinstance(sub.prompt_dropout,
                                                     nn.Dropout):
        policy['prompt_dropout'] = sub.prompt_dropout.p
    return policy


def state_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _state_like(items: Iterable[Tuple[str, Any]],
                like: Mapping) -> StateDict:
    """A state dict of ``items`` with a copy of ``like``'s ``_metadata``
    (torch's per-module versions, and the base record)."""
    out = OrderedDict(items)
    out._metadata = OrderedDict(
        (k, dict(v)) for k, v in getattr(like, '_metadata', {}).items())
    return out


def is_tuned_checkpoint(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and isinstance(
        checkpoint.get('meta'), Mapping) and TUNED_META_KEY in \
        checkpoint['meta']


@dataclass
class TunedPlan:
    """Which tensors a model's checkpoints omit, decided once per run."""
    base: BaseSpec
    base_sha256: str
    base_bytes: int
    omitted: Dict[str, str]  # key -> digest
    omitted_numel: int
    omitted_bytes: int
    differ_from_base: List[str]
    policy: dict

    def record(self) -> BaseRecord:
        prefix = self.base.module + '.'
        return BaseRecord(
            module=self.base.module,
            checkpoint=self.base.checkpoint,
            sha256=self.base_sha256,
            size_bytes=self.base_bytes,
            omitted={k[len(prefix):]: d for k, d in self.omitted.items()},
            abspath=osp.abspath(self.base.checkpoint),
            config_key=self.base.config_key)

    def meta(self, num_tuned: int) -> dict:
        record = self.record()
        return dict(
            version=FORMAT_VERSION,
            module=record.module,
            base_checkpoint=record.checkpoint,
            base_abspath=record.abspath,
            base_config_key=record.config_key,
            base_sha256=record.sha256,
            base_bytes=record.size_bytes,
            omitted=dict(self.omitted),
            omitted_numel=self.omitted_numel,
            num_tuned=num_tuned,
            policy=copy.deepcopy(self.policy))

    def apply(self, checkpoint: dict) -> dict:
        """Drop the omitted tensors from ``checkpoint['state_dict']`` (in
        place), record the metadata and put the base record into the state
        dict's metadata. Optimizer state etc. stay."""
        state = checkpoint['state_dict']
        missing = [k for k in self.omitted if k not in state]
        if missing:
            raise TunedCheckpointError(
                f'The state dict lacks tensors the plan omits: '
                f'{_preview(missing)}')
        tuned = _state_like(((k, v) for k, v in state.items()
                             if k not in self.omitted), state)
        module = self.base.module
        tuned._metadata[module] = dict(
            tuned._metadata.get(module, {}),
            **{BASE_RECORD_KEY: self.record().to_dict()})
        checkpoint['state_dict'] = tuned
        checkpoint.setdefault('meta', {})[TUNED_META_KEY] = self.meta(
            len(tuned))
        return checkpoint


def plan_tuned(model: nn.Module,
               module: str = BASE_MODULE,
               base_path: Optional[str] = None,
               state_dict: Optional[Mapping[str, torch.Tensor]] = None,
               require: bool = False) -> Union[TunedPlan, str]:
    """Decide what ``model``'s checkpoints omit.

    ``state_dict`` defaults to the model's own (pass another full state to
    split it instead, as :func:`extract_tuned` does). ``base_path``
    overrides the init_cfg's file. Returns a :class:`TunedPlan`, or a string
    saying why checkpoints stay full (no Pretrained base, nothing frozen,
    nothing the base reproduces); ``require=True`` raises instead.
    """
    net = unwrap_model(model)
    spec = find_base(net, module)
    sub = getattr(net, module, None)
    reason = None
    if sub is None:
        reason = f'the model has no `{module}`'
    elif spec is None and base_path is None:
        reason = (f'model.{module} has no Pretrained init_cfg (random '
                  'initialisation), so there are no base weights')
    elif not has_frozen_parameters(sub):
        reason = f'nothing in model.{module} is frozen (full fine-tuning)'
    if reason is None:
        if spec is None:
            spec = BaseSpec(module, base_path, f'model.{module}.init_cfg')
        elif base_path is not None:
            spec.checkpoint = base_path
        local = local_checkpoint_path(spec.checkpoint)  # a URL's cache
        if not osp.isfile(local):
            raise FileNotFoundError(
                f'Base weights file {spec.checkpoint!r} (config key '
                f'`{spec.config_key}`, resolved: '
                f'{osp.abspath(spec.checkpoint)}) does not exist')
        check_checkpoint_file(local, f'config key `{spec.config_key}`')
        keys = base_file_keys(spec.checkpoint)
        reference = base_reference(sub, spec.checkpoint)
        state = net.state_dict() if state_dict is None else state_dict
        split = split_tuned(state, net, keys, reference, module)
        if not split.omitted:
            reason = (f'the base weights {spec.checkpoint!r} reproduce none '
                      f'of the frozen tensors of model.{module}')
    if reason is not None:
        if require:
            raise TunedCheckpointError(
                f'Cannot write a tuned-only checkpoint: {reason}.')
        return reason
    prefix = module + '.'
    omitted = OrderedDict(
        (k, tensor_digest(reference[k[len(prefix):]])) for k in split.omitted)
    return TunedPlan(
        base=spec,
        base_sha256=file_sha256(local),
        base_bytes=os.path.getsize(local),
        omitted=omitted,
        omitted_numel=sum(state[k].numel() for k in split.omitted),
        omitted_bytes=state_bytes(state[k] for k in split.omitted),
        differ_from_base=split.differ_from_base,
        policy=freeze_policy(net, module))


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------
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
            f'(another architecture?): {_preview(absent)}')
    differ = [k for k, d in record.omitted.items()
              if tensor_digest(state[k]) != d]
    if differ:
        msg = (f'Loading the base weights {path!r} into model.{record.module} '
               f'did not reproduce {len(differ)} of the {len(record.omitted)} '
               f'tensors {source} omitted: {_preview(differ)}')
        if check_base_hash:
            raise BaseWeightsMismatch(
                msg + '. The base file or the way it loads has changed; '
                'they would be left with other values.')
        _log(msg + ' (base hash check disabled: using them as loaded).',
             logging.WARNING)
    _log(f'{source}: loaded {len(record.omitted)} tensors from the base '
         f'weights {path} (sha256 {sha[:12]}...)')
    return OrderedDict((k, state[k]) for k in record.omitted)


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
            f'{_preview(unset)}. They would keep random values. A '
            'tuned-only checkpoint of format version 1 (meta[\'vpt_tuned\']'
            '[\'version\'] == 1) loads only with tools/test.py, '
            'tools/infer.py or mmseg_vpt.checkpoint.load_tuned_checkpoint; '
            '`tools/extract_tuned.py TASK OUT --config CONFIG` re-saves it '
            'in the current format, which loads here too. Otherwise load a '
            'checkpoint of this model, or call init_weights() first.')
    module.frozen_weights_set = True


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> StateDict:
    """mmengine's ``revise_keys`` default: drop a leading ``module.``."""
    def strip(key: str) -> str:
        return key[7:] if key.startswith('module.') else key

    out = _state_like(((strip(k), v) for k, v in state.items()), state)
    out._metadata = OrderedDict(
        (strip(k), v) for k, v in out._metadata.items())
    return out


@dataclass
class StateFit:
    """How a checkpoint's tensors fit a model (model keys throughout)."""
    fits: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)  # 'key: shapes'
    unexpected: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    # omitted tensors (the base weights') that the model does not have
    base_unexpected: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.mismatched or self.unexpected or self.missing
                    or self.base_unexpected)

    def describe(self) -> str:
        parts = []
        if self.mismatched:
            parts.append('Shape mismatches (checkpoint vs model): '
                         f'{_preview(self.mismatched)}.')
        if self.unexpected:
            parts.append(f'Not in the model: {_preview(self.unexpected)}.')
        if self.base_unexpected:
            parts.append('Omitted as base weights but not in the model '
                         '(another architecture?): '
                         f'{_preview(self.base_unexpected)}.')
        if self.missing:
            parts.append('Left unloaded (neither in the checkpoint nor '
                         'provided by the base weights): '
                         f'{_preview(self.missing)}.')
        return ' '.join(parts)


PARTIAL_HINT = ('To load only the tensors that fit, pass --load-partial '
                '(tools/test.py, tools/infer.py, tools/train.py with '
                'load_from) or set TunedCheckpointHook(load_partial=True).')


def check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor],
                     source: str = 'the checkpoint',
                     provided: Iterable[str] = (),
                     partial: bool = False) -> StateFit:
    """Check ``state`` against ``model``: every key is the model's, shapes
    agree, and ``state`` plus ``provided`` (the base weights' keys) cover
    the whole state (BN ``num_batches_tracked`` aside, as in mmengine).

    Raises :class:`CheckpointMismatch` listing every misfit; with
    ``partial=True`` logs a summary instead, except when the base weights
    do not fit (a base loads all or nothing).
    """
    target = unwrap_model(model).state_dict()
    fit = StateFit()
    for key, value in state.items():
        shape = tuple(getattr(value, 'shape', ()))
        if key not in target:
            fit.unexpected.append(key)
        elif shape != tuple(target[key].shape):
            fit.mismatched.append(
                f'{key}: {shape} vs model {tuple(target[key].shape)}')
        else:
            fit.fits.append(key)
    for key in provided:
        (fit.fits if key in target else fit.base_unexpected).append(key)
    given = set(fit.fits) | set(state)
    fit.missing = [k for k in target if k not in given
                   and not k.endswith('num_batches_tracked')]
    if fit.exact:
        return fit
    if not partial or fit.base_unexpected:
        raise CheckpointMismatch(
            f'{source} does not fit the model. {fit.describe()} ' +
            (PARTIAL_HINT if not fit.base_unexpected else
             'A tuned checkpoint\'s base weights load all or nothing, also '
             'with --load-partial.'))
    skipped = len(fit.mismatched) + len(fit.unexpected)
    _log(f'Partial load of {source}: {len(fit.fits)} of the model\'s '
         f'{len(target)} tensors come from it, {skipped} of its tensors are '
         f'skipped and {len(fit.mismatched) + len(fit.missing)} model '
         f'tensors keep the values the config initialises. '
         f'{fit.describe()}', logging.WARNING)
    return fit


def tuned_record(checkpoint: Mapping,
                 source: str = 'the checkpoint') -> Optional[BaseRecord]:
    """The base record of a tuned checkpoint (None for a full one), read
    from its meta, which every format version has."""
    if not is_tuned_checkpoint(checkpoint):
        return None
    return BaseRecord.from_meta(checkpoint['meta'][TUNED_META_KEY], source)


def checkpoint_state(model: nn.Module, checkpoint: Mapping,
                     source: str = 'the checkpoint',
                     check_base_hash: bool = True,
                     base_path: Optional[str] = None,
                     partial: bool = False) -> StateDict:
    """The state dict to load into ``model`` from ``checkpoint``, checked.

    Checks every tensor against the model (:func:`check_state_fits`). For a
    tuned checkpoint, then loads the base weights into ``model.<module>``
    (:func:`load_base_weights`, ``base_path`` overriding where the file is
    looked for) and adds the omitted tensors. With ``partial=True`` the
    tensors that do not fit are left out (summary logged) and, if some of
    the model's are then missing, the model is initialised from its config
    first (``init_weights``), so they never keep construction-time values.

    ``TunedCheckpointHook`` puts the result back into the checkpoint before
    mmengine loads it; :func:`load_tuned_checkpoint` loads it itself.
    """
    net = unwrap_model(model)
    state = _strip_module_prefix(checkpoint['state_dict'])
    record = tuned_record(checkpoint, source)
    if record is not None and getattr(net, record.module, None) is None:
        raise CheckpointMismatch(
            f'{source} stores the tuned part of a model whose '
            f'`{record.module}` comes from base weights, but this model has '
            'no such module')
    fit = check_state_fits(net, state, source,
                           record.model_keys() if record else (), partial)
    if not fit.exact:
        fits = set(fit.fits)
        state = _state_like(
            ((k, v) for k, v in state.items() if k in fits), state)
        if fit.missing or fit.mismatched:
            net.init_weights()  # a no-op where training already ran it
    if record is not None:
        base = load_base_weights(getattr(net, record.module), record,
                                 base_path, check_base_hash, source)
        for key, value in base.items():
            state.setdefault(f'{record.module}.{key}', value)
    return state


def read_checkpoint(path: str, key: Optional[str] = None) -> dict:
    """``torch.load`` a checkpoint written by mmengine or these tools (a URL
    or another mmengine scheme through mmengine's ``CheckpointLoader``).
    Errors name the file, its size and ``key`` (what named it, e.g.
    ``'argument TUNED'``)."""
    check_checkpoint_file(path, key)
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, 'cpu') if \
            is_remote(path) else \
            torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch.load's many errors
        raise unreadable_checkpoint(path, err, key) from err
    if not isinstance(ckpt, Mapping):
        raise not_a_checkpoint(path, ckpt, key)
    if 'state_dict' not in ckpt:  # a bare state dict
        ckpt = {'meta': {}, 'state_dict': ckpt}
    return ckpt


def load_tuned_checkpoint(model: nn.Module,
                          checkpoint: Union[str, Mapping],
                          check_base_hash: bool = True,
                          base_path: Optional[str] = None,
                          partial: bool = False) -> dict:
    """Load a tuned or a full checkpoint into ``model``, strictly (see
    :func:`checkpoint_state`; ``partial=True`` loads what fits). Returns
    the checkpoint dict."""
    source = checkpoint if isinstance(checkpoint, str) else 'the checkpoint'
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint,
                                                     str) else checkpoint
    net = unwrap_model(model)
    state = checkpoint_state(net, ckpt, source, check_base_hash, base_path,
                             partial)
    net.load_state_dict(state, strict=False)  # checked above
    return ckpt


def merge_tuned(model: nn.Module,
                checkpoint: Union[str, Mapping],
                check_base_hash: bool = True,
                base_path: Optional[str] = None) -> dict:
    """A full standalone checkpoint from a tuned one: the base weights plus
    the tuned tensors, as ``model``'s complete state dict (CPU). Optimizer
    and scheduler state are dropped; the tuned metadata moves to
    ``meta['vpt_merged_from']``."""
    ckpt = load_tuned_checkpoint(model, checkpoint, check_base_hash,
                                 base_path)
    meta = dict(ckpt.get('meta') or {})
    if TUNED_META_KEY in meta:
        meta[MERGED_META_KEY] = meta.pop(TUNED_META_KEY)
    state = OrderedDict((k, v.detach().cpu())
                        for k, v in unwrap_model(model).state_dict().items())
    return {'meta': meta, 'state_dict': state}


def extract_tuned(model: nn.Module,
                  checkpoint: Union[str, Mapping],
                  base_path: Optional[str] = None,
                  check_base_hash: bool = True) -> dict:
    """The tuned-only checkpoint of a full one (the reverse of
    :func:`merge_tuned`): :func:`split_tuned` against the base weights
    named by ``model``'s init_cfg (or ``base_path``), with ``model``'s
    freeze policy; no optimizer state. Tensors are taken from the full
    checkpoint unchanged. A tuned checkpoint comes back with its tensors
    unchanged and without optimizer state."""
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint,
                                                     str) else checkpoint
    source = checkpoint if isinstance(checkpoint, str) else 'the checkpoint'
    if is_tuned_checkpoint(ckpt):
        ckpt = merge_tuned(model, ckpt, check_base_hash, base_path)
    full = _strip_module_prefix(ckpt['state_dict'])
    check_state_fits(model, full, source)
    plan = plan_tuned(model, base_path=base_path, state_dict=full,
                      require=True)
    meta = dict(ckpt.get('meta') or {})
    meta.pop(MERGED_META_KEY, None)
    out = plan.apply({'meta': meta, 'state_dict': full})
    return {'meta': out['meta'], 'state_dict': out['state_dict']}


def model_from_config(config: Any, base_path: Optional[str] = None,
                      cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the segmentor of ``config`` (a path, a ``Config`` or a config
    text such as ``checkpoint['meta']['cfg']``) on the CPU, without loading
    anything; ``base_path`` replaces the backbone's Pretrained file."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    if isinstance(config, str) and not osp.isfile(config) and \
            '\n' in config:
        cfg = Config.fromstring(config, file_format='.py')
    elif isinstance(config, str):
        cfg = Config.fromfile(config)
    else:
        cfg = config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if base_path is not None:
        backbone = cfg.model.backbone
        backbone.init_cfg = _with_checkpoint(backbone.get('init_cfg'),
                                             base_path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model)
