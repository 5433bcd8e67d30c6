"""FLOP and activation counts for ``F.scaled_dot_product_attention`` in
mmengine's complexity analysis.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info`` and so
mmseg's ``tools/analysis/get_flops.py``) has no handle for
``aten::scaled_dot_product_attention``: it reports the op as unsupported and
counts nothing for it, so the fused attention paths of the VPT backbones
(the default) looked cheaper than they are. ``get_model_complexity_info``
builds its analyzer with mmengine's default handles, so importing
``mmseg_vpt`` adds one there (and one for activations, which counts the
output as mmengine does for other ops); it never replaces a handle mmengine
has.
"""
from math import prod
from typing import Any, List

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import generic_activation_jit, get_shape

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """The two matrix products of attention, q k^T and p v, counted as
    mmengine counts ``bmm`` (one multiply-add per flop): for q (..., L, E),
    k (..., S, E) and v (..., S, Ev), ``batch * L * S * (E + Ev)``. Scale,
    mask, softmax and dropout are left out, as mmengine leaves out the
    element-wise ops of the plain path."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    out = get_shape(outputs[0])  # (..., L, Ev), batch dims broadcast
    return prod(out[:-1]) * k[-2] * (q[-1] + v[-1])


def register_flop_handles() -> None:
    """Add :func:`sdpa_flop_jit` to mmengine's default FLOP handles, and an
    output count to its activation handles."""
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(
        SDPA_OP, sdpa_flop_jit)
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.setdefault(
        SDPA_OP, generic_activation_jit())


register_flop_handles()
