"""The one config loader: every API and tool reads a config through
:func:`read_config`, so each accepts the same things and fails the same
way."""
import copy
import os.path as osp
from pathlib import Path
from typing import Optional, Union

from mmengine.config import Config

from .checkpoints import read_checkpoint

ConfigLike = Union[str, Path, Config]


def read_config(config: ConfigLike,
                cfg_options: Optional[dict] = None,
                key: str = 'config') -> Config:
    """A config from any of: a ``.py`` file, an mmengine ``Config`` (copied,
    so the caller's stays as it is), a config's text (what
    ``checkpoint['meta']['cfg']`` holds), or a checkpoint that carries its
    config (``meta['cfg']``, as ``tools/train.py`` writes it).
    ``cfg_options`` (``--cfg-options``) are merged in.

    Raises:
        FileNotFoundError / ValueError / TypeError: naming ``key`` (what gave
            the config, e.g. ``'argument CONFIG'``) and the path.
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, (str, Path)):
        text = str(config)
        if '\n' in text and not osp.isfile(text):
            cfg = Config.fromstring(text, file_format='.py')
        elif not osp.isfile(text):
            raise FileNotFoundError(
                f'{key}: config file {text!r} not found (resolved: '
                f'{osp.abspath(text)})')
        elif text.endswith('.py'):
            cfg = Config.fromfile(text)
        else:
            cfg_text = (read_checkpoint(text, key).get('meta') or {}).get(
                'cfg')
            if not cfg_text:
                raise ValueError(
                    f"{key}: {text} is a checkpoint without a config "
                    "(meta['cfg']); give the config file instead")
            cfg = Config.fromstring(cfg_text, file_format='.py')
    else:
        raise TypeError(f'{key} must be a config path, a config text or an '
                        f'mmengine Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
