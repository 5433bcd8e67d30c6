"""Memory options of a training run: checkpointed modules (a config's
``activation_checkpointing``, e.g. the heads: ``['decode_head',
'auxiliary_head']``, or ``['decode_head.loss', ...]`` for a head's forward
and loss together) and the one-line summary of every memory option that
the startup log, the parameter report and the benchmark print.

mmengine's ``Runner`` reads the same config key, but its wrapper
(``mmengine.runner.activation_checkpointing``) calls
``torch.utils.checkpoint`` without ``use_reentrant``, which torch 2.14 runs
as the reentrant variant (with a deprecation warning). That variant

* gives no gradient to the parameters inside the module when its inputs do
  not require one: a head-only run (frozen backbone, no prompts) gets a
  loss that does not require grad, or heads that silently stop training;
* runs each BatchNorm twice in train mode (forward, then the recompute in
  the backward), so running statistics move twice per step and
  ``num_batches_tracked`` counts two.

:func:`turn_on_activation_checkpointing` wraps the same modules with the
non-reentrant checkpoint and puts each BatchNorm's running statistics
back after the recompute, so outputs, gradients and statistics equal an
unwrapped step's. :func:`configure_activation_checkpointing` moves the
config key to :class:`ActivationCheckpointingHook` before mmengine sees it.
"""
import contextlib
from operator import attrgetter
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..utils.params import unwrap_model
from .fsdp import WRAPPER as SHARDED_WRAPPER

CONFIG_KEY = 'activation_checkpointing'
HOOK_TYPES = ('ActivationCheckpointingHook',
              'mmseg.ActivationCheckpointingHook')


