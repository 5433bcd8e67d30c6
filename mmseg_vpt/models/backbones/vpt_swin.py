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
import functools
from typing import List, NamedTuple, Optional, Sequence, Tuple

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
    P = 0 if prompts is None else prompts.shape[1]
    q, k, v = _window_qkv(w_msa, windows, prompts)
    out = _attend(w_msa, q, k, v, mask)
    out = out.transpose(1, 2).reshape(BnW, P + N, C)

    prompt_out = None
    if P:
        # the projection is linear, so averaging first gives the same mean
        prompt_out = out[:, :P].reshape(prompts.shape[0], -1, P, C).mean(1)
        prompt_out = w_msa.proj_drop(w_msa.proj(prompt_out))
        out = out[:, P:]
    out = w_msa.proj_drop(w_msa.proj(out))
    return out, prompt_out


def _window_qkv(w_msa, windows: torch.Tensor,
                prompts: Optional[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """q, k, v of [prompts, window tokens], each (B * nW, heads, P + N, d).
    """
    BnW, N, C = windows.shape
    heads = w_msa.num_heads
    qkv = w_msa.qkv(windows).reshape(BnW, N, 3, heads, C // heads)
    if prompts is not None:
        B, P = prompts.shape[:2]
        # Prompts are the same in every window of a sample: project them once
        # and broadcast, keeping windows sample-major so that no window ever
        # sees another sample's prompts.
        prompt_qkv = w_msa.qkv(prompts).reshape(B, 1, P, 3, heads, C // heads)
        prompt_qkv = prompt_qkv.expand(B, BnW // B, P, 3, heads,
                                       C // heads).reshape(
                                           BnW, P, 3, heads, C // heads)
        qkv = torch.cat([prompt_qkv, qkv], dim=1)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def _rel_pos_bias(w_msa) -> torch.Tensor:
    """mmseg's relative position bias of a ``WindowMSA``, (heads, N, N)."""
    Wh, Ww = w_msa.window_size
    bias = w_msa.relative_position_bias_table[
        w_msa.relative_position_index.view(-1)].view(Wh * Ww, Wh * Ww, -1)
    return bias.permute(2, 0, 1)


def _attend(w_msa, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Windowed attention with mmseg's relative position bias and shift mask
    (both zero for prompt rows and columns). q, k, v: (B * nW, heads, T, d)
    with the P = T - N prompts first; mask: (nW, N, N) or None. Returns
    (B * nW, heads, T, d)."""
    BnW, heads, T, d = q.shape
    bias = _rel_pos_bias(w_msa)
    P = T - bias.shape[-1]
    bias = F.pad(bias, (P, 0, P, 0))
    if mask is not None:
        mask = F.pad(mask, (P, 0, P, 0))
    if getattr(w_msa, 'fused_attn', False):
        return _fused_attend(w_msa, q, k, v, bias, mask)
    # the plain path: mmseg's WindowMSA, op for op
    q = q * w_msa.scale
    attn = q @ k.transpose(-2, -1)
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(BnW // nW, nW, heads, T, T) + \
            mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, T, T)
    attn = w_msa.attn_drop(w_msa.softmax(attn))
    return attn @ v


def _fused_attend(w_msa, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  bias: torch.Tensor,
                  mask: Optional[torch.Tensor]) -> torch.Tensor:
    """softmax(q k^T * scale + bias [+ shift mask]) v through
    ``F.scaled_dot_product_attention``; q: (B * nW, heads, L, d), k, v:
    (B * nW, heads, S, d), bias: (heads, L, S), mask: (nW, L, S) or None.

    Fused kernels take a 4-D additive mask that broadcasts over the batch.
    The bias is the same in every window, so unshifted windows pass it as
    (1, heads, L, S). The shift mask differs per window, so shifted windows
    fold windows into the head dimension, (B, nW * heads, L, d), and pass
    (1, nW * heads, L, S): batch-independent, never (B * nW, ...).
    """
    BnW, heads, L, d = q.shape
    S = k.shape[2]
    drop = w_msa.attn_drop.p if w_msa.attn_drop.training else 0.0
    if mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.unsqueeze(0), dropout_p=drop,
            scale=w_msa.scale)
    nW = mask.shape[0]
    B = BnW // nW
    attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(
        1, nW * heads, L, S)
    q = q.reshape(B, nW * heads, L, d)
    k, v = (t.reshape(B, nW * heads, S, d) for t in (k, v))
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=drop, scale=w_msa.scale)
    return out.view(BnW, heads, L, d)


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached: must also serve autograd later
def shift_window_mask(ws: int, shift: int, H_pad: int, W_pad: int,
                      device: torch.device) -> torch.Tensor:
    """The shifted-window mask of mmseg's ``ShiftWindowMSA`` (nW, N, N):
    -100 between tokens from different regions of the rolled map. Cached:
    callers must not modify it in place."""
    img_mask = torch.zeros((H_pad, W_pad), device=device)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for cnt, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
        img_mask[h, w] = cnt
    # mmseg's window_partition
    mask_windows = img_mask.view(H_pad // ws, ws, W_pad // ws, ws).permute(
        0, 2, 1, 3).reshape(-1, ws * ws)
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
        mask = shift_window_mask(ws, shift, H_pad, W_pad, x.device)

    windows = attn_module.window_partition(x).view(-1, ws * ws, C)
    windows, prompts = window_attention(attn_module.w_msa, windows, prompts,
                                        mask)
    x = attn_module.window_reverse(windows.view(-1, ws, ws, C), H_pad, W_pad)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    if pad_r > 0 or pad_b:
        x = x[:, :H, :W, :].contiguous()
    return x.view(B, H * W, C), prompts


# Fused CPU attention kernels are much slower when the key count is not a
# multiple of 16 (measured: 144 + 10 prompt keys take 1.4x the time of 160);
# the fast path pads prompted windows with masked zero keys up to that.
KEY_ALIGN = 16


class _WindowMaps(NamedTuple):
    gather: torch.Tensor  # input sequence row of each window row
    pad_rows: Optional[torch.Tensor]  # window rows that are padding
    scatter: torch.Tensor  # window row of each output sequence row
    mask: Optional[torch.Tensor]  # shift mask (nW, N, N)


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached: must also serve autograd later
def _window_maps(B: int, H: int, W: int, P_in: int, P_out: int, ws: int,
                 shift: int, device: torch.device) -> _WindowMaps:
    """Row indices between token sequences and mmseg's windows (padded,
    cyclically shifted, sample-major), all flattened to rows of C channels:
    ``gather`` picks window rows from B sequences [P_in prompts, H*W
    tokens], ``scatter`` picks the rows of B sequences [P_out prompts, H*W
    tokens] from the window rows (prompt rows point at row 0: the caller
    overwrites them).

    Built by running mmseg's pad / roll / partition on row numbers, so one
    ``index_select`` does what they do with three copies.
    """
    tokens = torch.arange(H * W, device=device)
    batch = torch.arange(B, device=device).view(B, 1)
    rows = (batch * (P_in + H * W) + P_in + tokens).view(B, H, W)
    rows = F.pad(rows, (0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws),
                 value=-1)
    H_pad, W_pad = rows.shape[1:]
    if shift > 0:
        rows = torch.roll(rows, shifts=(-shift, -shift), dims=(1, 2))
    # mmseg's window_partition, on (B, H_pad, W_pad) row numbers
    win = rows.view(B, H_pad // ws, ws, W_pad // ws, ws).permute(
        0, 1, 3, 2, 4).reshape(-1)
    valid = win >= 0
    # window row of every token, in token order
    token_rows = torch.empty(B * H * W, dtype=torch.long, device=device)
    token_rows[(win[valid] // (P_in + H * W)) * (H * W) +
               win[valid] % (P_in + H * W) - P_in] = torch.arange(
                   win.numel(), device=device)[valid]
    scatter = F.pad(token_rows.view(B, H * W), (P_out, 0)).view(-1)
    pad_rows = None if bool(valid.all()) else (~valid).nonzero().view(-1)
    mask = shift_window_mask(ws, shift, H_pad, W_pad,
                             device) if shift > 0 else None
    return _WindowMaps(win.clamp(min=0), pad_rows, scatter, mask)


def _fast_attend(w_msa, windows: torch.Tensor,
                 prompts: Optional[torch.Tensor], prompt_queries: bool,
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attention of window tokens (B * nW, N, C), and of the prompts if
    ``prompt_queries``, over [prompts, window tokens], through
    ``_fused_attend``. Returns (B * nW, heads, [P +] N, d).

    Queries and keys/values are projected separately (the two row blocks of
    mmseg's ``qkv`` weight), so that what attention keeps for backward does
    not hold the whole qkv output alive. Only keys and values of the prompts
    are joined to each window, and the keys are padded to a multiple of
    ``KEY_ALIGN`` with zero keys masked to -inf.
    """
    BnW, N, C = windows.shape
    heads = w_msa.num_heads
    d = C // heads
    weight, bias = w_msa.qkv.weight, w_msa.qkv.bias
    q = F.linear(windows, weight[:C], None if bias is None else bias[:C])
    kv = F.linear(windows, weight[C:], None if bias is None else bias[C:])
    q, kv = q.view(BnW, N, heads, d), kv.view(BnW, N, 2, heads, d)
    P = Pq = A = 0
    if prompts is not None:
        B, P = prompts.shape[:2]
        # one projection per sample (a contiguous 2-D input: a 3-D strided
        # one makes F.linear run one small GEMM per row)
        prompt_qkv = w_msa.qkv(prompts.reshape(B * P, C)).view(
            B, 1, P, 3, heads, d).expand(B, BnW // B, P, 3, heads,
                                         d).reshape(BnW, P, 3, heads, d)
        A = -(P + N) % KEY_ALIGN
        pad = [kv.new_zeros(()).expand(BnW, A, 2, heads, d)] if A else []
        kv = torch.cat(pad + [prompt_qkv[:, :, 1:], kv], dim=1)
        if prompt_queries:
            Pq = P
            q = torch.cat([prompt_qkv[:, :, 0], q], dim=1)
    bias = F.pad(_rel_pos_bias(w_msa), (A + P, 0, Pq, 0))
    if A:
        bias[..., :A] = float('-inf')
    if mask is not None:
        mask = F.pad(mask, (A + P, 0, Pq, 0))
    q, k, v = q.transpose(1, 2), kv[:, :, 0].transpose(1, 2), \
        kv[:, :, 1].transpose(1, 2)
    return _fused_attend(w_msa, q, k, v, bias, mask)


def fast_window_block_attention(attn_module, x: torch.Tensor, hw_shape: HW,
                                num_prompts: int,
                                prompt_outputs: bool = True) -> torch.Tensor:
    """``shifted_window_attention`` on the normalised sequence ``x`` =
    [prompts, image tokens] (B, P + H*W, C), returning that layout, or
    image tokens only (B, H*W, C) if not ``prompt_outputs`` (VPT-deep
    replaces them in the next block anyway: prompts then only serve as keys
    and values).

    Pad, cyclic shift and window partition are one ``index_select`` (and
    their inverse one more) with cached index maps and shift mask, instead
    of mmseg's pad / roll / partition / reverse / roll / crop / concatenate
    copies; attention goes through ``F.scaled_dot_product_attention``. Data
    movement is exact, so results differ from the plain path by float
    rounding only.
    """
    B, S, C = x.shape
    P = num_prompts
    P_out = P if prompt_outputs else 0
    ws, shift = attn_module.window_size, attn_module.shift_size
    w_msa = attn_module.w_msa
    maps = _window_maps(B, hw_shape[0], hw_shape[1], P, P_out, ws, shift,
                        x.device)
    windows = x.reshape(B * S, C).index_select(0, maps.gather)
    if maps.pad_rows is not None:
        # index_select does not keep its output for backward
        windows.index_fill_(0, maps.pad_rows, 0.0)
    windows = windows.view(-1, ws * ws, C)
    BnW, N, _ = windows.shape
    out = _fast_attend(w_msa, windows, x[:, :P] if P else None,
                       P_out > 0, maps.mask)
    tokens = out[:, :, P_out:].transpose(1, 2).reshape(BnW * N, C)
    tokens = w_msa.proj_drop(w_msa.proj(tokens))
    out_seq = tokens.index_select(0, maps.scatter).view(B, P_out + S - P, C)
    if P_out:
        heads, d = out.shape[1], out.shape[3]
        # the projection is linear, so averaging first gives the same mean
        prompts = out[:, :, :P].reshape(B, BnW // B, heads, P, d).mean(1)
        prompts = prompts.transpose(1, 2).reshape(B, P, C)
        out_seq[:, :P] = w_msa.proj_drop(w_msa.proj(prompts))
    return out_seq


def prompted_block(block, x: torch.Tensor, hw_shape: HW, num_prompts: int,
                   prompt_outputs: bool = True) -> torch.Tensor:
    """``SwinBlock.forward`` for ``x`` = [prompts, image tokens].

    With ``block.attn.w_msa.fused_attn`` set, attention takes the fast path
    (:func:`fast_window_block_attention`), and ``prompt_outputs=False``
    returns image tokens only: for a block whose prompt outputs the next
    block discards, the prompts then serve as keys and values only.
    """
    fast = getattr(block.attn.w_msa, 'fused_attn', False)
    drop_prompts = fast and num_prompts and not prompt_outputs

    def inner(x):
        identity = x[:, num_prompts:] if drop_prompts else x
        x = block.norm1(x)
        if fast:
            tokens = fast_window_block_attention(block.attn, x, hw_shape,
                                                 num_prompts, prompt_outputs)
        else:
            prompts = x[:, :num_prompts] if num_prompts else None
            tokens, prompts = shifted_window_attention(
                block.attn, x[:, num_prompts:], hw_shape, prompts)
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
        fused_attn (bool): Window attention through
            ``F.scaled_dot_product_attention``; equal to the plain path
            within float rounding. ``False`` runs the plain path, so that
            ``prompt_length=0, frozen_exclude=['all']`` is bit-identical to
            mmseg's ``SwinTransformer``. Can be changed after building
            (``model.fused_attn = False``). Default: True.
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
                 fused_attn: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.fused_attn = fused_attn
        self._num_blocks = sum(len(stage.blocks) for stage in self.stages)
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

    @property
    def fused_attn(self) -> bool:
        return self.stages[0].blocks[0].attn.w_msa.fused_attn

    @fused_attn.setter
    def fused_attn(self, value: bool) -> None:
        # read by window_attention, like timm's per-module fused_attn
        for stage in self.stages:
            for block in stage.blocks:
                block.attn.w_msa.fused_attn = bool(value)

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
                # VPT-deep discards a block's prompt outputs when the next
                # block gets fresh prompts (or nothing follows); the fast
                # path then skips computing them
                needed = layer + 1 < self._num_blocks and not \
                    self.is_prompted(layer + 1)
                x = prompted_block(block, x, hw_shape, num_prompts, needed)
                num_prompts = x.shape[1] - hw_shape[0] * hw_shape[1]
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
