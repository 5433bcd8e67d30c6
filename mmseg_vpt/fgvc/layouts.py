"""Read the five FGVC datasets in their public release layouts.

No mmpretrain here (numpy and scipy only), so the generator, the tests and
:class:`~mmseg_vpt.fgvc.dataset.FGVCDataset` share one reader. Each reader
returns the official splits as lists of :data:`Sample`: the image path
relative to the dataset folder, the 0-based label, and where in the
annotation files the sample came from (for error messages). Layouts under
``<data_root>/<folder>/`` (``folder`` from :data:`~mmseg_vpt.fgvc.tasks.
TASKS`):

* CUB-200-2011 (``CUB_200_2011/``): ``images.txt`` (``<id> <path>``),
  ``image_class_labels.txt`` (``<id> <class 1..200>``),
  ``train_test_split.txt`` (``<id> <1 train | 0 test>``),
  ``images/<class folder>/<file>.jpg``.
* NABirds (``nabirds/``): the same three files with UUID image ids and
  non-contiguous class ids; the ids that occur map to ``0..C-1`` in sorted
  order (C = 555 for the release).
* Oxford Flowers (``oxford_flowers/``): ``jpg/image_%05d.jpg``,
  ``imagelabels.mat`` (``labels``, 1..102, one per image) and ``setid.mat``
  (``trnid``, ``valid``, ``tstid``: 1-based image numbers).
* Stanford Dogs (``stanford_dogs/``): ``Images/<synset-breed>/<file>.jpg``,
  ``train_list.mat`` and ``test_list.mat`` (``file_list``: paths relative
  to ``Images/``; ``labels``: 1..120).
* Stanford Cars (``stanford_cars/``): ``cars_train/``, ``cars_test/``,
  ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``
  (struct array ``annotations`` with fields ``fname`` and ``class``,
  1..196). We assume torchvision's ``StanfordCars`` layout, which keeps
  the labelled test annotations (released separately from the devkit) in
  the dataset folder; ``devkit/cars_test_annos_withlabels.mat`` is accepted
  too. The devkit's own ``cars_test_annos.mat`` has no labels and is not
  used.

The paper's train / val split (:func:`split_train_val`) and the public VPT
release's json split files (:func:`read_json_splits`) are built on top.
"""
import hashlib
import json
import math
import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tasks import SPLIT_SEED, SPLITS, VAL_FRACTION, FGVCTask, get_task

__all__ = ['Sample', 'FGVCAnnotationError', 'LAYOUTS', 'read_official',
           'split_train_val', 'read_json_splits', 'json_split_files',
           'load_split', 'check_images']

# (image path relative to the dataset folder, 0-based label, where)
Sample = Tuple[str, int, str]

# The files each reader needs, for "not found" messages.
LAYOUTS: Dict[str, str] = {
    'cub': 'images.txt, image_class_labels.txt, train_test_split.txt, '
           'images/<class folder>/<file>.jpg',
    'nabirds': 'images.txt, image_class_labels.txt, train_test_split.txt, '
               'images/<folder>/<file>.jpg',
    'oxford_flowers': 'jpg/image_%05d.jpg, imagelabels.mat, setid.mat',
    'stanford_dogs': 'Images/<synset-breed>/<file>.jpg, train_list.mat, '
                     'test_list.mat',
    'stanford_cars': 'cars_train/, cars_test/, devkit/cars_train_annos.mat, '
                     'cars_test_annos_withlabels.mat',
}


class FGVCAnnotationError(ValueError):
    """An FGVC annotation file that cannot be used (names the file and the
    line or key)."""


def _missing(path: str, task: FGVCTask) -> FileNotFoundError:
    return FileNotFoundError(
        f'{task.title} annotation file not found: {path}. Expected the '
        f'public release layout <data_root>/{task.folder}/ with '
        f'{LAYOUTS[task.name]} (README section "FGVC classification").')


