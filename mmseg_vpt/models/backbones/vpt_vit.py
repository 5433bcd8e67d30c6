"""mmseg's VisionTransformer with VPT prompts.

The backbone splices prompts into the token sequence between layers and
calls mmseg's layers as they are; only the classes of each layer and of its
attention modules are switched (mmcv's ``MultiheadAttention`` and the torch
``nn.MultiheadAttention`` inside it), for the fused path and for a key
padding mask (prompt slots a task leaves empty in a mixed-task batch).
Every module is called through ``__call__``, so forward hooks fire and
swapped submodules take effect; parameter names and checkpoints are
mmseg's.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmseg.models.backbones import VisionTransformer
from mmseg.models.backbones.vit import TransformerEncoderLayer
from mmseg.registry import MODELS
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ..prompt_flow import additive_key_mask
from ..prompt_locations import PROMPT_LOCATIONS
from ..prompts import PromptLayers, PromptTuningMixin, frozen_precision


class SDPAMultiheadAttention(nn.MultiheadAttention):
    """torch's ``nn.MultiheadAttention`` whose self-attention without
    attention weights runs batch-first through
    ``F.scaled_dot_product_attention`` and calls ``out_proj`` as a module.

    torch's own forward reads ``out_proj.weight`` and never calls
    ``out_proj``, so hooks on it never fire and a wrapper swapped in for it
    is ignored; here it is called. The in-projection stays torch's
    parameters ``in_proj_weight`` / ``in_proj_bias`` (making it a module
    would rename them in checkpoints); this module's own forward reads them
    on every path, so hooks on this module see the projection's input, and
    a parametrization of ``in_proj_weight`` (``torch.nn.utils.parametrize``,
    e.g. LoRA) takes effect. Anything else (attention weights, masks,
    separate key/value) runs torch's forward, which refuses a swapped
    ``out_proj`` rather than ignore it.
    """

    def forward(self, query, key, value, key_padding_mask=None,
                need_weights=True, attn_mask=None, average_attn_weights=True,
                is_causal=False):
        if (need_weights or query is not key or key is not value
                or attn_mask is not None
                or is_causal or not self._qkv_same_embed_dim
                or self.bias_k is not None or self.add_zero_attn):
            if type(self.out_proj) not in (nn.Linear,
                                           NonDynamicallyQuantizableLinear):
                raise TypeError(
                    f'out_proj is a {type(self.out_proj).__name__}, which '
                    "torch's nn.MultiheadAttention would ignore (it reads "
                    'out_proj.weight and never calls out_proj). Only the '
                    'fused self-attention path calls it: build the backbone '
                    'with fused_attn=True.')
            return super().forward(query, key, value, key_padding_mask,
                                   need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        x = query if self.batch_first else query.transpose(0, 1)
        B, N, C = x.shape
        q, k, v = self._in_projection(x)
        mask = None if key_padding_mask is None else \
            additive_key_mask(key_padding_mask, q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, C))
        return (out if self.batch_first else out.transpose(0, 1)), None

    @torch.no_grad()
    def attention_probs(self, query: torch.Tensor) -> torch.Tensor:
        """The softmax attention (B, heads, N, N) of self-attention on
        ``query`` (laid out as :meth:`forward` takes it)."""
        x = query if self.batch_first else query.transpose(0, 1)
        q, k, _ = self._in_projection(x)
        return ((q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)).softmax(-1)

    def _in_projection(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """q, k, v (B, heads, N, d) of batch-first ``x`` (B, N, C)."""
        B, N, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return qkv.reshape(B, N, 3, self.num_heads,
                           C // self.num_heads).permute(2, 0, 3, 1,
                                                        4).unbind(0)


class FusedMultiheadAttention(MultiheadAttention):
    """mmcv's ``MultiheadAttention`` whose self-attention asks its
    ``nn.MultiheadAttention`` (an :class:`SDPAMultiheadAttention`) for no
    attention weights, so that it runs through
    ``F.scaled_dot_product_attention``.

    mmcv's path (kept as the reference, ``fused_attn=False``) transposes to
    sequence-first and calls ``nn.MultiheadAttention`` with
    ``need_weights=True``, which materialises, keeps for backward and
    head-averages the attention matrix, and its projections on the
    transposed input run as one small GEMM per token (measured 20x slower on
    CPU). Here the sequence-first input is a view of the batch-first one,
    which ``SDPAMultiheadAttention`` turns back. Results agree with mmcv's
    within float rounding. Anything but plain self-attention (masks,
    positions, separate key/value) runs mmcv's forward; a key padding mask
    runs on either path.

    Adds no parameters: VPTVisionTransformer switches the class of mmseg's
    own attention modules to this one, so names and checkpoints are
    unchanged.
    """

    fused_attn = True

    def forward(self, query, key=None, value=None, identity=None,
                key_padding_mask=None, **kwargs):
        if not (self.fused_attn and key is None and value is None
                and all(v is None for v in kwargs.values())):
            return super().forward(query, key, value, identity,
                                   key_padding_mask=key_padding_mask,
                                   **kwargs)
        x = query.transpose(0, 1) if self.batch_first else query
        out = self.attn(x, x, x, need_weights=False,
                        key_padding_mask=key_padding_mask)[0]
        out = out.transpose(0, 1) if self.batch_first else out
        identity = query if identity is None else identity
        return identity + self.dropout_layer(self.proj_drop(out))


class VPTEncoderLayer(TransformerEncoderLayer):
    """mmseg's ``TransformerEncoderLayer`` that can pass a key padding mask
    (B, N) to its attention, and checkpoints (``with_cp``) with torch's
    non-reentrant checkpoint (the parent's call leaves torch to pick the
    reentrant one). The same ops as the parent's forward."""

    def forward(self, x: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None
                ) -> torch.Tensor:

        def _inner_forward(x):
            x = self.attn(self.norm1(x), identity=x,
                          key_padding_mask=key_padding_mask)
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


