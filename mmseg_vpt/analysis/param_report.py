"""Parameter and storage report: what a config trains and what it costs to
keep one model per task.

For each config the segmentor is built (random weights, CPU, nothing is
loaded) and reported:

* total parameters, tunable parameters and their share;
* the split into backbone (without prompts), prompts and heads (decode and
  auxiliary heads, every module other than the backbone);
* per-task checkpoint bytes: the tensors :func:`~mmseg_vpt.checkpoint.
  split_tuned` keeps (trained tensors, all head state including BN
  statistics; the base weights are assumed to provide every frozen backbone
  tensor), at 4 bytes per floating-point element;
* the resumable training checkpoint: the same plus the optimizer state of
  the trained parameters (built from the config's ``optim_wrapper``, one
  step on zero gradients to create it);
* storage for N tasks: one shared base file plus N per-task files, against
  N full models;
* the memory options the config turns on (frozen weights' storage type,
  backbone ``with_cp``, checkpointed modules, AMP:
  :func:`~mmseg_vpt.engine.memory_options.memory_options`);
* optionally (``ratio=True``) the VPT paper's "Total params" (its Table 1):
  the parameters stored for all of its 24 tasks in units of one pretrained
  backbone, ``(shared + sum of every task's tunable parameters) / B``
  (:func:`total_params_ratio`), beside the paper's value where
  :data:`~mmseg_vpt.vtab.tasks.PAPER_TOTAL_PARAMS` has the config's method.

Classification (mmpretrain) configs work as segmentor configs do.
``tools/analysis/param_report.py`` is the command line.
"""
import copy
import csv
import io
import json
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.config import Config

from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS

from ..checkpoint import model_from_config, split_tuned
from ..engine.memory_options import memory_options
from ..models.sidetune import SidetuneBackbone
from ..utils.config import read_config
from ..utils.logging_utils import mmengine_log_level
from ..utils.params import count_parameters, has_frozen_parameters
from ..vtab.tasks import METHODS, PAPER_TOTAL_PARAMS, TASKS

FP32 = 4

# Class counts of the FGVC datasets the paper's 24 tasks include beside
# VTAB-1k's 19 (the datasets' releases; mmseg_vpt.fgvc.tasks has the same):
# CUB-200-2011, NABirds, Oxford Flowers, Stanford Dogs, Stanford Cars.
FGVC_CLASSES = (200, 555, 102, 120, 196)
# parameters a tuning method adds to the pretrained backbone (not in "B")
ADDED_PARAMS = re.compile(r'prompt|\.adapter\.')


def paper_task_classes() -> List[int]:
    """Class counts of the paper's 24 tasks (VTAB-1k, then FGVC)."""
    return [classes for _, classes in TASKS.values()] + list(FGVC_CLASSES)


def _pretrained_module(model: nn.Module) -> nn.Module:
    """The module a base file initialises: ``model.backbone``, or the
    backbone a :class:`SidetuneBackbone` wraps."""
    backbone = model.backbone
    return backbone.backbone if isinstance(backbone, SidetuneBackbone) \
        else backbone


def pretrained_backbone_params(model: nn.Module) -> int:
    """B, the parameters of one pretrained backbone (see
    :func:`_pretrained_module`) without the prompts and adapters that
    tuning adds."""
    return sum(p.numel() for n, p in _pretrained_module(
        model).named_parameters() if not ADDED_PARAMS.search('.' + n))


def total_params_ratio(model: nn.Module, classes: Sequence[int],
                       own_classes: int = 0, per_class: int = 0) -> Dict:
    """The paper's "Total params" of ``model``'s method over tasks with
    ``classes`` classes each, in units of one pretrained backbone.

    ``(shared + sum_t tunable_t) / B``: B from
    :func:`pretrained_backbone_params`; shared = B, one backbone copy for
    all tasks, unless every parameter of it trains (full fine-tuning keeps
    none); ``tunable_t`` = every trainable parameter of the model with task
    t's head: the model's own count (its head has ``own_classes``) plus
    ``per_class`` for each class more (a Linear classifier: in_channels +
    1). Partial-k thus counts its tuned layers once per task on top of the
    shared copy, as the paper does (its 3.00x).
    """
    tunable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = pretrained_backbone_params(model)
    shared = 0 if all(p.requires_grad for p in _pretrained_module(
        model).parameters()) else base
    stored = shared + sum(tunable + per_class * (c - own_classes)
                          for c in classes)
    return dict(ratio=stored / base, ratio_tasks=len(classes),
                ratio_backbone=base, ratio_shared=shared,
                ratio_stored=stored)


