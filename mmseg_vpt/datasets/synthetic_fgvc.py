"""Tiny generated datasets in the five FGVC release layouts.

The FGVC tests need the real folder layouts and annotation formats (text
tables, MATLAB files) without the real datasets. :func:`make_synthetic_fgvc`
writes, under ``ROOT``, one folder per dataset in the layout
:mod:`mmseg_vpt.fgvc.layouts` reads:

* ``CUB_200_2011/``: ``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``images/001.Synthetic_Disc/...jpg``
  (class ids 1..K, images sorted by class as in the release);
* ``nabirds/``: the same files with UUID image ids and the non-contiguous
  class ids of :data:`NABIRDS_CLASS_IDS` (not in sorted order, so the
  sorted mapping to 0..K-1 is exercised), ``images/<class id>/<uuid>.jpg``;
* ``oxford_flowers/``: ``jpg/image_00001.jpg ...``, ``imagelabels.mat``,
  ``setid.mat`` (``trnid`` / ``valid`` / ``tstid`` in shuffled order);
* ``stanford_dogs/``: ``Images/n02085620-Synthetic_Disc/...jpg``,
  ``train_list.mat`` / ``test_list.mat`` (``file_list``,
  ``annotation_list``, ``labels``);
* ``stanford_cars/``: ``cars_train/00001.jpg``, ``cars_test/...``,
  ``devkit/cars_train_annos.mat``, ``devkit/cars_test_annos.mat`` (no
  labels, as in the devkit), ``devkit/cars_meta.mat`` and
  ``cars_test_annos_withlabels.mat``.

Only K (``num_classes``) of each dataset's classes occur, so the real
configs (with the real class counts) train on them unchanged. Images are
:func:`~mmseg_vpt.datasets.synthetic_vtab.render_image` (the label is the
object's shape and hue). Each folder's ``synthetic_fgvc.json`` records the
parameters and the official splits as written (relative path, 0-based
label), which the tests compare with what the readers return. Everything
is a function of ``seed``; rerunning with the same parameters writes
nothing.
"""
import json
import shutil
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..fgvc.tasks import TASKS
from .synthetic_vtab import SHAPES, render_image

__all__ = ['make_synthetic_fgvc', 'read_manifest', 'NABIRDS_CLASS_IDS',
           'GENERATOR_VERSION', 'MARKER']

#: Bump when the output changes, so stale datasets are regenerated.
GENERATOR_VERSION = 1
MARKER = 'synthetic_fgvc.json'
#: NABirds-like sparse class ids, one per shape (deliberately unsorted).
NABIRDS_CLASS_IDS = (817, 295, 1003, 313, 590, 447, 1010, 852)
# dataset -> (folder, image subfolders this generator owns)
_FOLDERS = {
    name: (TASKS[name].folder, owned) for name, owned in [
        ('cub', ('images', )),
        ('nabirds', ('images', )),
        ('oxford_flowers', ('jpg', )),
        ('stanford_dogs', ('Images', )),
        ('stanford_cars', ('cars_train', 'cars_test')),
    ]}
Entry = Tuple[str, int]  # (path relative to the dataset folder, label)


class _Writer:
    """Renders and writes one dataset's images."""

    def __init__(self, root: Path, name: str, num_classes: int,
                 img_size: int, seed: int, progress):
        self.root = root
        self.offset = list(_FOLDERS).index(name)
        self.num_classes = num_classes
        self.img_size = img_size
        self.seed = seed
        self.progress = progress
        self.count = 0

    def image(self, rel: str, shape: int) -> None:
        rng = np.random.default_rng([self.seed, self.offset, self.count])
        self.count += 1
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = render_image(rng, shape, self.img_size, self.num_classes)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if self.progress is not None:
            self.progress.update()


def _shapes(n: int, k: int, rng: np.random.Generator) -> List[int]:
    """``n`` balanced class indices in random order."""
    return [int(i % k) for i in rng.permutation(n)]


def _cell(strings: Sequence[str]) -> np.ndarray:
    """A MATLAB cell column of strings."""
    arr = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        arr[i, 0] = s
    return arr


def _write_cub_like(w: _Writer, name: str, shapes: Dict[str, List[int]],
                    rng: np.random.Generator) -> Dict[str, List[Entry]]:
    items = [(split, s) for split in ('train', 'test') for s in shapes[split]]
    if name == 'cub':
        class_ids = list(range(1, w.num_classes + 1))
        # the release lists images class by class
        items.sort(key=lambda x: x[1])
        ids = [str(i) for i in range(1, len(items) + 1)]
    else:
        class_ids = list(NABIRDS_CLASS_IDS[:w.num_classes])
        ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4))
               for _ in items]
        order = sorted(range(len(items)), key=lambda i: ids[i])
        items = [items[i] for i in order]
        ids = [ids[i] for i in order]
    label_of = {c: k for k, c in enumerate(sorted(class_ids))}
    images, labels, splits = [], [], []
    out: Dict[str, List[Entry]] = {'train': [], 'test': []}
    for n, (image_id, (split, shape)) in enumerate(zip(ids, items), 1):
        cid = class_ids[shape]
        if name == 'cub':
            folder = f'{cid:03d}.Synthetic_{SHAPES[shape].title()}'
            rel = f'{folder}/Synthetic_{SHAPES[shape].title()}_{n:04d}.jpg'
        else:
            rel = f'{cid:04d}/{uuid.UUID(image_id).hex}.jpg'
        w.image(f'images/{rel}', shape)
        images.append(f'{image_id} {rel}')
        labels.append(f'{image_id} {cid}')
        splits.append(f'{image_id} {int(split == "train")}')
        out[split].append((f'images/{rel}', label_of[cid]))
    for file, lines in (('images.txt', images),
                        ('image_class_labels.txt', labels),
                        ('train_test_split.txt', splits)):
        (w.root / file).write_text('\n'.join(lines) + '\n')
    return out


