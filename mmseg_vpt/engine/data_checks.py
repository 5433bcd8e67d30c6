"""``SegDataCheckHook``: stop on a bad annotation before the model or the
metric sees it, naming the file."""
import os.path as osp
from typing import Dict, Iterator, List, NamedTuple, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample

from ..utils.params import unwrap_model
from ..datasets.checks import (annotation_file_problem, map_raw_labels,
                               read_raw_annotation)


class LabelRange(NamedTuple):
    """Valid labels: ``[0, num_classes)`` and ``ignore_index``."""
    num_classes: int
    ignore_index: Optional[int]
    sources: str  # where num_classes comes from, for the message
    label_map: Optional[dict]


@HOOKS.register_module()
class SegDataCheckHook(Hook):
    """Check each batch's annotations before training, validation and
    testing use them.

    * **Label values** must lie in ``[0, num_classes)`` or be the ignore
      index (the decode head's ``ignore_index``, 255 by default), where
      ``num_classes`` is the smallest of the model's heads' class counts
      (``decode_head``, ``auxiliary_head``) and the dataset's number of
      classes: the loss fails on a larger value (``Target 199 is out of
      bounds``, no file named) and ``IoUMetric`` leaves it out of mIoU
      without a word. Values are checked after the dataset's label mapping
      (``reduce_zero_label``, ``label_map``), as the model sees them; the
      error gives them as stored in the file too.
    * **The annotation file** (local files, once each): one channel, values
      in 0..255, not JPEG-compressed, and the size of its image (mmseg
      trains on a mismatched pair without a word).

    Cost: one ``torch.bincount`` per label map; the file check reads only
    the header of an 8-bit file.
    """

    priority = 'HIGH'  # before other hooks look at the batch

    def __init__(self) -> None:
        self._checked_files = set()
        self._ranges: Dict[str, Optional[LabelRange]] = {}

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        self._check_batch(runner, 'train', data_batch)

    def before_val_iter(self, runner, batch_idx: int,
                        data_batch: Optional[dict] = None) -> None:
        self._check_batch(runner, 'val', data_batch)

    def before_test_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None) -> None:
        self._check_batch(runner, 'test', data_batch)

    def _check_batch(self, runner, loader: str,
                     data_batch: Optional[dict]) -> None:
        if not isinstance(data_batch, dict):
            return
        for sample in _samples(data_batch.get('data_samples')):
            if 'gt_sem_seg' not in sample:
                continue
            self._check_file(sample.metainfo)
            if loader not in self._ranges:
                self._ranges[loader] = label_range(runner, loader)
            if self._ranges[loader] is not None:
                check_labels(sample, self._ranges[loader])

    def _check_file(self, meta: dict) -> None:
        path, shape = meta.get('seg_map_path'), meta.get('ori_shape')
        if path is None or shape is None or path in self._checked_files \
                or not osp.isfile(path):
            return
        problem = annotation_file_problem(path, meta.get('img_path'), shape)
        if problem:
            raise ValueError(problem)
        self._checked_files.add(path)


def _samples(data_samples) -> Iterator[SegDataSample]:
    """The ``SegDataSample``s of a batch (nested lists under TTA)."""
    for sample in data_samples or ():
        if isinstance(sample, (list, tuple)):
            yield from _samples(sample)
        elif isinstance(sample, SegDataSample):
            yield sample


def label_range(runner, loader: str) -> Optional[LabelRange]:
    """The labels that the model and the ``loader`` dataset's metric
    accept; None if neither says how many classes there are."""
    model = unwrap_model(runner.model)
    heads = [(name, m) for name, m in model.named_modules()
             if isinstance(m, BaseDecodeHead)]
    counts = [(f'model.{name}.num_classes', m.num_classes)
              for name, m in heads]
    metainfo = getattr(runner, f'{loader}_dataloader').dataset.metainfo
    if metainfo.get('classes') is not None:
        counts.append(("the dataset's class count, len(metainfo['classes'])",
                       len(metainfo['classes'])))
    if not counts:
        return None
    return LabelRange(
        num_classes=min(n for _, n in counts),
        ignore_index=heads[0][1].ignore_index if heads else 255,
        sources=_join([f'{name} ({n})' for name, n in counts], ' and '),
        label_map=metainfo.get('label_map'))


def check_labels(sample: SegDataSample, valid: LabelRange) -> None:
    """Raise if ``sample``'s label map has a value outside ``valid``."""
    labels = sample.gt_sem_seg.data
    if labels.numel() == 0:
        return
    if labels.min() < 0:  # bincount takes no negative values
        present = torch.unique(labels).tolist()
    else:
        present = torch.bincount(labels.flatten()).nonzero().flatten(
        ).tolist()
    bad = [v for v in present
           if not 0 <= v < valid.num_classes and v != valid.ignore_index]
    if bad:
        raise ValueError(_label_message(sample.metainfo, bad, valid))


def _label_message(meta: dict, bad: List[int], valid: LabelRange) -> str:
    path = meta.get('seg_map_path', '<unknown file>')
    reduce_zero_label = bool(meta.get('reduce_zero_label'))
    ignored = ('' if valid.ignore_index is None else
               f' that are not the ignore index {valid.ignore_index}')
    mappings = []
    if reduce_zero_label:
        mappings.append('reduce_zero_label=True turns a stored value v into '
                        'v - 1, and 0 into 255')
    if valid.label_map:
        mappings.append(f'label_map {valid.label_map} renumbers them')
    if not mappings:
        stored = ' (as stored in the file)'
    else:
        raw = _stored_values(path, bad, reduce_zero_label, valid.label_map)
        stored = (f' (stored in the file as {_join(raw)}; ' if raw else
                  ' (') + f"the dataset's {' and '.join(mappings)})"
    return (f'The annotation {path!r} has label values outside '
            f'[0, {valid.num_classes}){ignored}: {_join(bad)}{stored}. '
            f'num_classes = {valid.num_classes} is the smallest of '
            f'{valid.sources}. Fix the file, or make num_classes and '
            'reduce_zero_label match the data.')


def _stored_values(path: str, bad: List[int], reduce_zero_label: bool,
                   label_map: Optional[dict]) -> List[int]:
    """The values stored in ``path`` that the mapping turns into ``bad``."""
    if not osp.isfile(path):
        return []
    stored = np.unique(read_raw_annotation(path))
    mapped = map_raw_labels(stored, reduce_zero_label, label_map)
    return [int(v) for v, m in zip(stored, mapped) if int(m) in bad]


def _join(items: list, last: str = ', ') -> str:
    """``'a, b, c'``, or with ``last=' and '`` ``'a, b and c'``."""
    items = [str(i) for i in items]
    return last.join(filter(None, [', '.join(items[:-1])] + items[-1:]))