# ---------------------------------------------------------------------------
# CUB-200-2011 and NABirds: "<image id> <value>" text tables
# ---------------------------------------------------------------------------
def _read_table(path: str, task: FGVCTask,
                expected: str) -> 'OrderedDict[str, Tuple[str, int]]':
    """``image id -> (value, line number)`` of a two-column text file."""
    if not osp.isfile(path):
        raise _missing(path, task)
    table: 'OrderedDict[str, Tuple[str, int]]' = OrderedDict()
    with open(path, encoding='utf-8') as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise FGVCAnnotationError(
                    f'{path}:{lineno}: expected "{expected}", got {line!r}')
            image_id, value = parts
            if image_id in table:
                raise FGVCAnnotationError(
                    f'{path}:{lineno}: image id {image_id!r} repeats line '
                    f'{table[image_id][1]}')
            table[image_id] = (value, lineno)
    if not table:
        raise FGVCAnnotationError(f'{path}: the file has no entries')
    return table


def _int(value: str, where: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FGVCAnnotationError(
            f'{where}: {what} {value!r} is not an integer') from None


def _read_cub_like(task: FGVCTask, root: str,
                   num_classes: int) -> Dict[str, List[Sample]]:
    images_txt = osp.join(root, 'images.txt')
    labels_txt = osp.join(root, 'image_class_labels.txt')
    split_txt = osp.join(root, 'train_test_split.txt')
    images = _read_table(images_txt, task, '<image id> <relative path>')
    labels = _read_table(labels_txt, task, '<image id> <class id>')
    is_train = _read_table(split_txt, task,
                           '<image id> <1 (train) or 0 (test)>')
    for path, table in ((labels_txt, labels), (split_txt, is_train)):
        for image_id, (_, lineno) in table.items():
            if image_id not in images:
                raise FGVCAnnotationError(
                    f'{path}:{lineno}: image id {image_id!r} is not in '
                    f'{images_txt}')
    class_ids = {i: _int(v, f'{labels_txt}:{n}', 'class id')
                 for i, (v, n) in labels.items()}
    if task.name == 'nabirds':
        # non-contiguous ids: the ones that occur, in sorted order
        order = sorted(set(class_ids.values()))
        if len(order) > num_classes:
            raise FGVCAnnotationError(
                f'{labels_txt}: {len(order)} distinct class ids, expected at '
                f'most {num_classes} (num_classes)')
        to_label = {c: k for k, c in enumerate(order)}
    else:
        to_label = {}
        for image_id, c in class_ids.items():
            if not 1 <= c <= num_classes:
                raise FGVCAnnotationError(
                    f'{labels_txt}:{labels[image_id][1]}: class id {c} is '
                    f'outside [1, {num_classes}] (num_classes={num_classes})')
            to_label[c] = c - 1
    splits: Dict[str, List[Sample]] = {'train': [], 'test': []}
    for image_id, (rel, lineno) in images.items():
        where = f'{images_txt}:{lineno}'
        for path, table in ((labels_txt, labels), (split_txt, is_train)):
            if image_id not in table:
                raise FGVCAnnotationError(
                    f'{where}: image id {image_id!r} has no line in {path}')
        flag, flag_line = is_train[image_id]
        if flag not in ('0', '1'):
            raise FGVCAnnotationError(
                f'{split_txt}:{flag_line}: expected 1 (train) or 0 (test), '
                f'got {flag!r}')
        splits['train' if flag == '1' else 'test'].append(
            (osp.join('images', rel), to_label[class_ids[image_id]], where))
    return splits


# ---------------------------------------------------------------------------
# Oxford Flowers, Stanford Dogs, Stanford Cars: MATLAB files
# ---------------------------------------------------------------------------
def _load_mat(path: str, task: FGVCTask, keys: Sequence[str]) -> dict:
    """The variables ``keys`` of a .mat file, squeezed (1-D arrays)."""
    import scipy.io
    if not osp.isfile(path):
        raise _missing(path, task)
    try:
        data = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # noqa: BLE001 (scipy raises several types)
        raise FGVCAnnotationError(
            f'{path}: not a readable MATLAB file ({type(e).__name__}: {e})'
        ) from e
    found = sorted(k for k in data if not k.startswith('__'))
    for key in keys:
        if key not in data:
            raise FGVCAnnotationError(
                f'{path}: no variable {key!r} (found {found}); expected '
                f'{list(keys)}')
    return {k: data[k] for k in keys}


def _ints(values, path: str, key: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values))
    try:
        ints = arr.astype(np.int64)
    except (TypeError, ValueError):
        raise FGVCAnnotationError(
            f'{path}: {key!r} must hold integers, got {arr.dtype}') from None
    bad = np.flatnonzero(ints != arr)
    if bad.size:
        raise FGVCAnnotationError(
            f'{path}: {key}[{bad[0]}] is {arr[bad[0]]!r}, not an integer')
    return ints


