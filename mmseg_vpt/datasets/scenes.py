"""Drawing for the generated datasets: colours, textures, shapes, painting.

Every image generator draws with these functions: the ADE20K-layout scenes
of :mod:`.synthetic_ade20k`, the one-object images of :mod:`.synthetic_vtab`
(which :mod:`.synthetic_fgvc` reuses) and the mini-paper project's scenes.
A generator keeps only its recipe: what it draws where, and the order in
which it takes random numbers.

A generator's images are a fixed function of its seed, and datasets and
results made from them must stay reproducible, so where generators draw a
thing differently both ways are kept here, each under its own name:

* shapes come in three families. :data:`ROTATED_SHAPES`
  (:func:`draw_rotated_shape`) are a disc, regular polygons and a cross at
  a given angle, filled at whole pixels; :data:`UPRIGHT_SHAPES`
  (:func:`draw_upright_shape`) are axis-aligned, drawn anti-aliased in a
  colour; :data:`RANDOM_SHAPES` (:func:`random_shape_mask`) take their
  position, size, aspect and rotation from the random generator too;
* textures (:func:`texture`) are stripes of square or sine waves, or checks;
  :func:`random_sharp_texture` and :func:`random_soft_texture` are the two
  ways of drawing their parameters.
"""
import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    'hsv_color', 'TEXTURES', 'texture', 'random_sharp_texture',
    'random_soft_texture', 'fill_polygons', 'ROTATED_SHAPES',
    'draw_rotated_shape', 'UPRIGHT_SHAPES', 'upright_polygons',
    'draw_upright_shape', 'RANDOM_SHAPES', 'random_shape_mask',
    'textured_surface', 'paint'
]

#: Surface textures, by name.
TEXTURES = ('flat', 'stripes', 'checks')
#: Disc, square, triangle and cross at any angle, filled at whole pixels.
ROTATED_SHAPES = ('disc', 'square', 'triangle', 'cross')
#: Axis-aligned shapes, drawn anti-aliased at 1/16 pixel.
UPRIGHT_SHAPES = ('disc', 'square', 'triangle', 'cross', 'ring', 'hbar',
                  'vbar', 'diamond')
#: Shapes whose placement, size and aspect are drawn at random too.
RANDOM_SHAPES = ('disc', 'ellipse', 'rectangle', 'rotated_rectangle',
                 'triangle')

# OpenCV draws anti-aliased shapes with fixed-point coordinates of this many
# fractional bits
_SUBPIXEL_BITS = 4
_SUBPIXEL = 1 << _SUBPIXEL_BITS

Color = Union[int, float, Tuple[float, ...]]


