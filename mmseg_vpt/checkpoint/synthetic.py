"""Random base weights and task files, for demos, benchmarks and tests that
cannot download pretrained weights (``tools/model_converters/random_base.py``,
``mmseg_vpt.analysis.serve_load``)."""
import copy
from typing import Optional

import torch
from mmengine.config import Config

from ..models.base_weights import StateDict
from .loading import model_from_config
from .saving import plan_tuned


def random_base_state(cfg: Config, seed: int = 0) -> StateDict:
    """The state dict of ``cfg``'s backbone with prompts off, randomly
    initialised (seeded) by its own ``init_weights``: a file of it loads
    like a converted release through ``init_cfg=dict(type='Pretrained')``.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['all'],
                              init_cfg=None)
    torch.manual_seed(seed)
    backbone = model_from_config(cfg).backbone
    backbone.init_weights()
    return backbone.state_dict()


def random_task_checkpoint(cfg: Config, seed: int, scale: float,
                           dataset_meta: Optional[dict] = None) -> dict:
    """A tuned-only checkpoint of ``cfg`` (whose backbone loads Pretrained
    base weights) as ``tools/train.py`` writes one, carrying the config and
    ``dataset_meta``: the model initialised (seeded), then every trainable
    tensor moved off its initial value by ``scale`` times N(0, 1) noise."""
    torch.manual_seed(seed)
    model = model_from_config(cfg)
    model.init_weights()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * scale)
    plan = plan_tuned(model, require=True)
    meta = dict(cfg=cfg.pretty_text)
    if dataset_meta is not None:
        meta['dataset_meta'] = dataset_meta
    return plan.apply({'meta': meta, 'state_dict': model.state_dict()})
