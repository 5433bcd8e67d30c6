"""Loading pretrained weights into a frozen backbone, all or nothing.

mmseg's backbones load ``init_cfg=dict(type='Pretrained')`` with
``strict=False``: a wrong or half-matching file only prints a warning. Full
fine-tuning may recover from that; a frozen backbone cannot, so the VPT
backbones load through :func:`load_pretrained` instead. Each backbone
renames the file to its own keys and fits it (``pretrained_layout`` /
``fit_pretrained``: :mod:`mmseg_vpt.models.convert` for mmseg's ViT and
Swin, :mod:`mmseg_vpt.models.timm_weights` for timm's ViT family), and the
load fails if anything the model needs is missing.

A backbone with deferred weights (``meta_init``,
:mod:`~mmseg_vpt.models.deferred`) reads the file lazily and takes each
tensor straight into its stored type; :class:`PretrainedReference` gives
what such a load sets, from the file, without loading it.
"""
import re
from typing import Dict, Iterator, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..utils.state_fit import preview
from .convert import ConversionInfo, load_checkpoint_file


def load_pretrained(model: nn.Module, path: str,
                    optional: Sequence[str] = ('prompt', )) -> None:
    """Load the backbone weights file ``path`` into ``model``.

    Args:
        model: a VPT backbone (its ``pretrained_layout`` and
            ``fit_pretrained`` rename and fit the file).
        path: a checkpoint in any layout ``convert.detect_format`` knows.
        optional: regular expressions for parameters the file need not
            provide (they keep their initial values, and are logged).

    Raises:
        FileNotFoundError / ValueError: the file is missing or unreadable, in
            an unknown layout, has keys or shapes the model does not, or
            lacks parameters the model needs; the message names the file and
            the keys.
    """
    info = ConversionInfo()
    state, fmt = pretrained_state(model, path, info)
    if getattr(model, 'meta_init', False):
        model.assign_state(state)  # straight into the stored types
    missing, _ = model.load_state_dict(state, strict=False)
    required = [k for k in missing
                if not any(re.search(p, k) for p in optional)]
    if required:
        raise ValueError(
            f'Pretrained weights {path!r} ({fmt} layout) do not provide '
            f'{len(required)} parameters of {type(model).__name__}: '
            f'{preview(required)}')
    kept = [k for k in missing if 'prompt' not in k]
    print_log(
        f'Loaded {len(state)} tensors from {path} ({fmt} layout)' +
        (f'; kept initial values for {kept}' if kept else ''),
        logger='current')


def pretrained_state(model: nn.Module, path: str, info: ConversionInfo
                     ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights file ``path`` renamed and fitted to ``model``'s keys, and
    its layout. Read lazily (``mmap``) for a backbone built with
    ``meta_init``: its tensors are then views of the file until used.

    Raises:
        ValueError: as :func:`load_pretrained`, naming the file.
    """
    state = load_checkpoint_file(path, info=info,
                                 mmap=getattr(model, 'meta_init', False))
    try:
        state, fmt = model.pretrained_layout(state, info)
        return model.fit_pretrained(state, info), fmt
    except ValueError as err:
        raise ValueError(f'Pretrained weights {path!r}: {err}') from err


class PretrainedReference(Mapping):
    """What :func:`load_pretrained` of ``path`` gives each tensor of
    ``model`` that the file sets, computed key by key from the lazily read
    file when asked (module keys; on the CPU): the file's tensor renamed and
    fitted as the loader does, in the type ``model`` stores it in. Tensors
    the file does not set are absent.

    For a backbone with deferred weights this is exactly what loading sets
    (:func:`~mmseg_vpt.models.deferred.assign_tensors` converts the same
    way), and it never holds more than one converted tensor: the reference
    of a 7B backbone costs no second copy of it."""

    def __init__(self, model: nn.Module, path: str) -> None:
        self._state, self.layout = pretrained_state(
            model, path, ConversionInfo(log=False))
        self._dtypes = {k: t.dtype for k, t in
                        model.state_dict(keep_vars=True).items()}

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self._state[key]
        return value.detach().to('cpu', self._dtypes.get(key, value.dtype))

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)
