"""Data helpers: synthetic datasets in ADE20K's, VTAB-1k's and the FGVC
releases' layouts for demos and tests, all drawn by :mod:`.scenes`.

Cheap to import (numpy and OpenCV only); mmseg's own ``ADE20KDataset``,
``mmseg_vpt.vtab.dataset.VTABDataset`` and ``mmseg_vpt.fgvc.dataset`` read
what they write.
"""
from .synthetic_ade20k import (class_colors, make_synthetic_ade20k,
                               render_sample)
from .synthetic_fgvc import make_synthetic_fgvc
from .synthetic_vtab import make_synthetic_vtab

__all__ = ['make_synthetic_ade20k', 'render_sample', 'class_colors',
           'make_synthetic_vtab', 'make_synthetic_fgvc']
