"""mmpretrain's ConvNeXt (``'mmpretrain.ConvNeXt'`` in mmseg's UperNet
configs) with padding prompts: VPT for ConvNets
(:mod:`~mmseg_vpt.models.pixel_prompts`). Needs mmpretrain (setup.py extra
``cls``)."""
from typing import Optional, Sequence, Tuple, Union

from mmpretrain.models.backbones import ConvNeXt
from mmseg.registry import MODELS

from ..pixel_prompts import PaddingPromptMixin
from ..prompts import frozen_precision


@MODELS.register_module()
class VPTConvNeXt(PaddingPromptMixin, ConvNeXt):
    """ConvNeXt whose input image is framed by a learnable border of
    ``prompt_pad`` pixels; the ConvNeXt itself is frozen.

    Every argument of mmpretrain's ``ConvNeXt`` keeps its meaning; parameter
    names are the parent's plus ``pad_prompt.*``, so mmpretrain ConvNeXt
    files (classifier checkpoints with ``backbone.`` keys included) load as
    they are. mmpretrain's output norms ``norm{i}`` of out indices other
    than the last are not in classification releases: they keep their
    identity initialisation (frozen, as Swin's ``norm0``-``norm2``).

    Args:
        prompt_pad, img_size, prompt_init, frozen_exclude, frozen_eval:
            As for :class:`~mmseg_vpt.models.backbones.VPTResNet`
            (``frozen_eval`` turns ConvNeXt's drop-path off).
        crop_outputs (bool): Crop each output map to the image
            (segmentation). Must be False with
            ``gap_before_final_norm=True`` (pooled classification outputs,
            mmpretrain's default). Default: True.
        frozen_dtype (str, optional): ``'bf16'`` or ``'fp16'``, as for
            ``VPTVisionTransformer``. Default: None (float32).
        **kwargs: Arguments of mmpretrain's ``ConvNeXt``.
    """

    classifier_keys = ('head.', )
    pretrained_optional = ('prompt', r'^norm\d+\.')

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
        if crop_outputs and self.gap_before_final_norm:
            raise ValueError(
                'crop_outputs=True crops feature maps, but '
                'gap_before_final_norm=True pools them into vectors: use '
                'crop_outputs=False for classification, or '
                'gap_before_final_norm=False for segmentation')
        self.init_padding_prompts(
            self.downsample_layers[0][0].in_channels, prompt_pad, img_size,
            prompt_init, crop_outputs, frozen_exclude, frozen_eval,
            frozen_dtype)

    def layer_modules(self):
        return list(self.stages)

    @frozen_precision
    def forward(self, x):
        return self.pad_and_run(super().forward, x)
