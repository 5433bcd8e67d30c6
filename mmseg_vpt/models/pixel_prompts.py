"""Padding prompts: VPT for ConvNets (the paper's ConvNeXt-B and ResNet-50
experiments).

A ConvNet has no token sequence to prepend prompts to, so the prompts are
learnable pixels *around* the image: an input of H x W becomes
(H + 2p) x (W + 2p), and the border of width ``p = prompt_pad`` is the
trainable part (:class:`PaddingPrompter`). The frozen ConvNet then sees the
image framed by the prompts.

Layout: four strips per input channel, stored for the configured image size
``img_size`` (un-padded H x W): ``top`` and ``bottom`` of shape
(1, C, p, W + 2p) (they own the corners), ``left`` and ``right`` of shape
(1, C, H, p). An input of another size gets the strips resized along their
length only (bilinear, ``align_corners=False``), to (p, w + 2p) and
(h, p): the border keeps its width and no pixel of the image is resampled.
At ``img_size`` the stored pixels are used as they are.

Initialisation (``prompt_init``): ``'zero'`` (our default; the untrained
border equals zero-padding the normalised image, i.e. a frame of the
dataset's mean colour, so the prompted model starts as the frozen ConvNet on
a zero-padded image, bit for bit), or ``'uniform'`` / ``'normal'``: random
pixels drawn like a normalised image's (U(-1, 1) / N(0, 1), as the pixel
locations of :mod:`~mmseg_vpt.models.prompt_locations` draw them).

Segmentation maps are cropped back to the image (:func:`crop_to_image`).
"""
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .convert import ConversionInfo
from .prompt_locations import init_pixel_prompts
from .prompts import PromptTuningMixin

PAD_INITS = ('zero', 'uniform', 'normal')


def _pair(size: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0
            for s in pair):
        raise ValueError(f'{name} must be a positive int or a pair (H, W) '
                         f'of them, got {size!r}')
    return pair


def check_prompt_pad(prompt_pad: int, img_size: Tuple[int, int]) -> int:
    """``prompt_pad`` must be a positive int no larger than the image's
    shorter side: a wider border would hold more prompt than image."""
    if not isinstance(prompt_pad, int) or isinstance(prompt_pad, bool) \
            or prompt_pad < 1:
        raise ValueError(f'prompt_pad must be a positive int (border width '
                         f'in pixels), got {prompt_pad!r}')
    if prompt_pad > min(img_size):
        raise ValueError(
            f'prompt_pad={prompt_pad} is larger than the image: it may be at '
            f'most the shorter side of img_size={tuple(img_size)} '
            f'({min(img_size)})')
    return prompt_pad


