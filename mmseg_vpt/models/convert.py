"""Convert foreign ViT / Swin checkpoints to this project's backbone layout.

``VPTVisionTransformer`` and ``VPTSwinTransformer`` keep the parameter names
of mmseg's ``VisionTransformer`` and ``SwinTransformer`` (plus
``prompt_embeddings``), so a checkpoint converted here loads into both the
mmseg parents and our prompted subclasses.

Everything here is a pure function on state dicts (like timm's
``checkpoint_filter_fn``)::

    sd = load_checkpoint_file('swin_tiny_patch4_window7_224.pth')
    sd, fmt = convert_to_mmseg(sd)          # fmt: 'ms_swin', ...
    sd = adapt_to_model(sd, backbone)       # optional: resize to the model
    backbone.load_state_dict(sd, strict=False)

Layouts (``detect_format`` recognises them by their keys):

* ``timm_vit``: timm's ``VisionTransformer`` (any patch size, with or without
  a class token, ``no_embed_class``), and the older timm releases such as
  ``jx_vit_large_p16_384`` used by SETR, which share the layout.
* ``timm_swin``: timm 0.9+ ``SwinTransformer``; ``layers.{i}.downsample``
  sits at the *start* of stage ``i`` (i >= 1), the classifier is ``head.fc``.
* ``ms_swin``: the official Microsoft Swin release (and timm < 0.9, which
  has the same keys); ``layers.{i}.downsample`` sits at the *end* of stage
  ``i``, the classifier is ``head``, and ``attn_mask`` /
  ``relative_position_index`` buffers may be stored.
* ``mmseg_vit`` / ``mmseg_swin``: already our layout; passed through.

Where the layouts differ beyond names:

* mmseg's ``PatchMerging`` gathers each 2x2 neighbourhood with
  ``nn.Unfold``, which orders the merged 4C channels channel-major
  (index ``c * 4 + p``, ``p = 2 * row_offset + col_offset``); timm and the
  original Swin concatenate ``[x(0,0), x(1,0), x(0,1), x(1,1)]``
  position-major (index ``k * C + c``). The merging norm and reduction
  weights are permuted accordingly.
* mmseg's Swin has one output norm per out index (``norm0`` .. ``norm3``);
  the sources only have the final ``norm``, which becomes the last one.
* mmseg's ViT always stores a class-token slot in ``pos_embed``
  (``1 + H * W`` entries); sources without one get a zero slot (and, with no
  class token at all, a zero ``cls_token``; build the backbone with
  ``with_cls_token=False`` then).
* Classification heads (``head``, ``fc_norm``, ``pre_logits``) and derived
  buffers (``relative_position_index``, ``attn_mask``) are dropped.
"""
import math
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.state_fit import StateFit, preview
from ..utils.checkpoints import (TIMM_SCHEME, CheckpointFileError,
                                check_checkpoint_file, is_remote,
                                local_checkpoint_path, not_a_checkpoint,
                                unreadable_checkpoint)

StateDict = Dict[str, torch.Tensor]

FORMATS = ('timm_vit', 'timm_swin', 'ms_swin', 'mmseg_vit', 'mmseg_swin')

# torch.load containers that hold the actual state dict
_WRAPPER_KEYS = ('state_dict', 'model', 'module')


@dataclass
class ConversionInfo:
    """What a conversion did, for logs and the CLI."""
    log: bool = True
    dropped: List[str] = field(default_factory=list)
    added: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        if self.log:
            print_log(msg, logger='current')


def _info(info: Optional[ConversionInfo]) -> ConversionInfo:
    return info if info is not None else ConversionInfo()


