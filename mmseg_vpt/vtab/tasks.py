"""VTAB-1k task table, tuning methods and the VPT paper's reference numbers.

Everything the VTAB configs, the dataset, the sweep and the report need to
agree on lives here, with no dependency on mmpretrain; the method record,
the search grids and the config renderer are shared with FGVC
(:mod:`mmseg_vpt.vtab.table`).

Sources:

* Task names, groups and class counts: VTAB (Zhai et al., arXiv 1910.04867)
  as used by the VPT paper (Jia et al., ECCV 2022, arXiv 2203.12119), 19
  tasks in three groups.
* ``PAPER_GROUP_MEANS``: the group means of the VPT paper's Table 1 for
  ViT-B/16 and of its Swin-B table. The paper's MAE and MoCo v3 ViT-B/16
  rows are not included, so reports show no paper row for those backbones.
* ``VIT_DEEP_PROMPT_LENGTH``: the per-task prompt lengths of VPT-deep with
  ViT-B/16 from the VPT paper's appendix, as a public third-party
  reproduction config lists them (the same 19 values); the appendix of
  arXiv 2203.12119 is the primary source.
* ``PAPER_TOTAL_PARAMS``: see the comment there.
* Everything marked "our default" is this project's choice.
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

from .table import FULL_FT_LRS, Method, TaskTable

NATURAL = 'Natural'
SPECIALIZED = 'Specialized'
STRUCTURED = 'Structured'
GROUPS = (NATURAL, SPECIALIZED, STRUCTURED)

# name -> (group, number of classes), in the paper's column order
TASKS: 'OrderedDict[str, Tuple[str, int]]' = OrderedDict([
    ('cifar100', (NATURAL, 100)),
    ('caltech101', (NATURAL, 102)),
    ('dtd', (NATURAL, 47)),
    ('oxford_flowers102', (NATURAL, 102)),
    ('oxford_iiit_pet', (NATURAL, 37)),
    ('svhn', (NATURAL, 10)),
    ('sun397', (NATURAL, 397)),
    ('patch_camelyon', (SPECIALIZED, 2)),
    ('eurosat', (SPECIALIZED, 10)),
    ('resisc45', (SPECIALIZED, 45)),
    ('diabetic_retinopathy', (SPECIALIZED, 5)),
    ('clevr_count', (STRUCTURED, 8)),
    ('clevr_distance', (STRUCTURED, 6)),
    ('dmlab', (STRUCTURED, 6)),
    ('kitti_distance', (STRUCTURED, 4)),
    ('dsprites_location', (STRUCTURED, 16)),
    ('dsprites_orientation', (STRUCTURED, 16)),
    ('smallnorb_azimuth', (STRUCTURED, 18)),
    ('smallnorb_elevation', (STRUCTURED, 9)),
])

# Folder names of the widely shared VTAB-1k release (the NOAH layout), which
# VTABDataset accepts when data_root/<task> does not exist.
FOLDER_ALIASES: Dict[str, str] = {
    'cifar100': 'cifar',
    'clevr_distance': 'clevr_dist',
    'kitti_distance': 'kitti',
    'dsprites_location': 'dsprites_loc',
    'dsprites_orientation': 'dsprites_ori',
    'smallnorb_azimuth': 'smallnorb_azi',
    'smallnorb_elevation': 'smallnorb_ele',
}

# The list files of a task folder.
SPLITS = ('train800', 'val200', 'train800val200', 'test')

# VPT-deep, ViT-B/16 ImageNet-21k: prompt tokens per layer (paper appendix;
# the module docstring names the source).
VIT_DEEP_PROMPT_LENGTH: Dict[str, int] = {
    'cifar100': 10, 'caltech101': 10, 'dtd': 10, 'oxford_flowers102': 1,
    'oxford_iiit_pet': 1, 'svhn': 50, 'sun397': 5, 'patch_camelyon': 100,
    'eurosat': 100, 'resisc45': 10, 'diabetic_retinopathy': 1,
    'clevr_count': 100, 'clevr_distance': 200, 'dmlab': 100,
    'kitti_distance': 100, 'dsprites_location': 100,
    'dsprites_orientation': 100, 'smallnorb_azimuth': 200,
    'smallnorb_elevation': 200,
}

# Group means (Natural, Specialized, Structured) of the paper's VTAB-1k
# tables, keyed by (backbone, method).
PAPER_GROUP_MEANS: Dict[Tuple[str, str], Tuple[float, float, float]] = {
    ('ViT-B/16', 'full'): (75.88, 83.36, 47.64),
    ('ViT-B/16', 'linear'): (68.93, 77.16, 26.84),
    ('ViT-B/16', 'bias'): (73.30, 78.25, 44.09),
    ('ViT-B/16', 'vpt-shallow'): (76.81, 79.66, 46.98),
    ('ViT-B/16', 'vpt-deep'): (78.48, 82.43, 54.98),
    ('Swin-B', 'full'): (79.10, 86.21, 59.65),
    ('Swin-B', 'vpt-deep'): (76.78, 84.53, 53.35),
}

# The paper's "Total params" (Table 1, ViT-B/16 ImageNet-21k): everything
# stored for its 24 tasks (VTAB-1k's 19 and FGVC's 5), in units of one
# ViT-B/16 backbone: one shared backbone plus every task's tuned parameters
# and head, or 24 whole models for Full (the definition as the paper's
# authors state it in github.com/KMnP/vpt issues #10 and #17). Values:
# that column of Table 1. For the first six rows the definition applied to
# our configs' layer shapes gives the same value to the printed two
# decimals (tests/test_baselines.py). Adapter and VPT rows
# average per-task settings (reduction r in {8, 64, 256}, per-task prompt
# lengths), so no single config has them. Value: (ratio, what the paper's
# setting is when it is not one config).
PAPER_TOTAL_PARAMS: Dict[Tuple[str, str], Tuple[float, str]] = {
    ('ViT-B/16', 'full'): (24.02, ''),
    ('ViT-B/16', 'linear'): (1.02, ''),
    ('ViT-B/16', 'partial-1'): (3.00, ''),
    ('ViT-B/16', 'mlp-3'): (1.35, ''),
    ('ViT-B/16', 'sidetune'): (3.69, ''),
    ('ViT-B/16', 'bias'): (1.05, ''),
    ('ViT-B/16', 'adapter'): (1.23, 'reduction chosen per task'),
    ('ViT-B/16', 'vpt-shallow'): (1.04, 'prompt length chosen per task'),
    ('ViT-B/16', 'vpt-deep'): (1.18, 'prompt length chosen per task'),
}


METHODS: 'OrderedDict[str, Method]' = OrderedDict((m.name, m) for m in [
    Method('vpt-deep', 'vit-b16_vpt-deep.py', 'ViT-B/16', 'vpt-deep',
           VIT_DEEP_PROMPT_LENGTH,
           description='prompts in every layer, [CLS] head (the paper)'),
    Method('vpt-shallow', 'vit-b16_vpt-shallow.py', 'ViT-B/16',
           'vpt-shallow', VIT_DEEP_PROMPT_LENGTH,
           description='prompts in the first layer only; prompt lengths of '
           'the VPT-deep table (our default)'),
    Method('linear', 'vit-b16_linear.py', 'ViT-B/16', 'linear', None,
           description='frozen backbone, linear head only'),
    Method('bias', 'vit-b16_bias.py', 'ViT-B/16', 'bias', None,
           description='biases of the backbone + head'),
    Method('full', 'vit-b16_full.py', 'ViT-B/16', 'full', None,
           lrs=FULL_FT_LRS,
           description='every weight trains (lr grid: our default)'),
    Method('vpt-deep-mean', 'vit-b16_vpt-deep_mean-pool.py', 'ViT-B/16',
           'vpt-deep-mean', VIT_DEEP_PROMPT_LENGTH,
           description='VPT-deep with a mean-pooled patch-token head '
           '(the paper\'s "Image-pool" output)'),
    # The paper's prompt ablations (its Fig. 5 locations, sharing, outputs);
    # not in PAPER_GROUP_MEANS, so reports show no paper row for them.
    Method('vpt-deep-add', 'vit-b16_vpt-deep_add.py', 'ViT-B/16',
           'vpt-deep-add', 196,
           description='prompts added to the 196 patch tokens of every '
           'layer instead of prepended ("Add")'),
    Method('vpt-shallow-pixel', 'vit-b16_vpt-shallow_prepend-pixel.py',
           'ViT-B/16', 'vpt-shallow-pixel', VIT_DEEP_PROMPT_LENGTH,
           description='learnable 16x16 image patches through the frozen '
           'patch embedding, prepended ("Prepend-pixel")'),
    Method('vpt-shallow-concat', 'vit-b16_vpt-shallow_concat-channel.py',
           'ViT-B/16', 'vpt-shallow-concat', 1,
           description='a learnable image channel joined to the input '
           '("Concat-channel")'),
    Method('vpt-deep-shared', 'vit-b16_vpt-deep_shared.py', 'ViT-B/16',
           'vpt-deep-shared', VIT_DEEP_PROMPT_LENGTH,
           description='VPT-deep, one prompt set shared by every layer'),
    Method('vpt-deep-token-init', 'vit-b16_vpt-deep_token-init.py',
           'ViT-B/16', 'vpt-deep-token-init', VIT_DEEP_PROMPT_LENGTH,
           description='VPT-deep, prompts initialised as k-means centres of '
           "the first batch's tokens at each layer"),
    Method('vpt-deep-prompt-pool', 'vit-b16_vpt-deep_prompt-pool.py',
           'ViT-B/16', 'vpt-deep-prompt-pool', VIT_DEEP_PROMPT_LENGTH,
           description='VPT-deep classifying the mean of the prompt '
           'outputs ("Prompt-pool")'),
    Method('vpt-deep-global-pool', 'vit-b16_vpt-deep_global-pool.py',
           'ViT-B/16', 'vpt-deep-global-pool', VIT_DEEP_PROMPT_LENGTH,
           description='VPT-deep classifying the mean of every output '
           'token ("Global-pool")'),
    # The paper's other baselines (Table 1). Their group means are not in
    # PAPER_GROUP_MEANS, so reports show no paper row for them.
    Method('partial-1', 'vit-b16_partial-1.py', 'ViT-B/16', 'partial-1',
           None, lrs=FULL_FT_LRS,
           description='the last layer and the final norm train, [CLS] '
           'head (lr grid: the full fine-tuning one, our default)'),
    Method('mlp-3', 'vit-b16_mlp-3.py', 'ViT-B/16', 'mlp-3', None,
           description='frozen backbone, 3-layer MLP head on the [CLS] '
           'token'),
    Method('sidetune', 'vit-b16_sidetune.py', 'ViT-B/16', 'sidetune', None,
           lrs=FULL_FT_LRS,
           description='frozen backbone blended with a trained AlexNet-like '
           'side network (alpha from 1, random side network, lr grid of '
           'full fine-tuning: our defaults)'),
    Method('adapter-8', 'vit-b16_adapter-8.py', 'ViT-B/16', 'adapter', None,
           description='bottleneck adapters of reduction 8 after every MLP '
           '(the paper picks 8, 64 or 256 per task; lr grid: the prompt '
           'one, our default)'),
    Method('swin-vpt-deep', 'swin-b_vpt-deep.py', 'Swin-B', 'vpt-deep',
           10,
           description='Swin-B VPT-deep, 10 prompts per block for every '
           'task (our default), pooled last-stage tokens'),
    # Self-supervised ViT-B/16 backbones (the paper's MAE / MoCo v3 rows).
    # Prompt lengths: the supervised ViT-B table (our default; the paper
    # searched lengths per backbone). Their group means are not in
    # PAPER_GROUP_MEANS, so reports show no paper row for them.
    Method('mae-vpt-deep', 'vit-b16-mae_vpt-deep.py', 'ViT-B/16 MAE',
           'vpt-deep', VIT_DEEP_PROMPT_LENGTH,
           description='timm ViT, prompts in every layer, [CLS] '
           'head; ViT-B prompt lengths (our default)'),
    Method('mae-vpt-shallow', 'vit-b16-mae_vpt-shallow.py', 'ViT-B/16 MAE',
           'vpt-shallow', VIT_DEEP_PROMPT_LENGTH,
           description='timm ViT, prompts in the first layer '
           'only; ViT-B prompt lengths (our default)'),
    Method('mocov3-vpt-deep', 'vit-b16-mocov3_vpt-deep.py',
           'ViT-B/16 MoCo v3', 'vpt-deep', VIT_DEEP_PROMPT_LENGTH,
           description='timm ViT, prompts in every layer, '
           '[CLS] head; ViT-B prompt lengths (our default)'),
    Method('mocov3-vpt-shallow', 'vit-b16-mocov3_vpt-shallow.py',
           'ViT-B/16 MoCo v3', 'vpt-shallow', VIT_DEEP_PROMPT_LENGTH,
           description='timm ViT, prompts in the first '
           'layer only; ViT-B prompt lengths (our default)'),
    # VPT for ConvNets: a learnable border around the image (prompt_pad,
    # not a prompt length, so prompts=None for the rendered configs)
    Method('convnext-vpt-pad', 'convnext-b_vpt-pad.py', 'ConvNeXt-B',
           'vpt-pad', None,
           description='ConvNeXt-B (ImageNet-21k), a learnable 5-pixel '
           'border around the image (our default size), pooled features'),
    Method('resnet50-vpt-pad', 'resnet50_vpt-pad.py', 'ResNet-50',
           'vpt-pad', None,
           description='ResNet-50 (ImageNet-1k), a learnable 5-pixel '
           'border around the image (our default size), pooled features'),
])


def tasks_in_group(group: str) -> List[str]:
    return [t for t, (g, _) in TASKS.items() if g == group]


TABLE = TaskTable(
    label='VTAB', noun='task',
    num_classes=OrderedDict((t, n) for t, (_, n) in TASKS.items()),
    methods=METHODS, task_variable='vtab_task', dataset_field='task',
    renderer='mmseg_vpt.vtab.tasks.render_task_config',
    guide='VTAB-1k classification')


def get_method(name: str) -> Method:
    return TABLE.get_method(name)


def render_task_config(task: str, method: str = 'vpt-deep',
                       base_dir: str = './_base_') -> str:
    """The few-line config of ``task`` for ``method``.

    ``configs/vtab/<task>.py`` is this text for ``vpt-deep``;
    ``tools/vtab_sweep.py --write-configs`` writes it for other methods
    (with ``base_dir`` pointing at ``configs/vtab/_base_``).
    """
    TABLE.check_task(task)
    group, num_classes = TASKS[task]
    return TABLE.render(task, method, base_dir,
                        f'VTAB-1k {task} ({group}, {num_classes} classes)')


def render_custom_task_config(task: str, method: Method, num_classes: int,
                              base_dir: str) -> str:
    """The config of a generated or custom task outside :data:`TASKS`:
    ``method``'s base under ``base_dir`` with the task lines."""
    return TABLE.render_custom(task, method, num_classes, base_dir)
