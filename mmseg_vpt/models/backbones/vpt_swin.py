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

In a batch that mixes tasks (:mod:`mmseg_vpt.serving`), ``prompt_valid``
(B, P) marks the prompt slots a sample's task fills; the others are masked
out as keys in every window of that sample.

``VPTSwinTransformer`` keeps mmseg's own module instances and switches their
classes to the subclasses below, whose ``forward`` takes the sequence
``[prompts, image tokens]``; the prompt count is its length minus H * W. So
parameter names and checkpoints are unchanged, every module is called
through ``__call__`` (forward hooks fire, and a swapped submodule, such as a
LoRA wrapper around ``w_msa.qkv``, takes effect), and without prompts the
plain path (``fused_attn=False``) is bit-identical to mmseg's.
"""
import functools
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmseg.models.backbones import SwinTransformer
from mmseg.models.backbones.swin import (ShiftWindowMSA, SwinBlock,
                                         SwinBlockSequence, WindowMSA)
from mmseg.models.utils.embed import PatchMerging
from mmseg.registry import MODELS

from ..prompt_flow import PromptFlow
from ..prompts import PromptLayers, PromptTuningMixin, frozen_precision

HW = Tuple[int, int]

# Fused CPU attention kernels are much slower when the key count is not a
# multiple of 16 (measured: 144 + 10 prompt keys take 1.4x the time of 160);
# the fused path pads prompted windows with masked zero keys up to that.
KEY_ALIGN = 16


def num_prompts(x: torch.Tensor, hw_shape: HW) -> int:
    """Prompts in front of the H * W image tokens of ``x`` (B, L, C)."""
    P = x.shape[1] - hw_shape[0] * hw_shape[1]
    if P < 0:
        raise ValueError(f'{x.shape[1]} tokens cannot hold a '
                         f'{hw_shape[0]}x{hw_shape[1]} map')
    return P


class VPTWindowMSA(WindowMSA):
    """mmseg's ``WindowMSA``, optionally with a sample's prompts joined to
    each of its windows.

    ``fused_attn`` (set by the backbone) picks the attention kernel:
    ``F.scaled_dot_product_attention`` (the softmax and ``attn_drop`` are
    fused into it), or mmseg's own ops, which without prompts are
    bit-identical to ``WindowMSA.forward``.
    """

    fused_attn = True

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                prompts: Optional[torch.Tensor] = None,
                prompt_outputs: bool = True,
                prompt_valid: Optional[torch.Tensor] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: Windows (B * nW, N, C), sample-major (index b * nW + w), as
                ``ShiftWindowMSA.window_partition`` makes them.
            mask: Shift mask (nW, N, N) or None.
            prompts: (B, P, C) or None.
            prompt_outputs: Compute the prompts' outputs; False when the
                caller discards them (the prompts then serve as keys and
                values only).
            prompt_valid: (B, P) bool, False for prompt slots that must not
                be attended to, or None (all real).

        Returns:
            Window outputs (B * nW, N, C); with prompts and
            ``prompt_outputs``, also the prompt outputs (B, P, C), each the
            mean over the sample's windows.
        """
        BnW, N, C = x.shape
        P = 0 if prompts is None else prompts.shape[1]
        Pq = P if prompt_outputs else 0
        q, k, v, bias, mask = self._attention_inputs(
            x, mask, prompts, Pq, align=self.fused_attn,
            prompt_valid=prompt_valid)
        if self.fused_attn:
            out = self._fused_attention(q, k, v, bias, mask)
        else:
            out = self.attn_drop(self.softmax(self._logits(q, k, bias, mask)))
            out = out @ v
        tokens = out[:, :, Pq:].transpose(1, 2).reshape(BnW, N, C)
        tokens = self.proj_drop(self.proj(tokens))
        if not Pq:
            return tokens
        # the projection is linear, so averaging first gives the same mean
        B, heads = prompts.shape[0], out.shape[1]
        prompt_out = out[:, :, :Pq].reshape(B, BnW // B, heads, Pq, -1)
        prompt_out = prompt_out.mean(1).transpose(1, 2).reshape(B, Pq, C)
        return tokens, self.proj_drop(self.proj(prompt_out))

    @torch.no_grad()
    def attention_probs(self, x: torch.Tensor,
                        mask: Optional[torch.Tensor] = None,
                        prompts: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
        """The softmax attention of :meth:`forward` (same arguments) with
        prompt queries: (B * nW, heads, P + N, P + N), prompts first."""
        P = 0 if prompts is None else prompts.shape[1]
        q, k, _, bias, mask = self._attention_inputs(x, mask, prompts, P,
                                                     align=False)
        return self._logits(q, k, bias, mask).softmax(-1)

    def _attention_inputs(self, x, mask, prompts, Pq: int, align: bool,
                          prompt_valid=None):
        """q (B * nW, heads, Pq + N, d); k, v (B * nW, heads, S, d) over
        [key padding, prompts, window tokens]; the relative position bias
        (heads, Pq + N, S), or (B * nW, heads, Pq + N, S) with
        ``prompt_valid``, and shift mask (nW, Pq + N, S), zero for prompts
        and -inf for padding keys and invalid prompt slots. ``align`` pads
        prompted windows' keys to a multiple of ``KEY_ALIGN``."""
        BnW, N, C = x.shape
        heads = self.num_heads
        d = C // heads
        qkv = self.qkv(x).reshape(BnW, N, 3, heads, d)
        P = pad = 0
        if prompts is None:
            q, k, v = qkv.unbind(2)
        else:
            B, P = prompts.shape[:2]
            # Prompts are the same in every window of a sample: project them
            # once (a contiguous 2-D input: a 3-D strided one makes F.linear
            # run one small GEMM per row) and broadcast, keeping windows
            # sample-major so that no window sees another sample's prompts.
            prompt_qkv = self.qkv(prompts.reshape(B * P, C)).view(
                B, 1, P, 3, heads, d).expand(B, BnW // B, P, 3, heads,
                                             d).reshape(BnW, P, 3, heads, d)
            pad = -(P + N) % KEY_ALIGN if align else 0
            kv = [prompt_qkv[:, :, 1:], qkv[:, :, 1:]]
            if pad:
                kv.insert(0, qkv.new_zeros(()).expand(BnW, pad, 2, heads, d))
            k, v = torch.cat(kv, dim=1).unbind(2)
            # a copy of its own: attention keeps q for backward, and a view
            # would keep the whole projection output alive
            q = torch.cat([prompt_qkv[:, :, 0], qkv[:, :, 0]], dim=1) \
                if Pq else qkv[:, :, 0].contiguous()
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        Wh, Ww = self.window_size
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(Wh * Ww, Wh * Ww, -1)
        bias = F.pad(bias.permute(2, 0, 1), (pad + P, 0, Pq, 0))
        if pad:
            bias[..., :pad] = float('-inf')
        if prompt_valid is not None:
            # per sample, repeated for its windows (sample-major)
            keys = F.pad(~prompt_valid, (pad, N), value=False)
            keys = keys.repeat_interleave(BnW // B, dim=0)[:, None, None]
            bias = torch.where(keys, float('-inf'), bias.unsqueeze(0))
        if mask is not None:
            mask = F.pad(mask, (pad + P, 0, Pq, 0))
        return q, k, v, bias, mask

    def _logits(self, q, k, bias, mask) -> torch.Tensor:
        """mmseg's ``WindowMSA`` attention logits, op for op."""
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn + (bias if bias.dim() == 4 else bias.unsqueeze(0))
        if mask is not None:
            nW = mask.shape[0]
            BnW, heads, L, S = attn.shape
            attn = attn.view(BnW // nW, nW, heads, L, S) + \
                mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, L, S)
        return attn

    def _fused_attention(self, q, k, v, bias, mask) -> torch.Tensor:
        """softmax(q k^T * scale + bias [+ shift mask]) v through
        ``F.scaled_dot_product_attention``.

        Fused kernels take a 4-D additive mask that broadcasts over the
        batch. The bias is the same in every window, so unshifted windows
        pass it as (1, heads, L, S). The shift mask differs per window, so
        shifted windows fold windows into the head dimension,
        (B, nW * heads, L, d), and pass (1, nW * heads, L, S):
        batch-independent, never (B * nW, ...). Only a bias with masked
        prompt slots (mixed-task batches) is per window.
        """
        BnW, heads, L, d = q.shape
        S = k.shape[2]
        drop = self.attn_drop.p if self.attn_drop.training else 0.0
        bias = bias if bias.dim() == 4 else bias.unsqueeze(0)
        if mask is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        nW = mask.shape[0]
        B = BnW // nW
        bias = bias.view(-1, nW, heads, L, S) if bias.shape[0] > 1 else \
            bias.unsqueeze(1)
        attn_mask = (bias + mask.unsqueeze(1)).reshape(-1, nW * heads, L, S)
        q = q.reshape(B, nW * heads, L, d)
        k, v = (t.reshape(B, nW * heads, S, d) for t in (k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=drop, scale=self.scale)
        # reshape, not view: CUDA kernels may return another memory layout
        return out.reshape(BnW, heads, L, d)


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


class VPTShiftWindowMSA(ShiftWindowMSA):
    """mmseg's ``ShiftWindowMSA`` on ``[prompts, image tokens]``.

    Pad, cyclic shift and window partition are one ``index_select`` (and
    their inverse one more) with cached index maps, instead of mmseg's pad /
    roll / partition / reverse / roll / crop copies: the same data movement,
    exactly. The prompts go to ``w_msa`` beside the windows.
    """

    def forward(self, query: torch.Tensor, hw_shape: HW,
                prompt_outputs: bool = True,
                prompt_valid: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """``query``: (B, P + H*W, C). Returns that layout, or image tokens
        only (B, H*W, C) if not ``prompt_outputs`` (VPT-deep replaces them
        in the next block anyway). ``prompt_valid``: see
        :class:`VPTWindowMSA`."""
        B, L, C = query.shape
        H, W = hw_shape
        P = num_prompts(query, hw_shape)
        P_out = P if prompt_outputs else 0
        ws = self.window_size
        maps = _window_maps(B, H, W, P, P_out, ws, self.shift_size,
                            query.device)
        windows = query.reshape(B * L, C).index_select(0, maps.gather)
        if maps.pad_rows is not None:
            # index_select does not keep its output for backward
            windows.index_fill_(0, maps.pad_rows, 0.0)
        out = self.w_msa(windows.view(-1, ws * ws, C), mask=maps.mask,
                         prompts=query[:, :P] if P else None,
                         prompt_outputs=P_out > 0,
                         prompt_valid=prompt_valid)
        tokens, prompts = out if P_out else (out, None)
        x = tokens.reshape(-1, C).index_select(0, maps.scatter)
        x = x.view(B, P_out + H * W, C)
        if P_out:
            x[:, :P] = prompts
        return self.drop(x)


class VPTSwinBlock(SwinBlock):
    """mmseg's ``SwinBlock`` on ``[prompts, image tokens]``."""

    def forward(self, x: torch.Tensor, hw_shape: HW,
                prompt_outputs: bool = True,
                prompt_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``prompt_outputs=False`` returns image tokens only: for a block
        whose prompt outputs the next block replaces. ``prompt_valid``: see
        :class:`VPTWindowMSA`."""
        P = num_prompts(x, hw_shape)

        def _inner_forward(x):
            identity = x if prompt_outputs else x[:, P:]
            x = self.attn(self.norm1(x), hw_shape,
                          prompt_outputs=prompt_outputs,
                          prompt_valid=prompt_valid)
            x = x + identity
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class VPTPatchMerging(PatchMerging):
    """mmseg's ``PatchMerging`` on ``[prompts, image tokens]``.

    A prompt is widened to the merged width by repeating each channel once
    per merged position, matching mmseg's ``nn.Unfold`` channel order
    (index ``c * k + p``), then shares the pretrained norm and reduction.
    """

    def forward(self, x: torch.Tensor,
                input_size: HW) -> Tuple[torch.Tensor, HW]:
        P = num_prompts(x, input_size)
        tokens, out_size = super().forward(x[:, P:], input_size)
        if not P:
            return tokens, out_size
        kh, kw = self.sampler.kernel_size
        prompts = x[:, :P].repeat_interleave(kh * kw, dim=-1)
        if self.norm is not None:
            prompts = self.norm(prompts)
        return torch.cat([self.reduction(prompts), tokens], 1), out_size


class VPTSwinBlockSequence(SwinBlockSequence):
    """mmseg's ``SwinBlockSequence`` (a stage) on ``[prompts, image
    tokens]``, inserting fresh prompts before its blocks."""

    def forward(self, x: torch.Tensor, hw_shape: HW,
                prompts: Optional[PromptFlow] = None, first_layer: int = 0,
                prompt_outputs: bool = True) -> tuple:
        """
        Args:
            prompts: The backbone's prompt flow, which splices fresh prompts
                before blocks (layer ``first_layer + i`` is block ``i``).
                None: no fresh prompts.
            first_layer: The backbone layer index of the first block.
            prompt_outputs: Whether the caller uses the prompts of the
                stage's output; if not, the last block skips them and they
                are not merged.

        Returns:
            mmseg's ``(x_down, down_hw_shape, out, hw_shape)``: ``x_down``
            with prompts, ``out`` (the stage's feature map) without.
        """
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks):
            layer = first_layer + i
            if prompts is not None:
                x = prompts.enter(x, layer, 0, num_prompts(x, hw_shape))
            # VPT-deep discards a block's prompt outputs when the next block
            # brings fresh prompts for every sample: they are then not
            # computed
            keep = prompt_outputs if i + 1 == depth else \
                prompts is None or not prompts.replaces(layer + 1)
            x = block(x, hw_shape, prompt_outputs=keep,
                      prompt_valid=None if prompts is None else prompts.valid)
        out = x[:, num_prompts(x, hw_shape):]
        if self.downsample:
            x_down, down_hw_shape = self.downsample(x, hw_shape)
            return x_down, down_hw_shape, out, hw_shape
        return x, hw_shape, out, hw_shape


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
        adapter_reduction (int, optional): A bottleneck adapter after every
            block's MLP, as for ``VPTVisionTransformer`` (width: the stage's
            channels // adapter_reduction). Default: None.
        partial_k (int): Also train the last ``partial_k`` blocks (over the
            flattened block list) and the output norms (``norm{i}``, Swin's
            final norms). Default: 0 (off).
        prompt_shared (bool): One prompt set per stage, used by every
            prompted block of the stage. Default: False.
        prompt_location (str): Only ``'prepend'`` (the other locations of
            ``VPTVisionTransformer`` are for a plain ViT's sequence).
        fused_attn (bool): Window attention through
            ``F.scaled_dot_product_attention``; equal to the plain path
            within float rounding. ``False`` runs mmseg's attention ops, so
            that ``prompt_length=0, frozen_exclude=['all']`` is bit-identical
            to mmseg's ``SwinTransformer``. Can be changed after building
            (``model.fused_attn = False``). Default: True.
        frozen_dtype (str, optional): ``'bf16'`` or ``'fp16'``, as for
            ``VPTVisionTransformer``. Default: None (float32).
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
                 adapter_reduction: Optional[int] = None,
                 partial_k: int = 0,
                 prompt_shared: bool = False,
                 prompt_location: str = 'prepend',
                 frozen_dtype: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        for stage in self.stages:
            stage.__class__ = VPTSwinBlockSequence
            for block in stage.blocks:
                block.__class__ = VPTSwinBlock
                block.attn.__class__ = VPTShiftWindowMSA
                block.attn.w_msa.__class__ = VPTWindowMSA
            if stage.downsample is not None:
                stage.downsample.__class__ = VPTPatchMerging
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
            frozen_eval=frozen_eval,
            adapter_reduction=adapter_reduction,
            adapter_mlps=[(block.ffn, dims) for stage, dims in zip(
                self.stages, self.num_features) for block in stage.blocks],
            partial_k=partial_k,
            layer_prefixes=[f'stages.{s}.blocks.{j}.'
                            for s, stage in enumerate(self.stages)
                            for j in range(len(stage.blocks))],
            final_norm_prefixes=[f'norm{i}.' for i in self.out_indices],
            prompt_location=prompt_location,
            prompt_shared=prompt_shared,
            frozen_dtype=frozen_dtype)

    @property
    def fused_attn(self) -> bool:
        return self.stages[0].blocks[0].attn.w_msa.fused_attn

    @fused_attn.setter
    def fused_attn(self, value: bool) -> None:
        # read by each window attention, like timm's per-module fused_attn
        for stage in self.stages:
            for block in stage.blocks:
                block.attn.w_msa.fused_attn = bool(value)

    def layer_modules(self) -> List[nn.Module]:
        return [block for stage in self.stages for block in stage.blocks]

    @frozen_precision
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        B = x.shape[0]

        outs = []
        flow = self.prompt_flow(B)
        first = 0  # the stage's first layer
        for i, stage in enumerate(self.stages):
            # the next stage's first block may bring fresh prompts, and
            # nothing follows the last stage
            nxt = first + len(stage.blocks)
            keep = nxt < self._num_blocks and not flow.replaces(nxt)
            x, hw_shape, out, out_hw_shape = stage(
                x, hw_shape, prompts=flow, first_layer=first,
                prompt_outputs=keep)
            first = nxt
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i])
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
