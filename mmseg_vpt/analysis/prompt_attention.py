"""Where prompts attend, and what attends to them, layer by layer.

For a VPT backbone (``VPTVisionTransformer``, ``VPTSwinTransformer`` or
``VPTTimmViT``) and a set of layers, :class:`PromptAttentionRecorder`
captures, with forward pre-hooks that only read, what each selected layer's
attention module is given: the input of the ViT layer's
``nn.MultiheadAttention``; the windows, shift mask and prompts of the Swin
block's ``WindowMSA``, and its token grid; the input (and rotary embedding)
of a timm block's attention. :meth:`~PromptAttentionRecorder.maps` then has
those modules compute their attention probabilities (``attention_probs`` of
``SDPAMultiheadAttention`` and ``VPTWindowMSA``, from the projections of
their own forward; a timm attention module reruns its own non-fused path,
whose softmax output its ``attn_drop`` receives) and reduces them to two
maps over the image tokens:

* ``image_to_prompt``: for every image token, the attention it pays to the
  prompts (summed over prompts, averaged over heads), i.e. the share of its
  attention output that comes from prompts, in [0, 1].
* ``prompt_to_image``: for every image token, the attention the prompts pay
  to it (averaged over prompts and heads). For Swin, a prompt attends inside
  every window and its output is the mean over windows, so a token's value
  is its window's weight divided by the number of windows; the maps of all
  windows are assembled back into the feature map (shift undone).

Nothing is patched: the model computes exactly what it computes without the
recorder (tested bit for bit).
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

HW = Tuple[int, int]


@dataclass
class LayerAttention:
    """Attention maps of one layer (``B`` images, ``H x W`` tokens)."""
    layer: int
    num_prompts: int
    hw: HW
    image_to_prompt: Optional[torch.Tensor]  # (B, H, W); None: no prompts
    prompt_to_image: Optional[torch.Tensor]  # (B, H, W); None: no prompts
    # attention probabilities (B or B*nW, heads, T, T), kept on request
    probs: Optional[torch.Tensor] = None


def _backbone_kind(backbone: nn.Module) -> str:
    if hasattr(backbone, 'timm_model'):
        return 'timm'
    if hasattr(backbone, 'stages'):
        return 'swin'
    if hasattr(backbone, 'layers') and hasattr(backbone, 'patch_embed'):
        return 'vit'
    raise TypeError(f'{type(backbone).__name__} is neither a ViT (layers), '
                    'a Swin (stages) nor a timm ViT (timm_model) backbone')


def _blocks(backbone: nn.Module) -> List[nn.Module]:
    """The layer modules, in execution order."""
    kind = _backbone_kind(backbone)
    if kind == 'timm':
        return list(backbone.timm_model.blocks)
    if kind == 'vit':
        return list(backbone.layers)
    return [block for stage in backbone.stages for block in stage.blocks]


def num_layers(backbone: nn.Module) -> int:
    return len(_blocks(backbone))


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


class PromptAttentionRecorder:
    """Context manager recording the attention inputs of ``layers``.

    Args:
        backbone: A ``VPTVisionTransformer`` or ``VPTSwinTransformer`` (or
            mmseg's parents; without prompts the maps are None).
        layers: Layer indices in execution order (Swin: over the flattened
            block list); negative indices count from the end.

    Example::

        with PromptAttentionRecorder(model.backbone, [0, 5, 11]) as rec:
            model.backbone(inputs)
        maps = rec.maps()
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int]) -> None:
        self.backbone = backbone
        self.kind = _backbone_kind(backbone)
        blocks = _blocks(backbone)
        n = len(blocks)
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise ValueError(f'layers {bad} out of range: the backbone has '
                             f'{n} layers (0..{n - 1})')
        self.layers = sorted({i % n for i in layers})
        self._blocks = blocks
        self._handles: List = []
        # layer -> the attention module's arguments (detached)
        self.inputs: Dict[int, dict] = {}
        self.hw: Dict[int, HW] = {}

    # -- hooks (read only) --------------------------------------------------
    def _record(self, layer: int, names: Sequence[str]):
        """A pre-hook storing the call's arguments ``names``."""
        def hook(module, args, kwargs):
            bound = dict(zip(names, args), **kwargs)
            self.inputs[layer] = {k: _detach(bound.get(k)) for k in names}
        return hook

    def _record_hw(self, layer: int):
        """A pre-hook storing the ``hw_shape`` of a Swin block's attention.
        """
        def hook(module, args, kwargs):
            hw = args[1] if len(args) > 1 else kwargs['hw_shape']
            self.hw[layer] = tuple(int(s) for s in hw)
        return hook

    def _record_grid(self, module, args, output) -> None:
        """The ViT's token grid, from its patch embedding's output (mmseg's:
        ``(tokens, hw)``; timm's: (B, H, W, C) at dynamic sizes)."""
        hw = output[1] if self.kind == 'vit' else output.shape[1:3]
        for i in self.layers:
            self.hw[i] = tuple(int(s) for s in hw)

    def __enter__(self) -> 'PromptAttentionRecorder':
        self.inputs.clear()
        self.hw.clear()
        pre_hooks = []
        if self.kind in ('vit', 'timm'):
            embed = self.backbone.patch_embed if self.kind == 'vit' else \
                self.backbone.timm_model.patch_embed
            self._handles.append(embed.register_forward_hook(
                self._record_grid))
        for i in self.layers:
            block = self._blocks[i]
            if self.kind == 'timm':
                pre_hooks.append((block.attn, self._record(i, ['x', 'rope'])))
            elif self.kind == 'vit':
                # mmcv's MultiheadAttention wraps torch's, as ``.attn``
                pre_hooks.append((block.attn.attn,
                                  self._record(i, ['query'])))
            else:
                pre_hooks.append((block.attn, self._record_hw(i)))
                pre_hooks.append((block.attn.w_msa,
                                  self._record(i, ['x', 'mask', 'prompts'])))
        for module, hook in pre_hooks:
            self._handles.append(
                module.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- maps ---------------------------------------------------------------
    @torch.no_grad()
    def maps(self, keep_probs: bool = False) -> List[LayerAttention]:
        """The maps of every recorded layer (after a forward pass)."""
        missing = [i for i in self.layers if i not in self.inputs]
        if missing:
            raise RuntimeError(
                f'no attention input recorded for layers {missing}: run the '
                'backbone inside the recorder (and check that its layers '
                'call their attention modules)')
        out = []
        for i in self.layers:
            block, hw = self._blocks[i], self.hw[i]
            if self.kind == 'timm':
                out.append(_timm_maps(self.backbone, block.attn, i,
                                      self.inputs[i], hw, keep_probs))
            elif self.kind == 'vit':
                out.append(_vit_maps(self.backbone, block.attn.attn, i,
                                     self.inputs[i]['query'], hw,
                                     keep_probs))
            else:
                out.append(_swin_maps(block.attn, i, self.inputs[i], hw,
                                      keep_probs))
        return out


def timm_attention_probs(attn: nn.Module, x: torch.Tensor,
                         rope: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
    """The softmax attention (B, heads, N, N) of a timm attention module
    (``Attention``, ``EvaAttention``, ``AttentionRope``) on ``x``: its own
    non-fused path, run once more, hands the probabilities to
    ``attn_drop``, where a hook reads them."""
    if not (hasattr(attn, 'fused_attn') and isinstance(
            getattr(attn, 'attn_drop', None), nn.Module)):
        raise TypeError(f'{type(attn).__name__} has no fused_attn switch '
                        'and attn_drop module to read its attention from')
    probs = []
    handle = attn.attn_drop.register_forward_hook(
        lambda module, args, output: probs.append(args[0]))
    fused = attn.fused_attn
    attn.fused_attn = False
    try:
        attn(x) if rope is None else attn(x, rope=rope)
    finally:
        attn.fused_attn = fused
        handle.remove()
    return probs[0]


def _split_tokens(index: int, N: int, prefix: int, hw: HW) -> int:
    """The number of prompts among ``N`` tokens of a ViT layer."""
    P = N - prefix - hw[0] * hw[1]
    if P < 0:
        raise RuntimeError(
            f'layer {index}: {N} tokens for a {hw[0]}x{hw[1]} grid')
    return P


def _timm_maps(backbone, attn, index, inputs, hw, keep_probs
               ) -> LayerAttention:
    x = inputs['x']
    P = _split_tokens(index, x.shape[1],
                      backbone.timm_model.num_prefix_tokens, hw)
    if P == 0:
        return LayerAttention(index, 0, hw, None, None)
    probs = timm_attention_probs(attn, x, inputs.get('rope'))
    return _token_maps(index, probs, backbone.timm_model.num_prefix_tokens,
                       P, hw, keep_probs)


def _vit_maps(backbone, mha, index, query, hw, keep_probs) -> LayerAttention:
    x = query if mha.batch_first else query.transpose(0, 1)
    prefix = int(getattr(backbone, 'with_cls_token', True))
    P = _split_tokens(index, x.shape[1], prefix, hw)
    if P == 0:
        return LayerAttention(index, 0, hw, None, None)
    if not hasattr(mha, 'attention_probs'):
        raise TypeError(f'layer {index}: the attention module is a '
                        f'{type(mha).__name__}, which cannot give its '
                        'attention probabilities (attention_probs)')
    return _token_maps(index, mha.attention_probs(query), prefix, P, hw,
                       keep_probs)


def _token_maps(index, probs, prefix, P, hw, keep_probs) -> LayerAttention:
    """The two maps of a ViT layer's attention ``probs`` over
    ``[prefix, P prompts, H * W patches]``."""
    B, N = probs.shape[0], probs.shape[-1]
    H, W = hw
    img = slice(prefix + P, N)
    prm = slice(prefix, prefix + P)
    to_prompt = probs[:, :, img, prm].sum(-1).mean(1)
    from_prompt = probs[:, :, prm, img].mean(2).mean(1)
    return LayerAttention(index, P, hw, to_prompt.reshape(B, H, W),
                          from_prompt.reshape(B, H, W),
                          probs if keep_probs else None)


def _swin_maps(shift_msa, index, inputs, hw, keep_probs) -> LayerAttention:
    prompts = inputs.get('prompts')
    if prompts is None:
        return LayerAttention(index, 0, hw, None, None)
    B, P = prompts.shape[:2]
    probs = shift_msa.w_msa.attention_probs(inputs['x'], inputs.get('mask'),
                                            prompts)
    nW = probs.shape[0] // B
    to_prompt = probs[:, :, P:, :P].sum(-1).mean(1)  # (B*nW, N)
    from_prompt = probs[:, :, :P, P:].mean(2).mean(1) / nW
    H, W = hw
    ws, shift = shift_msa.window_size, shift_msa.shift_size
    H_pad, W_pad = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws

    def to_map(win: torch.Tensor) -> torch.Tensor:
        m = shift_msa.window_reverse(win.view(-1, ws, ws, 1), H_pad,
                                     W_pad).squeeze(-1)
        if shift > 0:
            m = torch.roll(m, shifts=(shift, shift), dims=(1, 2))
        return m[:, :H, :W]

    return LayerAttention(index, P, hw, to_map(to_prompt),
                          to_map(from_prompt), probs if keep_probs else None)


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def render_attention_grid(image_rgb, maps: Sequence[LayerAttention],
                          path: str, title: str = '',
                          sample: int = 0) -> None:
    """One PNG: a row per layer with the input image, image->prompt and
    prompt->image heat maps over it (each panel scaled to its own range,
    shown in its colour bar)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [m for m in maps if m.num_prompts > 0]
    if not rows:
        raise ValueError('none of the selected layers has prompts')
    H, W = image_rgb.shape[:2]
    fig, axes = plt.subplots(len(rows), 3, squeeze=False,
                             figsize=(9.6, 2.9 * len(rows) + 0.5), dpi=100)
    cols = ('input', 'image tokens -> prompts\n(sum over prompts)',
            'prompts -> image tokens\n(mean over prompts)')
    grey = np.asarray(image_rgb, np.float32).mean(-1)
    for r, m in enumerate(rows):
        for c in range(3):
            ax = axes[r][c]
            if c == 0:
                ax.imshow(image_rgb)
            else:  # the heat map over a grey copy, so its colours read
                ax.imshow(grey, cmap='gray', vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f'layer {m.layer}\n{m.hw[0]}x{m.hw[1]} tokens, '
                              f'{m.num_prompts} prompts', fontsize=8)
                continue
            heat = (m.image_to_prompt if c == 1 else m.prompt_to_image)
            heat = heat[sample].float().cpu()[None, None]
            heat = F.interpolate(heat, size=(H, W), mode='nearest')[0, 0]
            heat = heat.numpy()
            im = ax.imshow(heat, cmap='inferno', alpha=0.75,
                           vmin=float(np.min(heat)), vmax=float(np.max(heat)))
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
