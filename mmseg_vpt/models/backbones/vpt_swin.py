"""mmseg's SwinTransformer with VPT prompts.

Swin attends inside local windows, so prompts need three Swin-specific rules
(those of the VPT paper's Swin variant):

* window attention: every window of a sample attends jointly over its own
  tokens and the sample's prompts; a prompt's output is the mean of its
  outputs over that sample's windows. The cyclic shift moves image tokens
  only, and the relative position bias and shift mask are zero for prompt
  rows and columns.
* patch merging: prompts are widened by repeating each channel once per
  merged position and go through the pretrained merging norm and reduction.
* outputs: image tokens only.

The functions below take mmseg's own modules (``SwinBlock``,
``ShiftWindowMSA``, ``WindowMSA``, ``PatchMerging``) and reproduce their
computation with prompts added, so the pretrained parameters keep their names
and, with no prompts, the results are bit-identical to mmseg's.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmseg.models.backbones import SwinTransformer
from mmseg.registry import MODELS

from ..prompts import PromptLayers, PromptTuningMixin, splice_prompts

HW = Tuple[int, int]


def window_attention(w_msa, windows: torch.Tensor,
                     prompts: Optional[torch.Tensor],
                     mask: Optional[torch.Tensor]
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``WindowMSA.forward`` with a sample's prompts joined to each window.

    Args:
        w_msa (WindowMSA): mmseg's window attention (its weights are used).
        windows: (B * nW, N, C), sample-major (index b * nW + w), as
            ``ShiftWindowMSA.window_partition`` produces them.
        prompts: (B, P, C) or None.
        mask: (nW, N, N) shift mask or None.

    Returns:
        Window outputs (B * nW, N, C) and prompt outputs (B, P, C) averaged
        over each sample's windows (None without prompts).
    """
    BnW, N, C = windows.shape
    heads = w_msa.num_heads
    qkv = w_msa.qkv(windows).reshape(BnW, N, 3, heads, C // heads)
    P = 0 if prompts is None else prompts.shape[1]
    if P:
        B = prompts.shape[0]
        nW = BnW // B
        # Prompts are the same in every window of a sample: project them once
        # and broadcast, keeping windows sample-major so that no window ever
        # sees another sample's prompts.
        prompt_qkv = w_msa.qkv(prompts).reshape(B, 1, P, 3, heads, C // heads)
        prompt_qkv = prompt_qkv.expand(B, nW, P, 3, heads,
                                       C // heads).reshape(
                                           BnW, P, 3, heads, C // heads)
        qkv = torch.cat([prompt_qkv, qkv], dim=1)
    T = P + N
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)

    q = q * w_msa.scale
    attn = q @ k.transpose(-2, -1)
    Wh, Ww = w_msa.window_size
    bias = w_msa.relative_position_bias_table[
        w_msa.relative_position_index.view(-1)].view(Wh * Ww, Wh * Ww, -1)
    bias = bias.permute(2, 0, 1).contiguous()
    attn = attn + F.pad(bias, (P, 0, P, 0)).unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        mask = F.pad(mask, (P, 0, P, 0))
        attn = attn.view(BnW // nW, nW, heads, T, T) + \
            mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, T, T)
    attn = w_msa.attn_drop(w_msa.softmax(attn))
    out = (attn @ v).transpose(1, 2).reshape(BnW, T, C)

    prompt_out = None
    if P:
        # the projection is linear, so averaging first gives the same mean
        prompt_out = out[:, :P].reshape(B, -1, P, C).mean(dim=1)
        prompt_out = w_msa.proj_drop(w_msa.proj(prompt_out))
        out = out[:, P:]
    out = w_msa.proj_drop(w_msa.proj(out))
    return out, prompt_out


def shift_window_mask(attn_module, H_pad: int, W_pad: int,
                      device: torch.device) -> torch.Tensor:
    """The shifted-window mask of mmseg's ``ShiftWindowMSA`` (nW, N, N):
    -100 between tokens from different regions of the rolled map."""
    ws, shift = attn_module.window_size, attn_module.shift_size
    img_mask = torch.zeros((1, H_pad, W_pad, 1), device=device)
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for cnt, (h, w) in enumerate((h, w) for h in slices for w in slices):
        img_mask[:, h, w, :] = cnt
    mask_windows = attn_module.window_partition(img_mask).view(-1, ws * ws)
    mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def shifted_window_attention(attn_module, x: torch.Tensor, hw_shape: HW,
                             prompts: Optional[torch.Tensor]
                             ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``ShiftWindowMSA.forward`` without its final drop-path, with prompts.

    The cyclic shift and padding apply to the image tokens ``x`` (B, H*W, C)
    only. Returns image outputs (B, H*W, C) and prompt outputs (B, P, C).
    """
    B, L, C = x.shape
    H, W = hw_shape
    ws, shift = attn_module.window_size, attn_module.shift_size
    x = x.view(B, H, W, C)
    pad_r = (ws - W % ws) % ws
    pad_b = (ws - H % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    H_pad, W_pad = x.shape[1], x.shape[2]

    mask = None
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = shift_window_mask(attn_module, H_pad, W_pad, x.device)

    windows = attn_module.window_partition(x).view(-1, ws * ws, C)
    windows, prompts = window_attention(attn_module.w_msa, windows, prompts,
                                        mask)
    x = attn_module.window_reverse(windows.view(-1, ws, ws, C), H_pad, W_pad)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    if pad_r > 0 or pad_b:
        x = x[:, :H, :W, :].contiguous()
    return x.view(B, H * W, C), prompts


def prompted_block(block, x: torch.Tensor, hw_shape: HW,
                   num_prompts: int) -> torch.Tensor:
    """``SwinBlock.forward`` for ``x`` = [prompts, image tokens]."""

    def inner(x):
        identity = x
        x = block.norm1(x)
        prompts = x[:, :num_prompts] if num_prompts else None
        tokens, prompts = shifted_window_attention(block.attn,
                                                   x[:, num_prompts:],
                                                   hw_shape, prompts)
        if prompts is not None:
            tokens = torch.cat([prompts, tokens], dim=1)
        x = block.attn.drop(tokens) + identity
        return block.ffn(block.norm2(x), identity=x)

    if block.with_cp and x.requires_grad:
        return cp.checkpoint(inner, x, use_reentrant=False)
    return inner(x)


def prompted_merge(downsample, x: torch.Tensor, hw_shape: HW,
                   num_prompts: int) -> Tuple[torch.Tensor, HW]:
    """``PatchMerging.forward`` for ``x`` = [prompts, image tokens].

    A prompt is widened to the merged width by repeating each channel once
    per merged position, matching mmseg's ``nn.Unfold`` channel order
    (index ``c * k + p``), then shares the pretrained norm and reduction.
    """
    tokens, out_hw = downsample(x[:, num_prompts:], hw_shape)
    if not num_prompts:
        return tokens, out_hw
    kh, kw = downsample.sampler.kernel_size
    prompts = x[:, :num_prompts].repeat_interleave(kh * kw, dim=-1)
    if downsample.norm is not None:
        prompts = downsample.norm(prompts)
    prompts = downsample.reduction(prompts)
    return torch.cat([prompts, tokens], dim=1), out_hw


@MODELS.register_module()
class VPTSwinTransformer(PromptTuningMixin, SwinTransformer):
    """Swin Transformer with Visual Prompt Tuning (VPT).

    Every argument of mmseg's ``SwinTransformer`` keeps its meaning. Prompts
    are prepended to the image tokens and follow the stage width (C, 2C, 4C,
    8C); layers are counted over the flattened block list
    ``0 .. sum(depths) - 1``. Feature maps hold image tokens only, shaped like
    the parent's. Prompts are stored in ``prompt_embeddings``, a
    ParameterList with one (prompted blocks in stage, prompt_length,
    stage channels) tensor per stage.

    Args:
        prompt_length (int): Prompt tokens per prompted block; 0 turns
            prompts off. Default: 10.
        prompt_layers (str | list[int]): ``'deep'``, ``'shallow'`` or a list
            of block indices, as for ``VPTVisionTransformer``.
            Default: 'deep'.
        prompt_dropout (float): Dropout on prompts each time they are
            inserted. Default: 0.0.
        prompt_init (str): ``'uniform'`` (the paper's rule with the patch
            size and the first stage's width for every stage) or
            ``'normal'``. Default: 'uniform'.
        frozen_exclude (list[str]): Substrings of the names of parameters that
            stay trainable, as for ``VPTVisionTransformer``.
            Default: ``['prompt']``.
        frozen_eval (bool): Keep a (partly) frozen backbone in eval mode while
            training. Default: True.
        **kwargs: Arguments of mmseg's ``SwinTransformer``.
    """

    # converted Swin releases hold only the final norm, not the per-stage
    # output norms (norm0 ..) that mmseg adds for out_indices
    pretrained_optional = ('prompt', r'^norm\d+\.')

    def __init__(self,
                 prompt_length: int = 10,
                 prompt_layers: PromptLayers = 'deep',
                 prompt_dropout: float = 0.0,
                 prompt_init: str = 'uniform',
                 frozen_exclude: Sequence[str] = ('prompt', ),
                 frozen_eval: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        embed_dims = self.num_features[0]
        self.init_prompt_tuning(
            stage_dims=self.num_features,
            stage_depths=[len(stage.blocks) for stage in self.stages],
            prompt_length=prompt_length,
            prompt_layers=prompt_layers,
            prompt_dropout=prompt_dropout,
            prompt_init=prompt_init,
            init_patch_size=self.patch_embed.projection.kernel_size,
            init_dims=embed_dims,
            frozen_exclude=frozen_exclude,
            frozen_eval=frozen_eval)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        B = x.shape[0]

        outs = []
        layer = 0
        num_prompts = 0
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                prompts = self.layer_prompts(layer, B)
                if prompts is not None:
                    x = splice_prompts(x, prompts, 0, num_prompts)
                    num_prompts = prompts.shape[1]
                x = prompted_block(block, x, hw_shape, num_prompts)
                layer += 1
            out, out_hw_shape = x[:, num_prompts:], hw_shape
            if stage.downsample:
                if self.is_prompted(layer):
                    # the next block replaces the prompts: don't merge them
                    x, num_prompts = out, 0
                x, hw_shape = prompted_merge(stage.downsample, x, hw_shape,
                                             num_prompts)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i])
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
