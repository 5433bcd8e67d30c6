"""The mini-paper's scenes: 2-4 coloured, textured shapes on a shaded grey
background, labelled per pixel by colour, shape and texture.

Drawn with :mod:`mmseg_vpt.datasets.scenes` (its rotated shapes and sharp
textures); this module holds the recipe.
"""
import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from mmseg_vpt.datasets.scenes import (ROTATED_SHAPES, TEXTURES,
                                       draw_rotated_shape, hsv_color, paint,
                                       random_sharp_texture,
                                       textured_surface)

SYNTHETIC_NOTE = (
    'All data here is synthetic (generated scenes of coloured shapes); the '
    'numbers show the relative behaviour of the tuning protocols on a toy '
    'transfer task, not results on real images or the paper\'s numbers.')

SHAPES = ROTATED_SHAPES
#: the per-pixel labellings of a scene
LABELLINGS = ('color', 'shape', 'texture')


def palette(num_colors: int) -> np.ndarray:
    """Saturated, well separated RGB colours (num_colors, 3), float."""
    hues = (np.arange(num_colors) + 0.5) / num_colors
    return np.asarray([hsv_color(int(h * 180), 230, 240, 'RGB')
                       for h in hues], np.float32)


def render_scene(rng: np.random.Generator, img_size: int, colors: np.ndarray,
                 shapes: Sequence[str], num_objects: Tuple[int, int],
                 radius: Tuple[float, float],
                 textures: Sequence[str] = TEXTURES,
                 contrast: float = 0.35
                 ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """One scene: a noisy grey background with coloured, textured shapes.

    Returns the RGB image (H, W, 3) uint8 and label maps (H, W) uint8,
    0 = background, by ``color`` (1..len(colors)), ``shape``
    (1..len(shapes)) and ``texture`` (1..len(textures)). Later objects
    cover earlier ones.
    """
    s = img_size
    grey = rng.uniform(60, 150)
    img = np.full((s, s, 3), grey, np.float32)
    # low-frequency shading so that the background is not one flat value
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    img += (rng.uniform(-25, 25) * (xx - 0.5) +
            rng.uniform(-25, 25) * (yy - 0.5))[..., None]
    labels = {k: np.zeros((s, s), np.uint8) for k in LABELLINGS}
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        shape = int(rng.integers(len(shapes)))
        color = int(rng.integers(len(colors)))
        texture = int(rng.integers(len(textures)))
        r = rng.uniform(*radius) * s / 64
        cx, cy = rng.uniform(r, s - r), rng.uniform(r, s - r)
        mask = np.zeros((s, s), np.uint8)
        draw_rotated_shape(mask, shapes[shape], cx, cy, r,
                           rng.uniform(0, 2 * math.pi))
        tex = random_sharp_texture(textures[texture], s, s, rng)
        surface = textured_surface(colors[color] * rng.uniform(0.8, 1.05),
                                   tex, contrast)
        paint(img, mask.astype(bool), surface,
              [(labels['color'], color + 1), (labels['shape'], shape + 1),
               (labels['texture'], texture + 1)])
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


@dataclass
class SceneSet:
    """Generated images (N, H, W, 3) uint8 RGB and per-task labels."""
    images: np.ndarray
    labels: Dict[str, np.ndarray]
    num_classes: Dict[str, int]


def make_scenes(num: int, seed: int, img_size: int = 64,
                num_colors: int = 6,
                shapes: Sequence[str] = SHAPES[:3],
                num_objects: Tuple[int, int] = (2, 4),
                radius: Tuple[float, float] = (9.0, 15.0),
                textures: Sequence[str] = TEXTURES,
                contrast: float = 0.35) -> SceneSet:
    """``num`` scenes; everything is a function of the arguments."""
    colors = palette(num_colors)
    images = np.empty((num, img_size, img_size, 3), np.uint8)
    labels = {k: np.empty((num, img_size, img_size), np.uint8)
              for k in LABELLINGS}
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        images[i], lab = render_scene(rng, img_size, colors, shapes,
                                      num_objects, radius, textures,
                                      contrast)
        for k, v in lab.items():
            labels[k][i] = v
    return SceneSet(images, labels,
                    dict(color=num_colors + 1, shape=len(shapes) + 1,
                         texture=len(textures) + 1))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 64.0
