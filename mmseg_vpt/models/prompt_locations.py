"""Where prompts enter a ViT: the VPT paper's location ablation (its Fig. 5).

* ``'prepend'`` (the paper's method and the default): ``prompt_length``
  learnable tokens in the latent space, between the prefix tokens and the
  patches (:mod:`~mmseg_vpt.models.prompt_flow` splices them).
* ``'add'``: one learnable vector per patch position, added element-wise to
  the patch tokens, so the sequence keeps its length. ``prompt_length`` is
  then the number of patches of the backbone's ``img_size``; another input
  grid gets the prompt grid resized bilinearly, as position embeddings are.
* ``'prepend-pixel'``: the prompts are ``prompt_length`` learnable *image
  patches*, before the embedding: the frozen patch embedding turns each
  into a token, which is prepended (first layer only).
* ``'concat-channel'``: ``prompt_length`` learnable image channels joined
  to the input image (first layer only). The frozen patch embedding has no
  weights for them, so it gets new ones, zero-initialised and trainable;
  since the embedding is a convolution, concatenating channels equals
  adding the convolution of the new channels with the new weights, which
  is how it runs (:class:`ChannelPromptConv`).

Pixel-space prompts (the last two) are initialised like a normalised
image's pixels: U(-1, 1) with ``prompt_init='uniform'``, N(0, 1) with
``'normal'`` (our default; the paper does not say).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

PROMPT_LOCATIONS = ('prepend', 'add', 'prepend-pixel', 'concat-channel')
# locations whose prompts are tokens of the sequence
TOKEN_LOCATIONS = ('prepend', 'prepend-pixel')
# locations whose prompts enter once, with the input image
PIXEL_LOCATIONS = ('prepend-pixel', 'concat-channel')


@torch.no_grad()
def init_pixel_prompts(tensor: torch.Tensor, prompt_init: str) -> None:
    """Pixel-space prompts drawn like normalised image pixels."""
    if prompt_init == 'uniform':
        tensor.uniform_(-1.0, 1.0)
    else:
        tensor.normal_(0.0, 1.0)


def resize_grid(prompts: torch.Tensor, grid: Tuple[int, int],
                new_grid: Tuple[int, int]) -> torch.Tensor:
    """(N, C) vectors on a ``grid`` resized to ``new_grid`` (bilinear)."""
    if tuple(grid) == tuple(new_grid):
        return prompts
    C = prompts.shape[-1]
    image = prompts.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(new_grid), mode='bilinear',
                          align_corners=False)
    return image.flatten(2).transpose(1, 2)[0]


class ChannelPrompt(nn.Module):
    """``channels`` learnable image channels of ``image_size`` and the
    patch-embedding weights for them (zero: the untrained prompt changes
    nothing)."""

    def __init__(self, conv: nn.Conv2d, channels: int,
                 image_size: Tuple[int, int], prompt_init: str) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError('prompt_location=\'concat-channel\' needs a '
                             'patch embedding convolution with groups=1')
        self.prompt_init = prompt_init
        self.image = nn.Parameter(torch.zeros(1, channels, *image_size))
        self.weight = nn.Parameter(
            torch.zeros(conv.out_channels, channels, *conv.kernel_size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init_pixel_prompts(self.image, self.prompt_init)
        nn.init.zeros_(self.weight)

    def forward(self, conv: nn.Conv2d, size: Tuple[int, int]) -> torch.Tensor:
        """The new channels' share of ``conv``'s output for an input of
        ``size``: (1, out_channels, h, w), to broadcast over the batch."""
        image = self.image
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=tuple(size), mode='bilinear',
                                  align_corners=False)
        return F.conv2d(image, self.weight, None, conv.stride, conv.padding,
                        conv.dilation)


class ChannelPromptConv(nn.Conv2d):
    """A patch-embedding convolution whose input has learnable channels
    joined to it (``prompt_channels``, a :class:`ChannelPrompt`); its own
    weights keep their names and stay frozen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.prompt_channels(self, x.shape[-2:])


def attach_channel_prompt(conv: nn.Conv2d, channels: int,
                          image_size: Tuple[int, int],
                          prompt_init: str) -> ChannelPrompt:
    """Switch ``conv`` (a patch embedding) to a class that adds
    ``channels`` learnable input channels; returns them."""
    if type(conv) is not nn.Conv2d:
        raise TypeError(f"prompt_location='concat-channel' needs the patch "
                        f'embedding to be an nn.Conv2d, got {type(conv)}')
    prompt = ChannelPrompt(conv, channels, image_size, prompt_init).to(
        device=conv.weight.device, dtype=conv.weight.dtype)
    conv.__class__ = ChannelPromptConv
    conv.prompt_channels = prompt
    return prompt
