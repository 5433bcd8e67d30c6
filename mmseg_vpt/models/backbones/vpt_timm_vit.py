"""timm's ViT family with VPT prompts: DINOv2/v3, EVA-02, CLIP, SigLIP, MAE,
MoCo v3, DeiT III... every model of ``timm.models.vision_transformer.
VisionTransformer`` and ``timm.models.eva.Eva``.

The timm model is built by name and kept whole as ``timm_model``; its
modules run as they are (patch embedding, position embedding, blocks, final
norm), and only the token sequence between blocks is ours: prompts go in
after the prefix tokens (class and register tokens), before the patches.

Prompts carry no position. Absolute position embeddings are added by
timm's ``_pos_embed`` before any prompt exists. Rotary embeddings (EVA-02,
DINOv3) rotate every token after the attention's ``num_prefix_tokens``
leading ones, so each prompted block's attention counts the prompts as
leading tokens too: they stay unrotated, and every patch keeps exactly the
rotation timm gives it. The count is set at build time and again before
each block runs (a mixed-task batch holds as many prompt slots as its
longest task, :mod:`~mmseg_vpt.models.prompt_flow`).
"""
import contextlib
import difflib
import re
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.utils.checkpoint import checkpoint

from ..convert import ConversionInfo
from ..deferred import (assign_tensors, compute_buffers, defer_state,
                        init_deferred, module_tensor, skip_tensors)
from ..prompt_locations import PROMPT_LOCATIONS
from ..prompts import PromptLayers, PromptTuningMixin, frozen_precision
from ..timm_weights import to_timm_model

# arguments this backbone sets on timm.create_model itself
_OWN_TIMM_ARGS = ('pretrained', 'num_classes', 'dynamic_img_size')


def supported_classes() -> Tuple[type, ...]:
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer, Eva


