"""FGVC as a benchmark of the VTAB sweep and report.

:data:`FGVC_TABLE` tells :mod:`mmseg_vpt.vtab.report` how to lay FGVC
results out (the paper's Table 1 columns: one per dataset, then the mean)
and :data:`FGVC` tells :mod:`mmseg_vpt.vtab.sweep` its configs folder,
data root and which splits the grid and the final runs use; the protocol
itself (grid on train -> val, best val top-1, final runs on trainval ->
test over seeds, resumable jobs) is the VTAB code's. No mmpretrain here.
"""
from collections import OrderedDict

from ..vtab.report import ResultTable
from ..vtab.sweep import Benchmark
from .tasks import METHODS, PAPER_ACC, PAPER_ROWS, TASKS, render_task_config

__all__ = ['FGVC', 'FGVC_TABLE', 'MEAN']

MEAN = 'Mean'

FGVC_TABLE = ResultTable(
    key='fgvc', title='FGVC', label='FGVC', tasks=tuple(TASKS),
    # one column per dataset, then their plain mean (the paper's layout)
    groups=OrderedDict([(t.title, (t.name, )) for t in TASKS.values()] +
                       [(MEAN, tuple(TASKS))]),
    methods=METHODS, paper=PAPER_ACC, paper_decimals=1,
    caption='per dataset and mean',
    footnote='Mean = plain mean of the per-dataset means; "(k/5)": only k '
    'of the 5 datasets have results, not comparable with the paper.',
    paper_rows=PAPER_ROWS,
    paper_note="The paper's Table 1 (ViT-B/16, ImageNet-21k), FGVC. Values "
    'as printed (one decimal) by a third-party reprint of that table; the '
    'rows marked "not verified" are left empty '
    '(mmseg_vpt/fgvc/tasks.py says where each number comes from).')

FGVC = Benchmark(
    name='FGVC', table=FGVC_TABLE, config_folder='fgvc',
    render=render_task_config, data_root='data/fgvc',
    work_dir='work_dirs/fgvc_sweep',
    splits=('train', 'val', 'trainval', 'test'))
