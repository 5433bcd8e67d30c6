"""Bottleneck adapters, the VPT paper's "Adapter" baseline.

The paper's sequential form: after each block's MLP, before its residual
addition, ``h + up(act(down(h)))`` with a hidden width of
``dims // reduction`` (the paper's reduction factors: 8, 64, 256). The
up-projection starts at zero, so an untrained adapter is the identity and
the backbone computes exactly what it did without one.

An adapter is attached by switching the MLP's class to a subclass that
calls it (:func:`attach_adapter`); the MLP's own parameters keep their
names (``...ffn.layers.0.0.weight``), the adapter's are
``...ffn.adapter.{down,up}.*``, so base weights load as before and
``frozen_exclude=['adapter']`` trains exactly the adapters.
"""
import functools

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN


class Adapter(nn.Module):
    """``x + up(GELU(down(x)))``; ``up`` zero-initialised."""

    def __init__(self, dims: int, reduction: int) -> None:
        super().__init__()
        if not isinstance(reduction, int) or isinstance(reduction, bool) \
                or reduction < 1 or dims % reduction:
            raise ValueError(
                f'adapter_reduction must be a positive int dividing the '
                f'layer width {dims}, got {reduction!r}')
        self.down = nn.Linear(dims, dims // reduction)
        self.act = nn.GELU()
        self.up = nn.Linear(dims // reduction, dims)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdapterFFN(FFN):
    """mmcv's ``FFN`` with :class:`Adapter` on the MLP's output, before the
    layer scale and the residual addition."""

    def forward(self, x, identity=None):
        out = self.gamma2(self.adapter(self.layers(x)))
        if not self.add_identity:
            return self.dropout_layer(out)
        return (x if identity is None else identity) + \
            self.dropout_layer(out)


@functools.lru_cache(maxsize=None)
def _adapted_class(cls: type) -> type:
    """A subclass of a one-argument MLP (timm's ``Mlp``, ``SwiGLU``...)
    whose output goes through ``self.adapter``."""
    if issubclass(cls, FFN):
        return AdapterFFN

    def forward(self, x):
        return self.adapter(cls.forward(self, x))
    return type(f'Adapter{cls.__name__}', (cls, ), {'forward': forward})


def attach_adapter(mlp: nn.Module, dims: int, reduction: int) -> Adapter:
    """Give ``mlp`` (a block's MLP, of output width ``dims``) an adapter;
    returns it."""
    adapter = Adapter(dims, reduction)
    param = next(mlp.parameters(), None)
    if param is not None:
        adapter.to(device=param.device, dtype=param.dtype)
    mlp.__class__ = _adapted_class(type(mlp))
    mlp.adapter = adapter
    return adapter
