"""Weights files for timm's ViT family (``VPTTimmViT``), as pure functions.

A file is renamed to the timm model's own layout by timm's
``checkpoint_filter_fn`` of the model's class (``vision_transformer`` or
``eva``), which already knows timm's hub files, the official DINOv2 / DINOv3
/ EVA releases and OpenAI / OpenCLIP checkpoints, and resizes position
embeddings and patch kernels to the model. Here only what it does not know:

* MoCo v3's release keeps the ViT under ``module.base_encoder.`` (beside
  ``momentum_encoder.`` and ``predictor.``); only the base encoder is kept.
* MAE's release is timm's layout inside ``{'model': ...}`` (unwrapped by
  :func:`~mmseg_vpt.models.convert.load_checkpoint_file`).
* Classification parts (``head``, ``fc_norm``, ``attn_pool``...) that the
  backbone does not have are dropped and listed; anything else the model
  does not have, a shape that does not fit, or a tensor the model needs
  and the file lacks is an error (the caller checks the last).
"""
import re
from collections import OrderedDict
from typing import Dict, Mapping, Tuple

import torch
import torch.nn as nn

from ..utils.state_fit import StateFit, preview
from .convert import ConversionInfo

StateDict = Dict[str, torch.Tensor]

# classifier / pooling parts of a timm file that a backbone may not have
CLASSIFIER_KEYS = r'(head|head_dist|fc_norm|attn_pool|pre_logits)\..*'

_MOCO_PREFIX = 'base_encoder.'


def timm_layout(state_dict: Mapping[str, torch.Tensor],
                info: ConversionInfo) -> Tuple[StateDict, str]:
    """``state_dict`` with MoCo v3's wrapping removed, and the name of the
    layout (``mocov3``, ``dinov2``, ``openai_clip`` or ``timm``; MAE files
    are ``timm``)."""
    keys = list(state_dict)
    if any(k.startswith(_MOCO_PREFIX) for k in keys):
        others = [k for k in keys if not k.startswith(_MOCO_PREFIX)]
        if others:
            info.dropped.extend(others)
            info.note(f'MoCo v3 checkpoint: kept the base encoder, dropped '
                      f'{len(others)} other tensors ({preview(others, 3)})')
        return OrderedDict((k[len(_MOCO_PREFIX):], v)
                           for k, v in state_dict.items()
                           if k.startswith(_MOCO_PREFIX)), 'mocov3'
    if 'mask_token' in state_dict:
        return OrderedDict(state_dict), 'dinov2'
    if any(k.startswith(('visual.', 'module.visual.')) for k in keys):
        return OrderedDict(state_dict), 'openai_clip'
    return OrderedDict(state_dict), 'timm'


def _filter_fn(model: nn.Module):
    """timm's ``checkpoint_filter_fn`` for ``model``'s class."""
    from timm.models import eva, vision_transformer
    if isinstance(model, eva.Eva):
        return eva.checkpoint_filter_fn
    return vision_transformer.checkpoint_filter_fn


def to_timm_model(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                  info: ConversionInfo) -> Tuple[StateDict, str]:
    """Rename and fit a weights file's tensors to the timm ``model``.

    Returns the state dict in ``model``'s keys and the source layout.

    Raises:
        ValueError: keys the model does not have (other than classifier
            parts) or shapes that do not fit; the message names them.
    """
    state, fmt = timm_layout(state_dict, info)
    state = _filter_fn(model)(dict(state), model)
    target = model.state_dict()
    out, dropped, fit = OrderedDict(), [], StateFit()
    for key, value in state.items():
        if key not in target and re.fullmatch(CLASSIFIER_KEYS, key):
            dropped.append(key)
        elif fit.add(key, value, target):
            out[key] = value
    if fit.unexpected or fit.mismatched:
        raise ValueError(
            f'The checkpoint ({fmt} layout) does not fit the timm model '
            f'{type(model).__name__} (check model_name and timm_kwargs: '
            'width, depth, heads, patch size, register tokens). '
            + fit.describe())
    if dropped:
        info.dropped.extend(dropped)
        info.note(f'Dropped the classifier parts the backbone does not '
                  f'use: {preview(dropped, 4)}')
    return out, fmt
