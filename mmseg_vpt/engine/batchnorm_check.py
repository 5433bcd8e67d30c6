"""Name the BatchNorm layer that cannot train at the batch size in use.

BatchNorm in training normalises each channel over batch x height x width
values and cannot do so with one. With one image per GPU this happens in
heads that pool to 1x1, such as the pyramid pooling (``psp_modules``) of
UperNet and PSPNet; torch's own error ("Expected more than 1 value per
channel when training") names neither the layer nor a fix.
"""
from functools import partial
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.params import unwrap_model


def _normalises_over_own_batch(module: _BatchNorm) -> bool:
    """Whether ``module`` uses the statistics of its own input, as torch
    decides it (a SyncBN across several processes pools their values)."""
    batch_stats = module.training or (module.running_mean is None
                                      and module.running_var is None)
    synced = isinstance(module, nn.SyncBatchNorm) and get_world_size() > 1
    return batch_stats and not synced


def one_value_per_channel_error(name: str, module: _BatchNorm,
                                shape: torch.Size,
                                batch_size: Optional[int] = None) -> str:
    """The explanation raised for ``module`` (at ``name``) getting
    ``shape``, one value per channel."""
    message = (f'{name} ({type(module).__name__}) got an input of shape '
               f'{tuple(shape)} in training: one value per channel, but '
               'BatchNorm normalises each channel over the batch x height x '
               'width values and needs more than one.')
    if len(shape) > 2 and all(s == 1 for s in shape[2:]):
        message += (' Its input is pooled to 1x1 (as in the pyramid pooling '
                    "'psp_modules' of UperNet and PSPNet), so it needs at "
                    'least 2 images per GPU')
        if batch_size is not None:
            message += f'; train_dataloader.batch_size is {batch_size}'
        message += '.'
    return (message + ' Fix: set train_dataloader.batch_size to 2 or more '
            '(images per GPU); or train on several GPUs with '
            "norm_cfg=dict(type='SyncBN', requires_grad=True) in the heads, "
            'which pools the values of all GPUs; or give the heads a norm '
            "that does not depend on the batch, e.g. norm_cfg=dict(type='GN', "
            'num_groups=32, requires_grad=True).')


def _check_input(module: _BatchNorm, args: tuple, name: str,
                 batch_size: Optional[int]) -> None:
    shape = args[0].shape
    values = shape[0]
    for s in shape[2:]:
        values *= s
    if values == 1 and _normalises_over_own_batch(module):
        raise ValueError(
            one_value_per_channel_error(name, module, shape, batch_size))


@HOOKS.register_module()
class BatchNormInputCheckHook(Hook):
    """Stop training with the layer named, the reason and the fixes when a
    BatchNorm layer gets one value per channel (see the module docstring).

    A forward pre-hook on every BatchNorm layer checks the input's shape
    during training (one product per call); the hooks are removed after
    training.
    """

    def __init__(self) -> None:
        self._handles: List = []

    def before_train(self, runner) -> None:
        batch_size = getattr(runner.train_dataloader, 'batch_size', None)
        for name, module in unwrap_model(runner.model).named_modules():
            if isinstance(module, _BatchNorm):
                self._handles.append(module.register_forward_pre_hook(
                    partial(_check_input, name=name, batch_size=batch_size)))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
