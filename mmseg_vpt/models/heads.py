"""The VPT paper's MLP-k baseline: a k-layer perceptron as classification
head on a frozen backbone.

The paper's MLP-3 is three Linear layers (two hidden ones as wide as the
feature, then the classifier): with ViT-B's 768 that is 1.18M parameters
per task, which is what makes its row 1.35x in the paper's "Total params"
(``tools/analysis/param_report.py --ratio``). The public VPT code puts
ReLU, BatchNorm1d and dropout 0.1 after each hidden layer; those are
arguments here (``act_cfg``, ``norm_cfg``, ``dropout_ratio``), and the VTAB
config sets them so.

:class:`MLPClsHead` is an mmpretrain ``ClsHead`` (loss, prediction and
top-k come from there) registered in mmpretrain's registry, so a config
with ``default_scope = 'mmpretrain'`` names it ``'MLPClsHead'``. This module
therefore imports mmpretrain, and is not imported by ``import mmseg_vpt``:
configs load it with ``custom_imports`` (``'mmseg_vpt.models.heads'``).
"""
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return value


@MODELS.register_module()
class MLPClsHead(ClsHead):
    """``num_layers`` Linear layers on the last backbone output.

    The input is the last element of the backbone's (or neck's) outputs:
    a ViT's ``[patch_map, cls_token]`` pair (the class token is used, as
    ``VisionTransformerClsHead`` does) or a (B, C) vector (e.g. from
    ``TokenPooling``). Each hidden layer is Linear -> activation [-> norm]
    [-> dropout]; the last Linear gives the class scores, with nothing
    after it.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Width of the input feature.
        num_layers (int): Linear layers, the classifier included (1: a
            linear head). Default: 3.
        hidden_channels (int, optional): Width of the hidden layers.
            Default: None (``in_channels``).
        act_cfg (dict): Activation between layers. Default: ReLU.
        norm_cfg (dict, optional): Norm after each hidden activation, e.g.
            ``dict(type='BN1d')``. Default: None.
        dropout_ratio (float): Dropout after each hidden layer. Default: 0.
        init_cfg (dict): Default: Kaiming normal (fan-out, ReLU) on every
            Linear layer, zero biases (the public VPT code's init).
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of mmpretrain's
            ``ClsHead``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_layers: int = 3,
                 hidden_channels: Optional[int] = None,
                 act_cfg: dict = dict(type='ReLU'),
                 norm_cfg: Optional[dict] = None,
                 dropout_ratio: float = 0.0,
                 init_cfg: Optional[dict] = dict(type='Kaiming',
                                                 layer='Linear'),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.num_classes = _positive_int('num_classes', num_classes)
        self.in_channels = _positive_int('in_channels', in_channels)
        self.num_layers = _positive_int('num_layers', num_layers)
        self.hidden_channels = _positive_int(
            'hidden_channels',
            in_channels if hidden_channels is None else hidden_channels)
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(
                f'dropout_ratio must be in [0, 1), got {dropout_ratio!r}')

        hidden = []
        width = in_channels
        for _ in range(num_layers - 1):
            block = OrderedDict(
                fc=nn.Linear(width, self.hidden_channels),
                act=build_activation_layer(act_cfg))
            if norm_cfg is not None:
                block['norm'] = build_norm_layer(norm_cfg,
                                                 self.hidden_channels)[1]
            if dropout_ratio > 0:
                block['drop'] = nn.Dropout(dropout_ratio)
            hidden.append(nn.Sequential(block))
            width = self.hidden_channels
        self.hidden = nn.Sequential(*hidden)
        self.fc = nn.Linear(width, num_classes)

    def pre_logits(self, feats: Sequence[Union[torch.Tensor, Tuple]]
                   ) -> torch.Tensor:
        """The output of the hidden layers (the feature the classifier
        reads)."""
        feat = feats[-1]
        if isinstance(feat, (list, tuple)):  # [patch_map, cls_token]
            feat = feat[-1]
        if feat.dim() != 2:
            raise TypeError(
                f'MLPClsHead takes (B, C) features or [patch_map, '
                f'cls_token] pairs, got shape {tuple(feat.shape)}; pool '
                "maps first (neck=dict(type='mmseg.TokenPooling'))")
        return self.hidden(feat)

    def forward(self, feats) -> torch.Tensor:
        return self.fc(self.pre_logits(feats))