def _labels(values, path: str, key: str, num_classes: int,
            entry: Sequence[str]) -> np.ndarray:
    """1-based labels -> 0-based, each checked against ``num_classes``;
    ``entry[i]`` names entry ``i`` in the error."""
    ints = _ints(values, path, key)
    bad = np.flatnonzero((ints < 1) | (ints > num_classes))
    if bad.size:
        i = int(bad[0])
        raise FGVCAnnotationError(
            f'{path}: {key}[{i}] ({entry[i]}) is {ints[i]}, outside '
            f'[1, {num_classes}] (num_classes={num_classes})')
    return ints - 1


def _strings(values, path: str, key: str) -> List[str]:
    out = []
    for i, v in enumerate(np.atleast_1d(np.asarray(values, dtype=object))):
        if isinstance(v, np.ndarray) and v.size == 1:
            v = v.item()
        if not isinstance(v, str) or not v:
            raise FGVCAnnotationError(
                f'{path}: {key}[{i}] is {v!r}, expected a file name')
        out.append(v)
    return out


def _read_flowers(task: FGVCTask, root: str,
                  num_classes: int) -> Dict[str, List[Sample]]:
    labels_mat = osp.join(root, 'imagelabels.mat')
    setid_mat = osp.join(root, 'setid.mat')
    raw = np.atleast_1d(_load_mat(labels_mat, task, ['labels'])['labels'])
    names = [f'jpg/image_{i:05d}.jpg' for i in range(1, len(raw) + 1)]
    labels = _labels(raw, labels_mat, 'labels', num_classes, names)
    sets = _load_mat(setid_mat, task, ['trnid', 'valid', 'tstid'])
    splits = {}
    for split, key in (('train', 'trnid'), ('val', 'valid'),
                       ('test', 'tstid')):
        ids = _ints(sets[key], setid_mat, key)
        bad = np.flatnonzero((ids < 1) | (ids > len(labels)))
        if bad.size:
            i = int(bad[0])
            raise FGVCAnnotationError(
                f'{setid_mat}: {key}[{i}] is image {ids[i]}, outside '
                f'[1, {len(labels)}] (the images in {labels_mat})')
        splits[split] = [(names[n - 1], int(labels[n - 1]),
                          f'{setid_mat}: {key}[{i}]')
                         for i, n in enumerate(ids.tolist())]
    return splits


def _read_dogs(task: FGVCTask, root: str,
               num_classes: int) -> Dict[str, List[Sample]]:
    splits = {}
    for split in ('train', 'test'):
        path = osp.join(root, f'{split}_list.mat')
        data = _load_mat(path, task, ['file_list', 'labels'])
        files = _strings(data['file_list'], path, 'file_list')
        raw = np.atleast_1d(data['labels'])
        if len(raw) != len(files):
            raise FGVCAnnotationError(
                f'{path}: {len(files)} entries in file_list but '
                f'{len(raw)} in labels')
        labels = _labels(raw, path, 'labels', num_classes, files)
        splits[split] = [(osp.join('Images', f), int(y),
                          f'{path}: file_list[{i}]')
                         for i, (f, y) in enumerate(zip(files, labels))]
    return splits


