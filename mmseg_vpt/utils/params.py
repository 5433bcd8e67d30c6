"""Questions asked of any model: which module is the real one, what is
frozen, how many parameters train."""
from collections import OrderedDict
from typing import Dict

import torch.nn as nn
from mmengine.model import BaseTTAModel, is_model_wrapper


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP / TTA wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def has_frozen_parameters(module: nn.Module) -> bool:
    """Whether anything in ``module`` is frozen (empty tensors aside)."""
    return any(not p.requires_grad and p.numel() > 0
               for p in module.parameters())


def count_parameters(model: nn.Module) -> Dict:
    """Count total/trainable parameters, overall and per top-level module.

    Returns ``{'total', 'trainable', 'trainable_pct', 'modules'}`` where
    ``modules[name]`` has ``total``, ``trainable``, ``prompt`` and
    ``prompt_trainable`` (parameters whose name contains ``'prompt'``).
    Shared parameters are counted once; DDP (and TTA) wrappers are
    unwrapped.
    """
    model = unwrap_model(model)
    modules: Dict[str, Dict[str, int]] = OrderedDict()
    for name, param in model.named_parameters():
        stats = modules.setdefault(
            name.split('.')[0],
            dict(total=0, trainable=0, prompt=0, prompt_trainable=0))
        n, trainable = param.numel(), param.requires_grad
        stats['total'] += n
        stats['trainable'] += n * trainable
        if 'prompt' in name:
            stats['prompt'] += n
            stats['prompt_trainable'] += n * trainable
    total = sum(s['total'] for s in modules.values())
    trainable = sum(s['trainable'] for s in modules.values())
    return dict(
        total=total,
        trainable=trainable,
        trainable_pct=100.0 * trainable / max(total, 1),
        modules=modules)


def format_parameter_counts(counts: Dict) -> str:
    """Render :func:`count_parameters` output as a small log table."""
    lines = [f"Parameters: {counts['total']:,} total, "
             f"{counts['trainable']:,} trainable "
             f"({counts['trainable_pct']:.2f}%)"]
    for name, s in counts['modules'].items():
        line = (f"  {name}: {s['total']:,} total, "
                f"{s['trainable']:,} trainable")
        if s['prompt']:
            line += (f" (prompts: {s['prompt']:,}, "
                     f"{s['prompt_trainable']:,} trainable)")
        lines.append(line)
    return '\n'.join(lines)
