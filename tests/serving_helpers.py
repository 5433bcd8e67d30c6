"""Bases and task files for the serving tests: tiny demo models with random
base weights, and task files that differ in prompt length, prompted layers,
class count, head and test mode."""
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from mmengine.config import Config

from mmseg_vpt.checkpoint.synthetic import random_task_checkpoint

from .test_task_file_loading import SWIN_DEMO, VIT_DEMO, write_base
from .tools_helpers import REPO

CONFIGS = {'vit': VIT_DEMO, 'swin': SWIN_DEMO}
SLIDE = dict(mode='slide', crop_size=(48, 48), stride=(32, 32))

#: task name -> (backbone overrides, other config overrides); the tasks of
#: one backbone differ in prompt length, prompted layers, classes, head
#: and test mode (whole / sliding window)
TASKS: Dict[str, Dict[str, tuple]] = {
    'vit': {
        'ade': ({}, {}),
        'shallow7': (dict(prompt_length=3, prompt_layers='shallow'),
                     {'model.decode_head.num_classes': 7}),
        'fcn4': (dict(prompt_length=6, prompt_layers=[1, 2],
                      out_indices=(1, 3)),
                 {'model.decode_head': dict(
                     _delete_=True, type='FCNHead', in_channels=96,
                     channels=32, num_convs=1, in_index=1, num_classes=4,
                     norm_cfg=dict(type='BN', requires_grad=True),
                     align_corners=False),
                  'model.auxiliary_head': None,
                  'model.test_cfg': SLIDE}),
    },
    'swin': {
        'ade': ({}, {}),
        'shallow7': (dict(prompt_length=3, prompt_layers='shallow'),
                     {'model.decode_head.num_classes': 7}),
        'slide4': (dict(prompt_length=6, prompt_layers=[1, 2, 5]),
                   {'model.decode_head.num_classes': 4,
                    'model.test_cfg': SLIDE}),
    },
}


def base_file(kind: str, path: Path) -> Path:
    """Random base weights for the demo ``kind`` backbone."""
    return write_base(CONFIGS[kind], path)


def task_config(kind: str, base: Path, backbone: Optional[dict] = None,
                **options) -> Config:
    cfg = Config.fromfile(str(REPO / CONFIGS[kind]))
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=str(base))
    cfg.model.backbone.update(backbone or {})
    for key, value in options.items():
        cfg.merge_from_dict({key: value})
    return cfg


def write_task_file(cfg: Config, path: Path, seed: int,
                    classes: Optional[list] = None) -> Path:
    """A tuned-only task file of ``cfg`` with every trainable tensor moved
    off its initial value (seeded), carrying its config and class names as
    tools/train.py writes them."""
    num_classes = cfg.model.decode_head.num_classes
    names = classes or [f'{path.stem}-{i}' for i in range(num_classes)]
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (num_classes, 3)).tolist()
    ckpt = random_task_checkpoint(cfg, seed, 0.1,
                                  dict(classes=names, palette=palette))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def write_tasks(kind: str, folder: Path) -> Dict[str, tuple]:
    """The base and the three task files of ``kind`` in ``folder``:
    {'base': path, task: (config, path)}."""
    base = base_file(kind, folder / f'{kind}_base.pth')
    out = {'base': base}
    for seed, (name, (backbone, options)) in enumerate(TASKS[kind].items()):
        cfg = task_config(kind, base, backbone, **options)
        out[name] = (cfg, write_task_file(cfg, folder / f'{name}.pth',
                                          seed))
    return out


def random_images(n: int, seed: int = 0, size=(70, 90)) -> list:
    """BGR uint8 images, not a multiple of any patch or window size."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            for _ in range(n)]
