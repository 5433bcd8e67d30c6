"""FGVC classification (the VPT paper's five fine-grained datasets) with the
VPT backbones, through mmpretrain, on the VTAB machinery.

``mmseg_vpt.fgvc.tasks`` (dataset table, methods, the paper's numbers),
``mmseg_vpt.fgvc.layouts`` (the release layouts and splits) and
``mmseg_vpt.fgvc.benchmark`` (the sweep / report description) need no
mmpretrain; ``mmseg_vpt.fgvc.dataset`` registers ``FGVCDataset`` in
mmpretrain's registry and is imported by the FGVC configs
(``custom_imports``).
"""
from .tasks import (METHODS, PAPER_ACC, TASKS, VIT_DEEP_PROMPT_LENGTH,
                    get_method, render_task_config)

__all__ = ['METHODS', 'PAPER_ACC', 'TASKS', 'VIT_DEEP_PROMPT_LENGTH',
           'get_method', 'render_task_config']
