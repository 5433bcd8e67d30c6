"""Data helpers: synthetic datasets in ADE20K's and VTAB-1k's layouts for
demos and tests.

Cheap to import (numpy and OpenCV only); mmseg's own ``ADE20KDataset`` and
``mmseg_vpt.vtab.dataset.VTABDataset`` read what they write.
"""
from .synthetic_ade20k import (class_colors, make_synthetic_ade20k,
                               render_sample)
from .synthetic_fgvc import make_synthetic_fgvc
from .synthetic_vtab import make_synthetic_vtab

__all__ = ['make_synthetic_ade20k', 'render_sample', 'class_colors',
           'make_synthetic_vtab', 'make_synthetic_fgvc']
