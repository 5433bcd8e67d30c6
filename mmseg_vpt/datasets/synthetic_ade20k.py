"""A small synthetic dataset in ADE20K's folder layout.

The demo and the tests need ADE20K-shaped data without a 900 MB download.
:func:`make_synthetic_ade20k` writes::

    ROOT/ADEChallengeData2016/
        images/training/ADE_train_00000001.jpg ...
        images/validation/ADE_val_00000001.jpg ...
        annotations/training/ADE_train_00000001.png ...
        annotations/validation/ADE_val_00000001.png ...
        synthetic_ade20k.json          (generation parameters)

which mmseg's ``ADE20KDataset`` reads unchanged: annotations are
single-channel ``uint8`` PNGs without a palette, ``0`` is "other" (ignored,
``reduce_zero_label=True`` maps it to 255) and ``1..150`` are ADE20K's
classes. Only the first ``num_classes_used`` classes occur.

Every image has learnable structure. A scene is one or two textured
"stuff" regions (a sky/floor-like split with a wavy boundary) with 2-5
"thing" shapes on top (discs, ellipses, rectangles, rotated rectangles,
triangles). A pixel's class is fixed by the colour of what covers it: each
class has one saturated base colour, far from every other class's in RGB so
that JPEG artefacts, per-image brightness jitter and noise cannot move one
class onto another, plus a class-specific texture (flat, stripes or
checks). Occasional grey clutter shapes are labelled 0 ("other").

Everything is a function of ``seed``: image ``i`` of a split is drawn from
its own generator seeded with ``(seed, split, i)``, so a split's images do
not depend on how many were asked for.
"""
import colorsys
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

from .scenes import (RANDOM_SHAPES, TEXTURES, paint, random_shape_mask,
                     random_soft_texture, textured_surface)

__all__ = [
    'make_synthetic_ade20k', 'render_sample', 'class_colors',
    'GENERATOR_VERSION', 'ADE_NUM_CLASSES'
]

#: Bump when the rendering changes, so stale datasets are regenerated.
GENERATOR_VERSION = 1
#: ADE20K's labels are 1..150 (0 = other).
ADE_NUM_CLASSES = 150

SPLITS = {'training': 'train', 'validation': 'val'}
_SPLIT_SEED = {'training': 0, 'validation': 1}
_FILE_RE = re.compile(r'^ADE_(train|val)_\d{8}\.(jpg|png)$')
_MARKER = 'synthetic_ade20k.json'

ImgSize = Union[int, Tuple[int, int]]


def _hw(img_size: ImgSize) -> Tuple[int, int]:
    if isinstance(img_size, int):
        h = w = img_size
    else:
        h, w = (int(s) for s in img_size)
    if h < 16 or w < 16:
        raise ValueError(f'img_size must be at least 16x16, got {img_size}')
    return h, w


