"""An optimizer-wrapper constructor whose log says once what stays frozen.

mmengine's ``DefaultOptimWrapperConstructor`` logs a warning for every
parameter with ``requires_grad=False`` when ``paramwise_cfg`` is set: one line
per tensor of a frozen backbone (333 for Swin-B), which buries the rest of
the log. Freezing is the point of prompt tuning, so one line says it here.
"""
import logging
from collections import Counter

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

# the end of mmengine's per-parameter message in ``add_params``
_SKIPPED = 'is skipped since its requires_grad=False'


class _DropSkippedLines(logging.Filter):
    """Drop mmengine's per-parameter "is skipped" lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith(_SKIPPED)


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
    """``DefaultOptimWrapperConstructor`` that logs frozen parameters as one
    summary line instead of one warning per parameter.

    Parameter groups, learning rates and everything else are the parent's.
    Set in a config's ``optim_wrapper``::

        optim_wrapper = dict(
            constructor='FrozenSummaryOptimWrapperConstructor', ...)
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        logger = MMLogger.get_current_instance()
        drop = _DropSkippedLines()
        logger.addFilter(drop)
        try:
            wrapper = super().__call__(model)
        finally:
            logger.removeFilter(drop)
        summary = frozen_summary(getattr(model, 'module', model))
        if summary:
            print_log(summary, logger='current')
        return wrapper