class PaddingPrompter(nn.Module):
    """A learnable border of ``prompt_pad`` pixels around the input image.

    Args:
        in_channels (int): Image channels.
        prompt_pad (int): Border width p in pixels, 1 <= p <= min(H, W).
        img_size (int | tuple[int, int]): The un-padded input size (H, W)
            the border is stored for; other sizes resize the strips along
            their length.
        prompt_init (str): ``'zero'``, ``'uniform'`` or ``'normal'`` (see
            the module docstring). Default: 'zero'.
    """

    def __init__(self, in_channels: int, prompt_pad: int,
                 img_size: Union[int, Tuple[int, int]],
                 prompt_init: str = 'zero') -> None:
        super().__init__()
        H, W = self.img_size = _pair(img_size, 'img_size')
        self.pad = check_prompt_pad(prompt_pad, self.img_size)
        if prompt_init not in PAD_INITS:
            raise ValueError(f'prompt_init must be one of {PAD_INITS} for '
                             f'padding prompts, got {prompt_init!r}')
        self.prompt_init = prompt_init
        p, C = self.pad, in_channels
        self.top = nn.Parameter(torch.zeros(1, C, p, W + 2 * p))
        self.bottom = nn.Parameter(torch.zeros(1, C, p, W + 2 * p))
        self.left = nn.Parameter(torch.zeros(1, C, H, p))
        self.right = nn.Parameter(torch.zeros(1, C, H, p))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for strip in (self.top, self.bottom, self.left, self.right):
            if self.prompt_init == 'zero':
                strip.zero_()
            else:
                init_pixel_prompts(strip, self.prompt_init)

    def strips(self, h: int, w: int) -> Tuple[torch.Tensor, ...]:
        """top, bottom, left, right for an (h, w) image."""
        p = self.pad
        if (h, w) == self.img_size:
            return self.top, self.bottom, self.left, self.right

        def resize(strip, size):
            if tuple(strip.shape[-2:]) == size:
                return strip
            return F.interpolate(strip, size=size, mode='bilinear',
                                 align_corners=False)

        return (resize(self.top, (p, w + 2 * p)),
                resize(self.bottom, (p, w + 2 * p)),
                resize(self.left, (h, p)), resize(self.right, (h, p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h + 2p, w + 2p)."""
        B, _, h, w = x.shape
        if min(h, w) < self.pad:
            raise ValueError(
                f'prompt_pad={self.pad} is larger than the input image '
                f'({h}x{w}): the border may be at most its shorter side')
        top, bottom, left, right = (
            s.to(x.dtype).expand(B, -1, -1, -1) for s in self.strips(h, w))
        middle = torch.cat([left, x, right], dim=3)
        return torch.cat([top, middle, bottom], dim=2)

    def extra_repr(self) -> str:
        return (f'prompt_pad={self.pad}, img_size={self.img_size}, '
                f'prompt_init={self.prompt_init!r}')


def crop_offset(pad: int, out_len: int, padded_len: int) -> int:
    """Rows (or columns) of an output map of length ``out_len`` that the
    border of ``pad`` pixels on one side of an input of ``padded_len``
    occupies: its share ``pad * out_len / padded_len`` rounded half up, at
    most ``(out_len - 1) // 2`` so that one row is always left."""
    share = (2 * pad * out_len + padded_len) // (2 * padded_len)
    return min(share, (out_len - 1) // 2)


def crop_to_image(feature: torch.Tensor, pad: int,
                  padded_size: Tuple[int, int]) -> torch.Tensor:
    """The part of a (B, C, h, w) map of a padded input of ``padded_size``
    that covers the un-padded image (:func:`crop_offset` on each side).

    Exact when ``pad`` is a multiple of the map's stride (and the network
    keeps the grid aligned, as ResNet and ConvNeXt do): a 512 px image with
    ``prompt_pad=32`` gives ResNet/ConvNeXt maps of 128, 64, 32 and 16, as
    without prompts. Otherwise the crop is the nearest the stride allows.
    """
    h, w = feature.shape[-2:]
    top = crop_offset(pad, h, padded_size[0])
    left = crop_offset(pad, w, padded_size[1])
    return feature[..., top:h - top, left:w - left]


class PaddingPromptMixin(PromptTuningMixin):
    """Padding prompts on a ConvNet backbone, with the freeze policy,
    eval-mode freezing, all-or-nothing ``Pretrained`` loading and tuned-only
    task files of :class:`~mmseg_vpt.models.prompts.PromptTuningMixin`.

    The host (``VPTResNet``, ``VPTConvNeXt``) calls
    :meth:`init_padding_prompts` once its layers exist and keeps its own
    ``forward``: the input is padded before it and, with ``crop_outputs``,
    each output map is cropped back to the image after it. The shared
    mechanism runs with ``prompt_length=0`` (no prompt tokens); the border
    is ``pad_prompt`` (:class:`PaddingPrompter`), whose parameter names
    (``pad_prompt.top`` ...) contain ``'prompt'``, so ``frozen_exclude``,
    the base-file rule (prompts optional) and the ``'prompt'`` lr
    multiplier of the configs apply to it as to prompt tokens.
    """

    def init_padding_prompts(self, in_channels: int, prompt_pad: int,
                             img_size: Union[int, Tuple[int, int]],
                             prompt_init: str, crop_outputs: bool,
                             frozen_exclude: Sequence[str],
                             frozen_eval: bool,
                             frozen_dtype: Optional[str] = None) -> None:
        if not isinstance(crop_outputs, bool):
            raise ValueError(f'crop_outputs must be True or False, got '
                             f'{crop_outputs!r}')
        self.pad_prompt = PaddingPrompter(in_channels, prompt_pad, img_size,
                                          prompt_init)
        self.crop_outputs = crop_outputs
        # no prompt tokens: the arguments below only describe a layout the
        # mechanism needs and never uses (one 'layer' of the image width)
        self.init_prompt_tuning(
            stage_dims=[in_channels], stage_depths=[1], prompt_length=0,
            prompt_layers='deep', prompt_dropout=0.0, prompt_init='uniform',
            init_patch_size=1, init_dims=in_channels,
            frozen_exclude=frozen_exclude, frozen_eval=frozen_eval,
            frozen_dtype=frozen_dtype)
        self.prompt_init = prompt_init  # the border's, for the task files
        self.prompt_pad = self.pad_prompt.pad
        if not all(p.requires_grad for p in self.pad_prompt.parameters()):
            warnings.warn(
                f'{type(self).__name__}: frozen_exclude='
                f'{self.frozen_exclude} freezes the padding prompts, so a '
                f'fixed {prompt_init!r} border enters the backbone. Add '
                "'prompt' to frozen_exclude.")

    def reset_prompts(self) -> None:
        """Also the border (after the parent's random init, as tokens)."""
        super().reset_prompts()
        if hasattr(self, 'pad_prompt'):
            self.pad_prompt.reset_parameters()

    def mixed_prompts(self, prompt_sets, sample_sets):
        raise ValueError(
            f'{type(self).__name__} has padding prompts; mixed_prompts '
            '(one backbone serving many tasks) runs prepended prompt '
            'tokens only')

    def pad_and_run(self, forward, inputs: torch.Tensor) -> tuple:
        """``forward`` (the parent's) on the padded ``inputs``; its maps
        cropped back to the image with ``crop_outputs``."""
        x = self.pad_prompt(inputs)
        outs = forward(x)
        if not self.crop_outputs:
            return outs
        return tuple(crop_to_image(o, self.pad_prompt.pad, x.shape[-2:])
                     for o in outs)

    # -- weights: ConvNet releases are already in the backbone's layout ----
    # classifier keys a weights file may hold besides the backbone's
    classifier_keys: Tuple[str, ...] = ()

    def pretrained_layout(self, state_dict, info: ConversionInfo):
        """The file's tensors without its classifier (``fc.*`` of
        torchvision / mmcv ResNets, ``head.*`` of an unwrapped mmpretrain
        classifier); everything else must fit the backbone as it is."""
        keep = {k: v for k, v in state_dict.items()
                if not k.startswith(self.classifier_keys)}
        dropped = [k for k in state_dict if k not in keep]
        if dropped:
            info.dropped.extend(dropped)
        return keep, f'{type(self).__name__[3:]} (as stored)'
