"""Pooling of backbone outputs for classification heads.

mmseg's backbones return what segmentation heads want: ``VPTSwinTransformer``
(like mmseg's ``SwinTransformer``) a *list* of (B, C, H, W) maps, and
``VPTVisionTransformer`` with ``output_cls_token=True`` one
``[patch_map, cls_token]`` pair per out index. mmpretrain's
``VisionTransformerClsHead`` reads such a pair as it is, but its
``GlobalAveragePooling`` neck accepts only a tuple or a tensor of maps.
:class:`TokenPooling` turns either output into the tuple of (B, C) vectors
that ``LinearClsHead`` expects.

It is registered in mmseg's registry (like the backbones), so an mmpretrain
config names it ``'mmseg.TokenPooling'``; this module needs no mmpretrain.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS

POOLS = ('mean', 'cls')


@MODELS.register_module()
class TokenPooling(nn.Module):
    """Pool each backbone output to a (B, C) vector.

    Args:
        pool (str): ``'mean'`` averages the image tokens of the map (the patch
            map of a ViT, prompts and class token excluded; the last-stage
            map of a Swin). ``'cls'`` takes the class token of a ViT built
            with ``output_cls_token=True``. Default: 'mean'.
    """

    def __init__(self, pool: str = 'mean') -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
        self.pool = pool

    def _pool_one(self, out: Union[torch.Tensor, Sequence[torch.Tensor]],
                  index: int) -> torch.Tensor:
        if isinstance(out, (list, tuple)):
            if len(out) != 2:
                raise TypeError(
                    f'TokenPooling: backbone output {index} is a sequence of '
                    f'{len(out)} tensors; expected a (B, C, H, W) map or a '
                    '[patch_map, cls_token] pair')
            patch_map, cls_token = out
        else:
            patch_map, cls_token = out, None
        if self.pool == 'cls':
            if cls_token is None:
                raise TypeError(
                    "TokenPooling(pool='cls') needs the class token: build "
                    'the ViT backbone with output_cls_token=True (a Swin has '
                    "no class token; use pool='mean')")
            return cls_token
        if patch_map.dim() != 4:
            raise TypeError(
                f'TokenPooling: expected a (B, C, H, W) map, got shape '
                f'{tuple(patch_map.shape)}')
        return patch_map.mean(dim=(2, 3))

    def forward(self, inputs) -> Tuple[torch.Tensor, ...]:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs, )
        return tuple(
            self._pool_one(out, i) for i, out in enumerate(inputs))

    def extra_repr(self) -> str:
        return f'pool={self.pool!r}'
