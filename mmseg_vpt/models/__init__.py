from . import flops  # noqa: F401  (counts fused attention in get_flops)
from .backbones import VPTSwinTransformer, VPTVisionTransformer
from .necks import TokenPooling

__all__ = ['VPTVisionTransformer', 'VPTSwinTransformer', 'TokenPooling']
