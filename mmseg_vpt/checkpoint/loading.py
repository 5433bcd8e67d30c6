"""Loading tuned and full checkpoints: the one base-weights loader, the
module's own state-dict path, fit checks, merge and extract."""
import logging
import os
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.checkpoints import (check_checkpoint_file, is_remote,
                                 local_checkpoint_path, not_a_checkpoint,
                                 unreadable_checkpoint)
from .base import (BASE_RECORD_KEY, BASE_WEIGHTS_ENV, MERGED_META_KEY,
                   TUNED_META_KEY, BaseRecord, BaseWeightsMismatch,
                   CheckpointMismatch, FrozenWeightsNotLoaded, StateDict,
                   TunedCheckpointError, _preview, _with_checkpoint,
                   file_sha256, pretrained_checkpoint, run_base_init,
                   tensor_digest, unwrap_model)
from .saving import _state_like, is_tuned_checkpoint, plan_tuned


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

