"""An optimizer-wrapper constructor whose log says once what stays frozen
and which settings the trained parameters got.

mmengine's ``DefaultOptimWrapperConstructor`` logs, when ``paramwise_cfg`` is
set, a warning for every parameter with ``requires_grad=False`` (one line per
tensor of a frozen backbone: 333 for Swin-B) and a
``paramwise_options -- name:key=value`` line for every setting of every
trained parameter (every head tensor of the SETR rows), which buries the rest
of the log. Here each becomes one line.
"""
import logging
from collections import Counter
from typing import Dict, List

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

# mmengine's per-parameter messages in ``add_params``
_SKIPPED = 'is skipped since its requires_grad=False'
_PARAMWISE = 'paramwise_options -- '


class _PerParameterLines(logging.Filter):
    """Drop mmengine's per-parameter lines, keeping the paramwise settings
    ({'key=value': [parameter names]}) for one summary line."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: Dict[str, List[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_PARAMWISE):
            name, _, setting = message[len(_PARAMWISE):].rpartition(':')
            self.settings.setdefault(setting, []).append(name)
            return False
        return not message.endswith(_SKIPPED)


def paramwise_summary(settings: Dict[str, List[str]]) -> str:
    """One line: each setting paramwise_cfg gave, with how many parameter
    tensors got it, per top-level module; '' if none."""
    parts = []
    for setting, names in settings.items():
        per_module = Counter(name.split('.')[0] for name in names)
        modules = ', '.join(f'{m} {n}' for m, n in per_module.items())
        parts.append(f'{setting} for {len(names)} tensors ({modules})')
    return 'Optimizer paramwise settings: ' + '; '.join(parts) \
        if parts else ''


def frozen_summary(model: nn.Module) -> str:
    """One line: how many parameter tensors (and elements) are frozen, per
    top-level module; '' if none is."""
    frozen = [(name, p) for name, p in model.named_parameters()
              if not p.requires_grad]
    if not frozen:
        return ''
    per_module = Counter(name.split('.')[0] for name, _ in frozen)
    modules = ', '.join(f'{m} ({n})' for m, n in per_module.items())
    numel = sum(p.numel() for _, p in frozen)
    return (f'Optimizer: {len(frozen)} parameter tensors ({numel:,} '
            'parameters) have requires_grad=False and are not trained: '
            f'{modules}')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenSummaryOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that logs frozen parameters, and
    the settings ``paramwise_cfg`` gave the trained ones, as one summary line
    each instead of one line per parameter.

    Parameter groups, learning rates and everything else are the parent's.
    Set in a config's ``optim_wrapper``::

        optim_wrapper = dict(
            constructor='FrozenSummaryOptimWrapperConstructor', ...)
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        logger = MMLogger.get_current_instance()
        lines = _PerParameterLines()
        logger.addFilter(lines)
        try:
            wrapper = super().__call__(model)
        finally:
            logger.removeFilter(lines)
        for summary in (frozen_summary(getattr(model, 'module', model)),
                        paramwise_summary(lines.settings)):
            if summary:
                print_log(summary, logger='current')
        return wrapper
