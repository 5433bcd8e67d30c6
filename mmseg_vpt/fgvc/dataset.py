"""``FGVCDataset``: the five FGVC datasets for mmpretrain.

Importing this module registers the dataset in mmpretrain's ``DATASETS``
(the FGVC configs list it in ``custom_imports``, as the VTAB configs do
for ``VTABDataset``). It reads each dataset in its public release layout
(:mod:`mmseg_vpt.fgvc.layouts`) or, when present, the public VPT release's
``train.json`` / ``val.json`` / ``test.json`` split files, and checks every
entry when it loads, so a bad file fails at once with its line or key.
"""
import os.path as osp
from typing import List, Optional

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from ..datasets.checks import NameUnreadableFiles
from .layouts import check_images as check_image_files
from .layouts import FGVCAnnotationError, load_split
from .tasks import SPLIT_SEED, SPLITS, TASKS, VAL_FRACTION


@DATASETS.register_module()
class FGVCDataset(NameUnreadableFiles, BaseDataset):
    """One split of an FGVC dataset.

    Args:
        name (str): ``'cub'``, ``'nabirds'``, ``'oxford_flowers'``,
            ``'stanford_dogs'`` or ``'stanford_cars'``.
        split (str): ``'train'`` / ``'val'`` (the paper's hyperparameter
            search), ``'trainval'`` (their union: the final runs) or
            ``'test'`` (the official test set). Default: 'train'.
        data_root (str): Folder holding the dataset folders.
            Default: 'data/fgvc'.
        folder (str, optional): The dataset's folder under ``data_root``.
            Defaults to the release's name (``CUB_200_2011``, ``nabirds``,
            ``oxford_flowers``, ``stanford_dogs``, ``stanford_cars``).
        split_dir (str, optional): Folder of json split files
            (``{train,val,test}.json``: image path -> class id). By default
            the dataset folder is searched for them, and the release's own
            files are used when there are none.
        num_classes (int, optional): Defaults to the dataset's class count.
        val_fraction (float): Share of the official training set that
            becomes val when no split files are given. Default: 0.1.
        split_seed (int): Seed of that split. Default: 0.
        check_images (bool): Check at load time that every image exists.
            Default: True.
        **kwargs: Arguments of mmpretrain's ``BaseDataset`` (``pipeline``,
            ``test_mode``, ``indices`` ...).
    """

    def __init__(self,
                 name: str,
                 split: str = 'train',
                 data_root: str = 'data/fgvc',
                 folder: Optional[str] = None,
                 split_dir: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 val_fraction: float = VAL_FRACTION,
                 split_seed: int = SPLIT_SEED,
                 check_images: bool = True,
                 **kwargs) -> None:
        if name not in TASKS:
            raise ValueError(
                f'FGVCDataset: unknown dataset name {name!r}; expected one '
                f'of {list(TASKS)}')
        if split not in SPLITS:
            raise ValueError(f'FGVCDataset: split must be one of {SPLITS}, '
                             f'got {split!r}')
        num_classes = TASKS[name].num_classes if num_classes is None \
            else num_classes
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'FGVCDataset: num_classes must be a positive '
                             f'int, got {num_classes!r}')
        self.name = name
        self.split = split
        self.num_classes = num_classes
        self.dataset_dir = osp.join(data_root, folder or TASKS[name].folder)
        self.split_dir = split_dir
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.check_images = check_images
        self.source = ''
        metainfo = dict(classes=tuple(str(i) for i in range(num_classes)))
        super().__init__(ann_file='', metainfo=metainfo, data_root='',
                         data_prefix=self.dataset_dir, **kwargs)

    def load_data_list(self) -> List[dict]:
        samples, self.source = load_split(
            self.name, self.split, self.dataset_dir, self.num_classes,
            self.split_dir, self.val_fraction, self.split_seed)
        if not samples:
            raise FGVCAnnotationError(
                f'{self.source}: split {self.split!r} has no images')
        if self.check_images:
            check_image_files(samples, self.dataset_dir)
        return [dict(img_path=osp.join(self.dataset_dir, rel),
                     gt_label=label) for rel, label, _ in samples]

    def extra_repr(self) -> List[str]:
        return [f'Dataset: {self.name}', f'Split: {self.split}',
                f'Read from: {self.source}']