# --------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------
def load_checkpoint_file(path: str,
                         allow_pickle: bool = True,
                         info: Optional[ConversionInfo] = None,
                         mmap: bool = False) -> StateDict:
    """Read a checkpoint file and return its (backbone) state dict.

    Reads ``.safetensors`` with the ``safetensors`` package and everything
    else (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) with ``torch.load``,
    ``weights_only=True`` first. Training checkpoints that pickle other
    objects (an argparse ``args``, mmengine's ``meta``) need a full unpickle:
    that happens only with ``allow_pickle=True``, with a warning, so use it
    only for files you trust. ``mmap=True`` first tries ``torch.load(...,
    mmap=True)`` (tensors read lazily, e.g. when only the keys are needed)
    and falls back to a plain load where the file does not allow it (the
    legacy non-zip format). URLs and the other schemes of mmengine's
    ``CheckpointLoader`` (``open-mmlab://``, ``torchvision://``, ``s3://``...)
    load through it (URLs are downloaded once into torch hub's cache);
    ``timm://NAME`` reads timm's hub file of tag NAME from the Hugging Face
    cache (downloading it once).

    Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` containers, a
    ``module.`` (DDP) prefix and a ``backbone.`` prefix (a segmentor
    checkpoint: its other keys, e.g. ``decode_head.*``, are dropped).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ImportError: a ``.safetensors`` file without the package.
        CheckpointFileError (a ValueError): the file is empty, cut short or
            cannot be read (the message names it and its size), or a
            download failed (names the URL).
        ValueError: the file holds no state dict.
    """
    info = _info(info)
    if path.startswith(TIMM_SCHEME):  # a file in the Hugging Face cache
        path = local_checkpoint_path(path)
    safetensors = path.endswith('.safetensors')
    if safetensors:
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f'Reading {path!r} needs the safetensors package: '
                f'pip install safetensors') from e
    check_checkpoint_file(path)
    if is_remote(path):
        try:
            obj = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        except Exception as e:  # noqa: BLE001 - any scheme's errors
            raise unreadable_checkpoint(path, e) from e
    elif safetensors:
        try:
            obj = load_file(path, device='cpu')
        except Exception as e:  # noqa: BLE001 - report any reader failure
            raise unreadable_checkpoint(path, e) from e
    else:
        try:
            obj = _torch_load(path, True, mmap)
        except Exception as safe_error:  # noqa: BLE001
            if not allow_pickle:
                raise CheckpointFileError(
                    f'Cannot read checkpoint file {path!r} with '
                    f'torch.load(weights_only=True): {safe_error}') from \
                    safe_error
            try:
                obj = _torch_load(path, False, mmap)
            except Exception as e:  # noqa: BLE001
                raise unreadable_checkpoint(path, e) from e
            info.note(f'{path} holds more than tensors; it was fully '
                      'unpickled (only do this with files you trust)')
    if not isinstance(obj, Mapping):
        raise not_a_checkpoint(path, obj)
    return unwrap_state_dict(obj, source=path, info=info)


def _torch_load(path: str, weights_only: bool, mmap: bool):
    """``torch.load`` to the CPU; with ``mmap``, memory-mapped where the
    file allows it, else read whole."""
    if mmap:
        try:
            return torch.load(path, map_location='cpu',
                              weights_only=weights_only, mmap=True)
        except pickle.UnpicklingError:
            raise  # the contents, not the mapping: a plain load fails too
        except Exception:  # noqa: BLE001 - not mappable (legacy format)
            pass
    return torch.load(path, map_location='cpu', weights_only=weights_only)


def unwrap_state_dict(obj, source: str = 'checkpoint',
                      info: Optional[ConversionInfo] = None) -> StateDict:
    """The tensor state dict inside a loaded checkpoint object (see
    :func:`load_checkpoint_file`)."""
    info = _info(info)
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f'{source} holds a {type(obj).__name__}, '
                         'not a state dict')
    state_dict = OrderedDict()
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            state_dict[str(k)] = v
        else:
            info.dropped.append(str(k))
    if not state_dict:
        raise ValueError(f'{source} holds no tensors (top-level keys: '
                         f'{preview([str(k) for k in obj])})')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = OrderedDict(
            (k[len('module.'):], v) for k, v in state_dict.items())
    if any(k.startswith('backbone.') for k in state_dict):
        others = [k for k in state_dict if not k.startswith('backbone.')]
        if others:
            info.dropped.extend(others)
            info.note(f'{source}: kept the {len(state_dict) - len(others)} '
                      f'backbone.* tensors, dropped {len(others)} others '
                      f'({preview(others, 3)})')
        state_dict = OrderedDict((k[len('backbone.'):], v)
                                 for k, v in state_dict.items()
                                 if k.startswith('backbone.'))
    return state_dict


