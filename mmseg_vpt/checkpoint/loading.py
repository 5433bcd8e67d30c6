"""Loading tuned and full checkpoints into a model: fit checks, the base
weights of tuned ones, merge and extract."""
import logging
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from ..models.base_weights import (BaseRecord, StateDict, load_base_weights,
                                   with_checkpoint)
from ..utils.checkpoints import read_checkpoint
from ..utils.config import read_config
from ..utils.params import unwrap_model
from ..utils.state_fit import StateFit, fit_state
from .base import MERGED_META_KEY, TUNED_META_KEY, CheckpointMismatch
from .saving import _state_like, is_tuned_checkpoint, plan_tuned


def _log(msg: str, level=logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> StateDict:
    """mmengine's ``revise_keys`` default: drop a leading ``module.``."""
    def strip(key: str) -> str:
        return key[7:] if key.startswith('module.') else key

    out = _state_like(((strip(k), v) for k, v in state.items()), state)
    out._metadata = OrderedDict(
        (strip(k), v) for k, v in out._metadata.items())
    return out


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
    fit = fit_state(target, state, provided)
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
    state = strip_module_prefix(checkpoint['state_dict'])
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
    full = strip_module_prefix(ckpt['state_dict'])
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
    cfg = read_config(config, cfg_options)
    if base_path is not None:
        backbone = cfg.model.backbone
        backbone.init_cfg = with_checkpoint(backbone.get('init_cfg'),
                                            base_path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model)

