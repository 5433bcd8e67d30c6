"""Where prompts attend, and what attends to them, layer by layer.

For a VPT backbone (``VPTVisionTransformer`` or ``VPTSwinTransformer``) and
a set of layers, :class:`PromptAttentionRecorder` captures, with forward
hooks that only read, each selected layer's attention input (the output of
the layer's first norm) and the token grid. :meth:`~PromptAttentionRecorder
.maps` then recomputes that layer's attention probabilities from the
layer's own modules (its qkv projection, scale and, for Swin, relative
position bias, cyclic shift and shift mask) and reduces them to two maps
over the image tokens:

* ``image_to_prompt``: for every image token, the attention it pays to the
  prompts (summed over prompts, averaged over heads), i.e. the share of its
  attention output that comes from prompts, in [0, 1].
* ``prompt_to_image``: for every image token, the attention the prompts pay
  to it (averaged over prompts and heads). For Swin, a prompt attends inside
  every window and its output is the mean over windows, so a token's value
  is its window's weight divided by the number of windows; the maps of all
  windows are assembled back into the feature map (shift undone).

Nothing is patched: the model computes exactly what it computes without the
recorder (tested bit for bit), and the backbones' own forward code is not
involved in the recomputation, only their parameters and, for Swin, mmseg's
window partition / reverse and the shift mask builder.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.backbones.vpt_swin import shift_window_mask

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
    if hasattr(backbone, 'stages'):
        return 'swin'
    if hasattr(backbone, 'layers') and hasattr(backbone, 'patch_embed'):
        return 'vit'
    raise TypeError(f'{type(backbone).__name__} is neither a ViT (layers) '
                    'nor a Swin (stages) backbone')


def _blocks(backbone: nn.Module) -> List[Tuple[nn.Module, int]]:
    """(layer module, stage index), in execution order."""
    if _backbone_kind(backbone) == 'vit':
        return [(layer, 0) for layer in backbone.layers]
    return [(block, s) for s, stage in enumerate(backbone.stages)
            for block in stage.blocks]


def num_layers(backbone: nn.Module) -> int:
    return len(_blocks(backbone))


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
        self.inputs: Dict[int, torch.Tensor] = {}
        self.stage_hw: Dict[int, HW] = {}

    # -- hooks (read only) --------------------------------------------------
    def _norm_hook(self, layer: int):
        def hook(module, args, output):
            self.inputs[layer] = output.detach()
        return hook

    def _hw_hook(self, stage: int):
        def hook(module, args, output):
            self.stage_hw[stage] = tuple(int(s) for s in output[1])
        return hook

    def __enter__(self) -> 'PromptAttentionRecorder':
        self.inputs.clear()
        self.stage_hw.clear()
        bb = self.backbone
        self._handles.append(
            bb.patch_embed.register_forward_hook(self._hw_hook(0)))
        if self.kind == 'swin':
            for s, stage in enumerate(bb.stages):
                if stage.downsample is not None:
                    self._handles.append(
                        stage.downsample.register_forward_hook(
                            self._hw_hook(s + 1)))
        for i in self.layers:
            block = self._blocks[i][0]
            norm = block.norm1  # ViT: property for ``ln1``
            self._handles.append(
                norm.register_forward_hook(self._norm_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- recomputation ------------------------------------------------------
    @torch.no_grad()
    def maps(self, keep_probs: bool = False) -> List[LayerAttention]:
        """The maps of every recorded layer (after a forward pass)."""
        missing = [i for i in self.layers if i not in self.inputs]
        if missing:
            raise RuntimeError(
                f'no attention input recorded for layers {missing}: run the '
                'backbone inside the recorder (and check that its layers '
                "call their `norm1`)")
        out = []
        for i in self.layers:
            block, stage = self._blocks[i]
            x = self.inputs[i]
            hw = self.stage_hw[stage]
            if self.kind == 'vit':
                out.append(_vit_maps(self.backbone, block, i, x, hw,
                                     keep_probs))
            else:
                out.append(_swin_maps(block, i, x, hw, keep_probs))
        return out


# --------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------
def vit_attention_probs(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention (B, heads, N, N) of an mmseg
    ``TransformerEncoderLayer`` on its normalised input ``x`` (B, N, C),
    from the layer's own weights."""
    attn = layer.attn
    mha = getattr(attn, 'attn', None)
    B, N, C = x.shape
    if isinstance(mha, nn.MultiheadAttention):
        heads = mha.num_heads
        if mha._qkv_same_embed_dim:
            qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
            q, k, _ = qkv.chunk(3, dim=-1)
        else:
            bq, bk, _ = (mha.in_proj_bias.chunk(3) if mha.in_proj_bias
                         is not None else (None, None, None))
            q = F.linear(x, mha.q_proj_weight, bq)
            k = F.linear(x, mha.k_proj_weight, bk)
    elif hasattr(attn, 'qkv') and hasattr(attn, 'num_heads'):
        heads = attn.num_heads  # timm-style fused qkv
        q, k, _ = attn.qkv(x).chunk(3, dim=-1)
    else:
        raise TypeError(f'cannot read the attention weights of '
                        f'{type(attn).__name__}')
    d = C // heads
    q = q.reshape(B, N, heads, d).transpose(1, 2)
    k = k.reshape(B, N, heads, d).transpose(1, 2)
    return torch.softmax((q * d**-0.5) @ k.transpose(-2, -1), dim=-1)