# --------------------------------------------------------------------------
# recognising layouts
# --------------------------------------------------------------------------
DROP = object()

_VIT_RULES = [
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'patch_embed\.proj\.(weight|bias)', r'patch_embed.projection.\1'),
    (r'norm_pre\.(weight|bias)', r'ln_pre.\1'),
    (r'blocks\.(\d+)\.norm([12])\.(weight|bias)', r'layers.\1.ln\2.\3'),
    (r'blocks\.(\d+)\.attn\.qkv\.(weight|bias)',
     r'layers.\1.attn.attn.in_proj_\2'),
    (r'blocks\.(\d+)\.attn\.proj\.(weight|bias)',
     r'layers.\1.attn.attn.out_proj.\2'),
    (r'blocks\.(\d+)\.mlp\.fc1\.(weight|bias)',
     r'layers.\1.ffn.layers.0.0.\2'),
    (r'blocks\.(\d+)\.mlp\.fc2\.(weight|bias)', r'layers.\1.ffn.layers.1.\2'),
    (r'norm\.(weight|bias)', r'ln1.\1'),
    (r'(head|head_dist|fc_norm|pre_logits)\..*', DROP),
]

# Swin: the stage index is rewritten separately (downsample position)
_SWIN_RULES = [
    (r'patch_embed\.proj\.(weight|bias)', r'patch_embed.projection.\1'),
    (r'patch_embed\.norm\.(weight|bias)', r'patch_embed.norm.\1'),
    (r'absolute_pos_embed', 'absolute_pos_embed'),
    (r'layers\.(\d+)\.blocks\.(\d+)\.norm([12])\.(weight|bias)',
     r'stages.\1.blocks.\2.norm\3.\4'),
    (r'layers\.(\d+)\.blocks\.(\d+)\.attn\.'
     r'(qkv\.weight|qkv\.bias|proj\.weight|proj\.bias|'
     r'relative_position_bias_table)', r'stages.\1.blocks.\2.attn.w_msa.\3'),
    (r'layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)',
     r'stages.\1.blocks.\2.ffn.layers.0.0.\3'),
    (r'layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)',
     r'stages.\1.blocks.\2.ffn.layers.1.\3'),
    (r'layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)',
     r'stages.\1.downsample.\2'),
    (r'norm\.(weight|bias)', r'norm{last}.\1'),
    (r'head\..*', DROP),
    (r'layers\.\d+\.blocks\.\d+\.(attn\.relative_position_index|attn_mask)',
     DROP),
]

_MMSEG_VIT_RULES = [
    (r'cls_token|pos_embed', None),
    (r'patch_embed\.projection\.(weight|bias)', None),
    (r'(ln1|ln_pre)\.(weight|bias)', None),
    (r'layers\.\d+\.(ln1|ln2)\.(weight|bias)', None),
    (r'layers\.\d+\.attn\.attn\.(in_proj_weight|in_proj_bias|'
     r'out_proj\.weight|out_proj\.bias)', None),
    (r'layers\.\d+\.ffn\.layers\.(0\.0|1)\.(weight|bias)', None),
    (r'prompt_.*', None),
]

