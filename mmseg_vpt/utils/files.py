"""Files a run writes and reads back: atomic writes, and the checkpoint a
work dir's ``last_checkpoint`` names.

* :func:`replace_atomically` / :func:`write_text_atomically` /
  :func:`save_atomically`: a file is
  written under a temporary name in its own directory, fsynced, then renamed
  over the target, so a kill (or a power cut) leaves either the old file or
  the new one, never a part.
* :func:`resolve_last_checkpoint`: what ``--resume`` without a path resumes
  from. mmengine writes an absolute path into ``WORK_DIR/last_checkpoint``
  (kept, since scripts ``cat`` it); it is read relative to the work dir that
  holds it, so a copied or moved work dir resumes from its own files.
"""
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.logging import print_log

LAST_CHECKPOINT = 'last_checkpoint'
PARTIAL_SUFFIX = '.partial'


def partial_name(filename: str) -> str:
    """The temporary name ``filename`` is written under (hidden, same
    directory, never matched by ``iter_*.pth`` / ``epoch_*.pth``)."""
    return f'.{filename}{PARTIAL_SUFFIX}'


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op elsewhere)."""
    if os.name != 'posix':
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp_path: str, path: str) -> None:
    """fsync the finished ``tmp_path`` and rename it to ``path``."""
    fd = os.open(tmp_path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp_path, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path``: readers see the old or the new text."""
    tmp = osp.join(osp.dirname(path), partial_name(osp.basename(path)))
    with open(tmp, 'w') as f:
        f.write(text)
    replace_atomically(tmp, path)


def save_atomically(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path``: readers see the old file or the
    whole new one."""
    tmp = osp.join(osp.dirname(path), partial_name(osp.basename(path)))
    torch.save(obj, tmp)
    replace_atomically(tmp, path)


def _inside(path: str, folder: str) -> bool:
    path, folder = osp.realpath(path), osp.realpath(folder)
    return osp.commonpath([path, folder]) == folder


def resolve_last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``WORK_DIR/last_checkpoint`` names, or None when the
    file does not exist (nothing saved yet: training starts from scratch).

    A relative name is taken relative to ``work_dir``. An absolute path
    outside ``work_dir`` (written before the work dir was copied or moved)
    resolves to the file of the same name in ``work_dir`` when there is one,
    with a log line; otherwise it is used as it is (checkpoints written to
    another ``out_dir``). An empty file, or one naming a checkpoint that
    does not exist, is an error naming both files.
    """
    record = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(record):
        return None
    with open(record) as f:
        named = f.read().strip()
    hint = (f'Resume from a checkpoint explicitly (--resume PATH, or '
            f'load_from=PATH with resume=True), or delete {record} to '
            'train from scratch.')
    if not named:
        raise FileNotFoundError(
            f'{record} is empty; it should name the checkpoint to resume '
            f'from. {hint}')
    if '://' in named:  # a remote out_dir (s3://, petrel:// ...)
        return named
    if not osp.isabs(named):
        named = osp.join(work_dir, named)
    own = osp.join(work_dir, osp.basename(named))
    if not _inside(named, work_dir) and osp.isfile(own):
        print_log(
            f'{record} names {named}, outside this work dir (it was copied '
            f'or moved); resuming from this work dir\'s own {own}.',
            logger='current')
        return own
    if not osp.isfile(named):
        also = '' if osp.abspath(own) == osp.abspath(named) else \
            f' (nor does {own})'
        raise FileNotFoundError(
            f'{record} names the checkpoint {named}, which does not '
            f'exist{also}. {hint}')
    return named
