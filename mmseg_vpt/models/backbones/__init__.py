from .vpt_swin import VPTSwinTransformer
from .vpt_vit import VPTVisionTransformer

__all__ = ['VPTVisionTransformer', 'VPTSwinTransformer']
