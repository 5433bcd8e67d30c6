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
* :func:`prepare_tuned_load` loads the base weights into a model and checks
  that they reproduce what the checkpoint omitted and that the checkpoint
  provides everything else (the hook calls it in ``after_load_checkpoint``,
  before mmengine loads the tuned tensors);
  :func:`load_tuned_checkpoint` does the whole load, for tools and APIs.
* :func:`merge_tuned` / :func:`extract_tuned` turn a tuned checkpoint into a
  full standalone one and back, bit-exactly (``tools/merge_tuned.py``,
  ``tools/extract_tuned.py``).

Base weights always load through the backbone's own ``init_weights`` (the
path training takes, including mmseg's position-embedding resizing), never
through a second implementation. A tensor is omitted only if that path,
run on a copy of the backbone, gives back exactly the value the model holds;
its SHA-256 is recorded, and loading fails unless the base reproduces it.

The metadata lives in ``checkpoint['meta']['vpt_tuned']``::

    version          1
    module           'backbone' (the submodule the base file initialises)
    base_checkpoint  the path the config's init_cfg named when saving
    base_config_key  'model.backbone.init_cfg.checkpoint'
    base_sha256      SHA-256 of the base file's bytes
    base_bytes       its size
    omitted          {model key: sha256[:16] of the tensor}, in model order
    omitted_numel    elements in the omitted tensors
    num_tuned        tensors stored in the checkpoint
    policy           what trained: backbone type, frozen_exclude,
                     prompt_length / layers / init, trainable and total
                     parameter counts
"""
import copy
import hashlib
import logging
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Union

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
FORMAT_VERSION = 1
BASE_MODULE = 'backbone'
DIGEST_CHARS = 16

StateDict = Dict[str, torch.Tensor]


class TunedCheckpointError(ValueError):
    """A tuned checkpoint does not fit the model or its base weights."""


class BaseWeightsMismatch(TunedCheckpointError):
    """The base weights file is not the one a tuned checkpoint was saved
    with."""


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

    def meta(self, num_tuned: int) -> dict:
        return dict(
            version=FORMAT_VERSION,
            module=self.base.module,
            base_checkpoint=self.base.checkpoint,
            base_config_key=self.base.config_key,
            base_sha256=self.base_sha256,
            base_bytes=self.base_bytes,
            omitted=dict(self.omitted),
            omitted_numel=self.omitted_numel,
            num_tuned=num_tuned,
            policy=copy.deepcopy(self.policy))

    def apply(self, checkpoint: dict) -> dict:
        """Drop the omitted tensors from ``checkpoint['state_dict']`` (in
        place) and record the metadata. Optimizer state etc. stay."""
        state = checkpoint['state_dict']
        missing = [k for k in self.omitted if k not in state]
        if missing:
            raise TunedCheckpointError(
                f'The state dict lacks tensors the plan omits: '
                f'{_preview(missing)}')
        checkpoint['state_dict'] = OrderedDict(
            (k, v) for k, v in state.items() if k not in self.omitted)
        checkpoint.setdefault('meta', {})[TUNED_META_KEY] = self.meta(
            len(checkpoint['state_dict']))
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


def prepare_tuned_load(model: nn.Module,
                       checkpoint: Mapping,
                       check_base_hash: bool = True,
                       base_path: Optional[str] = None,
                       source: str = 'the tuned checkpoint') -> None:
    """Get ``model`` ready for a tuned checkpoint's tensors.

    Loads the base weights into ``model.<module>`` through its own
    ``init_weights`` (the file the model's init_cfg names, else
    ``base_path``, else the one recorded in the checkpoint), checks the
    file's SHA-256 against the recorded one and that every omitted tensor
    came back bit-identical, and checks that the checkpoint's tensors fit
    the model and, together with the base, cover every key of its state
    dict. Does not load the checkpoint's tensors (mmengine does that next
    in ``Runner.load_checkpoint``; :func:`load_tuned_checkpoint` does it
    otherwise).

    Raises:
        FileNotFoundError: the base file is missing (names it and the
            config key).
        BaseWeightsMismatch: another base file (both files and hashes named),
            unless ``check_base_hash=False``, which only warns.
        TunedCheckpointError: tensors the base does not reproduce, shape
            mismatches, unknown keys or keys nobody provides (all listed).
    """
    meta = checkpoint['meta'][TUNED_META_KEY]
    version = meta.get('version')
    if version != FORMAT_VERSION:
        raise TunedCheckpointError(
            f'{source} has tuned-checkpoint format version {version!r}; this '
            f'code reads version {FORMAT_VERSION}')
    net = unwrap_model(model)
    module = meta['module']
    sub = getattr(net, module, None)
    if sub is None:
        raise TunedCheckpointError(
            f'{source} stores the tuned part of a model whose `{module}` '
            'comes from base weights, but this model has no such module')
    recorded = meta['base_checkpoint']
    spec = find_base(net, module)
    if base_path is not None:
        path, key = base_path, 'base weights argument'
    elif spec is not None:
        path, key = spec.checkpoint, spec.config_key
    else:
        path, key = recorded, f"meta['{TUNED_META_KEY}']['base_checkpoint']"
        _log(f'model.{module} has no Pretrained init_cfg; using the base '
             f'weights recorded in {source}: {recorded!r}')
    local = local_checkpoint_path(path)  # a URL's cache
    if not osp.isfile(local):
        raise FileNotFoundError(
            f'{source} holds only the tuned tensors; it needs its base '
            f'weights file {path!r} (from `{key}`; resolved: '
            f'{osp.abspath(path)}), which does not exist. It was saved with '
            f'{recorded!r} (sha256 {meta["base_sha256"]}). Put that file '
            f'there or point `{key}` at it (--cfg-options {key}=PATH), or '
            'use a full checkpoint (tools/merge_tuned.py).')
    check_checkpoint_file(local, f'`{key}`')
    sha = file_sha256(local)
    if sha != meta['base_sha256']:
        msg = (f'Base weights mismatch: {source} was saved with base weights '
               f'{recorded!r} (sha256 {meta["base_sha256"]}), but `{key}` is '
               f'{path!r} (sha256 {sha}).')
        if check_base_hash:
            raise BaseWeightsMismatch(
                msg + ' Use the base file it was trained with. To load it '
                'anyway, pass --ignore-base-hash to tools/test.py / '
                'tools/train.py (TunedCheckpointHook(check_base_hash=False)).')
        _log(msg + ' Loading anyway (base hash check disabled).',
             logging.WARNING)

    run_base_init(sub, path)

    full_keys = net.state_dict()
    omitted = meta['omitted']
    absent = [k for k in omitted if k not in full_keys]
    if absent:
        raise TunedCheckpointError(
            f'{source} omits tensors this model does not have (another '
            f'architecture?): {_preview(absent)}')
    differ = [k for k, d in omitted.items()
              if tensor_digest(full_keys[k]) != d]
    if differ:
        msg = (f'Loading the base weights {path!r} into model.{module} did '
               f'not reproduce {len(differ)} of the {len(omitted)} tensors '
               f'{source} omitted: {_preview(differ)}')
        if check_base_hash:
            raise BaseWeightsMismatch(
                msg + '. The base file or the way it loads has changed; '
                'they would be left with other values.')
        _log(msg + ' (base hash check disabled: using them as loaded).',
             logging.WARNING)
    check_tuned_state(net, checkpoint['state_dict'], omitted, source)


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> StateDict:
    """mmengine's ``revise_keys`` default: drop a leading ``module.``."""
    return OrderedDict((k[7:] if k.startswith('module.') else k, v)
                       for k, v in state.items())