@contextlib.contextmanager
def _running_stats_held(norms: Sequence[_BatchNorm]):
    """Run BatchNorm layers and put their running statistics (and
    ``num_batches_tracked``) back afterwards: the recompute then normalises
    exactly as the forward did (batch statistics in train mode, the same
    tensors saved for the backward) without counting the batch twice."""
    saved = [(buf, buf.clone()) for m in norms
             if m.training and m.track_running_stats
             for buf in (m.running_mean, m.running_var,
                         m.num_batches_tracked) if buf is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class CheckpointedForward:
    """A module's ``forward`` (or another of its methods) run under
    ``torch.utils.checkpoint`` (non-reentrant) whenever autograd records;
    set as the module's instance attribute of that name, as mmengine does,
    so that methods calling ``self.forward`` (mmseg heads' ``loss``) are
    checkpointed too.

    A callable object rather than a closure: ``copy.deepcopy`` of the
    module then gives a method bound to the copy."""

    def __init__(self, module: nn.Module, method: str = 'forward'):
        self.module = module
        self.method = method
        # another instance-level attribute (a wrapper) is kept and called
        self.inner = module.__dict__.get(method)
        self.norms = [m for m in module.modules()
                      if isinstance(m, _BatchNorm)]

    def _contexts(self):
        return contextlib.nullcontext(), _running_stats_held(self.norms)

    def _run(self, *args, **kwargs):
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return getattr(type(self.module), self.method)(self.module, *args,
                                                       **kwargs)

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self._run(*args, **kwargs)
        return checkpoint(self._run, *args, use_reentrant=False,
                          context_fn=self._contexts, **kwargs)


def _name_list(names: Union[str, Sequence[str]]) -> List[str]:
    """One module name or several, as a list."""
    return [names] if isinstance(names, str) else list(names)


def _lookup(model: nn.Module, name: str):
    try:
        return attrgetter(name)(model)
    except AttributeError:
        return None


def _resolve(model: nn.Module, name: str) -> List[tuple]:
    """(name, module, method) for one entry: a module name stands for its
    ``forward``, ``MODULE.METHOD`` for that method (``decode_head.loss``:
    the head's forward and its loss), and a ModuleList (mmseg's list of
    auxiliary heads) for each of its members."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'{CONFIG_KEY} entries must be submodule names '
                         f"(e.g. 'decode_head' or 'decode_head.loss'), got "
                         f'{name!r}')
    target = _lookup(model, name)
    if isinstance(target, nn.ModuleList):
        return [(f'{name}.{i}', m, 'forward') for i, m in enumerate(target)]
    if isinstance(target, nn.Module):
        return [(name, target, 'forward')]
    owner_name, _, method = name.rpartition('.')
    owner = _lookup(model, owner_name) if owner_name else None
    members = list(owner) if isinstance(owner, nn.ModuleList) else [owner]
    if owner is not None and all(
            isinstance(m, nn.Module) and callable(getattr(m, method, None))
            for m in members):
        if isinstance(owner, nn.ModuleList):
            return [(f'{owner_name}.{i}.{method}', m, method)
                    for i, m in enumerate(members)]
        return [(name, owner, method)]
    children = [n for n, _ in model.named_children()]
    raise ValueError(
        f'{CONFIG_KEY} entry {name!r} names no submodule (or method of '
        f'one) of {type(model).__name__} (its children: {children})')


def turn_on_activation_checkpointing(
        model: nn.Module, modules: Union[str, Sequence[str], None]
) -> List[str]:
    """Checkpoint the ``forward`` of each named submodule of ``model``
    (dotted names relative to the unwrapped model, as in mmengine's
    ``activation_checkpointing``; a ModuleList name covers each member), or
    the named method (``'decode_head.loss'``: an mmseg head's forward and
    loss together, so that not even its logits are kept). What is already
    checkpointed is left as it is. Returns the names checkpointed."""
    if modules is None:
        return []
    names = [modules] if isinstance(modules, str) else modules
    if not isinstance(names, (list, tuple)):
        raise ValueError(f'{CONFIG_KEY} must be a list of submodule names, '
                         f"e.g. ['decode_head', 'auxiliary_head'], got "
                         f'{modules!r}')
    model = unwrap_model(model)
    done = []
    for name in names:
        for full, module, method in _resolve(model, name):
            if not isinstance(module.__dict__.get(method),
                              CheckpointedForward):
                setattr(module, method, CheckpointedForward(module, method))
            done.append(full)
    return done


def checkpointed_modules(model: nn.Module) -> List[str]:
    """What of ``model`` is checkpointed: module names (their forward) and
    ``MODULE.METHOD`` names."""
    out = []
    for name, m in unwrap_model(model).named_modules():
        for attr, value in m.__dict__.items():
            if isinstance(value, CheckpointedForward):
                out.append(name if attr == 'forward' else f'{name}.{attr}')
    return out


@HOOKS.register_module()
class ActivationCheckpointingHook(Hook):
    """Turn on :func:`turn_on_activation_checkpointing` for ``modules``
    before the run (what a config's ``activation_checkpointing`` becomes,
    see :func:`configure_activation_checkpointing`)."""

    priority = 'VERY_HIGH'

    def __init__(self, modules: Sequence[str]):
        self.modules = _name_list(modules)

    def before_run(self, runner) -> None:
        names = turn_on_activation_checkpointing(runner.model, self.modules)
        runner.logger.info('Activation checkpointing (non-reentrant) of: '
                           + ', '.join(names))


def configured_checkpointing(cfg: Config) -> List[str]:
    """The module names a config checkpoints: its ``activation_checkpointing``
    key or an :class:`ActivationCheckpointingHook` in ``custom_hooks``."""
    names = cfg.get(CONFIG_KEY)
    if names:
        return _name_list(names)
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('type') in HOOK_TYPES:
            return _name_list(hook.get('modules') or [])
    return []


def configure_activation_checkpointing(cfg: Config) -> None:
    """Move ``cfg.activation_checkpointing`` to an
    :class:`ActivationCheckpointingHook` in ``custom_hooks`` (so that
    mmengine's reentrant wrapper does not also wrap the modules)."""
    names = cfg.pop(CONFIG_KEY, None)
    if not names:
        return
    if not isinstance(names, (str, list, tuple)):
        raise ValueError(f'{CONFIG_KEY} must be a list of submodule names, '
                         f"e.g. ['decode_head', 'auxiliary_head'], got "
                         f'{names!r}')
    scope = '' if cfg.get('default_scope', 'mmseg') == 'mmseg' else 'mmseg.'
    hooks = [h for h in cfg.get('custom_hooks') or []
             if h.get('type') not in HOOK_TYPES]
    hooks.append(dict(type=scope + 'ActivationCheckpointingHook',
                      modules=_name_list(names)))
    cfg.custom_hooks = hooks


# ---------------------------------------------------------------------------
# what is on
# ---------------------------------------------------------------------------
def backbone_with_cp(backbone: Optional[nn.Module]) -> bool:
    """Whether the backbone checkpoints its layers (mmseg's and timm's
    ``with_cp`` flag, on the backbone or on its layers)."""
    if backbone is None:
        return False
    return any(getattr(m, 'with_cp', False) is True
               for m in backbone.modules())


def amp_setting(optim_wrapper_cfg: Optional[dict]) -> Optional[str]:
    """``'float16'`` / ``'bfloat16'`` for an ``optim_wrapper`` that runs
    forward passes under autocast, else None."""
    if not optim_wrapper_cfg:
        return None
    kind = str(optim_wrapper_cfg.get('type', 'OptimWrapper')).split('.')[-1]
    if kind == 'BFloat16OptimWrapper':
        return 'bfloat16'
    if kind == 'AmpOptimWrapper':
        dtype = optim_wrapper_cfg.get('dtype') or 'float16'
        return str(dtype).replace('torch.', '')
    return None


def memory_options(model: nn.Module, cfg: Optional[Config] = None
                   ) -> Dict[str, Any]:
    """The memory options of a built model (and its config): frozen
    weights' storage type, backbone ``with_cp``, checkpointed modules
    (applied, or configured when not yet applied), AMP, and whether the
    model wrapper shards the frozen backbone (FSDP)."""
    model = unwrap_model(model)
    backbone = getattr(model, 'backbone', None)
    applied = checkpointed_modules(model)
    configured = configured_checkpointing(cfg) if cfg is not None else []
    optim = cfg.get('optim_wrapper') if cfg is not None else None
    return dict(
        frozen_dtype=getattr(backbone, 'frozen_dtype', None),
        backbone_with_cp=backbone_with_cp(backbone),
        activation_checkpointing=applied or configured,
        amp=amp_setting(optim),
        optim_wrapper=(str(optim.get('type', 'OptimWrapper'))
                       if optim else None),
        sharded=cfg is not None and str(
            (cfg.get('model_wrapper_cfg') or {}).get('type', '')).split(
                '.')[-1] == SHARDED_WRAPPER)


def format_memory_options(options: Dict[str, Any]) -> str:
    """One line: ``frozen weights bfloat16, backbone with_cp on, ...``."""
    ckpt = options.get('activation_checkpointing') or []
    return ('Memory options: frozen weights '
            f"{options.get('frozen_dtype') or 'float32'}, backbone with_cp "
            f"{'on' if options.get('backbone_with_cp') else 'off'}, "
            'activation checkpointing '
            f"{', '.join(ckpt) if ckpt else 'off'}, AMP "
            f"{options.get('amp') or 'off'}"
            + (f" ({options['optim_wrapper']})" if options.get('amp')
               else '')
            + (', frozen backbone sharded (FSDP)' if options.get('sharded')
               else ''))
