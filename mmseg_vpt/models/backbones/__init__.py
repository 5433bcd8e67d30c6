from .vpt_resnet import VPTResNet, VPTResNetV1c
from .vpt_swin import VPTSwinTransformer
from .vpt_timm_vit import VPTTimmViT
from .vpt_vit import VPTVisionTransformer

try:
    from .vpt_convnext import VPTConvNeXt
except ImportError as _err:  # mmpretrain (setup.py extra 'cls') missing
    from mmseg.registry import MODELS

    def VPTConvNeXt(*args, _err=_err, **kwargs):  # noqa: N802
        raise ImportError('VPTConvNeXt needs mmpretrain: pip install '
                          f'onedl-mmpretrain ({_err})')

    MODELS.register_module('VPTConvNeXt', module=VPTConvNeXt)

__all__ = [
    'VPTVisionTransformer', 'VPTSwinTransformer', 'VPTTimmViT', 'VPTResNet',
    'VPTResNetV1c', 'VPTConvNeXt'
]
