"""Where a model's base weights file is, which of its tensors it
provides, and what loading it gives; the task-file constants and errors.

The loader itself (:func:`~mmseg_vpt.models.base_weights.load_base_weights`)
lives with the models, because a backbone's own state-dict loading runs it.
"""
import copy
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Set

import torch
import torch.nn as nn

from ..models.base_weights import (BASE_MODULE, TunedCheckpointError,
                                   pretrained_checkpoint, run_base_init)
from ..models.convert import (ConversionInfo, convert_to_mmseg, detect_format,
                              load_checkpoint_file)
from ..models.pretrained import PretrainedReference
from ..utils.params import unwrap_model

TUNED_META_KEY = 'vpt_tuned'
MERGED_META_KEY = 'vpt_merged_from'


class CheckpointMismatch(TunedCheckpointError):
    """A checkpoint's tensors do not fit the model (keys or shapes)."""


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


def base_reference(module: nn.Module,
                   path: str) -> Mapping[str, torch.Tensor]:
    """The state ``module`` has right after loading ``path`` through
    :func:`run_base_init`, computed on a CPU copy (``module`` is untouched;
    floating tensors the base does not set come back as NaN).

    A backbone built with ``meta_init`` (1B-7B parameters) is not copied:
    the base init of such a backbone takes each tensor the file sets
    straight from the file into its stored type, so the reference is read
    from the file, one tensor at a time, when asked
    (:class:`~mmseg_vpt.models.pretrained.PretrainedReference`; tensors the
    file does not set are absent rather than NaN, and count as differing
    alike)."""
    if getattr(module, 'meta_init', False):
        return PretrainedReference(module, path)
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


