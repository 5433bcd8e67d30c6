"""Fail fast on missing local checkpoint files.

mmengine only notices a missing ``init_cfg`` checkpoint after building the
whole model (and sometimes only logs a warning and trains from scratch), so
tools check every referenced file up front and say which config key is wrong.
"""
import os.path as osp
from typing import Any, Iterator, Tuple

from mmengine.config import Config


def _is_remote(path: str) -> bool:
    """URLs and mmengine prefixes (``open-mmlab://``, ``s3://``...)."""
    return '://' in path


def iter_checkpoint_refs(cfg: Config) -> Iterator[Tuple[str, str]]:
    """Yield ``(key_path, file)`` for every checkpoint the config loads.

    Covers ``Pretrained`` ``init_cfg`` dicts (or lists of them) anywhere in
    ``cfg.model``, ``pretrained`` keys in ``cfg.model`` and ``load_from``.
    """
    def walk(node: Any, path: str) -> Iterator[Tuple[str, str]]:
        if isinstance(node, dict):
            if (node.get('type') == 'Pretrained'
                    and isinstance(node.get('checkpoint'), str)):
                yield f'{path}.checkpoint', node['checkpoint']
            if isinstance(node.get('pretrained'), str):
                yield f'{path}.pretrained', node['pretrained']
            for key, value in node.items():
                yield from walk(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                yield from walk(value, f'{path}.{i}')

    yield from walk(cfg.get('model'), 'model')
    if isinstance(cfg.get('load_from'), str):
        yield 'load_from', cfg.load_from


def check_checkpoints_exist(cfg: Config) -> None:
    """Raise ``FileNotFoundError`` for the first missing local checkpoint."""
    for key, path in iter_checkpoint_refs(cfg):
        if not _is_remote(path) and not osp.isfile(path):
            hint = ('Check the CHECKPOINT / --resume argument.'
                    if key == 'load_from' else
                    'Download or convert it as described in README section '
                    '"Pretrained weights", or override it with '
                    f'--cfg-options {key}=PATH.')
            raise FileNotFoundError(
                f'Config key `{key}` refers to a checkpoint that does not '
                f'exist: {path!r} (resolved: {osp.abspath(path)}). {hint}')