def check_tuned_state(model: nn.Module,
                      tuned: Mapping[str, torch.Tensor],
                      omitted: Iterable[str] = (),
                      source: str = 'the checkpoint') -> None:
    """Strictly check ``tuned`` against ``model``: every key is the model's,
    shapes agree, and ``tuned`` plus ``omitted`` cover the whole state."""
    target = unwrap_model(model).state_dict()
    tuned = _strip_module_prefix(tuned)
    unexpected = [k for k in tuned if k not in target]
    shapes = [f'{k}: {tuple(v.shape)} vs model {tuple(target[k].shape)}'
              for k, v in tuned.items()
              if k in target and tuple(v.shape) != tuple(target[k].shape)]
    covered = set(tuned) | set(omitted)
    missing = [k for k in target if k not in covered]
    if unexpected or shapes or missing:
        raise TunedCheckpointError(
            f'{source} does not fit the model. '
            + (f'Shape mismatches: {_preview(shapes)}. ' if shapes else '')
            + (f'Not in the model: {_preview(unexpected)}. '
               if unexpected else '')
            + (f'Left unloaded (neither in the checkpoint nor provided by '
               f'the base weights): {_preview(missing)}.' if missing else ''))


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
                          base_path: Optional[str] = None) -> dict:
    """Load a tuned or a full checkpoint into ``model``, strictly.

    A tuned checkpoint: base weights first (:func:`prepare_tuned_load`),
    then its tensors. A full one: every key of the model must be there.
    Returns the checkpoint dict.
    """
    source = checkpoint if isinstance(checkpoint, str) else 'the checkpoint'
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint,
                                                     str) else checkpoint
    net = unwrap_model(model)
    if is_tuned_checkpoint(ckpt):
        prepare_tuned_load(net, ckpt, check_base_hash, base_path, source)
    else:
        check_tuned_state(net, ckpt['state_dict'], (), source)
    net.load_state_dict(_strip_module_prefix(ckpt['state_dict']),
                        strict=False)
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
    check_tuned_state(model, full, (), source)
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
