"""Checks that turn bad segmentation data into errors naming the file.

mmseg reads a broken dataset without complaint or fails far from the cause:
an empty image folder is ``need at least one array to concatenate``, a
0-byte image a bare ``cv2.error``, an annotation of another size trains
silently, and label values outside the classes are dropped from mIoU. The
functions here say which file is wrong and how. They are used where the
facts are known: ``CheckedADE20KDataset`` (folders and undecodable files,
where the data is read) and ``SegDataCheckHook`` (annotation format and
size, and label values against the model's class count).
"""
import io
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import mmengine.fileio as fileio
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    'NameUnreadableFiles', 'check_split_folder',
    'check_image_annotation_pairs', 'unreadable_file_error',
    'annotation_file_problem', 'map_raw_labels', 'read_raw_annotation'
]

_SHOWN = 5  # file names listed in one message


def _some(names: Sequence[str]) -> str:
    shown = ', '.join(repr(n) for n in names[:_SHOWN])
    rest = len(names) - _SHOWN
    return shown + (f' and {rest} more' if rest > 0 else '')


def _list_files(folder: str, suffix: Optional[str],
                backend_args: Optional[dict]) -> List[str]:
    """Files under ``folder`` (recursive, relative paths), as mmseg's
    ``BaseSegDataset`` lists them."""
    return sorted(
        fileio.list_dir_or_file(
            folder, list_dir=False, suffix=suffix, recursive=True,
            backend_args=backend_args))


def check_split_folder(folder: str, what: str, key: str, data_root: str,
                       suffix: Optional[str],
                       backend_args: Optional[dict] = None) -> None:
    """Raise if ``folder`` is missing or (unless ``suffix`` is None) holds
    no ``*suffix`` file.

    Args:
        folder: The folder the dataset reads (``data_root`` joined with the
            ``data_prefix`` entry).
        what: ``'image'`` or ``'annotation'``.
        key: The config key that names it, e.g.
            ``'train_dataloader.dataset.data_prefix.img_path'``.
        data_root: The dataset's ``data_root``, for the message.
        suffix: The file suffix the dataset looks for (``img_suffix`` /
            ``seg_map_suffix``); None to check only that the folder exists.
    """
    where = (f'config key `{key}`' +
             (f', relative to `data_root` {data_root!r}' if data_root else
              ''))
    if not fileio.isdir(folder, backend_args=backend_args):
        raise FileNotFoundError(
            f'The {what} folder {folder!r} does not exist ({where}).')
    if suffix is None or any(
            fileio.list_dir_or_file(folder, list_dir=False, suffix=suffix,
                                    recursive=True,
                                    backend_args=backend_args)):
        return
    others = Counter(osp.splitext(f)[1] or f
                     for f in _list_files(folder, None, backend_args))
    found = ('it is empty' if not others else 'it holds ' + ', '.join(
        f"{n} '*{ext}'" for ext, n in others.most_common(_SHOWN)))
    raise FileNotFoundError(
        f"The {what} folder {folder!r} ({where}) holds no '*{suffix}' "
        f'files: {found}.')


def check_image_annotation_pairs(data_list: Sequence[dict], img_dir: str,
                                 ann_dir: str, img_suffix: str,
                                 seg_map_suffix: str, ann_file: str = '',
                                 backend_args: Optional[dict] = None
                                 ) -> None:
    """Raise unless every sample's image and annotation exist and, when the
    samples come from listing the image folder (no ``ann_file``), every
    annotation has its image.

    mmseg pairs them by name (``x.jpg`` with ``x.png``): without this, an
    image without annotation fails when its turn comes in training, and an
    annotation without image is left out silently.
    """
    def listed(folder: str, suffix: Optional[str]) -> set:
        return {osp.join(folder, f)
                for f in _list_files(folder, suffix, backend_args)}

    source = (f'listed in {ann_file!r}' if ann_file else
              f'in {img_dir!r}')
    if ann_file:
        images = listed(img_dir, None)
        lost = [i['img_path'] for i in data_list
                if i['img_path'] not in images]
        if lost:
            raise FileNotFoundError(
                f'{len(lost)} of {len(data_list)} images {source} do not '
                f'exist: {_some(lost)}.')
    annotations = listed(ann_dir, seg_map_suffix)
    missing = [f"{i['img_path']} (expected {i['seg_map_path']})"
               for i in data_list if i['seg_map_path'] not in annotations]
    if missing:
        raise FileNotFoundError(
            f'{len(missing)} of {len(data_list)} images {source} have no '
            f"annotation in {ann_dir!r} (mmseg pairs image 'x{img_suffix}' "
            f"with annotation 'x{seg_map_suffix}'): {_some(missing)}.")
    orphans = [] if ann_file else sorted(
        annotations.difference(i['seg_map_path'] for i in data_list))
    if orphans:
        raise FileNotFoundError(
            f'{len(orphans)} annotations in {ann_dir!r} have no image in '
            f'{img_dir!r}, so they would be left out: {_some(orphans)}. '
            'Add their images (with the image suffix the dataset expects) '
            'or move the annotations out of the folder.')