def _read_cars(task: FGVCTask, root: str,
               num_classes: int) -> Dict[str, List[Sample]]:
    test_mat = osp.join(root, 'cars_test_annos_withlabels.mat')
    in_devkit = osp.join(root, 'devkit', 'cars_test_annos_withlabels.mat')
    if not osp.isfile(test_mat) and osp.isfile(in_devkit):
        test_mat = in_devkit
    splits = {}
    for split, path in (('train', osp.join(root, 'devkit',
                                           'cars_train_annos.mat')),
                        ('test', test_mat)):
        annos = np.atleast_1d(_load_mat(path, task,
                                        ['annotations'])['annotations'])
        fields = annos.dtype.names or ()
        for key in ('fname', 'class'):
            if key not in fields:
                hint = (' (the devkit\'s cars_test_annos.mat has no labels: '
                        'use cars_test_annos_withlabels.mat)'
                        if key == 'class' and split == 'test' else '')
                raise FGVCAnnotationError(
                    f'{path}: annotations have no field {key!r} (fields: '
                    f'{list(fields)}){hint}')
        files = _strings(annos['fname'], path, 'annotations.fname')
        labels = _labels(annos['class'], path, 'annotations.class',
                         num_classes, files)
        folder = f'cars_{split}'
        splits[split] = [(osp.join(folder, f), int(y),
                          f'{path}: annotations[{i}]')
                         for i, (f, y) in enumerate(zip(files, labels))]
    return splits


_READERS = {'cub': _read_cub_like, 'nabirds': _read_cub_like,
            'oxford_flowers': _read_flowers, 'stanford_dogs': _read_dogs,
            'stanford_cars': _read_cars}


def read_official(name: str, dataset_dir: str,
                  num_classes: Optional[int] = None
                  ) -> Dict[str, List[Sample]]:
    """The official splits of dataset ``name`` in ``dataset_dir``:
    ``'train'`` and ``'test'`` (Oxford Flowers also ``'val'``)."""
    task = get_task(name)
    return _READERS[name](task, dataset_dir, num_classes or task.num_classes)


# ---------------------------------------------------------------------------
# the paper's train / val split
# ---------------------------------------------------------------------------
def _rank_key(seed: int, path: str) -> bytes:
    # a hash, not an RNG stream: the split depends only on the seed and the
    # file names, on every platform and numpy version
    return hashlib.sha256(f'{seed}:{path}'.encode('utf-8')).digest()


