"""What a task's checkpoint contains (:func:`split_tuned`, the one rule)
and the per-run plan that applies it when saving (:func:`plan_tuned`)."""
import copy
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple,
                    Union)

import torch
import torch.nn as nn

from ..models.base_weights import (BASE_MODULE, BASE_RECORD_KEY,
                                   FORMAT_VERSION, BaseRecord, StateDict,
                                   TunedCheckpointError, file_sha256,
                                   tensor_digest)
from ..utils.checkpoints import check_checkpoint_file, local_checkpoint_path
from ..utils.params import has_frozen_parameters, unwrap_model
from ..utils.state_fit import preview
from .base import (TUNED_META_KEY, BaseSpec, base_file_keys, base_reference,
                   find_base)


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
                 'prompt_init', 'frozen_eval', 'prompt_location',
                 'prompt_shared', 'prompt_pad', 'partial_k',
                 'frozen_dtype'):
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
            config_key=self.base.config_key,
            frozen_dtype=self.policy.get('frozen_dtype'))

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
                f'{preview(missing)}')
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
        keys = base_file_keys(spec.checkpoint, sub)
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