_MMSEG_SWIN_RULES = [
    (r'patch_embed\.(projection|norm)\.(weight|bias)', None),
    (r'absolute_pos_embed', None),
    (r'norm\d+\.(weight|bias)', None),
    (r'stages\.\d+\.blocks\.\d+\.(norm1|norm2)\.(weight|bias)', None),
    (r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.'
     r'(qkv\.weight|qkv\.bias|proj\.weight|proj\.bias|'
     r'relative_position_bias_table|relative_position_index)', None),
    (r'stages\.\d+\.blocks\.\d+\.ffn\.layers\.(0\.0|1)\.(weight|bias)', None),
    (r'stages\.\d+\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)',
     None),
    (r'prompt_.*', None),
]

_RULES = {
    'timm_vit': _VIT_RULES,
    'timm_swin': _SWIN_RULES,
    'ms_swin': _SWIN_RULES,
    'mmseg_vit': _MMSEG_VIT_RULES,
    'mmseg_swin': _MMSEG_SWIN_RULES,
}

# keys that identify a layout
_ANCHORS = {
    'mmseg_swin': r'stages\.\d+\.blocks\.\d+\.attn\.w_msa\.qkv\.weight',
    'mmseg_vit': r'layers\.\d+\.attn\.attn\.in_proj_weight',
    'swin': r'layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table',
    'timm_vit': r'blocks\.\d+\.attn\.qkv\.weight',
}


def _match(rules, key: str):
    """(rule target, match) of the first rule matching ``key``, or None."""
    for pattern, target in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return target, m
    return None


def _apply_rules(rules, state_dict: Mapping[str, torch.Tensor],
                 info: ConversionInfo) -> Tuple[list, List[str]]:
    """Rename by the first matching rule: ``[(key, value, new key, match)]``
    for the kept keys, and the keys no rule matches. Keys whose rule is
    ``DROP`` go to ``info.dropped``."""
    renamed, unknown = [], []
    for key, value in state_dict.items():
        hit = _match(rules, key)
        if hit is None:
            unknown.append(key)
        elif hit[0] is DROP:
            info.dropped.append(key)
        else:
            renamed.append((key, value, hit[1].expand(hit[0]), hit[1]))
    return renamed, unknown


def _unmatched(rules, keys) -> List[str]:
    return [k for k in keys if _match(rules, k) is None]


