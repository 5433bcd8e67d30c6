"""FGVC task table, tuning methods and the VPT paper's reference numbers.

The five fine-grained datasets the VPT paper (Jia et al., ECCV 2022, arXiv
2203.12119) reports beside VTAB-1k. Everything the FGVC configs, the
dataset, the sweep and the report agree on lives here, with no dependency
on mmpretrain; the method record, the search grids and the config
renderer are VTAB's (:mod:`mmseg_vpt.vtab.table`).

Sources:

* Class counts: the datasets' public releases (NABirds: the 555 leaf
  classes that occur in its ``image_class_labels.txt``, as the paper and the
  public VPT code's NABirds config use).
* Split sizes (train / val / test): the VPT paper's appendix table of the
  datasets. Each train + val equals the official training set (CUB 5,994,
  NABirds 23,929, Stanford Dogs 12,000, Stanford Cars 8,144; Oxford Flowers
  has an official 1,020 / 1,020 / 6,149 split) and each val is
  ``n - floor(0.9 n)``, which is how :func:`~mmseg_vpt.fgvc.layouts.
  split_train_val` sizes its split.
* Paper accuracies (``PAPER_ACC``): see the comment there.
* Prompt lengths: 10 for every dataset (our default; the paper tunes them
  per dataset).
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..vtab.table import FULL_FT_LRS, Method, TaskTable

__all__ = ['FGVCTask', 'TASKS', 'SPLITS', 'VAL_FRACTION', 'SPLIT_SEED',
           'VIT_DEEP_PROMPT_LENGTH', 'PAPER_ACC', 'PAPER_ROWS', 'METHODS',
           'TABLE', 'get_method', 'get_task', 'render_task_config']


@dataclass(frozen=True)
class FGVCTask:
    """One FGVC dataset.

    ``json_root`` is the folder (relative to ``folder``) that the keys of
    the public VPT release's ``train.json`` / ``val.json`` / ``test.json``
    are relative to.
    """
    name: str          # config / tool name
    title: str         # the paper's column name
    folder: str        # folder under data_root (the release's own name)
    num_classes: int
    train: int         # the paper's split sizes
    val: int
    test: int
    official_val: bool = False  # Oxford Flowers: no random split
    json_root: str = ''


# In the paper's column order.
TASKS: 'OrderedDict[str, FGVCTask]' = OrderedDict((t.name, t) for t in [
    FGVCTask('cub', 'CUB-200-2011', 'CUB_200_2011', 200, 5394, 600, 5794,
             json_root='images'),
    FGVCTask('nabirds', 'NABirds', 'nabirds', 555, 21536, 2393, 24633,
             json_root='images'),
    FGVCTask('oxford_flowers', 'Oxford Flowers', 'oxford_flowers', 102,
             1020, 1020, 6149, official_val=True),
    FGVCTask('stanford_dogs', 'Stanford Dogs', 'stanford_dogs', 120, 10800,
             1200, 8580, json_root='Images'),
    FGVCTask('stanford_cars', 'Stanford Cars', 'stanford_cars', 196, 7329,
             815, 8041),
])

# train: the paper's hyperparameter-search training set; val: its
# validation set; trainval: both (the final runs); test: the official test.
SPLITS = ('train', 'val', 'trainval', 'test')
# The paper's protocol: 10% of the official training set, at random,
# becomes val (Oxford Flowers keeps its official val). The seed is ours.
VAL_FRACTION = 0.1
SPLIT_SEED = 0

# VPT-deep / VPT-shallow prompt tokens per layer: 10 everywhere, our
# default (the paper tunes them per dataset).
VIT_DEEP_PROMPT_LENGTH: Dict[str, int] = {name: 10 for name in TASKS}

# The VPT paper's Table 1 (ViT-B/16, supervised ImageNet-21k), FGVC:
# per-dataset test top-1 in TASKS order, then the mean, keyed by
# (backbone, method). Source: a third-party reprint of that table (the
# FGVC table of the AOFT paper), which prints every value with one
# decimal; the VPT paper prints the means with two. The paper's other FGVC
# rows (Linear, Partial-1, MLP-3, Sidetune, Bias, VPT-shallow) have no
# values here: PAPER_ROWS lists them empty.
PAPER_ACC: Dict[Tuple[str, str], Tuple[float, ...]] = {
    ('ViT-B/16', 'full'): (87.3, 82.7, 98.8, 89.4, 84.5, 88.5),
    ('ViT-B/16', 'adapter'): (87.1, 84.3, 98.5, 89.8, 68.6, 85.7),
    ('ViT-B/16', 'vpt-deep'): (88.5, 84.2, 99.0, 90.2, 83.6, 89.1),
}
# Every FGVC row of the paper's Table 1, as the report lists them: label,
# key into PAPER_ACC (None: no values).
PAPER_ROWS: Tuple[Tuple[str, Optional[Tuple[str, str]]], ...] = (
    ('Full', ('ViT-B/16', 'full')),
    ('Linear', None),
    ('Partial-1', None),
    ('MLP-3', None),
    ('Sidetune', None),
    ('Bias', None),
    ('Adapter', ('ViT-B/16', 'adapter')),
    ('VPT-shallow', None),
    ('VPT-deep', ('ViT-B/16', 'vpt-deep')),
)


# The paper's Table 1 rows this project can run. Grids: the VTAB ones
# (base lr x weight decay); full fine-tuning searches FULL_FT_LRS, which are
# also the rates the public VPT code's FGVC tuning script uses for it.
METHODS: 'OrderedDict[str, Method]' = OrderedDict((m.name, m) for m in [
    Method('vpt-deep', 'vit-b16_vpt-deep.py', 'ViT-B/16', 'vpt-deep',
           VIT_DEEP_PROMPT_LENGTH,
           description='prompts in every layer, [CLS] head '
           '(the paper); 10 prompts (our default)'),
    Method('vpt-shallow', 'vit-b16_vpt-shallow.py', 'ViT-B/16',
           'vpt-shallow', VIT_DEEP_PROMPT_LENGTH,
           description='prompts in the first layer only; 10 prompts '
           '(our default)'),
    Method('linear', 'vit-b16_linear.py', 'ViT-B/16', 'linear', None,
           description='frozen backbone, linear head only'),
    Method('bias', 'vit-b16_bias.py', 'ViT-B/16', 'bias', None,
           description='biases of the backbone + head'),
    Method('full', 'vit-b16_full.py', 'ViT-B/16', 'full', None,
           lrs=FULL_FT_LRS,
           description='every weight trains (lr grid: our default)'),
    Method('partial-1', 'vit-b16_partial-1.py', 'ViT-B/16', 'partial-1',
           None, lrs=FULL_FT_LRS,
           description='the last layer and the final norm train (lr '
           'grid: the full fine-tuning one, our default)'),
    Method('adapter-8', 'vit-b16_adapter-8.py', 'ViT-B/16', 'adapter',
           None, description='bottleneck adapters of reduction 8 after '
           'every MLP (the paper picks 8, 64 or 256 per dataset)'),
    Method('mlp-3', 'vit-b16_mlp-3.py', 'ViT-B/16', 'mlp-3', None,
           description='frozen backbone, 3-layer MLP head on the [CLS] '
           'token'),
    Method('sidetune', 'vit-b16_sidetune.py', 'ViT-B/16', 'sidetune',
           None, lrs=FULL_FT_LRS,
           description='frozen backbone blended with a trained '
           'AlexNet-like side network (lr grid: the full fine-tuning '
           'one)'),
])


TABLE = TaskTable(
    label='FGVC', noun='dataset',
    num_classes=OrderedDict((t.name, t.num_classes) for t in TASKS.values()),
    methods=METHODS, task_variable='fgvc_dataset', dataset_field='name',
    renderer='mmseg_vpt.fgvc.tasks.render_task_config',
    guide='FGVC classification')


def get_task(name: str) -> FGVCTask:
    TABLE.check_task(name)
    return TASKS[name]


def get_method(name: str) -> Method:
    return TABLE.get_method(name)


def render_task_config(task: str, method: str = 'vpt-deep',
                       base_dir: str = './_base_') -> str:
    """The few-line config of ``task`` for ``method``.

    ``configs/fgvc/<task>.py`` is this text for ``vpt-deep``;
    ``tools/fgvc_sweep.py --write-configs`` writes it for other methods.
    """
    t = get_task(task)
    return TABLE.render(task, method, base_dir,
                        f'FGVC {t.title} ({t.num_classes} classes; paper '
                        f'splits {t.train}/{t.val}/{t.test})')
