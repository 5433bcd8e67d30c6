"""Side-tuning, the VPT paper's "Sidetune" baseline.

Side-tuning (Zhang et al., ECCV 2020; baseline [87] of the VPT paper) keeps
the pretrained backbone frozen, trains a small "side" network on the same
image and hands the head a blend of the two,
``alpha * frozen + (1 - alpha) * side``, with a learned scalar ``alpha``.
:class:`SidetuneBackbone` wraps any backbone config, so one module serves
classification (a ViT's ``[patch_map, cls]`` pairs, or (B, C) vectors) and
segmentation (feature maps of any width and size).

Choices, and why:

* The side features are brought to each output's width: a 1x1 convolution
  for maps (then resized bilinearly to the map), and for vectors and class
  tokens a linear layer on the side map average-pooled to ``side_pool`` x
  ``side_pool`` and flattened. With the AlexNet-like default at 224 px that
  is the public VPT code's 256 x 6 x 6 = 9216 -> 768 projection (no bias):
  7.08M of the 9.55M parameters a task trains, which is what makes the
  paper's Sidetune row 3.69x (``tools/analysis/param_report.py --ratio``).
* ``alpha`` is not clamped (``alpha_form='linear'``): a clamp at the
  initial value 1 would stop its gradient after any step that pushed it
  above 1, freezing the blend at the backbone's features. With
  ``alpha_init=1`` the outputs are the wrapped backbone's bit for bit, yet
  alpha gets a gradient (frozen minus side features) from the first step,
  and the side network gets one as soon as alpha leaves 1.
  ``alpha_form='sigmoid'`` is the public VPT code's form (alpha =
  sigmoid(parameter), always in (0, 1); it starts at 0.5).
* The wrapped backbone keeps its own names (``backbone.*`` of this module),
  its own ``init_weights`` (the VPT backbones' all-or-nothing
  ``Pretrained`` load) and its freeze policy. This module's ``init_cfg`` is
  the wrapped backbone's, and it renames base files the way the wrapped
  backbone does, so tuned-only checkpoints (:mod:`mmseg_vpt.checkpoint`)
  work unchanged: the base file fills ``backbone.backbone.*`` and a task
  file holds the side network, projections, alpha and head.
"""
import copy
import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .base_weights import load_into_backbone
from .convert import convert_to_mmseg

ALPHA_FORMS = ('linear', 'sigmoid')


def _int_tuple(name: str, values: Sequence[int], length: int,
               minimum: int) -> Tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(
            values, (list, tuple)) or len(values) != length or not all(
                isinstance(v, int) and not isinstance(v, bool)
                and v >= minimum for v in values):
        raise ValueError(
            f'{name} must be {length} ints >= {minimum} (one per '
            f'convolution, as many as channels), got {values!r}')
    return tuple(values)


@MODELS.register_module()
class SideCNN(BaseModule):
    """A plain convolutional side network: per layer a convolution, ReLU
    and optionally a 3x3 max-pool of stride 2.

    The defaults are AlexNet's convolutional part (Krizhevsky et al., 2012,
    as torchvision's ``alexnet().features``), the side network of the
    public VPT code. The layers sit in ``features`` at torchvision's
    indices, so torchvision's ImageNet AlexNet weights load with
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (the public VPT
    code starts its side network from them; the classifier's keys are
    ignored).

    Args:
        in_channels (int): Input channels. Default: 3.
        channels (Sequence[int]): Output channels of each convolution; the
            depth is its length. Default: (64, 192, 384, 256, 256).
        kernel_sizes (Sequence[int]): Default: (11, 5, 3, 3, 3).
        strides (Sequence[int]): Default: (4, 1, 1, 1, 1).
        paddings (Sequence[int]): Default: (2, 2, 1, 1, 1).
        pool_after (Sequence[int]): Indices of the convolutions followed by
            the max-pool. Default: (0, 1, 4).
        init_cfg (dict, optional): Default: Kaiming normal (fan-out, ReLU)
            on the convolutions, zero biases, as torchvision initialises
            AlexNet.
    """

    def __init__(self,
                 in_channels: int = 3,
                 channels: Sequence[int] = (64, 192, 384, 256, 256),
                 kernel_sizes: Sequence[int] = (11, 5, 3, 3, 3),
                 strides: Sequence[int] = (4, 1, 1, 1, 1),
                 paddings: Sequence[int] = (2, 2, 1, 1, 1),
                 pool_after: Sequence[int] = (0, 1, 4),
                 init_cfg: Optional[dict] = dict(type='Kaiming',
                                                 layer='Conv2d')) -> None:
        super().__init__(init_cfg=init_cfg)
        depth = len(channels) if isinstance(channels, (list, tuple)) else 0
        if depth == 0:
            raise ValueError(f'channels must be a non-empty list of ints '
                             f'(one per convolution), got {channels!r}')
        channels = _int_tuple('channels', channels, depth, 1)
        kernel_sizes = _int_tuple('kernel_sizes', kernel_sizes, depth, 1)
        strides = _int_tuple('strides', strides, depth, 1)
        paddings = _int_tuple('paddings', paddings, depth, 0)
        if not isinstance(pool_after, (list, tuple)) or not all(
                isinstance(i, int) and 0 <= i < depth for i in pool_after):
            raise ValueError(f'pool_after must list convolution indices in '
                             f'[0, {depth}), got {pool_after!r}')
        layers: List[nn.Module] = []
        width = in_channels
        for i, (c, k, s, p) in enumerate(
                zip(channels, kernel_sizes, strides, paddings)):
            layers += [nn.Conv2d(width, c, k, stride=s, padding=p),
                       nn.ReLU(inplace=True)]
            if i in pool_after:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            width = c
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _build(cfg: dict) -> nn.Module:
    """Build ``cfg`` from mmseg's registry also under another default
    scope (the VTAB configs' is mmpretrain); a scoped type such as
    ``'mmpretrain.ResNet'`` still names another registry."""
    return MODELS.build(dict(dict(_scope_='mmseg'), **cfg))