def split_train_val(samples: Sequence[Sample],
                    val_fraction: float = VAL_FRACTION,
                    seed: int = SPLIT_SEED
                    ) -> Tuple[List[Sample], List[Sample]]:
    """Split an official training set into train and val.

    ``n - floor((1 - val_fraction) n)`` samples go to val (600 of CUB's
    5,994, as in the paper), stratified by class: each class gets its
    share, rounded down, and the remaining places go to the classes with
    the largest remainders (ties: smaller label). Within a class, the
    samples with the smallest ``sha256(f'{seed}:{path}')`` are chosen.
    Both lists keep the input order.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got '
                         f'{val_fraction}')
    n = len(samples)
    n_val = n - math.floor(round(n * (1 - val_fraction), 9))
    by_class: Dict[int, List[int]] = defaultdict(list)
    for i, (_, label, _) in enumerate(samples):
        by_class[label].append(i)
    quota = {c: len(idx) * n_val / n for c, idx in by_class.items()}
    take = {c: math.floor(q) for c, q in quota.items()}
    rest = n_val - sum(take.values())
    for c in sorted(quota, key=lambda c: (take[c] - quota[c], c))[:rest]:
        take[c] += 1
    val = set()
    for c, idx in by_class.items():
        ranked = sorted(idx, key=lambda i: _rank_key(seed, samples[i][0]))
        val.update(ranked[:take[c]])
    return ([s for i, s in enumerate(samples) if i not in val],
            [s for i, s in enumerate(samples) if i in val])


# ---------------------------------------------------------------------------
# the public VPT release's split files
# ---------------------------------------------------------------------------
JSON_SPLITS = ('train', 'val', 'test')


def json_split_files(split_dir: str) -> Dict[str, str]:
    """``{split: path}`` of the json split files present in ``split_dir``
    (``train.json``, ``val.json``, ``test.json``)."""
    files = {s: osp.join(split_dir, f'{s}.json') for s in JSON_SPLITS}
    return {s: p for s, p in files.items() if osp.isfile(p)}


def read_json_splits(name: str, split_dir: str,
                     num_classes: Optional[int] = None
                     ) -> Dict[str, List[Sample]]:
    """The splits in ``split_dir``'s json files, each a JSON object mapping
    an image path (relative to the dataset's ``json_root``, e.g.
    ``images/`` for CUB) to a class id.

    The class ids that occur in any of the files map to ``0..C-1`` in
    sorted order (so 1-based and sparse ids both work, and all splits agree).
    """
    task = get_task(name)
    num_classes = num_classes or task.num_classes
    raw: Dict[str, dict] = {}
    for split, path in json_split_files(split_dir).items():
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise FGVCAnnotationError(f'{path}: not valid JSON ({e})') \
                from None
        if not isinstance(data, dict) or not data:
            raise FGVCAnnotationError(
                f'{path}: expected a non-empty JSON object mapping '
                '"relative/image/path.jpg" to a class id')
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise FGVCAnnotationError(
                    f'{path}: key {key!r}: class id {value!r} is not an '
                    'integer')
        raw[split] = data
    ids = sorted({v for data in raw.values() for v in data.values()})
    if len(ids) > num_classes:
        raise FGVCAnnotationError(
            f'{sorted(json_split_files(split_dir).values())}: '
            f'{len(ids)} distinct class ids, expected at most {num_classes} '
            f'(num_classes)')
    to_label = {c: k for k, c in enumerate(ids)}
    paths = json_split_files(split_dir)
    return {split: [(osp.join(task.json_root, key), to_label[value],
                     f'{paths[split]}: key {key!r}')
                    for key, value in data.items()]
            for split, data in raw.items()}


def load_split(name: str, split: str, dataset_dir: str,
               num_classes: Optional[int] = None,
               split_dir: Optional[str] = None,
               val_fraction: float = VAL_FRACTION,
               seed: int = SPLIT_SEED) -> Tuple[List[Sample], str]:
    """One split (``'train'``, ``'val'``, ``'trainval'`` or ``'test'``) and
    where it came from.

    With json split files in ``split_dir`` (default: the dataset folder)
    they define every split (``trainval`` = train + val); a ``split_dir``
    given explicitly must hold them. Otherwise the release's own files do:
    ``test`` and ``trainval`` are the official test and training sets, and
    ``train`` / ``val`` split the training set with :func:`split_train_val`
    (Oxford Flowers: its official train / val).
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    needed = ('train', 'val') if split == 'trainval' else (split, )
    folder = dataset_dir if split_dir is None else split_dir
    present = json_split_files(folder)
    if present or split_dir is not None:
        for s in needed:
            if s not in present:
                raise FileNotFoundError(
                    f'split file not found: {osp.join(folder, s + ".json")}'
                    f' (split {split!r} from the json split files in '
                    f'{folder}, found {sorted(present) or "none"})')
        splits = read_json_splits(name, folder, num_classes)
        source = ', '.join(present[s] for s in needed)
        return [x for s in needed for x in splits[s]], source
    task = get_task(name)
    official = read_official(name, dataset_dir, num_classes)
    source = f'{dataset_dir} (release files)'
    if split == 'test':
        return official['test'], source
    if task.official_val:
        return [x for s in needed for x in official[s]], source
    if split == 'trainval':
        return official['train'], source
    train, val = split_train_val(official['train'], val_fraction, seed)
    return (train if split == 'train' else val), (
        f'{source}, seeded {val_fraction:g} val split (seed {seed})')


def check_images(samples: Sequence[Sample], dataset_dir: str) -> None:
    """Raise naming the annotation entry of the first image that does not
    exist."""
    for rel, _, where in samples:
        path = osp.join(dataset_dir, rel)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{where}: image {rel!r} not found (looked for '
                f'{osp.abspath(path)})')