def _write_flowers(w: _Writer, shapes: Dict[str, List[int]],
                   rng: np.random.Generator) -> Dict[str, List[Entry]]:
    import scipy.io
    items = [(split, s) for split in ('train', 'val', 'test')
             for s in shapes[split]]
    # image numbers in random order, so the split ids are not contiguous
    number = rng.permutation(len(items)) + 1
    labels = np.zeros(len(items), dtype=np.float64)
    ids: Dict[str, List[int]] = {'train': [], 'val': [], 'test': []}
    out: Dict[str, List[Entry]] = {'train': [], 'val': [], 'test': []}
    for (split, shape), n in sorted(zip(items, number.tolist()),
                                    key=lambda x: x[1]):
        rel = f'jpg/image_{n:05d}.jpg'
        w.image(rel, shape)
        labels[n - 1] = shape + 1
        ids[split].append(n)
    for split in ids:
        ids[split] = [int(n) for n in rng.permutation(ids[split])]
        out[split] = [(f'jpg/image_{n:05d}.jpg', int(labels[n - 1]) - 1)
                      for n in ids[split]]
    scipy.io.savemat(str(w.root / 'imagelabels.mat'),
                     {'labels': labels[None]})
    scipy.io.savemat(str(w.root / 'setid.mat'), {
        key: np.array(ids[split], dtype=np.uint16)[None]
        for key, split in (('trnid', 'train'), ('valid', 'val'),
                           ('tstid', 'test'))})
    return out


def _write_dogs(w: _Writer, shapes: Dict[str, List[int]]
                ) -> Dict[str, List[Entry]]:
    import scipy.io
    out: Dict[str, List[Entry]] = {}
    for split in ('train', 'test'):
        files, labels = [], []
        for shape in shapes[split]:
            synset = f'n{2085620 + shape:08d}'
            breed = f'{synset}-Synthetic_{SHAPES[shape].title()}'
            files.append(f'{breed}/{synset}_{w.count:05d}.jpg')
            labels.append(shape + 1)
            w.image(f'Images/{files[-1]}', shape)
        scipy.io.savemat(str(w.root / f'{split}_list.mat'), {
            'file_list': _cell(files),
            'annotation_list': _cell([f[:-len('.jpg')] for f in files]),
            'labels': np.array(labels, dtype=np.float64)[:, None]})
        out[split] = [(f'Images/{f}', y - 1) for f, y in zip(files, labels)]
    return out


