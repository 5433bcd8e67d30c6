"""FGVC task table, tuning methods and the VPT paper's reference numbers.

The five fine-grained datasets the VPT paper (Jia et al., ECCV 2022, arXiv
2203.12119) reports beside VTAB-1k. Everything the FGVC configs, the
dataset, the sweep and the report agree on lives here, with no dependency
on mmpretrain; the methods reuse :class:`mmseg_vpt.vtab.tasks.Method`.

Sources, and what could not be checked here:

* Class counts: the datasets' public releases (NABirds: the 555 leaf
  classes that occur in its ``image_class_labels.txt``, as the paper and the
  public VPT code's NABirds config use).
* Split sizes (train / val / test): given in this project's brief as the
  paper's appendix table. They could not be read from the paper here, but
  each train + val equals the official training set (CUB 5,994, NABirds
  23,929, Stanford Dogs 12,000, Stanford Cars 8,144; Oxford Flowers has an
  official 1,020 / 1,020 / 6,149 split) and each val is
  ``n - floor(0.9 n)``, which is how :func:`~mmseg_vpt.fgvc.layouts.
  split_train_val` sizes its split.
* Paper accuracies (``PAPER_ACC``): see the comment there.
* Prompt lengths: the paper tunes them per dataset, but the values could
  not be read here, so every dataset uses 10 (our default).
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..vtab.tasks import FULL_FT_LRS, Method

__all__ = ['FGVCTask', 'TASKS', 'SPLITS', 'VAL_FRACTION', 'SPLIT_SEED',
           'VIT_DEEP_PROMPT_LENGTH', 'PAPER_ACC', 'PAPER_ROWS', 'METHODS',
           'get_method', 'get_task', 'render_task_config']


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
# default (the paper's per-dataset values could not be checked here).
VIT_DEEP_PROMPT_LENGTH: Dict[str, int] = {name: 10 for name in TASKS}

# The VPT paper's Table 1 (ViT-B/16, supervised ImageNet-21k), FGVC:
# per-dataset test top-1 in TASKS order, then the mean, keyed by
# (backbone, method). Read from a third-party reprint of that table (a
# summary of the AOFT paper's FGVC table, found with this project's code
# search), which prints every value with one decimal; the VPT paper prints
# the means with two, which could not be read here. The paper's other
# FGVC rows (Linear, Partial-1, MLP-3, Sidetune, Bias, VPT-shallow) could
# not be found in any source here and are left empty (PAPER_ROWS).
PAPER_ACC: Dict[Tuple[str, str], Tuple[float, ...]] = {
    ('ViT-B/16', 'full'): (87.3, 82.7, 98.8, 89.4, 84.5, 88.5),
    ('ViT-B/16', 'adapter'): (87.1, 84.3, 98.5, 89.8, 68.6, 85.7),
    ('ViT-B/16', 'vpt-deep'): (88.5, 84.2, 99.0, 90.2, 83.6, 89.1),
}
# Every FGVC row of the paper's Table 1, as the report lists them: label,
# key into PAPER_ACC (None: not read from any source here).
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


class FGVCMethod(Method):
    """A :class:`~mmseg_vpt.vtab.tasks.Method` whose base lives under
    ``configs/fgvc/_base_/`` and whose prompt lengths come from the FGVC
    table."""

    def prompt_length(self, task: str) -> int:
        if self.prompts is None:
            return 0
        return VIT_DEEP_PROMPT_LENGTH[task]


# The paper's Table 1 rows this project can run. Grids: the VTAB ones
# (base lr x weight decay); full fine-tuning searches FULL_FT_LRS, which are
# also the rates the public VPT code's FGVC tuning script uses for it.
METHODS: 'OrderedDict[str, FGVCMethod]' = OrderedDict((m.name, m) for m in [
    FGVCMethod('vpt-deep', 'vit-b16_vpt-deep.py', 'ViT-B/16', 'vpt-deep',
               'fgvc', description='prompts in every layer, [CLS] head '
               '(the paper); 10 prompts (our default)'),
    FGVCMethod('vpt-shallow', 'vit-b16_vpt-shallow.py', 'ViT-B/16',
               'vpt-shallow', 'fgvc',
               description='prompts in the first layer only; 10 prompts '
               '(our default)'),
    FGVCMethod('linear', 'vit-b16_linear.py', 'ViT-B/16', 'linear', None,
               description='frozen backbone, linear head only'),
    FGVCMethod('bias', 'vit-b16_bias.py', 'ViT-B/16', 'bias', None,
               description='biases of the backbone + head'),
    FGVCMethod('full', 'vit-b16_full.py', 'ViT-B/16', 'full', None,
               lrs=FULL_FT_LRS,
               description='every weight trains (lr grid: our default)'),
    FGVCMethod('partial-1', 'vit-b16_partial-1.py', 'ViT-B/16', 'partial-1',
               None, lrs=FULL_FT_LRS,
               description='the last layer and the final norm train (lr '
               'grid: the full fine-tuning one, our default)'),
    FGVCMethod('adapter-8', 'vit-b16_adapter-8.py', 'ViT-B/16', 'adapter',
               None, description='bottleneck adapters of reduction 8 after '
               'every MLP (the paper picks 8, 64 or 256 per dataset)'),
    FGVCMethod('mlp-3', 'vit-b16_mlp-3.py', 'ViT-B/16', 'mlp-3', None,
               description='frozen backbone, 3-layer MLP head on the [CLS] '
               'token'),
    FGVCMethod('sidetune', 'vit-b16_sidetune.py', 'ViT-B/16', 'sidetune',
               None, lrs=FULL_FT_LRS,
               description='frozen backbone blended with a trained '
               'AlexNet-like side network (lr grid: the full fine-tuning '
               'one)'),
])


def get_task(name: str) -> FGVCTask:
    if name not in TASKS:
        raise ValueError(f'unknown FGVC dataset {name!r}; choose from '
                         f'{list(TASKS)}')
    return TASKS[name]


def get_method(name: str) -> FGVCMethod:
    if name not in METHODS:
        raise ValueError(f'unknown FGVC method {name!r}; choose from '
                         f'{list(METHODS)}')
    return METHODS[name]


def render_task_config(task: str, method: str = 'vpt-deep',
                       base_dir: str = './_base_') -> str:
    """The few-line config of ``task`` for ``method``.

    ``configs/fgvc/<task>.py`` is this text for ``vpt-deep``;
    ``tools/fgvc_sweep.py --write-configs`` writes it for other methods.
    """
    t = get_task(task)
    m = get_method(method)
    batch = m.batch_size(task)
    backbone, what = m.prompt_text(task)
    return (
        f'# FGVC {t.title} ({t.num_classes} classes; paper splits '
        f'{t.train}/{t.val}/{t.test})\n'
        f'# {m.backbone} {m.name}: {what}, batch {batch}.\n'
        '# Written by mmseg_vpt.fgvc.tasks.render_task_config; README '
        'section\n# "FGVC classification" explains the other methods.\n'
        f"_base_ = ['{base_dir}/{m.base}']\n"
        f"fgvc_dataset = '{task}'\n"
        f'model = dict({backbone}head=dict(num_classes={t.num_classes}))\n'
        f'train_dataloader = dict(batch_size={batch}, '
        f'dataset=dict(name=fgvc_dataset))\n'
        f'val_dataloader = dict(dataset=dict(name=fgvc_dataset))\n'
        f'test_dataloader = dict(dataset=dict(name=fgvc_dataset))\n')
