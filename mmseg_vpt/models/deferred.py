"""Weights that exist only once loaded: how a giant backbone is built
without memory and filled straight from its file in the stored type.

A backbone built with ``meta_init=True`` constructs its model under
``torch.device('meta')`` (shapes and types only, no memory, no random init),
decides what trains and in which type the frozen tensors are stored, and
then *defers* every tensor of the model's state dict: each becomes a
placeholder, a real tensor of its shape and stored type that views a single
zero element (stride 0, 2 bytes). Unlike a meta tensor, a placeholder
survives what frameworks do to every parameter before the weights are
loaded: mmengine's top-level ``init_weights`` takes each parameter's mean to
log what initialised it, which a meta tensor refuses.

:func:`assign_tensors` replaces placeholders by their values, one tensor at
a time: the source tensor (typically a lazily read file, ``torch.load(...,
mmap=True)`` or safetensors) converted to the placeholder's type on the
backbone's device, swapped in with ``torch.utils.swap_tensors`` so that
every ``nn.Parameter`` object stays the same (an optimizer built before the
weights are loaded, as mmengine's runner builds it, keeps working). When the
file already holds the stored type the parameter *is* the file's tensor: no
copy at all. So building and loading hold the model once, in the stored
type, never in float32 and never twice.

What the model computes at construction and does not save (non-persistent
buffers such as DINOv3's rotary periods) is computed for real at once by
the model's own ``init_non_persistent_buffers`` (timm's
``reinit_non_persistent_buffers``).
"""
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, MutableMapping, Optional

import torch
import torch.nn as nn

from ..utils.state_fit import preview


def placeholder(tensor: torch.Tensor,
                device: Optional[torch.device] = None) -> torch.Tensor:
    """A tensor of ``tensor``'s shape and type holding one zero element."""
    return torch.zeros((), dtype=tensor.dtype,
                       device=device or 'cpu').expand(tensor.shape)


def _owner(module: nn.Module, name: str):
    path, _, leaf = name.rpartition('.')
    return module.get_submodule(path) if path else module, leaf