def head_params_per_class(cfg: Config) -> Optional[int]:
    """Trainable parameters one more class adds to ``cfg.model.head``
    (built twice from the registry), or None without such a head."""
    head = cfg.model.get('head')
    if not isinstance(head, dict) or 'num_classes' not in head:
        return None
    counts = []
    for extra in (0, 1):
        h = copy.deepcopy(head)
        h['num_classes'] = head['num_classes'] + extra
        module = MODELS.build(h)
        counts.append(sum(p.numel() for p in module.parameters()
                          if p.requires_grad))
    return counts[1] - counts[0]


def paper_total_params(config: str):
    """(ratio, note) of the paper's Table 1 for the VTAB method whose base
    config is ``config`` (matched by file name), or None."""
    for m in METHODS.values():
        if m.base == osp.basename(config):
            return PAPER_TOTAL_PARAMS.get((m.backbone, m.paper_name))
    return None


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` stored as fp32 if it is floating point."""
    size = FP32 if tensor.is_floating_point() else tensor.element_size()
    return tensor.numel() * size


def optimizer_state_bytes(model: torch.nn.Module, optim_wrapper_cfg) -> int:
    """Bytes of the optimizer state a resumable checkpoint holds for
    ``model``'s trainable parameters (fp32 model)."""
    with mmengine_log_level():  # one line per parameter otherwise
        wrapper = build_optim_wrapper(model, optim_wrapper_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    wrapper.optimizer.step()
    for p in params:
        p.grad = None
    state = wrapper.optimizer.state_dict()['state']
    return sum(_tensor_bytes(v) for s in state.values() for v in s.values()
               if isinstance(v, torch.Tensor))


def model_report(model: torch.nn.Module, name: str = '',
                 optim_wrapper_cfg=None, tasks: int = 10,
                 cfg: Optional[Config] = None) -> Dict:
    """The report row of a built segmentor (see the module docstring);
    ``cfg``, the model's config, adds the memory options it sets beside the
    model (checkpointed modules, AMP)."""
    counts = count_parameters(model)
    modules = counts['modules']
    backbone = modules.get('backbone', dict(total=0, trainable=0, prompt=0,
                                            prompt_trainable=0))
    heads = [s for n, s in modules.items() if n != 'backbone']
    state = model.state_dict()
    full = sum(_tensor_bytes(t) for t in state.values())
    if has_frozen_parameters(getattr(model, 'backbone', torch.nn.Module())):
        split = split_tuned(state, model)
        per_task = sum(_tensor_bytes(t) for t in split.tuned.values())
        base = full - per_task
    else:  # full fine-tuning: every task stores the whole model
        per_task, base = full, 0
    row = dict(
        config=name,
        total=counts['total'],
        tunable=counts['trainable'],
        tunable_pct=counts['trainable_pct'],
        backbone=backbone['total'] - backbone['prompt'],
        backbone_tunable=backbone['trainable'] - backbone['prompt_trainable'],
        prompts=backbone['prompt'],
        prompts_tunable=backbone['prompt_trainable'],
        heads=sum(s['total'] for s in heads),
        heads_tunable=sum(s['trainable'] for s in heads),
        per_task_bytes=per_task,
        full_bytes=full,
        per_task_pct=100.0 * per_task / max(full, 1),
        tasks=tasks,
        storage_bytes=base + tasks * per_task,
        storage_full_bytes=tasks * full,
    )
    row['storage_pct'] = 100.0 * row['storage_bytes'] / max(
        row['storage_full_bytes'], 1)
    options = memory_options(model, cfg)
    row.update(frozen_dtype=options['frozen_dtype'],
               backbone_with_cp=options['backbone_with_cp'],
               activation_checkpointing=options['activation_checkpointing'],
               amp=options['amp'])
    if optim_wrapper_cfg is not None:
        row['resumable_bytes'] = per_task + optimizer_state_bytes(
            model, optim_wrapper_cfg)
    return row


def param_report(config: str, tasks: int = 10,
                 optimizer: bool = True,
                 cfg_options: Optional[dict] = None,
                 ratio: bool = False,
                 ratio_tasks: Optional[int] = None) -> Dict:
    """Build ``config``'s model and report it (:func:`model_report`).

    ``ratio=True`` adds :func:`total_params_ratio`: over the paper's 24
    tasks with their class counts when the config has a classification
    head (``model.head.num_classes``), else (or with ``ratio_tasks``) over
    that many tasks with the config's own heads; and the paper's value."""
    cfg = read_config(config, cfg_options)
    model = model_from_config(cfg)
    row = model_report(model, config,
                       cfg.get('optim_wrapper') if optimizer else None,
                       tasks, cfg)
    if ratio:
        per_class = None if ratio_tasks else head_params_per_class(cfg)
        if per_class is None:  # every task with the config's own heads
            n = ratio_tasks or len(paper_task_classes())
            row.update(total_params_ratio(model, [0] * n),
                       ratio_classes='config')
        else:
            row.update(total_params_ratio(
                model, paper_task_classes(), cfg.model.head.num_classes,
                per_class), ratio_classes='paper')
        paper = paper_total_params(config)
        row['ratio_paper'] = None if paper is None else paper[0]
        row['ratio_paper_note'] = '' if paper is None else paper[1]
    return row


def _m(n: int) -> str:
    if n == 0:
        return '0'
    return f'{n / 1e3:.1f}k' if n < 1e5 else f'{n / 1e6:.2f}M'


def _mb(n: int) -> str:
    return f'{n / 2**20:,.1f} MB'


def _gb(n: int) -> str:
    return f'{n / 2**30:,.2f} GB'


def memory_options_cell(row: Dict) -> str:
    """The memory options of a report row, short (``-`` for none)."""
    parts = []
    if row.get('frozen_dtype'):
        parts.append(f"frozen {row['frozen_dtype']}")
    if row.get('backbone_with_cp'):
        parts.append('backbone with_cp')
    if row.get('activation_checkpointing'):
        parts.append('checkpointed: ' +
                     ', '.join(row['activation_checkpointing']))
    if row.get('amp'):
        parts.append(f"AMP {row['amp']}")
    return '; '.join(parts) or '-'


def format_report(rows: Sequence[Dict], fmt: str = 'markdown',
                  names: Optional[Sequence[str]] = None) -> str:
    """Render report rows as a markdown table, CSV or JSON. ``names``
    replaces the config paths in the first column (markdown only)."""
    if fmt == 'json':
        return json.dumps(list(rows), indent=2)
    if fmt == 'csv':
        out = io.StringIO()
        keys: List[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt != 'markdown':
        raise ValueError(f'unknown format {fmt!r}: markdown, csv or json')
    tasks = rows[0]['tasks'] if rows else 0
    resumable = all('resumable_bytes' in r for r in rows)
    header = ['config', 'total params', 'tunable params', 'tunable %',
              'tunable: backbone / prompts / heads', 'per-task file',
              '% of full model file']
    if resumable:
        header.append('resumable checkpoint')
    header.append(f'{tasks} tasks: base + per-task vs {tasks} full models')
    ratios = all('ratio' in r for r in rows) and rows
    if ratios:
        n = rows[0]['ratio_tasks']
        header += [f'total params, {n} tasks / one backbone',
                   'paper (Table 1)']
    header.append('memory options')
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for i, r in enumerate(rows):
        name = names[i] if names else f"`{osp.basename(r['config'])}`"
        cells = [
            name, _m(r['total']), _m(r['tunable']),
            f"{r['tunable_pct']:.2f}%",
            f"{_m(r['backbone_tunable'])} / {_m(r['prompts_tunable'])} / "
            f"{_m(r['heads_tunable'])}",
            _mb(r['per_task_bytes']), f"{r['per_task_pct']:.2f}%"
        ]
        if resumable:
            cells.append(_mb(r['resumable_bytes']))
        cells.append(f"{_gb(r['storage_bytes'])} vs "
                     f"{_gb(r['storage_full_bytes'])} "
                     f"({r['storage_pct']:.1f}%)")
        if ratios:
            paper = r['ratio_paper']
            note = f" ({r['ratio_paper_note']})" if \
                r['ratio_paper_note'] else ''
            cells += [f"{r['ratio']:.3f}x",
                      '-' if paper is None else f'{paper:.2f}x{note}']
        cells.append(memory_options_cell(r))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
