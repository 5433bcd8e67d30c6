"""Loading pretrained weights into a frozen backbone, all or nothing.

mmseg's backbones load ``init_cfg=dict(type='Pretrained')`` with
``strict=False``: a wrong or half-matching file only prints a warning. Full
fine-tuning may recover from that; a frozen backbone cannot, so the VPT
backbones load through :func:`load_pretrained` instead. Each backbone
renames the file to its own keys and fits it (``pretrained_layout`` /
``fit_pretrained``: :mod:`mmseg_vpt.models.convert` for mmseg's ViT and
Swin, :mod:`mmseg_vpt.models.timm_weights` for timm's ViT family), and the
load fails if anything the model needs is missing.
"""
import re
from typing import Sequence

import torch.nn as nn
from mmengine.logging import print_log

from ..utils.state_fit import preview
from .convert import ConversionInfo, load_checkpoint_file


def load_pretrained(model: nn.Module, path: str,
                    optional: Sequence[str] = ('prompt', )) -> None:
    """Load the backbone weights file ``path`` into ``model``.

    Args:
        model: a VPT backbone (its ``pretrained_layout`` and
            ``fit_pretrained`` rename and fit the file).
        path: a checkpoint in any layout ``convert.detect_format`` knows.
        optional: regular expressions for parameters the file need not
            provide (they keep their initial values, and are logged).

    Raises:
        FileNotFoundError / ValueError: the file is missing or unreadable, in
            an unknown layout, has keys or shapes the model does not, or
            lacks parameters the model needs; the message names the file and
            the keys.
    """
    info = ConversionInfo()
    state = load_checkpoint_file(path, info=info)
    try:
        state, fmt = model.pretrained_layout(state, info)
        state = model.fit_pretrained(state, info)
    except ValueError as err:
        raise ValueError(f'Pretrained weights {path!r}: {err}') from err
    missing, _ = model.load_state_dict(state, strict=False)
    required = [k for k in missing
                if not any(re.search(p, k) for p in optional)]
    if required:
        raise ValueError(
            f'Pretrained weights {path!r} ({fmt} layout) do not provide '
            f'{len(required)} parameters of {type(model).__name__}: '
            f'{preview(required)}')
    kept = [k for k in missing if 'prompt' not in k]
    print_log(
        f'Loaded {len(state)} tensors from {path} ({fmt} layout)' +
        (f'; kept initial values for {kept}' if kept else ''),
        logger='current')
