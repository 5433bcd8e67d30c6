"""Visual Prompt Tuning (VPT) for mmsegmentation.

Importing this package registers its backbones, hooks and dataset in
mmseg's registries, so configs only need
``custom_imports = dict(imports=['mmseg_vpt'], allow_failed_imports=False)``.
"""
from . import engine, models  # noqa: F401  (registers modules)
from .datasets import checked_ade20k  # noqa: F401  (registers the dataset)
from .version import __version__

__all__ = ['__version__']
