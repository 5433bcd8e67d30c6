from .vpt_swin import VPTSwinTransformer
from .vpt_timm_vit import VPTTimmViT
from .vpt_vit import VPTVisionTransformer

__all__ = ['VPTVisionTransformer', 'VPTSwinTransformer', 'VPTTimmViT']
