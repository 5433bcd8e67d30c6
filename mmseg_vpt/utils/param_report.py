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
  N full models.

``tools/analysis/param_report.py`` is the command line.
"""
import csv
import io
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config

from ..checkpoint import model_from_config, split_tuned
from ..engine.hooks import count_parameters
from ..models.prompts import has_frozen_parameters
from .logging_utils import mmengine_log_level

FP32 = 4


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` stored as fp32 if it is floating point."""
    size = FP32 if tensor.is_floating_point() else tensor.element_size()
    return tensor.numel() * size


def optimizer_state_bytes(model: torch.nn.Module, optim_wrapper_cfg) -> int:
    """Bytes of the optimizer state a resumable checkpoint holds for
    ``model``'s trainable parameters (fp32 model)."""
    from mmengine.optim import build_optim_wrapper
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
                 optim_wrapper_cfg=None, tasks: int = 10) -> Dict:
    """The report row of a built segmentor (see the module docstring)."""
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
    if optim_wrapper_cfg is not None:
        row['resumable_bytes'] = per_task + optimizer_state_bytes(
            model, optim_wrapper_cfg)
    return row


def param_report(config: str, tasks: int = 10,
                 optimizer: bool = True,
                 cfg_options: Optional[dict] = None) -> Dict:
    """Build ``config``'s segmentor and report it (:func:`model_report`)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = model_from_config(cfg)
    return model_report(model, config,
                        cfg.get('optim_wrapper') if optimizer else None,
                        tasks)


def _m(n: int) -> str:
    if n == 0:
        return '0'
    return f'{n / 1e3:.1f}k' if n < 1e5 else f'{n / 1e6:.2f}M'


def _mb(n: int) -> str:
    return f'{n / 2**20:,.1f} MB'


def _gb(n: int) -> str:
    return f'{n / 2**30:,.2f} GB'


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
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