def create_timm_vit(model_name: str, timm_kwargs: dict,
                    meta: bool = False) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False)`` without a
    classifier and for any input size, after checking the name and class;
    ``meta=True`` builds it on the meta device (no memory, no init).
    """
    import timm
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        close = difflib.get_close_matches(
            str(model_name), timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(
            f'model_name {model_name!r} is not a timm model. '
            + (f'Close names: {close}. ' if close else '')
            + "List them with timm.list_models('*dinov2*') (an optional "
            "pretrained tag follows a dot, e.g. "
            "'vit_large_patch14_reg4_dinov2.lvd142m').")
    own = [k for k in _OWN_TIMM_ARGS if k in timm_kwargs]
    if own:
        raise ValueError(
            f'timm_kwargs may not set {own}: VPTTimmViT builds without a '
            'classifier, for any input size, and loads weights through '
            "init_cfg (checkpoint='timm://NAME' for timm's hub)")
    classes = supported_classes()
    with torch.device('meta'):  # the class, without allocating weights
        probe = timm.create_model(model_name, pretrained=False,
                                  num_classes=0, **timm_kwargs)
    if not isinstance(probe, classes):
        raise ValueError(
            f'model_name {model_name!r} builds a timm '
            f'{type(probe).__module__}.{type(probe).__name__}; VPTTimmViT '
            'supports the classes ' +
            ', '.join(f'{c.__module__}.{c.__name__}' for c in classes) +
            ' (and their subclasses)')
    # pad to a patch multiple (bottom / right, as mmseg's PatchEmbed does)
    timm_kwargs.setdefault('dynamic_img_pad', True)
    with torch.device('meta') if meta else contextlib.nullcontext():
        model = timm.create_model(model_name, pretrained=False,
                                  num_classes=0, dynamic_img_size=True,
                                  **timm_kwargs)
    if getattr(model, 'patch_drop', None) is not None and not isinstance(
            model.patch_drop, nn.Identity):
        raise ValueError(
            'timm_kwargs patch_drop_rate > 0 drops patch tokens, so no '
            'feature map can be formed; use 0 for segmentation')
    return model


@MODELS.register_module()
class VPTTimmViT(PromptTuningMixin, BaseModule):
    """A timm Vision Transformer (``VisionTransformer`` or ``Eva``) with
    Visual Prompt Tuning, as an mmseg backbone.

    The prompt arguments mean what they mean for ``VPTVisionTransformer``.
    Prompts sit after the prefix tokens (``[CLS, registers, prompts,
    patches]``) and get no position, absolute or rotary. Outputs at
    ``out_indices`` are the patch tokens as (B, C, H, W) maps, at any input
    size: timm resizes the position embeddings to each input's grid
    (``dynamic_img_size``), and pads an input that is not a patch multiple
    at the bottom and right (``dynamic_img_pad``, on by default; with
    ``timm_kwargs=dict(dynamic_img_pad=False)`` such inputs are refused).

    Args:
        model_name (str): A timm model name, with an optional pretrained
            tag, e.g. ``'vit_large_patch14_reg4_dinov2.lvd142m'``.
        timm_kwargs (dict, optional): More ``timm.create_model`` arguments
            (``img_size``, ``drop_path_rate``, ``depth``...). Default: None.
        out_indices (int | Sequence[int]): Blocks whose outputs are
            returned; negative counts from the end. Default: -1.
        out_norm (bool): Pass every output through the model's final norm
            (timm's ``forward_intermediates(norm=True)``; DINOv2's
            segmentation recipe). Default: False.
        output_cls_token (bool): Return ``[patch_map, cls_token]`` per
            output, as mmseg's ViT does (for classification heads).
            Default: False.
        with_cp (bool): Gradient checkpointing of each block while
            training. Default: False.
        frozen_dtype (str, optional): ``'bf16'`` or ``'fp16'``, as for
            ``VPTVisionTransformer``. Default: None (float32).
        meta_init (bool): Build the timm model on the meta device and keep
            its weights deferred (:mod:`~mmseg_vpt.models.deferred`): they
            take no memory until ``init_weights`` loads them from the
            ``Pretrained`` file (read lazily, each tensor converted to its
            stored type on the backbone's device, no float32 copy) or a
            checkpoint loaded into the backbone provides them; without a
            file ``init_weights`` draws timm's random init directly in the
            stored type. Prompts and adapters are real from the start. For
            backbones too big to build in float32 (1B-7B). Until the
            weights are loaded, moving the backbone (``.to()``) moves only
            its real tensors and records the device the weights will load
            to, and ``forward`` refuses to run. Default: False.
        prompt_length, prompt_layers, prompt_dropout, prompt_init,
        prompt_proj_dims, frozen_exclude, frozen_eval, adapter_reduction,
        partial_k, prompt_location, prompt_shared, cls_feature: As for
            ``VPTVisionTransformer`` (adapters follow each block's ``mlp``;
            Partial-k's final norm is timm's ``norm``; pixel prompts go
            through timm's ``patch_embed.proj``).
            Parameter names are timm's under ``timm_model.``
            (``timm_model.blocks.0.attn.qkv.bias``).
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=PATH)`` with a file in timm's, the official DINOv2,
            MAE or MoCo v3 layout, or ``checkpoint='timm://NAME'`` for the
            file of timm's hub tag NAME (downloaded once into the Hugging
            Face cache). Loaded all or nothing. Default: None (random).
    """

    def __init__(self,
                 model_name: str,
                 timm_kwargs: Optional[dict] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_norm: bool = False,
                 output_cls_token: bool = False,
                 with_cp: bool = False,
                 prompt_length: int = 10,
                 prompt_layers: PromptLayers = 'deep',
                 prompt_dropout: float = 0.0,
                 prompt_init: str = 'uniform',
                 prompt_proj_dims: Optional[int] = None,
                 frozen_exclude: Sequence[str] = ('prompt', ),
                 frozen_eval: bool = True,
                 adapter_reduction: Optional[int] = None,
                 partial_k: int = 0,
                 prompt_location: str = 'prepend',
                 prompt_shared: bool = False,
                 cls_feature: str = 'cls',
                 frozen_dtype: Optional[str] = None,
                 meta_init: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(meta_init, bool):
            raise ValueError(
                f'meta_init must be True or False, got {meta_init!r}')
        self.model_name = model_name
        self.meta_init = meta_init
        self.timm_model = create_timm_vit(
            model_name, dict(timm_kwargs or {}), meta=meta_init)
        depth = len(self.timm_model.blocks)
        self.out_indices = self._resolve_out_indices(out_indices, depth)
        # (timm's Eva has no has_class_token attribute)
        if output_cls_token and getattr(self.timm_model, 'cls_token',
                                        None) is None:
            raise ValueError(
                f'output_cls_token=True, but {model_name!r} has no class '
                'token; use output_cls_token=False (and pool the patch map)')
        self.out_norm = out_norm
        self.output_cls_token = output_cls_token
        self.with_cp = with_cp
        embed_dim = self.timm_model.embed_dim
        self.init_prompt_tuning(
            stage_dims=[embed_dim],
            stage_depths=[depth],
            prompt_length=prompt_length,
            prompt_layers=prompt_layers,
            prompt_dropout=prompt_dropout,
            prompt_init=prompt_init,
            init_patch_size=self.timm_model.patch_embed.patch_size,
            init_dims=embed_dim,
            frozen_exclude=frozen_exclude,
            frozen_eval=frozen_eval,
            prompt_proj_dims=prompt_proj_dims,
            adapter_reduction=adapter_reduction,
            adapter_mlps=[(block.mlp, embed_dim)
                          for block in self.timm_model.blocks],
            partial_k=partial_k,
            layer_prefixes=[f'timm_model.blocks.{i}.'
                            for i in range(depth)],
            final_norm_prefixes=['timm_model.norm.'] if out_norm else [],
            prompt_location=prompt_location,
            prompt_shared=prompt_shared,
            frozen_dtype=frozen_dtype)
        self.cls_feature = self.check_cls_feature(cls_feature)
        self._skip_prompts_in_rope()
        # meta_init: the state dict's tensors wait for their values (in the
        # types store_frozen gave them above); computed buffers are real
        self.deferred_weights: List[str] = []
        self.deferred_device = torch.device('cpu')
        if meta_init:
            compute_buffers(self)
            self.deferred_weights = defer_state(self)

    prompt_locations = PROMPT_LOCATIONS

    def prompt_patch_embed(self):
        embed = self.timm_model.patch_embed
        norm = None if isinstance(embed.norm, nn.Identity) else embed.norm
        return embed.proj, norm, tuple(embed.grid_size)

    @staticmethod
    def _resolve_out_indices(out_indices, depth: int) -> List[int]:
        indices = [out_indices] if isinstance(out_indices, int) else \
            list(out_indices)
        if not indices or not all(
                isinstance(i, int) and -depth <= i < depth for i in indices):
            raise ValueError(
                f'out_indices must be block indices in [-{depth}, {depth}) '
                f'(the model has {depth} blocks), got {out_indices!r}')
        return sorted({i % depth for i in indices})

    def _skip_prompts_in_rope(self) -> None:
        """Count each block's prompts among its attention's leading tokens,
        which rotary embeddings leave unrotated (no-op without rope)."""
        if not self.prompt_layers:
            return
        first = self.prompt_layers[0]
        prefix = self.timm_model.num_prefix_tokens
        for i, block in enumerate(self.timm_model.blocks):
            attn = getattr(block, 'attn', None)
            if attn is not None and hasattr(attn, 'num_prefix_tokens'):
                attn.num_prefix_tokens = prefix + (
                    self.num_prompt_tokens if i >= first else 0)

    # -- weights ------------------------------------------------------------
    # the file need not provide prompts (rel. to this module)
    pretrained_optional = (r'prompt', )

    def pretrained_layout(self, state_dict, info: ConversionInfo):
        """A weights file renamed and fitted to this backbone's keys."""
        state, fmt = to_timm_model(state_dict, self.timm_model, info)
        return {f'timm_model.{k}': v for k, v in state.items()}, fmt

    def fit_pretrained(self, state_dict, info: ConversionInfo):
        return state_dict  # to_timm_model already fitted it

    # -- deferred weights (meta_init) ----------------------------------------
    def assign_state(self, state_dict, prefix: str = '') -> None:
        """Fill the deferred weights that ``state_dict`` (keys ``prefix`` +
        this module's) provides, on :attr:`deferred_device`, one at a time;
        with ``meta_init``, also swap the frozen tensors loaded before for
        the new values instead of copying into them (a reload, e.g. of the
        base weights on resume, then never holds two copies)
        (:func:`~mmseg_vpt.models.deferred.assign_tensors`)."""
        filled = assign_tensors(self, self.deferred_weights, state_dict,
                                prefix, self.deferred_device)
        for name in filled:
            self.deferred_weights.remove(name)
        if self.meta_init:
            frozen = [n for n, t in self.state_dict(keep_vars=True).items()
                      if not t.requires_grad and n not in filled
                      and n not in self.deferred_weights]
            assign_tensors(self, frozen, state_dict, prefix)

    def init_weights(self) -> None:
        """As :meth:`PromptTuningMixin.init_weights`; with deferred weights
        and no ``Pretrained`` file, timm's own random init draws them in
        float32 a block at a time and stores them in their types
        (:func:`~mmseg_vpt.models.deferred.init_deferred`), then the
        prompts and adapters initialise as usual."""
        if not self.deferred_weights or (
                isinstance(self.init_cfg, dict)
                and self.init_cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        def block_of(name: str) -> str:  # '' for the embeddings and norm
            block = re.match(r'timm_model\.blocks\.\d+\.', name)
            return block.group(0) if block else ''

        init_deferred(self, self.deferred_weights, self.deferred_device,
                      self.timm_model.init_weights, block_of)
        # the rest of the mixin's random init (timm's ran just now)
        self.frozen_weights_set = True
        self.reset_prompts()
        for adapter in self.adapters:
            adapter.reset_parameters()
        self._is_init = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args, **kwargs) -> None:
        """A state dict loaded into a ``meta_init`` backbone fills its
        deferred weights and replaces its frozen ones
        (:meth:`assign_state`; the ordinary load of its submodules then
        copies nothing)."""
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)
        if self.meta_init:
            self.assign_state(state_dict, prefix)

    def _apply(self, fn, recurse: bool = True):
        """Deferred weights stay placeholders through ``.to()`` /
        ``.cuda()`` / ``.half()``...; the device they will load to follows
        the move."""
        if not self.deferred_weights:
            return super()._apply(fn, recurse)
        self.deferred_device = fn(torch.empty(0)).device
        return super()._apply(
            skip_tensors(fn, [module_tensor(self, n)
                              for n in self.deferred_weights]), recurse)

    def _check_loaded(self) -> None:
        if self.deferred_weights:
            raise RuntimeError(
                f'{type(self).__name__}(meta_init=True) has not loaded '
                f'{len(self.deferred_weights)} of its weights (e.g. '
                f'{self.deferred_weights[0]!r}): call init_weights() (with '
                "init_cfg=dict(type='Pretrained', checkpoint=FILE), or "
                'without for random weights) or load a checkpoint first')

    # -- forward ------------------------------------------------------------
    def _embed(self, inputs: torch.Tensor):
        """Patch tokens with prefix tokens and absolute positions, the
        rotary embedding (or None) and the patch grid, as timm computes
        them."""
        m = self.timm_model
        x = m.patch_embed(inputs)  # (B, H, W, C): dynamic_img_size
        hw = (x.shape[1], x.shape[2])
        if hasattr(m, 'rope'):  # Eva: patch dropout happens inside
            x, rope = m._pos_embed(x)
        else:
            x, rope = m.patch_drop(m._pos_embed(x)), None
        return m.norm_pre(x), rope, hw

    def _output(self, x: torch.Tensor, hw: Tuple[int, int],
                num_prompts: int):
        if self.out_norm:
            x = self.timm_model.norm(x)
        start = self.timm_model.num_prefix_tokens + num_prompts
        B, _, C = x.shape
        out = x[:, start:].reshape(B, hw[0], hw[1], C).permute(
            0, 3, 1, 2).contiguous()
        if not self.output_cls_token:
            return out
        return [out, self.cls_output(x, self.timm_model.num_prefix_tokens,
                                     num_prompts)]

    def layer_modules(self) -> List[nn.Module]:
        return list(self.timm_model.blocks)

    @frozen_precision
    def forward(self, inputs: torch.Tensor) -> tuple:
        self._check_loaded()
        m = self.timm_model
        B = inputs.shape[0]
        x, rope, hw = self._embed(inputs)
        rope_per_block = rope is not None and getattr(m, 'rope_mixed', False)
        num_prefix = m.num_prefix_tokens
        flow = self.prompt_flow(B, hw)
        outs = []
        for i, block in enumerate(m.blocks):
            x = flow.enter(x, i, num_prefix)
            kwargs = {} if not hasattr(m, 'rope') else {
                'rope': rope[i] if rope_per_block else rope}
            if hasattr(m, 'rope'):
                block.attn.num_prefix_tokens = num_prefix + flow.count
            mask = flow.attn_bias(x.shape[1], num_prefix, x.dtype)
            if mask is not None:
                kwargs['attn_mask'] = mask
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False, **kwargs)
            else:
                x = block(x, **kwargs)
            if i in self.out_indices:
                outs.append(self._output(x, hw, flow.count))
            if i == self.out_indices[-1]:
                break
        return tuple(outs)