# --------------------------------------------------------------------------
# colours
# --------------------------------------------------------------------------
def hsv_color(h: float, s: float, v: float, order: str = 'BGR'
              ) -> np.ndarray:
    """An OpenCV HSV colour (``h`` in [0, 180), wrapped; ``s`` and ``v`` in
    [0, 255], truncated to integers) as a float64 (3,) in ``order``
    ('BGR' or 'RGB')."""
    codes = {'BGR': cv2.COLOR_HSV2BGR, 'RGB': cv2.COLOR_HSV2RGB}
    if order not in codes:
        raise ValueError(f'order must be one of {list(codes)}, got {order!r}')
    hsv = np.array([[[h % 180, s, v]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, codes[order])[0, 0].astype(np.float64)


# --------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------
def texture(kind: str, h: int, w: int, angle: float, period: float,
            phase: float, cross_phase: Optional[float] = None,
            sharp: bool = True) -> np.ndarray:
    """Brightness modulation of a surface, (h, w) float32 in [-1, 1].

    Args:
        kind: One of :data:`TEXTURES`. ``flat`` is zero; ``stripes`` run
            across the direction ``angle`` (radians); ``checks`` are the
            product of square waves along ``angle`` and across it.
        period: Wave length in pixels.
        phase: Phase of the wave along ``angle``.
        cross_phase: Phase of the checks' second wave (None: no phase).
        sharp: Stripes are square waves; otherwise sine waves.
    """
    if kind == 'flat':
        return np.zeros((h, w), np.float32)
    if kind not in TEXTURES:
        raise ValueError(f'texture must be one of {TEXTURES}, got {kind!r}')
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    wave = np.sin(2 * np.pi * u / period + phase)
    if kind == 'stripes':
        return (np.sign(wave) if sharp else wave).astype(np.float32)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    across = 2 * np.pi * v / period
    if cross_phase is not None:
        across = across + cross_phase
    return (np.sign(wave) * np.sign(np.sin(across))).astype(np.float32)


def random_sharp_texture(kind: str, h: int, w: int,
                         rng: np.random.Generator) -> np.ndarray:
    """A :func:`texture` of square waves at a random angle, period 4-6 px
    and random phases (one random number per parameter, none for flat)."""
    if kind == 'flat':
        return texture(kind, h, w, 0.0, 1.0, 0.0)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 6.0)
    phase = rng.uniform(0, 7)
    cross_phase = rng.uniform(0, 7) if kind == 'checks' else None
    return texture(kind, h, w, angle, period, phase, cross_phase)


def random_soft_texture(kind: str, angle: float, h: int, w: int,
                        rng: np.random.Generator) -> np.ndarray:
    """A :func:`texture` at the given ``angle`` with sine-wave stripes, a
    random period of 6-10 px and a random phase (none drawn for flat)."""
    if kind == 'flat':
        return texture(kind, h, w, angle, 1.0, 0.0)
    period = rng.uniform(6.0, 10.0)
    phase = rng.uniform(0, 2 * np.pi)
    return texture(kind, h, w, angle, period, phase, sharp=False)


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------
def fill_polygons(canvas: np.ndarray, polygons: Iterable[np.ndarray],
                  value: Color, antialias: bool = False) -> None:
    """Fill each polygon ((N, 2) float x, y) on ``canvas`` with ``value``.

    One OpenCV call per polygon: a single call fills even-odd, which would
    leave the overlap of two polygons (a cross's bars) empty. ``antialias``
    places vertices at 1/16 pixel and smooths the edges; otherwise vertices
    are rounded to whole pixels.
    """
    for poly in polygons:
        if antialias:
            cv2.fillPoly(canvas,
                         [np.round(poly * _SUBPIXEL).astype(np.int32)],
                         value, cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        else:
            cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], value)


def _regular_polygon(cx: float, cy: float, r: float, scale: float,
                     sides: int, angle: float) -> np.ndarray:
    """Vertices at ``r * scale`` from (cx, cy), the first at ``angle``."""
    pts = [(math.cos(angle + k * 2 * math.pi / sides) * r * scale,
            math.sin(angle + k * 2 * math.pi / sides) * r * scale)
           for k in range(sides)]
    return np.array(pts) + [cx, cy]


def draw_rotated_shape(mask: np.ndarray, kind: str, cx: float, cy: float,
                       r: float, angle: float, value: Color = 1) -> None:
    """Fill one of :data:`ROTATED_SHAPES` of size ``r`` at (cx, cy), turned
    by ``angle`` radians, into ``mask``."""
    if kind == 'disc':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)),
                   value, -1)
        return
    if kind == 'square':
        polygons = [_regular_polygon(cx, cy, r, 1.25, 4, angle)]
    elif kind == 'triangle':
        polygons = [_regular_polygon(cx, cy, r, 1.35, 3, angle)]
    elif kind == 'cross':  # two bars, 0.84 r wide
        w = 0.42 * r
        arms = [(-r, -w), (r, -w), (r, w), (-r, w)]
        polygons = []
        for rot in (0.0, math.pi / 2):
            a = angle + rot
            pts = [(x * math.cos(a) - y * math.sin(a),
                    x * math.sin(a) + y * math.cos(a)) for x, y in arms]
            polygons.append(np.array(pts) + [cx, cy])
    else:
        raise ValueError(f'unknown shape {kind!r}; choose from '
                         f'{ROTATED_SHAPES}')
    fill_polygons(mask, polygons, value)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def upright_polygons(kind: str, cx: float, cy: float,
                     r: float) -> List[np.ndarray]:
    """Polygons (float, (N, 2)) of one of :data:`UPRIGHT_SHAPES` other than
    the disc and ring, of radius ``r`` at (cx, cy)."""
    if kind == 'square':
        s = r * 0.85
        return [_rect(cx - s, cy - s, cx + s, cy + s)]
    if kind == 'triangle':
        return [np.array([[cx, cy - r], [cx + r * 0.95, cy + r * 0.8],
                          [cx - r * 0.95, cy + r * 0.8]])]
    if kind == 'diamond':
        return [np.array([[cx, cy - r], [cx + r * 0.75, cy], [cx, cy + r],
                          [cx - r * 0.75, cy]])]
    t = r * 0.3  # half the width of a bar
    if kind == 'cross':
        return [_rect(cx - r, cy - t, cx + r, cy + t),
                _rect(cx - t, cy - r, cx + t, cy + r)]
    if kind == 'hbar':
        return [_rect(cx - r, cy - t, cx + r, cy + t)]
    if kind == 'vbar':
        return [_rect(cx - t, cy - r, cx + t, cy + r)]
    raise ValueError(f'unknown shape {kind!r}; choose from {UPRIGHT_SHAPES}')


