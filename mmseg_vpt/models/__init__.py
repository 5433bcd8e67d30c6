from . import flops  # noqa: F401  (counts fused attention in get_flops)
from .backbones import (VPTConvNeXt, VPTResNet, VPTResNetV1c,
                        VPTSwinTransformer, VPTTimmViT, VPTVisionTransformer)
from .necks import TokenPooling
from .sidetune import SideCNN, SidetuneBackbone

__all__ = [
    'VPTVisionTransformer', 'VPTSwinTransformer', 'VPTTimmViT', 'TokenPooling',
    'VPTResNet', 'VPTResNetV1c', 'VPTConvNeXt',
    'SideCNN', 'SidetuneBackbone'
]
# MLPClsHead (heads.py) lives in mmpretrain's registry and needs mmpretrain:
# the configs that use it import mmseg_vpt.models.heads (custom_imports).
