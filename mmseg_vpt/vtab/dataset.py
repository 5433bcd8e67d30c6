"""``VTABDataset``: VTAB-1k list files for mmpretrain.

Importing this module registers the dataset in mmpretrain's ``DATASETS``
(the VTAB configs list it in ``custom_imports``). The layout is the one the
community shares for VTAB-1k::

    data/vtab-1k/<task>/
        train800.txt  val200.txt  train800val200.txt  test.txt
        images/...                       (any layout; the lists point to it)

Each list line is ``relative/image/path label`` (path relative to the task
folder, label an integer in ``[0, num_classes)``). Problems in a list file
are reported with the file and line number; an image that cannot be read
(missing, empty or undecodable) is reported by its path.
"""
import os.path as osp
from typing import List, Optional, Tuple

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from ..datasets.checks import NameUnreadableFiles
from .tasks import FOLDER_ALIASES, SPLITS, TASKS


class VTABListError(ValueError):
    """A VTAB list file that cannot be used (names the file and line)."""


def read_vtab_list(list_file: str, image_root: str, num_classes: int,
                   check_images: bool = True) -> List[Tuple[str, int]]:
    """Parse a ``path label`` list file into ``(absolute path, label)``.

    Blank lines are skipped. The last whitespace-separated field is the
    label, so paths may contain spaces.

    Raises:
        FileNotFoundError: the list file, or (with ``check_images``) an image
            it names, does not exist.
        VTABListError: a malformed line, a label outside
            ``[0, num_classes)`` or a list without entries.
    """
    if not osp.isfile(list_file):
        raise FileNotFoundError(
            f'VTAB list file not found: {list_file}. Expected the layout '
            f'<data_root>/<task>/{{{",".join(SPLITS)}}}.txt (README section '
            '"VTAB-1k classification").')
    samples = []
    with open(list_file, encoding='utf-8') as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            where = f'{list_file}:{lineno}'
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise VTABListError(
                    f'{where}: expected "relative/image/path label", got '
                    f'{line!r}')
            rel_path, label_str = parts
            try:
                label = int(label_str)
            except ValueError:
                raise VTABListError(
                    f'{where}: label {label_str!r} is not an integer (line '
                    f'{line!r}; expected "relative/image/path label")'
                ) from None
            if not 0 <= label < num_classes:
                raise VTABListError(
                    f'{where}: label {label} is outside [0, {num_classes}) '
                    f'(num_classes={num_classes})')
            path = osp.join(image_root, rel_path)
            if check_images and not osp.isfile(path):
                raise FileNotFoundError(
                    f'{where}: image {rel_path!r} not found (looked for '
                    f'{osp.abspath(path)})')
            samples.append((path, label))
    if not samples:
        raise VTABListError(f'{list_file}: the list file has no entries')
    return samples


def resolve_task_dir(data_root: str, task: str) -> str:
    """``data_root/task``, or the task's folder name in the common VTAB-1k
    release (e.g. ``cifar`` for ``cifar100``) when only that exists."""
    path = osp.join(data_root, task)
    alias = FOLDER_ALIASES.get(task)
    if not osp.isdir(path) and alias and osp.isdir(osp.join(data_root,
                                                            alias)):
        return osp.join(data_root, alias)
    return path


@DATASETS.register_module()
class VTABDataset(NameUnreadableFiles, BaseDataset):
    """One split of a VTAB-1k task.

    Args:
        task (str): Task name (a folder under ``data_root``): one of the 19
            VTAB-1k tasks, or any other name with ``num_classes`` given
            (e.g. a generated task).
        split (str): ``'train800'``, ``'val200'``, ``'train800val200'`` or
            ``'test'`` (the list file ``<split>.txt``). Default: 'train800'.
        data_root (str): Folder holding the task folders.
            Default: 'data/vtab-1k'.
        num_classes (int, optional): Defaults to the task's class count.
        check_images (bool): Check at load time that every listed image
            exists, so a bad list fails at once with its line number rather
            than deep inside a training run. Default: True.
        **kwargs: Arguments of mmpretrain's ``BaseDataset`` (``pipeline``,
            ``test_mode``, ``indices`` ...).
    """

    def __init__(self,
                 task: str,
                 split: str = 'train800',
                 data_root: str = 'data/vtab-1k',
                 num_classes: Optional[int] = None,
                 check_images: bool = True,
                 **kwargs) -> None:
        if num_classes is None:
            if task not in TASKS:
                raise ValueError(
                    f'VTABDataset: task {task!r} is not a VTAB-1k task '
                    f'({", ".join(TASKS)}); give num_classes for other '
                    'tasks')
            num_classes = TASKS[task][1]
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'VTABDataset: num_classes must be a positive '
                             f'int, got {num_classes!r}')
        if split not in SPLITS:
            raise ValueError(f'VTABDataset: split must be one of {SPLITS}, '
                             f'got {split!r}')
        self.task = task
        self.split = split
        self.num_classes = num_classes
        self.check_images = check_images
        self.task_dir = resolve_task_dir(data_root, task)
        metainfo = dict(classes=tuple(str(i) for i in range(num_classes)))
        super().__init__(
            ann_file=osp.join(self.task_dir, f'{split}.txt'),
            metainfo=metainfo,
            data_root='',
            data_prefix=self.task_dir,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        samples = read_vtab_list(self.ann_file, self.img_prefix,
                                 self.num_classes, self.check_images)
        return [dict(img_path=path, gt_label=label)
                for path, label in samples]

    def extra_repr(self) -> List[str]:
        return [f'Task: {self.task}', f'Split: {self.split}',
                f'Task folder: {self.task_dir}']