def _swin_downsample_at_start(state_dict: Mapping[str, torch.Tensor]
                              ) -> Optional[bool]:
    """Whether ``layers.{i}.downsample`` merges the tokens *entering* stage
    ``i`` (timm 0.9+) rather than those leaving it (official Swin, timm <
    0.9), told from the shapes; None if there is no downsample."""
    votes = set()
    for key, w in state_dict.items():
        m = re.fullmatch(r'layers\.(\d+)\.downsample\.reduction\.weight', key)
        if not m:
            continue
        norm1 = state_dict.get(f'layers.{m.group(1)}.blocks.0.norm1.weight')
        if norm1 is None:
            raise ValueError(f'{key} belongs to a stage without blocks')
        dims, (out_dims, in_dims) = norm1.shape[0], w.shape
        if in_dims == 4 * dims:
            votes.add(False)
        elif out_dims == dims:
            votes.add(True)
        else:
            raise ValueError(
                f'{key} has shape {tuple(w.shape)}, which fits neither end '
                f'nor start of a stage of width {dims}')
    if len(votes) > 1:
        raise ValueError('Swin checkpoint mixes downsample layers at the '
                         'start and at the end of stages')
    return votes.pop() if votes else None


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of ``state_dict``: one of :data:`FORMATS`.

    Raises:
        ValueError: an unknown layout; the message lists the first keys that
            no known layout has.
    """
    keys = list(state_dict)

    def has(anchor):
        return any(re.fullmatch(_ANCHORS[anchor], k) for k in keys)

    if has('mmseg_swin'):
        return 'mmseg_swin'
    if has('mmseg_vit'):
        return 'mmseg_vit'
    if has('swin'):
        at_start = _swin_downsample_at_start(state_dict)
        if at_start is None:  # one stage: both layouts convert the same
            return 'timm_swin' if 'head.fc.weight' in state_dict else \
                'ms_swin'
        return 'timm_swin' if at_start else 'ms_swin'
    if has('timm_vit') and 'patch_embed.proj.weight' in state_dict:
        return 'timm_vit'
    unknown = [k for k in keys
               if all(_match(rules, k) is None for rules in _RULES.values())]
    raise ValueError(
        'Unknown checkpoint layout: expected a timm ViT, timm Swin, official '
        'Swin or mmseg ViT/Swin state dict. Unrecognised keys: '
        f'{preview(unknown or keys)}')


# --------------------------------------------------------------------------
# converting
# --------------------------------------------------------------------------
def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n)**2 == n


def unfold_order_reduction(weight: torch.Tensor) -> torch.Tensor:
    """PatchMerging reduction weight (out, 4C): timm/Swin position-major
    input order (``k * C + c``) to mmseg's unfold order (``c * 4 + p``)."""
    out_dims, in_dims = weight.shape
    return weight.reshape(out_dims, 4, in_dims // 4)[:, [0, 2, 1, 3]] \
        .transpose(1, 2).reshape(out_dims, in_dims)


def unfold_order_norm(vector: torch.Tensor) -> torch.Tensor:
    """PatchMerging norm weight or bias (4C,): as
    :func:`unfold_order_reduction`."""
    return vector.reshape(4, -1)[[0, 2, 1, 3]].transpose(0, 1).reshape(-1)


def _vit_pos_prefix(length: int, has_cls: bool) -> Optional[int]:
    """Class-token slots in a timm ``pos_embed`` of ``length`` entries
    (``no_embed_class`` and class-token-free models have none); None when
    the grid cannot be square either way."""
    if not has_cls:
        return 0
    if _is_square(length - 1):
        return 1
    if _is_square(length):
        return 0
    return None


def _convert_vit(state_dict: StateDict, info: ConversionInfo) -> StateDict:
    renamed, unknown = _apply_rules(_VIT_RULES, state_dict, info)
    out = OrderedDict((new_key, value) for _, value, new_key, _ in renamed)
    if unknown:
        raise ValueError(
            'These timm ViT weights have no counterpart in mmseg\'s '
            'VisionTransformer (layer scale, q/k norm, register or '
            f'distillation tokens, ...): {preview(unknown)}')

    embed_dims = state_dict['patch_embed.proj.weight'].shape[0]
    has_cls = 'cls_token' in state_dict
    if not has_cls:
        out['cls_token'] = torch.zeros(1, 1, embed_dims)
        info.added.append('cls_token')
        info.note('The source has no class token: added a zero cls_token; '
                  'build the backbone with with_cls_token=False.')
    if 'pos_embed' in out:
        pos = out['pos_embed']
        prefix = _vit_pos_prefix(pos.shape[1], has_cls)
        if prefix is None:
            prefix = 1
            info.note(f'pos_embed has {pos.shape[1]} entries (non-square '
                      'grid): assuming its first entry is the class token.')
        if prefix == 0:
            out['pos_embed'] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]),
                                          pos], dim=1)
            info.note('pos_embed had no class-token slot; prepended a zero '
                      'slot (mmseg always stores one).')

    # timm qkv_bias=False: mmseg's attention has both input and output
    # biases or neither, so give the input projection zero biases
    for key in list(out):
        m = re.fullmatch(r'layers\.(\d+)\.attn\.attn\.in_proj_weight', key)
        bias_key = f'layers.{m.group(1)}.attn.attn.in_proj_bias' if m else ''
        if m and bias_key not in out:
            out[bias_key] = out[key].new_zeros(out[key].shape[0])
            info.added.append(bias_key)
    if any('in_proj_bias' in k for k in info.added):
        info.note('The source has no qkv biases: added zero in_proj_bias '
                  'entries; build the backbone with qkv_bias=True.')
    if 'ln1.weight' not in out:
        info.note('The source has no final norm (e.g. a global-pool model '
                  'with fc_norm): build the backbone with final_norm=False.')
    return out


