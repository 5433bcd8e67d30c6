from . import flops  # noqa: F401  (counts fused attention in get_flops)
from .backbones import VPTSwinTransformer, VPTTimmViT, VPTVisionTransformer
from .necks import TokenPooling

__all__ = [
    'VPTVisionTransformer', 'VPTSwinTransformer', 'VPTTimmViT', 'TokenPooling'
]
