"""Visual Prompt Tuning (VPT) for mmsegmentation.

Importing this package registers its backbones, hooks and dataset in
mmseg's registries, so configs only need
``custom_imports = dict(imports=['mmseg_vpt'], allow_failed_imports=False)``.
"""
import contextlib
import sys

# mmseg's datasets package reports a missing optional OneDL loader with
# print() on stdout at import ("Could not import OneDL", meant as a DEBUG
# log); tools whose stdout is CSV or JSON must not start with it.
with contextlib.redirect_stdout(sys.stderr):
    import mmseg.datasets  # noqa: F401,E402

from . import engine, models, serving  # noqa: F401,E402  (registers)
# mmengine's local checkpoint loader, replaced by one whose errors name the
# file (load_from, --resume, mmseg's init_model...)
from .utils import checkpoints  # noqa: F401
from .datasets import checked_ade20k  # noqa: F401  (registers the dataset)
from .version import __version__

__all__ = ['__version__']
