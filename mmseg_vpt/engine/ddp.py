"""DDP for models whose frozen weights are not there yet when the runner
wraps them.

mmengine wraps the model before ``init_weights``; DDP then broadcasts every
parameter and buffer from rank 0. A ``meta_init`` backbone
(:class:`~mmseg_vpt.models.backbones.VPTTimmViT`) holds placeholders at that
point, one stored element viewed by a whole tensor, which a broadcast cannot
write ("more than one element of the written-to tensor refers to a single
memory location"); and for a 7B backbone the broadcast would send 13 GB
that every rank loads from the same base file next anyway.
:class:`FrozenBackboneDDP` leaves the frozen parameters and the backbone's
buffers out of DDP. Frozen parameters take no part in gradient reduction, so
nothing else changes.
"""
from typing import List

import torch.nn as nn
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import BASE_MODULE

DDP_TYPES = ('MMDistributedDataParallel', 'FrozenBackboneDDP')


def frozen_tensor_names(model: nn.Module,
                        module: str = BASE_MODULE) -> List[str]:
    """The names of ``model``'s frozen parameters and of the buffers of
    ``model.<module>``, as DDP's ignore list takes them."""
    names = [n for n, p in model.named_parameters() if not p.requires_grad]
    sub = getattr(model, module, None)
    if sub is not None:
        names += [f'{module}.{n}' for n, _ in sub.named_buffers()]
    return names


@MODEL_WRAPPERS.register_module()
class FrozenBackboneDDP(MMDistributedDataParallel):
    """mmengine's DDP wrapper without the frozen parameters and the
    backbone's buffers (see the module docstring); every other argument is
    ``MMDistributedDataParallel``'s."""

    def __init__(self, module: nn.Module, **kwargs) -> None:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, frozen_tensor_names(module))
        super().__init__(module=module, **kwargs)


def use_frozen_backbone_ddp(cfg: Config) -> bool:
    """Wrap a distributed run of a ``meta_init`` backbone with
    :class:`FrozenBackboneDDP` (unless the config names another wrapper
    than mmengine's DDP). Returns whether it did."""
    backbone = cfg.get('model', {}).get('backbone') or {}
    if cfg.get('launcher', 'none') == 'none' or not backbone.get(
            'meta_init', False):
        return False
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', DDP_TYPES[0]) not in DDP_TYPES:
        return False
    wrapper['type'] = 'FrozenBackboneDDP'
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True
