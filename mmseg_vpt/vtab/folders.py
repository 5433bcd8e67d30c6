"""Where the sweep finds ``configs/`` and ``tools/``.

A source checkout passes its own folders (``tools/vtab_sweep.py`` does).
An installed wheel carries both as package data under ``mmseg_vpt/.mim/``
(``setup.py`` copies them there when it builds, as OpenMMLab packages do),
which is the default when no folder is given.
"""
from importlib import resources
from pathlib import Path
from typing import Optional

__all__ = ['PACKAGE_DATA', 'configs_folder', 'tools_folder']

#: The folder inside the installed package that holds ``configs/`` and
#: ``tools/`` (absent in a source checkout).
PACKAGE_DATA = '.mim'


def _packaged(name: str) -> Optional[Path]:
    folder = Path(str(resources.files('mmseg_vpt'))) / PACKAGE_DATA / name
    return folder if folder.is_dir() else None


def _folder(given: Optional[str], name: str, option: str) -> Path:
    if given is not None:
        folder = Path(given).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f'{option}: no such folder: {given}')
        return folder
    packaged = _packaged(name)
    if packaged is None:
        raise FileNotFoundError(
            f'no {name}/ folder given and this mmseg_vpt installation '
            f'carries none (mmseg_vpt/{PACKAGE_DATA}/{name}, present in an '
            f"installed wheel): pass {option}, e.g. a checkout's {name}/")
    return packaged.resolve()


def configs_folder(given: Optional[str] = None,
                   option: str = 'configs_dir (--configs-dir)') -> Path:
    """``given`` (absolute), else the installed package's ``configs/``.

    Raises:
        FileNotFoundError: ``given`` is not a folder, or none was given and
            the package carries none; the message names ``option``.
    """
    return _folder(given, 'configs', option)


def tools_folder(given: Optional[str] = None,
                 option: str = 'tools_dir (--tools-dir)') -> Path:
    """``given`` (absolute), else the installed package's ``tools/``; the
    same errors as :func:`configs_folder`."""
    return _folder(given, 'tools', option)