def _vit_maps(backbone, layer, index, x, hw, keep_probs) -> LayerAttention:
    B, N, _ = x.shape
    H, W = hw
    prefix = int(getattr(backbone, 'with_cls_token', True))
    P = N - prefix - H * W
    if P < 0:
        raise RuntimeError(f'layer {index}: {N} tokens for a {H}x{W} grid')
    if P == 0:
        return LayerAttention(index, 0, hw, None, None)
    probs = vit_attention_probs(layer, x)
    img = slice(prefix + P, N)
    prm = slice(prefix, prefix + P)
    to_prompt = probs[:, :, img, prm].sum(-1).mean(1)
    from_prompt = probs[:, :, prm, img].mean(2).mean(1)
    return LayerAttention(index, P, hw, to_prompt.reshape(B, H, W),
                          from_prompt.reshape(B, H, W),
                          probs if keep_probs else None)


# --------------------------------------------------------------------------
# Swin
# --------------------------------------------------------------------------
def swin_attention_probs(block: nn.Module, x: torch.Tensor, hw: HW,
                         num_prompts: int) -> Tuple[torch.Tensor, dict]:
    """Window attention probabilities of an mmseg ``SwinBlock`` whose
    normalised input ``x`` is ``[prompts, image tokens]`` (B, P + H*W, C),
    with the sample's prompts joined to every window (the VPT Swin rule).

    Returns probabilities (B * nW, heads, P + ws*ws, P + ws*ws), windows
    sample-major, prompts first; and the geometry needed to map windows
    back (``H_pad``, ``W_pad``, ``ws``, ``shift``).
    """
    sw = block.attn
    w_msa = sw.w_msa
    ws, shift = sw.window_size, sw.shift_size
    B, L, C = x.shape
    H, W = hw
    P = num_prompts
    tokens = x[:, P:].reshape(B, H, W, C)
    pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
    tokens = F.pad(tokens, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = tokens.shape[1], tokens.shape[2]
    if shift > 0:
        tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2))
    windows = sw.window_partition(tokens).view(-1, ws * ws, C)
    BnW, N, _ = windows.shape
    nW = BnW // B
    heads = w_msa.num_heads
    d = C // heads
    qkv = w_msa.qkv(windows).reshape(BnW, N, 3, heads, d)
    if P:
        pq = w_msa.qkv(x[:, :P]).reshape(B, 1, P, 3, heads, d)
        pq = pq.expand(B, nW, P, 3, heads, d).reshape(BnW, P, 3, heads, d)
        qkv = torch.cat([pq, qkv], dim=1)
    T = P + N
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q * w_msa.scale) @ k.transpose(-2, -1)
    Wh, Ww = w_msa.window_size
    bias = w_msa.relative_position_bias_table[
        w_msa.relative_position_index.view(-1)].view(Wh * Ww, Wh * Ww, -1)
    attn = attn + F.pad(bias.permute(2, 0, 1), (P, 0, P, 0)).unsqueeze(0)
    if shift > 0:
        mask = F.pad(shift_window_mask(ws, shift, Hp, Wp, x.device),
                     (P, 0, P, 0))
        attn = attn.view(B, nW, heads, T, T) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(BnW, heads, T, T)
    geometry = dict(H_pad=Hp, W_pad=Wp, ws=ws, shift=shift, nW=nW)
    return torch.softmax(attn, dim=-1), geometry


def _swin_maps(block, index, x, hw, keep_probs) -> LayerAttention:
    L = x.shape[1]
    H, W = hw
    P = L - H * W
    if P < 0:
        raise RuntimeError(f'layer {index}: {L} tokens for a {H}x{W} grid')
    if P == 0:
        return LayerAttention(index, 0, hw, None, None)
    probs, g = swin_attention_probs(block, x, hw, P)
    to_prompt = probs[:, :, P:, :P].sum(-1).mean(1)  # (B*nW, N)
    from_prompt = probs[:, :, :P, P:].mean(2).mean(1) / g['nW']

    def to_map(win: torch.Tensor) -> torch.Tensor:
        m = block.attn.window_reverse(win.view(-1, g['ws'], g['ws'], 1),
                                      g['H_pad'], g['W_pad']).squeeze(-1)
        if g['shift'] > 0:
            m = torch.roll(m, shifts=(g['shift'], g['shift']), dims=(1, 2))
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