def _convert_swin(state_dict: StateDict, fmt: str,
                  info: ConversionInfo) -> StateDict:
    stages = sorted({
        int(m.group(1))
        for m in (re.match(r'layers\.(\d+)\.', k) for k in state_dict) if m
    })
    if stages != list(range(len(stages))):
        raise ValueError(f'Swin checkpoint has stages {stages}, expected '
                         f'0..{len(stages) - 1}')
    last = len(stages) - 1
    at_start = _swin_downsample_at_start(state_dict)
    if at_start is False and fmt == 'timm_swin':
        info.note('Downsample layers sit at the end of stages: the older timm '
                  '(< 0.9) layout, converted like the official release.')
    elif at_start is True and fmt == 'ms_swin':
        info.note('Downsample layers sit at the start of stages (timm 0.9+ '
                  'layout); converted as such.')

    out = OrderedDict()
    renamed, unknown = _apply_rules(_SWIN_RULES, state_dict, info)
    for key, value, new_key, m in renamed:
        new_key = new_key.replace('{last}', str(last))
        if '.downsample.' in key:
            stage = int(m.group(1))
            if at_start:  # merges the tokens entering this stage
                new_key = new_key.replace(f'stages.{stage}.',
                                          f'stages.{stage - 1}.', 1)
            if key.endswith('reduction.weight'):
                value = unfold_order_reduction(value)
            else:
                value = unfold_order_norm(value)
        out[new_key] = value
    if unknown:
        raise ValueError(
            'These Swin weights have no counterpart in mmseg\'s '
            f'SwinTransformer (a Swin V2 checkpoint?): {preview(unknown)}')
    if f'norm{last}.weight' in out:
        info.note(f'The source has only the final norm, mapped to '
                  f'norm{last}; mmseg\'s other output norms '
                  f'({", ".join(f"norm{i}" for i in range(last))}) have no '
                  'pretrained counterpart and keep their initial values.')
    return out


def convert_to_mmseg(state_dict: Mapping[str, torch.Tensor],
                     fmt: Optional[str] = None,
                     info: Optional[ConversionInfo] = None
                     ) -> Tuple[StateDict, str]:
    """Rename (and where needed reorder) ``state_dict`` to mmseg's layout.

    Args:
        state_dict: a backbone state dict, e.g. from
            :func:`load_checkpoint_file`.
        fmt: one of :data:`FORMATS`, ``'mmseg'`` (either mmseg layout) or
            None / ``'auto'`` to detect it.
        info: filled with the dropped and added keys and notes.

    Returns:
        The converted state dict and the source format.
    """
    info = _info(info)
    detected = detect_format(state_dict)
    if fmt is None or fmt == 'auto':
        fmt = detected
    elif fmt == 'mmseg':
        if not detected.startswith('mmseg_'):
            raise ValueError(f'--format mmseg, but the checkpoint looks like '
                             f'{detected}')
        fmt = detected
    elif fmt not in FORMATS:
        raise ValueError(f'Unknown format {fmt!r}; choose from auto, mmseg, '
                         f'{", ".join(FORMATS)}')
    elif fmt != detected and {fmt, detected} != {'timm_swin', 'ms_swin'}:
        raise ValueError(f'Format {fmt!r} was requested but the checkpoint '
                         f'looks like {detected}')
    state_dict = OrderedDict(state_dict)

    if fmt.startswith('mmseg_'):
        unknown = _unmatched(_RULES[fmt], state_dict)
        if unknown:
            raise ValueError(f'Keys not in mmseg\'s {fmt[6:]} layout: '
                             f'{preview(unknown)}')
        out = state_dict
    elif fmt == 'timm_vit':
        out = _convert_vit(state_dict, info)
    else:
        out = _convert_swin(state_dict, fmt, info)
    if info.dropped and info.log:
        print_log(f'Dropped {len(info.dropped)} keys: '
                  f'{preview(info.dropped)}', logger='current')
    return out, fmt