def class_colors(num_classes_used: int) -> np.ndarray:
    """RGB base colour of labels ``1..num_classes_used``, shape (K, 3).

    Hues are spread evenly over the colour wheel; above 8 classes a second
    ring of darker, less saturated colours is interleaved. Colours stay well
    away from grey, which is reserved for "other" clutter. Classes remain
    easy to tell apart up to about 16; beyond that they get close.
    """
    _check_num_classes(num_classes_used)
    k = num_classes_used
    rings = [(1.0, 0.95), (0.55, 0.85)]  # (value, saturation)
    per_ring = max(min(k, 8), -(-k // len(rings)))
    colors = []
    for i in range(k):
        ring, j = divmod(i, per_ring)
        value, sat = rings[ring % len(rings)]
        # offset the second ring's hues by half a step
        hue = ((j + 0.5 * (ring % 2)) / per_ring + 0.13 * (ring // 2)) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, sat, value)
        colors.append((r * 255, g * 255, b * 255))
    return np.asarray(colors, dtype=np.float32)


def _check_num_classes(num_classes_used: int) -> None:
    if not isinstance(num_classes_used, int) or not (
            2 <= num_classes_used <= ADE_NUM_CLASSES):
        raise ValueError('num_classes_used must be an int in '
                         f'[2, {ADE_NUM_CLASSES}], got {num_classes_used!r}')


def _class_textures(num_classes_used: int) -> List[Tuple[str, float]]:
    """(texture kind, orientation in radians) of each class."""
    out = []
    for i in range(num_classes_used):
        kind = TEXTURES[i % len(TEXTURES)]
        out.append((kind, (i * 0.61) % np.pi))
    return out


def _stuff_things(num_classes_used: int) -> Tuple[List[int], List[int]]:
    """Split labels 1..K into background ("stuff") and shape ("thing")
    classes: about a third are stuff, at least one of each."""
    labels = list(range(1, num_classes_used + 1))
    n_stuff = max(1, min(num_classes_used - 1, round(num_classes_used / 3)))
    return labels[:n_stuff], labels[n_stuff:]


def render_sample(rng: np.random.Generator,
                  img_size: ImgSize = 128,
                  num_classes_used: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns:
        tuple: ``img`` (H, W, 3) uint8 in **BGR** order (as OpenCV writes
        it) and ``label`` (H, W) uint8 with 0 = other and
        ``1..num_classes_used`` = classes.
    """
    _check_num_classes(num_classes_used)
    h, w = _hw(img_size)
    colors = class_colors(num_classes_used)
    textures = _class_textures(num_classes_used)
    stuff, things = _stuff_things(num_classes_used)

    label = np.zeros((h, w), np.uint8)
    img = np.zeros((h, w, 3), np.float32)

    def paint_class(mask: np.ndarray, cls: int) -> None:
        kind, angle = textures[cls - 1]
        tex = random_soft_texture(kind, angle, h, w, rng)
        amp = 28.0 if kind != 'flat' else 0.0
        paint(img, mask, textured_surface(colors[cls - 1], tex, amp / 255.0),
              [(label, cls)])

    # background: one stuff class, or two split by a wavy horizontal line
    top = int(rng.choice(stuff))
    paint_class(np.ones((h, w), bool), top)
    if len(stuff) > 1 and rng.random() < 0.7:
        bottom = int(rng.choice([c for c in stuff if c != top]))
        xx = np.arange(w, dtype=np.float32)
        edge = h * rng.uniform(0.35, 0.7) + h * 0.05 * np.sin(
            2 * np.pi * xx / w * rng.uniform(0.5, 2.0) +
            rng.uniform(0, 2 * np.pi))
        paint_class(np.arange(h, dtype=np.float32)[:, None] > edge[None, :],
                    bottom)

    # things, later ones on top; sometimes a grey "other" shape
    for _ in range(int(rng.integers(2, 6))):
        mask = random_shape_mask(str(rng.choice(RANDOM_SHAPES)), h, w, rng)
        paint_class(mask, int(rng.choice(things)))
    if rng.random() < 0.3:
        mask = random_shape_mask(str(rng.choice(RANDOM_SHAPES)), h, w, rng)
        img[mask] = rng.uniform(70, 190)
        label[mask] = 0

    # per-image lighting and sensor noise
    img = img * rng.uniform(0.85, 1.1) + rng.uniform(-12, 12, size=3)
    img += rng.normal(0.0, 5.0, size=img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img[..., ::-1].copy(), label


def _params(num_train: int, num_val: int, img_size: ImgSize,
            num_classes_used: int, seed: int) -> Dict:
    return dict(
        generator_version=GENERATOR_VERSION,
        num_train=num_train,
        num_val=num_val,
        img_size=list(_hw(img_size)),
        num_classes_used=num_classes_used,
        seed=seed)


def _split_dirs(data_dir: Path) -> List[Path]:
    return [data_dir / kind / split
            for kind in ('images', 'annotations') for split in SPLITS]


def _is_complete(data_dir: Path, params: Dict) -> bool:
    marker = data_dir / _MARKER
    try:
        if json.loads(marker.read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    for split, prefix in SPLITS.items():
        n = params['num_train' if split == 'training' else 'num_val']
        for kind, ext in (('images', 'jpg'), ('annotations', 'png')):
            files = (data_dir / kind / split).glob(f'ADE_{prefix}_*.{ext}')
            if len(list(files)) != n:
                return False
    return True


def make_synthetic_ade20k(root: Union[str, Path],
                          num_train: int = 200,
                          num_val: int = 50,
                          img_size: ImgSize = 128,
                          num_classes_used: int = 8,
                          seed: int = 0,
                          jpeg_quality: int = 90,
                          overwrite: bool = False,
                          show_progress: bool = True) -> Path:
    """Write a synthetic ADE20K-layout dataset under ``root``.

    Args:
        root: Output folder; the data goes to ``root/ADEChallengeData2016``.
        num_train: Training images (>= 1).
        num_val: Validation images (>= 1).
        img_size: Image size, an int or ``(height, width)``.
        num_classes_used: How many of ADE20K's labels occur (labels
            ``1..num_classes_used``; about a third are background classes).
        seed: Everything written is a function of the arguments.
        jpeg_quality: JPEG quality of the images.
        overwrite: Regenerate even if an identical dataset is already there,
            and allow replacing a folder this function did not write.
        show_progress: Show a progress bar while writing.

    Returns:
        Path: ``root/ADEChallengeData2016``, the ``data_root`` for configs.

    If the folder already holds a dataset written by this function with the
    same arguments, nothing is written. If it holds one written with other
    arguments, its ``ADE_*`` files are replaced. A folder with ADE files but
    without this function's marker (e.g. the real ADE20K) is left alone
    unless ``overwrite=True``.
    """
    from mmengine.utils import track_iter_progress

    for name, n in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f'{name} must be an int >= 1, got {n!r}')
    _check_num_classes(num_classes_used)
    params = _params(num_train, num_val, img_size, num_classes_used, seed)
    data_dir = Path(root) / 'ADEChallengeData2016'

    if not overwrite and _is_complete(data_dir, params):
        if show_progress:
            print(f'{data_dir} is up to date; nothing to do.')
        return data_dir

    existing = [p for d in _split_dirs(data_dir) if d.is_dir()
                for p in d.iterdir() if _FILE_RE.match(p.name)]
    if existing and not (data_dir / _MARKER).is_file() and not overwrite:
        raise FileExistsError(
            f'{data_dir} already holds ADE20K files that this generator did '
            'not write (is it the real dataset?). Choose another root or '
            'pass overwrite=True (--overwrite) to replace them.')
    for p in existing:
        p.unlink()
    (data_dir / _MARKER).unlink(missing_ok=True)
    for d in _split_dirs(data_dir):
        d.mkdir(parents=True, exist_ok=True)

    jobs = [(split, i) for split in SPLITS
            for i in range(num_train if split == 'training' else num_val)]
    if show_progress:
        print(f'Writing {num_train} training and {num_val} validation images '
              f'to {data_dir}')
        jobs = track_iter_progress(jobs)
    for split, i in jobs:
        rng = np.random.default_rng([seed, _SPLIT_SEED[split], i])
        img, label = render_sample(rng, img_size, num_classes_used)
        stem = f'ADE_{SPLITS[split]}_{i + 1:08d}'
        ok = cv2.imwrite(
            str(data_dir / 'images' / split / f'{stem}.jpg'), img,
            [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ok &= cv2.imwrite(
            str(data_dir / 'annotations' / split / f'{stem}.png'), label)
        if not ok:
            raise OSError(f'could not write {stem} under {data_dir}')
    (data_dir / _MARKER).write_text(json.dumps(params, indent=2) + '\n')
    return data_dir