def draw_upright_shape(img: np.ndarray, kind: str, cx: float, cy: float,
                       r: float, color: Sequence[float]) -> None:
    """Draw one of :data:`UPRIGHT_SHAPES` of radius ``r`` at (cx, cy) on
    ``img`` in ``color``, anti-aliased."""
    col = tuple(float(c) for c in color)
    if kind in ('disc', 'ring'):
        centre = (int(cx * _SUBPIXEL), int(cy * _SUBPIXEL))
        if kind == 'disc':
            cv2.circle(img, centre, int(r * _SUBPIXEL), col, -1,
                       cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        else:
            cv2.circle(img, centre, int(r * 0.8 * _SUBPIXEL), col,
                       max(2, int(round(r * 0.35))), cv2.LINE_AA,
                       shift=_SUBPIXEL_BITS)
        return
    fill_polygons(img, upright_polygons(kind, cx, cy, r), col,
                  antialias=True)


def random_shape_mask(kind: str, h: int, w: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one of :data:`RANDOM_SHAPES`, centred in the
    middle 70% of the image, radius 10-24% of its shorter side."""
    s = min(h, w)
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    r = rng.uniform(0.10, 0.24) * s
    if kind == 'disc':
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
    elif kind == 'ellipse':
        axes = (int(r), int(r * rng.uniform(0.5, 0.9)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes,
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind in ('rectangle', 'rotated_rectangle'):
        rw, rh = r * rng.uniform(0.8, 1.6), r * rng.uniform(0.6, 1.2)
        angle = float(rng.uniform(0, 90)) if kind == 'rotated_rectangle' \
            else 0.0
        fill_polygons(mask, [cv2.boxPoints(((cx, cy), (2 * rw, 2 * rh),
                                            angle))], 1)
    elif kind == 'triangle':
        angles = rng.uniform(0, 2 * np.pi) + np.array(
            [0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        radius = r * 1.3
        fill_polygons(mask, [np.stack([cx + radius * np.cos(angles),
                                       cy + radius * np.sin(angles)],
                                      axis=1)], 1)
    else:
        raise ValueError(f'unknown shape {kind!r}; choose from '
                         f'{RANDOM_SHAPES}')
    return mask.astype(bool)


# --------------------------------------------------------------------------
# painting
# --------------------------------------------------------------------------
def textured_surface(color: np.ndarray, tex: np.ndarray,
                     contrast: float) -> np.ndarray:
    """``color`` (3,) with its brightness modulated by ``contrast * tex``
    (``tex`` (h, w) in [-1, 1]), so its hue survives: (h, w, 3)."""
    return color * (1.0 + contrast * tex)[..., None]


def paint(img: np.ndarray, mask: np.ndarray, surface: np.ndarray,
          labels: Sequence[Tuple[np.ndarray, int]] = ()) -> None:
    """Cover ``img`` with ``surface`` where ``mask`` is set, and write each
    ``(label map, value)`` there; later paint covers earlier paint."""
    img[mask] = surface[mask]
    for label_map, value in labels:
        label_map[mask] = value