def _as_init_cfg(value: Any) -> Any:
    """``init_cfg`` given to the wrapper for the wrapped backbone: a dict
    with only ``checkpoint`` (what ``--cfg-options
    model.backbone.init_cfg.checkpoint=PATH`` makes) means Pretrained."""
    value = copy.deepcopy(value)
    if isinstance(value, Mapping) and 'type' not in value and \
            'checkpoint' in value:
        value = dict(type='Pretrained', **value)
    return value


@MODELS.register_module()
class SidetuneBackbone(BaseModule):
    """A frozen backbone whose outputs are blended with a side network's
    features (see the module docstring).

    For every output of the wrapped backbone: a (B, C, H, W) map becomes
    ``alpha * map + (1 - alpha) * resize(conv1x1(side))``; a (B, C) vector
    ``alpha * vector + (1 - alpha) * linear(flatten(pool(side)))``; a
    ``[patch_map, cls]`` pair (a ViT with ``output_cls_token=True``) gets
    both, the class token blended with the pooled side features. The layout
    and widths are read once, at construction, from a no-grad forward pass
    of a 3-channel zero image of ``probe_size`` pixels.

    Trainable: the side network, the projections and alpha. Outputs keep
    the wrapped backbone's container types, so heads do not change.

    Args:
        backbone (dict): Config of the wrapped backbone, built from mmseg's
            registry (e.g. ``VPTVisionTransformer`` with
            ``prompt_length=0, frozen_exclude=[]``).
        side (dict, optional): Config of the side network (mmseg's
            registry; ``type`` defaults to ``'SideCNN'``; any module whose
            output, or last output, is a (B, C, h, w) map). Default: None,
            the AlexNet-like :class:`SideCNN`.
        alpha_init (float): Initial alpha. Default: 1.0 (the wrapped
            backbone's outputs exactly).
        alpha_form (str): ``'linear'`` (alpha is the parameter, unclamped)
            or ``'sigmoid'`` (alpha = sigmoid(parameter), the public VPT
            code's; ``alpha_init`` must be in (0, 1)). Default: 'linear'.
        side_pool (int): Grid the side map is average-pooled to before the
            linear projection for vectors and class tokens. Default: 6
            (AlexNet's).
        blend_patch_map (bool): Also blend the patch maps of
            ``[patch_map, cls]`` outputs. A head that reads only the class
            token would leave that projection without a gradient: set False
            then (the VTAB config does). Default: True.
        freeze_backbone (bool): Freeze every parameter of the wrapped
            backbone and keep it in eval mode while training. False leaves
            its own policy (e.g. VPT prompts that train beside the side
            network). Default: True.
        probe_size (int): Image size of the construction-time forward pass.
            Default: 64.
        init_cfg (dict, optional): The wrapped backbone's ``init_cfg``
            (replaces the one in ``backbone``; ``dict(checkpoint=PATH)``
            means Pretrained). Reading ``init_cfg`` gives the wrapped
            backbone's. Default: None (keep the one in ``backbone``).
    """

    def __init__(self,
                 backbone: dict,
                 side: Optional[dict] = None,
                 alpha_init: float = 1.0,
                 alpha_form: str = 'linear',
                 side_pool: int = 6,
                 blend_patch_map: bool = True,
                 freeze_backbone: bool = True,
                 probe_size: int = 64,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__()
        if alpha_form not in ALPHA_FORMS:
            raise ValueError(f'alpha_form must be one of {ALPHA_FORMS}, '
                             f'got {alpha_form!r}')
        if not isinstance(alpha_init, (int, float)) or isinstance(
                alpha_init, bool) or not math.isfinite(alpha_init) or (
                    alpha_form == 'sigmoid' and not 0 < alpha_init < 1):
            raise ValueError(
                f'alpha_init must be a finite number (in (0, 1) with '
                f"alpha_form='sigmoid'), got {alpha_init!r}")
        if not isinstance(side_pool, int) or side_pool < 1:
            raise ValueError(f'side_pool must be an int >= 1, got '
                             f'{side_pool!r}')
        self.alpha_form = alpha_form
        self.alpha_init = float(alpha_init)
        self.side_pool = side_pool
        self.blend_patch_map = bool(blend_patch_map)
        self.freeze_backbone = bool(freeze_backbone)

        self.backbone = _build(backbone)
        self.side = _build(dict(dict(type='SideCNN'), **(side or {})))
        if init_cfg is not None:
            self.init_cfg = init_cfg  # the wrapped backbone's, see below
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.reset_alpha()
        self.projections = self._build_projections(probe_size)

    # ------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------
    @torch.no_grad()
    def _probe(self, size: int) -> Tuple[Any, torch.Tensor]:
        """The wrapped backbone's and the side network's outputs for a zero
        image (eval mode; both modules' modes are restored)."""
        modes = [(m, m.training) for m in self.modules()]
        param = next(self.backbone.parameters(), None)
        x = torch.zeros(1, 3, size, size, dtype=getattr(
            param, 'dtype', torch.float32), device=getattr(
                param, 'device', 'cpu'))
        try:
            self.eval()
            return self.backbone(x), self._side_map(x)
        finally:
            for module, mode in modes:
                module.training = mode

    @staticmethod
    def _kind(out: Any, index: int) -> Tuple[str, ...]:
        if isinstance(out, torch.Tensor) and out.dim() in (2, 4):
            return ('map' if out.dim() == 4 else 'vector', out.shape[1])
        if isinstance(out, (list, tuple)) and len(out) == 2 and all(
                isinstance(t, torch.Tensor) for t in out) and \
                out[0].dim() == 4 and out[1].dim() == 2:
            return ('pair', out[0].shape[1], out[1].shape[1])
        shape = [tuple(getattr(t, 'shape', ())) for t in out] if isinstance(
            out, (list, tuple)) else tuple(out.shape) if isinstance(
                out, torch.Tensor) else type(out).__name__
        raise TypeError(
            f'SidetuneBackbone: backbone output {index} is {shape}; '
            'expected a (B, C, H, W) map, a (B, C) vector or a '
            '[patch_map, cls_token] pair')

    def _build_projections(self, probe_size: int) -> nn.ModuleList:
        outs, side = self._probe(probe_size)
        self._single = isinstance(outs, torch.Tensor)
        outs = [outs] if self._single else list(outs)
        self._layout = [self._kind(out, i) for i, out in enumerate(outs)]
        width = side.shape[1]
        flat = width * self.side_pool**2
        projections = nn.ModuleList()
        for kind in self._layout:
            proj = nn.ModuleDict()
            if kind[0] == 'map' or (kind[0] == 'pair'
                                    and self.blend_patch_map):
                proj['map'] = nn.Conv2d(width, kind[1], 1, bias=False)
            if kind[0] in ('vector', 'pair'):
                proj['vector'] = nn.Linear(flat, kind[-1], bias=False)
            projections.append(proj)
        return projections.to(device=side.device, dtype=side.dtype)

    # ------------------------------------------------------------------
    # the wrapped backbone's init and base weights
    # ------------------------------------------------------------------
    @property
    def init_cfg(self) -> Any:
        backbone = self._modules.get('backbone')
        return None if backbone is None else backbone.init_cfg

    @init_cfg.setter
    def init_cfg(self, value: Any) -> None:
        backbone = self._modules.get('backbone')
        if backbone is not None:
            backbone.init_cfg = _as_init_cfg(value)
        elif value is not None:  # BaseModule.__init__ sets None first
            raise RuntimeError('init_cfg is set after the backbone exists')

    def init_weights(self) -> None:
        """The wrapped backbone's own init (its Pretrained base weights,
        all or nothing for the VPT backbones), a fresh random side network
        and projections, alpha at ``alpha_init``. Runs again on every call:
        the tuned-checkpoint loader re-initialises through it."""
        for module in (self.backbone, self.side):
            if hasattr(module, '_is_init'):
                module._is_init = False
            if hasattr(module, 'init_weights'):
                module.init_weights()
        for proj in self.projections:
            for layer in proj.values():
                layer.reset_parameters()
        self.reset_alpha()
        self._is_init = True

    @torch.no_grad()
    def reset_alpha(self) -> None:
        value = self.alpha_init if self.alpha_form == 'linear' else \
            math.log(self.alpha_init / (1 - self.alpha_init))
        self.alpha.fill_(value)

    def pretrained_layout(self, state_dict: Dict[str, torch.Tensor],
                          info) -> Tuple[Dict[str, torch.Tensor], str]:
        """A base file's tensors under this module's keys: renamed as the
        wrapped backbone's loader renames them, under ``backbone.``
        (:func:`mmseg_vpt.checkpoint.base_file_keys` reads it)."""
        layout = getattr(self.backbone, 'pretrained_layout', None)
        if layout is None:
            state, fmt = convert_to_mmseg(state_dict, info=info)
        else:
            state, fmt = layout(state_dict, info)
        return OrderedDict(
            (f'backbone.{k}', v) for k, v in state.items()), fmt

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args, **kwargs) -> None:
        """Load a tuned-only checkpoint's base weights first, as the VPT
        backbones do (the base record sits in this module's metadata)."""
        load_into_backbone(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)

    def train(self, mode: bool = True) -> 'SidetuneBackbone':
        super().train(mode)
        if mode and self.freeze_backbone:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def alpha_value(self) -> torch.Tensor:
        """The blend weight of the frozen features."""
        return self.alpha if self.alpha_form == 'linear' else \
            torch.sigmoid(self.alpha)

    def _side_map(self, x: torch.Tensor) -> torch.Tensor:
        out = self.side(x)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise TypeError(
                'SidetuneBackbone: the side network must return a (B, C, '
                f'h, w) map (or a sequence ending in one), got '
                f'{getattr(out, "shape", type(out))}')
        return out

    def forward(self, x: torch.Tensor) -> Any:
        outs = self.backbone(x)
        seq = [outs] if self._single else outs
        if len(seq) != len(self._layout):
            raise RuntimeError(
                f'SidetuneBackbone: the backbone returned {len(seq)} '
                f'outputs, {len(self._layout)} at construction')
        side = self._side_map(x)
        pooled = None
        if any(kind[0] != 'map' for kind in self._layout):
            pooled = F.adaptive_avg_pool2d(side, self.side_pool).flatten(1)
        alpha = self.alpha_value()

        def mix(frozen, proj, source):
            return alpha * frozen + (1 - alpha) * proj(source)

        def mix_map(frozen, proj):
            feat = proj(side)
            if feat.shape[-2:] != frozen.shape[-2:]:
                feat = F.interpolate(feat, size=frozen.shape[-2:],
                                     mode='bilinear', align_corners=False)
            return alpha * frozen + (1 - alpha) * feat

        blended = []
        for out, kind, proj in zip(seq, self._layout, self.projections):
            if kind[0] == 'map':
                out = mix_map(out, proj['map'])
            elif kind[0] == 'vector':
                out = mix(out, proj['vector'], pooled)
            else:
                patch_map, cls_token = out
                if 'map' in proj:
                    patch_map = mix_map(patch_map, proj['map'])
                out = type(out)([patch_map,
                                 mix(cls_token, proj['vector'], pooled)])
            blended.append(out)
        if self._single:
            return blended[0]
        return type(outs)(blended)

    def extra_repr(self) -> str:
        return (f'alpha_form={self.alpha_form!r}, alpha_init='
                f'{self.alpha_init}, side_pool={self.side_pool}, '
                f'layout={self._layout}')
