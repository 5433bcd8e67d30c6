"""How a state dict fits a model: the one check of keys and shapes, and the
one message that lists what does not fit.

Every loader (pretrained weights files, timm files, task files and full
checkpoints) reports misfits with :meth:`StateFit.describe`, so a user
reads the same words whichever path the file took.
"""
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping

import torch


def preview(keys: Iterable[str], n: int = 10) -> str:
    """The first ``n`` keys, comma-separated, and how many more there are."""
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


@dataclass
class StateFit:
    """How a checkpoint's tensors fit a model (model keys throughout)."""
    fits: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)  # 'key: shapes'
    unexpected: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    # tensors a base weights file provides that the model does not have
    base_unexpected: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.mismatched or self.unexpected or self.missing
                    or self.base_unexpected)

    def add(self, key: str, value, target: Mapping[str, torch.Tensor]
            ) -> bool:
        """File ``key`` under fits, unexpected or mismatched; True if it
        fits."""
        shape = tuple(getattr(value, 'shape', ()))
        if key not in target:
            self.unexpected.append(key)
            return False
        if shape != tuple(target[key].shape):
            self.mismatched.append(
                f'{key}: {shape} vs model {tuple(target[key].shape)}')
            return False
        self.fits.append(key)
        return True

    def describe(self) -> str:
        parts = []
        if self.mismatched:
            parts.append('Shape mismatches (checkpoint vs model): '
                         f'{preview(self.mismatched)}.')
        if self.unexpected:
            parts.append(f'Not in the model: {preview(self.unexpected)}.')
        if self.base_unexpected:
            parts.append('Omitted as base weights but not in the model '
                         '(another architecture?): '
                         f'{preview(self.base_unexpected)}.')
        if self.missing:
            parts.append('Left unloaded (neither in the checkpoint nor '
                         'provided by the base weights): '
                         f'{preview(self.missing)}.')
        return ' '.join(parts)


def fit_state(target: Mapping[str, torch.Tensor],
              state: Mapping[str, torch.Tensor],
              provided: Iterable[str] = ()) -> StateFit:
    """Check ``state`` against the model state ``target``: every key is the
    model's, shapes agree, and ``state`` plus ``provided`` (keys a base
    weights file gives) cover ``target`` (BN ``num_batches_tracked`` aside,
    as in mmengine)."""
    fit = StateFit()
    for key, value in state.items():
        fit.add(key, value, target)
    for key in provided:
        (fit.fits if key in target else fit.base_unexpected).append(key)
    given = set(fit.fits) | set(state)
    fit.missing = [k for k in target if k not in given
                   and not k.endswith('num_batches_tracked')]
    return fit
