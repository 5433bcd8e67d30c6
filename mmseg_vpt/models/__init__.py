from .backbones import VPTSwinTransformer, VPTVisionTransformer
from .necks import TokenPooling

__all__ = ['VPTVisionTransformer', 'VPTSwinTransformer', 'TokenPooling']