def _decodes(data: bytes, what: str) -> Optional[str]:
    """Why ``data`` does not decode as an ``what`` file, or None. Images
    are decoded with OpenCV and annotations with Pillow, as mmcv's
    ``LoadImageFromFile`` and mmseg's ``LoadAnnotations`` do by default."""
    if what == 'image':
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if img is not None else 'OpenCV cannot decode it'
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except UnidentifiedImageError:
        return 'Pillow does not recognise it as an image'
    except Exception as err:  # e.g. OSError('image file is truncated')
        return f'Pillow cannot decode it ({err})'
    return None


def unreadable_file_error(data_info: dict,
                          backend_args: Optional[dict] = None
                          ) -> Optional[Exception]:
    """The error to raise for the first file of a sample (``img_path``,
    then ``seg_map_path``) that is missing, empty or cannot be decoded;
    None if both read. Called after the pipeline failed, so its cost does
    not matter."""
    for key, what in (('img_path', 'image'), ('seg_map_path', 'annotation')):
        path = data_info.get(key)
        if path is None:
            continue
        if not fileio.exists(path, backend_args=backend_args):
            return FileNotFoundError(f'The {what} file {path!r} does not '
                                     'exist.')
        data = fileio.get(path, backend_args=backend_args)
        problem = ('the file is empty (0 bytes)'
                   if not data else _decodes(data, what))
        if problem:
            return ValueError(
                f'Cannot read the {what} file {path!r}: {problem}. Replace '
                'or remove it.')
    return None


class NameUnreadableFiles:
    """Mixin for an mmengine ``BaseDataset``: when a sample's pipeline
    fails because its image or annotation is missing, empty or cannot be
    decoded, raise an error naming that file instead (chained to the
    original). Nothing is read twice unless the pipeline failed."""

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except Exception as err:
            problem = unreadable_file_error(
                self.get_data_info(idx), getattr(self, 'backend_args', None))
            if problem is None:
                raise
            raise problem from err


def annotation_file_problem(seg_map_path: str, img_path: str,
                            image_shape: Tuple[int, int]) -> Optional[str]:
    """What is wrong with an annotation file that mmseg's
    ``LoadAnnotations`` would read without error, or None.

    * more than one channel (e.g. a colour-coded RGB map), which mmseg
      keeps as an (H, W, 3) "label map";
    * values outside 0..255 in a 16-bit (or 32-bit) file, which mmseg's
      cast to ``uint8`` wraps around (300 becomes 44) into valid-looking
      labels;
    * JPEG compression, which changes label values at region borders;
    * a size other than its image's ``image_shape`` (as the image was
      decoded).

    Only the file header is read, except for files of more than 8 bits.
    """
    with Image.open(seg_map_path) as ann:
        bands, mode, fmt = ann.getbands(), ann.mode, ann.format
        width, height = ann.size
        if len(bands) > 1:
            return (f'The annotation {seg_map_path!r} has {len(bands)} '
                    f"channels (Pillow mode {mode!r}); an annotation must be "
                    'a single-channel image whose pixel values are class '
                    'indices (convert a colour-coded map to indices '
                    'first).')
        if mode not in ('1', 'L', 'P'):  # more than 8 bits
            values = np.asarray(ann)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high > 255:
                wrapped = high if high > 255 else low
                return (f'The annotation {seg_map_path!r} holds values from '
                        f'{low} to {high} (Pillow mode {mode!r}), but mmseg '
                        'reads annotations as 8-bit: values outside 0..255 '
                        f'wrap around ({wrapped} would become '
                        f'{wrapped % 256}). Store labels 0..255 in an 8-bit '
                        'PNG.')
    if fmt == 'JPEG':
        return (f'The annotation {seg_map_path!r} is JPEG-compressed; '
                'lossy compression changes label values at region borders. '
                'Store annotations as PNG.')
    if (height, width) != tuple(image_shape):
        return (f'The annotation {seg_map_path!r} is {height}x{width} '
                '(height x width) but its image '
                f'{img_path!r} is {image_shape[0]}x{image_shape[1]}; an '
                'annotation must have the size of its image.')
    return None


def map_raw_labels(raw: np.ndarray, reduce_zero_label: bool,
                   label_map: Optional[Dict[int, int]]) -> np.ndarray:
    """The labels mmseg's ``LoadAnnotations`` makes of file values ``raw``:
    a cast to ``uint8``; with ``reduce_zero_label`` 0 becomes 255 and
    ``v`` becomes ``v - 1`` (so 255 stays 255); then ``label_map``."""
    labels = np.asarray(raw).astype(np.uint8)
    if reduce_zero_label:
        labels[labels == 0] = 255
        labels = labels - 1
        labels[labels == 254] = 255
    if label_map:
        mapped = labels.copy()
        for old, new in label_map.items():
            mapped[labels == old] = new
        labels = mapped
    return labels


def read_raw_annotation(seg_map_path: str) -> np.ndarray:
    """The annotation's values as stored (before mmseg's ``uint8`` cast)."""
    with Image.open(seg_map_path) as ann:
        return np.asarray(ann)