def _write_cars(w: _Writer, shapes: Dict[str, List[int]],
                rng: np.random.Generator) -> Dict[str, List[Entry]]:
    import scipy.io
    fields = ['bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname']
    out: Dict[str, List[Entry]] = {}
    (w.root / 'devkit').mkdir(parents=True, exist_ok=True)
    for split in ('train', 'test'):
        n = len(shapes[split])
        annos = np.zeros((1, n), dtype=[(f, 'O') for f in fields])
        for i, shape in enumerate(shapes[split]):
            fname = f'{i + 1:05d}.jpg'
            w.image(f'cars_{split}/{fname}', shape)
            x1, y1 = rng.integers(0, w.img_size // 4, 2)
            x2 = y2 = w.img_size - 1
            annos[0, i] = (np.uint16(x1), np.uint16(y1), np.uint16(x2),
                           np.uint16(y2), np.uint8(shape + 1), fname)
        out[split] = [(f'cars_{split}/{a["fname"]}', int(a['class']) - 1)
                      for a in annos[0]]
        if split == 'train':
            scipy.io.savemat(str(w.root / 'devkit' / 'cars_train_annos.mat'),
                             {'annotations': annos})
        else:
            scipy.io.savemat(str(w.root / 'cars_test_annos_withlabels.mat'),
                             {'annotations': annos})
            unlabelled = np.zeros((1, n), dtype=[(f, 'O') for f in fields
                                                 if f != 'class'])
            for i, a in enumerate(annos[0]):
                unlabelled[0, i] = tuple(a[f] for f in unlabelled.dtype.names)
            scipy.io.savemat(str(w.root / 'devkit' / 'cars_test_annos.mat'),
                             {'annotations': unlabelled})
    names = np.empty((1, w.num_classes), dtype=object)
    for k in range(w.num_classes):
        names[0, k] = f'Synthetic {SHAPES[k].title()} 2012'
    scipy.io.savemat(str(w.root / 'devkit' / 'cars_meta.mat'),
                     {'class_names': names})
    return out


def _params(name: str, num_classes: int, num_train: int, num_val: int,
            num_test: int, img_size: int, seed: int) -> Dict:
    return dict(generator_version=GENERATOR_VERSION, dataset=name,
                num_classes=num_classes, num_train=num_train,
                num_val=num_val if name == 'oxford_flowers' else 0,
                num_test=num_test, img_size=img_size, seed=seed)


def read_manifest(dataset_dir: Union[str, Path]) -> Dict:
    """The generator's record of a dataset folder: its parameters and
    ``splits`` (official split -> list of ``(relative path, label)``)."""
    data = json.loads((Path(dataset_dir) / MARKER).read_text())
    data['splits'] = {s: [tuple(e) for e in entries]
                      for s, entries in data['splits'].items()}
    return data


def make_synthetic_fgvc(root: Union[str, Path],
                        names: Optional[Sequence[str]] = None,
                        num_classes: int = 3,
                        num_train: int = 30,
                        num_val: int = 9,
                        num_test: int = 12,
                        img_size: int = 32,
                        seed: int = 0,
                        overwrite: bool = False,
                        show_progress: bool = True) -> Dict[str, Path]:
    """Write tiny FGVC datasets under ``root`` in their release layouts.

    Args:
        root: The ``data_root`` (dataset folders go below it).
        names: Datasets to write (default: all five).
        num_classes: Classes that occur, 2..8 (one shape each).
        num_train: Images in the official training set (Oxford Flowers:
            its official train split).
        num_val: Oxford Flowers' official val images (the others have no
            official val).
        num_test: Images in the official test set.
        img_size: Square image size (>= 16).
        seed: Random seed.
        overwrite: Regenerate even if up to date, and replace folders this
            function did not write.
        show_progress: Show a progress bar while writing images.

    Returns:
        ``{name: dataset folder}``.
    """
    names = list(_FOLDERS) if names is None else list(names)
    unknown = [n for n in names if n not in _FOLDERS]
    if unknown:
        raise ValueError(f'unknown FGVC datasets {unknown}; choose from '
                         f'{list(_FOLDERS)}')
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f'num_classes must be in [2, {len(SHAPES)}] (one '
                         f'shape per class: {SHAPES}), got {num_classes}')
    for what, n in (('num_train', num_train), ('num_val', num_val),
                    ('num_test', num_test)):
        if n < num_classes:
            raise ValueError(f'{what} must be >= num_classes '
                             f'({num_classes}), got {n}')
    if img_size < 16:
        raise ValueError(f'img_size must be >= 16, got {img_size}')
    root = Path(root)
    todo = []
    for name in names:
        folder, owned = _FOLDERS[name]
        out = root / folder
        params = _params(name, num_classes, num_train, num_val, num_test,
                         img_size, seed)
        marker = out / MARKER
        mine = marker.is_file()
        if (mine and not overwrite and
                {k: v for k, v in json.loads(marker.read_text()).items()
                 if k != 'splits'} == params):
            continue
        if out.is_dir() and any(out.iterdir()) and not mine \
                and not overwrite:
            raise FileExistsError(
                f'{out} exists and was not written by this generator; pass '
                'overwrite=True (--overwrite) to replace its files.')
        todo.append((name, out, owned, params))
    progress = None
    if show_progress and todo:
        from mmengine.utils import ProgressBar
        total = sum(num_train + num_test + (num_val if n == 'oxford_flowers'
                                            else 0) for n, *_ in todo)
        progress = ProgressBar(total)
    for name, out, owned, params in todo:
        for sub in owned:  # images of an earlier run
            shutil.rmtree(out / sub, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        # an unfinished marker: a crashed run is regenerated next time
        (out / MARKER).write_text(json.dumps(dict(params, splits={},
                                                  complete=False)) + '\n')
        rng = np.random.default_rng([seed, list(_FOLDERS).index(name),
                                     10**6])
        shapes = {'train': _shapes(num_train, num_classes, rng),
                  'test': _shapes(num_test, num_classes, rng)}
        if name == 'oxford_flowers':
            shapes['val'] = _shapes(num_val, num_classes, rng)
        w = _Writer(out, name, num_classes, img_size, seed, progress)
        if name in ('cub', 'nabirds'):
            splits = _write_cub_like(w, name, shapes, rng)
        elif name == 'oxford_flowers':
            splits = _write_flowers(w, shapes, rng)
        elif name == 'stanford_dogs':
            splits = _write_dogs(w, shapes)
        else:
            splits = _write_cars(w, shapes, rng)
        (out / MARKER).write_text(json.dumps(dict(params, splits=splits),
                                             indent=1) + '\n')
    if progress is not None:
        print()
    return {n: root / _FOLDERS[n][0] for n in names}