# --------------------------------------------------------------------------
# fitting a model
# --------------------------------------------------------------------------
def resize_pos_embed(pos_embed: torch.Tensor, dst_grid: Tuple[int, int],
                     src_grid: Optional[Tuple[int, int]] = None,
                     num_prefix: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resize a (1, num_prefix + H*W, C) position embedding to ``dst_grid``
    (bicubic, ``align_corners=False`` as mmseg's ViT), keeping the prefix
    (class-token) entries. ``src_grid`` defaults to a square grid."""
    _, length, dims = pos_embed.shape
    if src_grid is None:
        side = math.isqrt(length - num_prefix)
        if side * side != length - num_prefix:
            raise ValueError(
                f'pos_embed with {length} entries and {num_prefix} prefix '
                'entries is not a square grid; pass src_grid')
        src_grid = (side, side)
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    grid = grid.reshape(1, *src_grid, dims).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(dst_grid), mode=mode,
                         align_corners=False)
    grid = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def resize_rel_pos_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a Swin relative-position-bias table ((2W-1)^2, heads) to
    ``length`` rows (bicubic, as mmseg's Swin does on loading)."""
    src_len, heads = table.shape
    src, dst = math.isqrt(src_len), math.isqrt(length)
    if src * src != src_len or dst * dst != length:
        raise ValueError(f'relative position tables must be square, got '
                         f'{src_len} -> {length} rows')
    grid = table.permute(1, 0).reshape(1, heads, src, src).float()
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic',
                         align_corners=False)
    return grid.reshape(heads, length).permute(1, 0).contiguous().to(
        table.dtype)


def _model_grid(model, num_entries: int) -> Tuple[int, int]:
    """The patch grid of an mmseg ViT whose pos_embed has ``num_entries``."""
    img_size, patch = getattr(model, 'img_size', None), getattr(
        model, 'patch_size', None)
    if img_size is not None and isinstance(patch, int):
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        if (h // patch) * (w // patch) in (num_entries, num_entries - 1):
            return h // patch, w // patch
    side = math.isqrt(num_entries - 1)
    return side, side


def _has_mmseg_vit_keys(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(re.fullmatch(_ANCHORS['mmseg_vit'], k) for k in state_dict)


def _fit_pos_embed(pos_embed: torch.Tensor, model, num_entries: int,
                   src_grid: Optional[Tuple[int, int]],
                   mmseg_layout: bool) -> torch.Tensor:
    """``pos_embed`` (1, L, C) as (1, num_entries, C) for ``model`` (see
    :func:`adapt_to_model`).

    Class-token slots in the source: ``L - H * W`` with ``src_grid``; 1 for
    mmseg's layout (it always stores one; ``L`` may be a perfect square, as
    1 + 14 * 16 = 225 is); otherwise (a lone timm ``pos_embed``) told from
    ``L`` by :func:`_vit_pos_prefix`. Without ``src_grid`` the source grid
    is taken to be square, and a grid that cannot be square is an error.
    """
    length = pos_embed.shape[1]
    shapes = (f'pos_embed {tuple(pos_embed.shape)} vs model '
              f'{(1, num_entries, pos_embed.shape[2])}')
    if src_grid is not None:
        prefix = length - src_grid[0] * src_grid[1]
        if prefix not in (0, 1):
            raise ValueError(
                f'{shapes}: src_grid {tuple(src_grid)} leaves {prefix} '
                'entries for the class-token slot (expected 0 or 1)')
    elif mmseg_layout:
        prefix = 1
    else:
        prefix = _vit_pos_prefix(length, True)
    if prefix == 0:  # no class-token slot: mmseg needs one
        pos_embed = torch.cat(
            [pos_embed.new_zeros(1, 1, pos_embed.shape[2]), pos_embed], dim=1)
    if pos_embed.shape[1] == num_entries:
        return pos_embed
    if src_grid is None and not _is_square(pos_embed.shape[1] - 1):
        raise ValueError(
            f'{shapes}: the source has {pos_embed.shape[1] - 1} grid '
            'entries besides the class-token slot, not a square grid, so '
            'its grid shape is unknown; pass src_grid=(H, W) to resize it')
    return resize_pos_embed(
        pos_embed, _model_grid(model, num_entries), src_grid,
        mode=getattr(model, 'interpolate_mode', 'bicubic'))


def adapt_to_model(state_dict: Mapping[str, torch.Tensor],
                   model: torch.nn.Module,
                   info: Optional[ConversionInfo] = None,
                   src_grid: Optional[Tuple[int, int]] = None) -> StateDict:
    """Fit an mmseg-layout ``state_dict`` to ``model``'s sizes.

    * ``pos_embed`` (ViT) is resized to the model's patch grid, keeping the
      class-token slot. mmseg's layout always has that slot, so with mmseg
      ViT keys in ``state_dict`` the first entry is the slot whatever the
      length; a lone ``pos_embed`` (e.g. a raw timm one) gets a zero slot
      when its length is a square (no slot) rather than one plus a square.
      The source grid is assumed square: pass ``src_grid=(H, W)`` for a
      non-square one (its length then also tells whether a slot is there).
      A source that cannot be a square grid, without ``src_grid``, is an
      error naming the shapes, never a guess.
    * ``absolute_pos_embed`` (Swin) is resized the same way, without prefix.
    * relative-position-bias tables are interpolated when window sizes
      differ, and the model's own ``relative_position_index`` (and any other
      buffer the source lacks) is used.
    * output norms the model does not have (mmseg Swin ``norm{i}`` of an
      unused out index, ViT ``ln1`` with ``final_norm=False``) are dropped.

    Parameters the source lacks (``prompt_embeddings``, Swin's ``norm0`` ..
    ``norm2``) stay missing; ``info.notes`` lists them.

    Raises:
        ValueError: keys the model does not have, or shapes that differ for
            another reason (a different width, depth or head count).
    """
    info = _info(info)
    target = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    out = OrderedDict()
    fit = StateFit()
    for key, value in state_dict.items():
        if key not in target and re.fullmatch(r'(norm\d+|ln1)\.(weight|bias)',
                                              key):
            info.dropped.append(key)
            info.note(f'{key}: the model has no such output norm '
                      '(out_indices / final_norm); dropped.')
            continue
        want = target[key].shape if key in target else value.shape
        if value.shape != want:
            if key == 'pos_embed' and value.ndim == 3 and \
                    value.shape[2] == want[2]:
                value = _fit_pos_embed(value, model, want[1], src_grid,
                                       _has_mmseg_vit_keys(state_dict))
                info.note(f'Resized pos_embed {tuple(state_dict[key].shape)} '
                          f'-> {tuple(value.shape)}')
            elif key == 'absolute_pos_embed' and value.ndim == 3:
                side = math.isqrt(want[1])
                value = resize_pos_embed(value, (side, side), num_prefix=0)
                info.note(f'Resized absolute_pos_embed -> '
                          f'{tuple(value.shape)}')
            elif key.endswith('relative_position_bias_table') and \
                    value.shape[1] == want[1]:
                value = resize_rel_pos_table(value, want[0])
                info.note(f'Interpolated {key} {tuple(state_dict[key].shape)}'
                          f' -> {tuple(want)}')
            elif key not in params:
                value = target[key].clone()  # a derived buffer
        if fit.add(key, value, target):
            out[key] = value
    if fit.unexpected or fit.mismatched:
        raise ValueError(
            'The checkpoint does not fit the model (check embed_dims, depths, '
            'num_heads, patch_size and the backbone type). '
            + fit.describe())
    buffers = [k for k in target if k not in params and k not in out]
    for key in buffers:
        out[key] = target[key].clone()
    if buffers:
        info.added.extend(buffers)
    missing = [k for k in target if k in params and k not in out]
    if missing:
        info.note(f'Parameters the checkpoint does not provide '
                  f'(keep their initial values): {preview(missing)}')
    return out
