"""mmseg's ResNet (and ResNetV1c, the stem of mmseg's segmentation
configs) with padding prompts: VPT for ConvNets
(:mod:`~mmseg_vpt.models.pixel_prompts`)."""
from typing import Optional, Sequence, Tuple, Union

from mmseg.models.backbones import ResNet
from mmseg.registry import MODELS

from ..pixel_prompts import PaddingPromptMixin
from ..prompts import frozen_precision


@MODELS.register_module()
class VPTResNet(PaddingPromptMixin, ResNet):
    """ResNet whose input image is framed by a learnable border of
    ``prompt_pad`` pixels; the ResNet itself is frozen.

    Every argument of mmseg's ``ResNet`` keeps its meaning; parameter names
    and checkpoints are the parent's plus ``pad_prompt.{top,bottom,left,
    right}``, so torchvision / mmcv ResNet files load as they are
    (``init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'
    )``; their ``fc`` classifier is dropped).

    Args:
        prompt_pad (int): Border width p in pixels; the backbone sees
            (H + 2p) x (W + 2p). At most the image's shorter side.
            Default: 32 (the total stride of the default 4 stages, so the
            cropped maps cover the image exactly).
        img_size (int | tuple[int, int]): Un-padded input size the border
            is stored for; other sizes resize it (bilinear, along the
            strips' length). Default: 512.
        prompt_init (str): ``'zero'`` (equals zero-padding the normalised
            image), ``'uniform'`` or ``'normal'``. Default: 'zero'.
        crop_outputs (bool): Crop each output map to the part that covers
            the un-padded image (segmentation). ``False`` keeps the whole
            map (pooled classification). Default: True.
        frozen_exclude (list[str]): Substrings of the names of parameters
            that stay trainable, as for the other VPT backbones:
            ``['prompt']`` trains the border only, ``[]`` nothing (head-only)
            and ``['all']`` everything. Default: ``['prompt']``.
        frozen_eval (bool): Keep a (partly) frozen ResNet in eval mode while
            training, so its BatchNorm statistics stay the pretrained ones.
            Default: True.
        frozen_dtype (str, optional): ``'bf16'`` or ``'fp16'``, as for
            ``VPTVisionTransformer``. Default: None (float32).
        **kwargs: Arguments of mmseg's ``ResNet``.
    """

    classifier_keys = ('fc.', )

    def __init__(self,
                 prompt_pad: int = 32,
                 img_size: Union[int, Tuple[int, int]] = 512,
                 prompt_init: str = 'zero',
                 crop_outputs: bool = True,
                 frozen_exclude: Sequence[str] = ('prompt', ),
                 frozen_eval: bool = True,
                 frozen_dtype: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_padding_prompts(
            kwargs.get('in_channels', 3), prompt_pad, img_size, prompt_init,
            crop_outputs, frozen_exclude, frozen_eval,
            frozen_dtype)

    def layer_modules(self):
        return [getattr(self, name) for name in self.res_layers]

    @frozen_precision
    def forward(self, x):
        return self.pad_and_run(super().forward, x)


@MODELS.register_module()
class VPTResNetV1c(VPTResNet):
    """:class:`VPTResNet` with mmseg's ResNetV1c stem (three 3x3 convs), as
    mmseg's segmentation configs and ``open-mmlab://resnet50_v1c`` use."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=False, **kwargs)