def module_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` of ``module``."""
    owner, leaf = _owner(module, name)
    if leaf in owner._parameters:
        return owner._parameters[leaf]
    return owner._buffers[leaf]


def _swap_in(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Give ``tensor`` (a parameter or buffer object) ``value``'s data, in
    place. ``value`` must be a tensor object nobody else holds."""
    if isinstance(tensor, nn.Parameter):
        value = nn.Parameter(value, requires_grad=tensor.requires_grad)
    torch.utils.swap_tensors(tensor, value)


def defer_state(module: nn.Module) -> List[str]:
    """Turn every meta tensor of ``module``'s state dict into a placeholder
    (on the CPU) and return their names (the deferred weights)."""
    names = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        if tensor.is_meta:
            _swap_in(module_tensor(module, name), placeholder(tensor))
            names.append(name)
    return names


def compute_buffers(module: nn.Module) -> List[str]:
    """Build ``module``'s meta buffers that are not in its state dict on the
    CPU and compute them with the modules' own
    ``init_non_persistent_buffers`` (what their constructors ran). Returns
    their names.

    Raises:
        ValueError: a buffer whose module cannot recompute it (named).
    """
    saved = set(module.state_dict(keep_vars=True))
    names = []
    for name, buf in module.named_buffers():
        if buf.is_meta and name not in saved:
            owner, leaf = _owner(module, name)
            owner._buffers[leaf] = torch.full_like(
                buf, float('nan'), device='cpu') if buf.is_floating_point() \
                else torch.zeros_like(buf, device='cpu')
            names.append(name)
    if not names:
        return names
    from timm.models._manipulate import reinit_non_persistent_buffers
    reinit_non_persistent_buffers(module)
    unset = [n for n in names if module.get_buffer(n).is_floating_point()
             and torch.isnan(module.get_buffer(n)).any()]
    if unset:
        raise ValueError(
            f'meta_init: {type(module).__name__} cannot recompute the buffers '
            f'{preview(unset)} (their modules have no '
            'init_non_persistent_buffers); build it with meta_init=False')
    return names


def assign_tensors(module: nn.Module, names: Iterable[str],
                   state: MutableMapping[str, torch.Tensor],
                   prefix: str = '',
                   device: Optional[torch.device] = None) -> List[str]:
    """Give the tensors ``names`` of ``module`` the values ``state``
    provides (key ``prefix + name``), each converted to the type of the
    module's tensor on ``device`` (default: where that tensor is), one at a
    time, by swapping the data into the same tensor object. Each filled key
    of ``state`` then holds the module's own tensor, so a
    ``load_state_dict`` that follows copies nothing (and writes nothing into
    a file-backed tensor, which would copy it). Returns the names filled;
    a value of another shape is left to that load to report."""
    filled = []
    for name in list(names):
        value = state.get(prefix + name)
        tensor = module_tensor(module, name)
        if value is None or tuple(value.shape) != tuple(tensor.shape):
            continue
        # detach(): a new tensor object, so the caller's stays untouched
        _swap_in(tensor, value.detach().to(device=device or tensor.device,
                                          dtype=tensor.dtype))
        state[prefix + name] = tensor
        filled.append(name)
    return filled


def init_deferred(module: nn.Module, deferred: List[str],
                  device: torch.device, init: Callable[[], None],
                  group: Callable[[str], str]) -> None:
    """Random values for every deferred weight of ``module`` by the model's
    own initialisation ``init`` (e.g. timm's ``init_weights``), drawn in
    float32 one group of tensors at a time (``group(name)``, e.g. the block
    a tensor belongs to) and then stored in the placeholder's type.

    While a group initialises, every other deferred weight is a meta tensor,
    which ``init`` leaves alone: each tensor is drawn once, and the model
    never exists in float32 (one group does). Drawing in the stored type
    instead would be wrong: timm's truncated normal in bfloat16 rounds
    about 0.2% of its uniform draws to +-1, which its clamp turns into
    +-2, a hundred standard deviations.

    Raises:
        ValueError: ``init`` left a tensor unset (named).
    """
    targets = OrderedDict((n, module_tensor(module, n)) for n in deferred)
    dtypes = {n: t.dtype for n, t in targets.items()}

    def meta(name):
        return torch.empty(targets[name].shape, dtype=dtypes[name],
                           device='meta')

    for name in targets:
        _swap_in(targets[name], meta(name))
    groups: Dict[str, List[str]] = OrderedDict()
    for name in targets:
        groups.setdefault(group(name), []).append(name)
    drawn, unset = {}, []
    for names in groups.values():
        for name in names:
            floating = dtypes[name].is_floating_point
            _swap_in(targets[name], torch.full(
                targets[name].shape, float('nan') if floating else 0,
                dtype=torch.float32 if floating else dtypes[name],
                device=device))
        init()
        for name in names:
            value = targets[name].detach()
            if value.is_floating_point() and torch.isnan(value).any():
                unset.append(name)
            drawn[name] = value.to(dtypes[name])
            _swap_in(targets[name], meta(name))
    for name, value in drawn.items():
        _swap_in(targets[name], value)
    deferred.clear()
    if unset:
        raise ValueError(
            f'{type(module).__name__}: its random initialisation did not set '
            f'{len(unset)} deferred weights: {preview(unset)}. Build it '
            "with meta_init=False, or give it init_cfg=dict(type='Pretrained'"
            ', checkpoint=FILE)')


def skip_tensors(fn, tensors: Iterable[torch.Tensor]):
    """``fn`` (of ``nn.Module._apply``) leaving ``tensors`` as they are."""
    ids = {id(t) for t in tensors}
    return lambda t: t if id(t) in ids else fn(t)