@MODELS.register_module()
class VPTVisionTransformer(PromptTuningMixin, VisionTransformer):
    """Vision Transformer with Visual Prompt Tuning (VPT).

    Every argument of mmseg's ``VisionTransformer`` keeps its meaning. Prompts
    sit after the class token and before the patch tokens
    (``[CLS, prompts, patches]``, or ``[prompts, patches]`` with
    ``with_cls_token=False``) and get no position embedding. Outputs at
    ``out_indices`` hold patch tokens only, shaped like the parent's.

    Args:
        prompt_length (int): Prompt tokens per prompted layer; 0 turns prompts
            off. Default: 10.
        prompt_layers (str | list[int]): ``'deep'`` (fresh prompts before
            every layer, replacing the previous layer's prompt outputs),
            ``'shallow'`` (layer 0 only) or a list of layer indices; layers
            not listed carry the prompt outputs forward. Default: 'deep'.
        prompt_dropout (float): Dropout on prompts each time they are
            inserted. Default: 0.0.
        prompt_init (str): ``'uniform'`` (the paper's Xavier-style rule) or
            ``'normal'`` (std 0.02). Default: 'uniform'.
        prompt_proj_dims (int, optional): Learn prompts of this width and
            project them to ``embed_dims`` with a Linear layer. Default: None.
        adapter_reduction (int, optional): Add a bottleneck adapter of width
            ``embed_dims // adapter_reduction`` after every layer's MLP (the
            paper's Adapter baseline; train it with
            ``frozen_exclude=['adapter']``). Default: None (no adapters).
        partial_k (int): Also train the last ``partial_k`` layers and the
            final norm (the paper's Partial-k). Default: 0 (off).
        prompt_location (str): ``'prepend'``, ``'add'``,
            ``'prepend-pixel'`` or ``'concat-channel'``: the paper's
            location ablation (:mod:`~mmseg_vpt.models.prompt_locations`).
            Default: 'prepend'.
        prompt_shared (bool): One prompt set for every prompted layer
            instead of one per layer. Default: False.
        cls_feature (str): With ``output_cls_token=True``, what comes beside
            each patch map: ``'cls'`` (the class token), ``'image-pool'``,
            ``'prompt-pool'`` or ``'global-pool'`` (the mean of the image
            patch tokens, of the prompt tokens, or of every token): the
            paper's output ablation. Default: 'cls'.
        frozen_exclude (list[str]): Substrings of the names of parameters that
            stay trainable; all others are frozen. ``['prompt']`` is VPT,
            ``['prompt', 'bias']`` VPT+Bias, ``['bias']`` Bias tuning, ``[]``
            head-only and ``['all']`` full fine-tuning.
            Default: ``['prompt']``.
        frozen_eval (bool): Keep a (partly) frozen backbone in eval mode while
            training, so its dropout/drop-path is off. Default: True.
        fused_attn (bool): Attention through
            ``F.scaled_dot_product_attention`` (see
            :class:`FusedMultiheadAttention`); equal to mmcv's attention
            within float rounding. ``False`` runs mmcv's own attention, so
            that ``prompt_length=0, frozen_exclude=['all']`` is bit-identical
            to mmseg's ``VisionTransformer``. Can be changed after building
            (``model.fused_attn = False``). Default: True.
        frozen_dtype (str, optional): ``'bf16'`` or ``'fp16'`` stores the
            frozen weights in that type and runs the backbone under autocast
            to it; what trains stays float32. Default: None (float32).
        **kwargs: Arguments of mmseg's ``VisionTransformer``.
    """

    def __init__(self,
                 prompt_length: int = 10,
                 prompt_layers: PromptLayers = 'deep',
                 prompt_dropout: float = 0.0,
                 prompt_init: str = 'uniform',
                 prompt_proj_dims: Optional[int] = None,
                 frozen_exclude: Sequence[str] = ('prompt', ),
                 frozen_eval: bool = True,
                 fused_attn: bool = True,
                 adapter_reduction: Optional[int] = None,
                 partial_k: int = 0,
                 prompt_location: str = 'prepend',
                 prompt_shared: bool = False,
                 cls_feature: str = 'cls',
                 frozen_dtype: Optional[str] = None,
                 **kwargs) -> None:
        # the parent's own freezing would run before the prompts exist
        super().__init__(frozen_exclude=['all'], **kwargs)
        for layer in self.layers:
            layer.__class__ = VPTEncoderLayer
            layer.attn.__class__ = FusedMultiheadAttention
            layer.attn.attn.__class__ = SDPAMultiheadAttention
        self.fused_attn = fused_attn
        embed_dims = self.cls_token.shape[-1]
        self.init_prompt_tuning(
            stage_dims=[embed_dims],
            stage_depths=[len(self.layers)],
            prompt_length=prompt_length,
            prompt_layers=prompt_layers,
            prompt_dropout=prompt_dropout,
            prompt_init=prompt_init,
            init_patch_size=self.patch_size,
            init_dims=embed_dims,
            frozen_exclude=frozen_exclude,
            frozen_eval=frozen_eval,
            prompt_proj_dims=prompt_proj_dims,
            adapter_reduction=adapter_reduction,
            adapter_mlps=[(layer.ffn, embed_dims) for layer in self.layers],
            partial_k=partial_k,
            layer_prefixes=[f'layers.{i}.' for i in range(len(self.layers))],
            final_norm_prefixes=['ln1.'] if self.final_norm else [],
            prompt_location=prompt_location,
            prompt_shared=prompt_shared,
            frozen_dtype=frozen_dtype)
        self.cls_feature = self.check_cls_feature(cls_feature)

    prompt_locations = PROMPT_LOCATIONS

    def prompt_patch_embed(self):
        conv = self.patch_embed.projection
        grid = tuple(s // k for s, k in zip(self.img_size, conv.stride))
        return conv, self.patch_embed.norm, grid

    @property
    def fused_attn(self) -> bool:
        return self.layers[0].attn.fused_attn

    @fused_attn.setter
    def fused_attn(self, value: bool) -> None:
        for layer in self.layers:
            layer.attn.fused_attn = bool(value)

    def _patch_map(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                   num_prompts: int) -> Union[torch.Tensor, List]:
        """Strip class token and prompts; reshape patches to (B, C, H, W)."""
        num_prefix = int(self.with_cls_token)
        patches = x[:, num_prefix + num_prompts:]
        B, _, C = patches.shape
        out = patches.reshape(B, hw_shape[0], hw_shape[1],
                              C).permute(0, 3, 1, 2).contiguous()
        if self.output_cls_token:
            out = [out, self.cls_output(x, num_prefix, num_prompts)]
        return out

    def layer_modules(self) -> List[nn.Module]:
        return list(self.layers)

    @frozen_precision
    def forward(self, inputs: torch.Tensor) -> tuple:
        B = inputs.shape[0]
        x, hw_shape = self.patch_embed(inputs)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw_shape, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)

        outs = []
        if self.out_origin:
            outs.append(self._patch_map(x, hw_shape, 0))

        num_prefix = int(self.with_cls_token)
        flow = self.prompt_flow(B, hw_shape)
        for i, layer in enumerate(self.layers):
            x = flow.enter(x, i, num_prefix)
            x = layer(x, flow.key_padding_mask(x.shape[1], num_prefix))
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.norm1(x)
            if i in self.out_indices:
                outs.append(self._patch_map(x, hw_shape, flow.count))
        return tuple(outs)
