"""Data helpers: a synthetic dataset in ADE20K's layout for demos and tests.

Cheap to import (numpy and OpenCV only); mmseg's own ``ADE20KDataset`` reads
what it writes.
"""
from .synthetic_ade20k import (class_colors, make_synthetic_ade20k,
                               render_sample)

__all__ = ['make_synthetic_ade20k', 'render_sample', 'class_colors']
