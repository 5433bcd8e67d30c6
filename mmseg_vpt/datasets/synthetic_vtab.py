"""A small generated classification task in the VTAB-1k layout.

The VTAB tests and demos need VTAB-shaped data without the real datasets.
:func:`make_synthetic_vtab` writes::

    ROOT/<task>/
        images/train/000000.png ...     (num_train images)
        images/val/000000.png ...       (num_val)
        images/test/000000.png ...      (num_test)
        train800.txt  val200.txt  train800val200.txt  test.txt
        synthetic_vtab.json             (generation parameters)

which ``VTABDataset(task=<task>, data_root=ROOT, num_classes=K)`` reads. The
list files keep VTAB-1k's names whatever the sizes (``train800.txt`` holds
``num_train`` lines); ``train800val200.txt`` is train followed by val.

Each image shows one object on a noisy gradient background, and the label
is a property of that object:

* ``cue='colour+shape'`` (default): class ``k`` is the ``k``-th shape (disc,
  square, triangle, cross, ring, horizontal bar, vertical bar, diamond) in
  the ``k``-th hue of the colour wheel, on a dull background. Either cue
  alone gives the label; even the features of a frozen, randomly
  initialised ViT carry the colour, so tests can learn it on a CPU.
* ``cue='shape'``: the object's colour is random, so only its shape tells
  the classes apart (for a pretrained backbone).

Size, position and background are drawn independently of the label.
Classes are balanced (a permutation of ``i % num_classes``).

Everything is a function of ``seed``: image ``i`` of a split comes from its
own generator seeded with ``(seed, split, i)``.
"""
import json
from pathlib import Path
from typing import Dict, List, Union

import cv2
import numpy as np

from .scenes import UPRIGHT_SHAPES, draw_upright_shape, hsv_color

__all__ = ['make_synthetic_vtab', 'render_image', 'SHAPES', 'CUES',
           'GENERATOR_VERSION']

#: Bump when the rendering changes, so stale datasets are regenerated.
GENERATOR_VERSION = 1
CUES = ('colour+shape', 'shape')
#: Class k is drawn as the k-th shape.
SHAPES = UPRIGHT_SHAPES
# split -> (list file, images folder, seed offset)
_SPLITS = {'train': ('train800.txt', 'train', 0),
           'val': ('val200.txt', 'val', 1),
           'test': ('test.txt', 'test', 2)}
_MARKER = 'synthetic_vtab.json'


def render_image(rng: np.random.Generator, label: int, img_size: int,
                 num_classes: int, cue: str = 'colour+shape') -> np.ndarray:
    """One BGR uint8 image of class ``label``: an object of shape
    ``SHAPES[label]`` on a textured background; with ``cue='colour+shape'``
    the object also has the class's hue (``label / num_classes`` of the
    colour wheel, jittered), with ``cue='shape'`` a random colour."""
    h = w = img_size
    if cue == 'colour+shape':
        # background: a dull (low saturation) gradient, so the saturated
        # object's hue stands out
        c0 = hsv_color(rng.uniform(0, 180), rng.uniform(0, 60),
                       rng.uniform(60, 200))
        c1 = hsv_color(rng.uniform(0, 180), rng.uniform(0, 60),
                       rng.uniform(60, 200))
        colour = hsv_color(180.0 * label / num_classes + rng.uniform(-6, 6),
                           rng.uniform(170, 255), rng.uniform(170, 255))
    else:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        colour = rng.uniform(0, 255, 3)
        # far enough from the background's mean colour to be visible
        while np.abs(colour - (c0 + c1) / 2).max() < 90:
            colour = rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, w)[None, :, None]
    if rng.random() < 0.5:
        ramp = ramp.transpose(1, 0, 2)
    img = c0 * (1 - ramp) + c1 * ramp + rng.normal(0, 12, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)

    r = rng.uniform(0.22, 0.34) * img_size
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    draw_upright_shape(img, SHAPES[label], cx, cy, r, colour)
    return img


def _params(task: str, num_classes: int, num_train: int, num_val: int,
            num_test: int, img_size: int, cue: str, seed: int) -> Dict:
    return dict(generator_version=GENERATOR_VERSION, task=task,
                num_classes=num_classes, num_train=num_train,
                num_val=num_val, num_test=num_test, img_size=img_size,
                cue=cue, seed=seed)


def make_synthetic_vtab(root: Union[str, Path],
                        task: str = 'synthetic_shapes',
                        num_classes: int = 3,
                        num_train: int = 800,
                        num_val: int = 200,
                        num_test: int = 300,
                        img_size: int = 32,
                        cue: str = 'colour+shape',
                        seed: int = 0,
                        overwrite: bool = False) -> Path:
    """Write a generated task to ``root/task`` in the VTAB-1k layout.

    Returns the task folder. If the folder already holds a dataset written
    with the same parameters, nothing is written (unless ``overwrite``).
    A non-empty folder that this function did not write is an error unless
    ``overwrite=True``.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f'num_classes must be in [2, {len(SHAPES)}] (one '
                         f'shape per class: {SHAPES}), got {num_classes}')
    for name, n in (('num_train', num_train), ('num_val', num_val),
                    ('num_test', num_test)):
        if n < 1:
            raise ValueError(f'{name} must be >= 1, got {n}')
    if cue not in CUES:
        raise ValueError(f'cue must be one of {CUES}, got {cue!r}')
    if img_size < 16:
        raise ValueError(f'img_size must be >= 16, got {img_size}')
    task_dir = Path(root) / task
    params = _params(task, num_classes, num_train, num_val, num_test,
                     img_size, cue, seed)
    marker = task_dir / _MARKER
    if (not overwrite and marker.is_file()
            and json.loads(marker.read_text()) == params):
        return task_dir
    if (task_dir.is_dir() and any(task_dir.iterdir())
            and not marker.is_file() and not overwrite):
        raise FileExistsError(
            f'{task_dir} exists and was not written by this generator; '
            'pass overwrite=True (--overwrite) to replace its files.')
    # an unfinished marker: a crashed run is regenerated without --overwrite
    task_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(dict(params, complete=False)) + '\n')

    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    lines: Dict[str, List[str]] = {}
    for split, (_, folder, offset) in _SPLITS.items():
        img_dir = task_dir / 'images' / folder
        img_dir.mkdir(parents=True, exist_ok=True)
        for old in img_dir.glob('*.png'):
            old.unlink()
        n = counts[split]
        order = np.random.default_rng([seed, offset, 10**6]).permutation(n)
        lines[split] = []
        for i in range(n):
            label = int(order[i] % num_classes)
            rng = np.random.default_rng([seed, offset, i])
            name = f'{i:06d}.png'
            cv2.imwrite(str(img_dir / name),
                        render_image(rng, label, img_size, num_classes, cue))
            lines[split].append(f'images/{folder}/{name} {label}')
    for split, (list_name, _, _) in _SPLITS.items():
        (task_dir / list_name).write_text('\n'.join(lines[split]) + '\n')
    (task_dir / 'train800val200.txt').write_text(
        '\n'.join(lines['train'] + lines['val']) + '\n')
    marker.write_text(json.dumps(params, indent=2) + '\n')
    return task_dir
