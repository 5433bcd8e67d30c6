"""VTAB-1k classification with the VPT backbones (through mmpretrain).

``mmseg_vpt.vtab.tasks`` (task table, methods, the paper's numbers),
``mmseg_vpt.vtab.table`` (what VTAB and FGVC share: the method record, the
search grids, the config renderer), ``mmseg_vpt.vtab.sweep`` and
``mmseg_vpt.vtab.report`` need no mmpretrain; ``mmseg_vpt.vtab.dataset``
registers ``VTABDataset`` in mmpretrain's registry and is imported by the
VTAB configs (``custom_imports``).
"""
from .tasks import (GROUPS, METHODS, PAPER_GROUP_MEANS, TASKS,
                    VIT_DEEP_PROMPT_LENGTH, get_method, render_task_config)

__all__ = [
    'GROUPS', 'METHODS', 'PAPER_GROUP_MEANS', 'TASKS',
    'VIT_DEEP_PROMPT_LENGTH', 'get_method', 'render_task_config'
]
