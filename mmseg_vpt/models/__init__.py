from .backbones import VPTSwinTransformer, VPTVisionTransformer

__all__ = ['VPTVisionTransformer', 'VPTSwinTransformer']
