"""``CheckedADE20KDataset``: mmseg's ``ADE20KDataset`` whose data errors
name the folder or file.

Importing this module registers it in mmseg's ``DATASETS``; this project's
ADE20K configs use it. The pipelines keep mmseg's own transform names
(``LoadImageFromFile``, ``LoadAnnotations``), which mmseg's ``init_model``
and ``MMSegInferencer`` look up by name, so the checks live here and in
``SegDataCheckHook`` rather than in transforms.
"""
import os.path as osp
from typing import List, Optional

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .checks import (NameUnreadableFiles, check_image_annotation_pairs,
                     check_split_folder)


@DATASETS.register_module()
class CheckedADE20KDataset(NameUnreadableFiles, ADE20KDataset):
    """``ADE20KDataset`` that checks its folders when built and names the
    file when a sample cannot be read.

    * A missing image or annotation folder, or one without a file of the
      expected suffix, is a ``FileNotFoundError`` naming the folder and its
      config key (mmseg: ``need at least one array to concatenate``).
    * An image without its annotation, or (when the folders are listed
      rather than an ``ann_file`` read) an annotation without its image, is
      a ``FileNotFoundError`` listing them.
    * A missing, empty (0-byte) or undecodable image or annotation is an
      error naming the file (mmseg: e.g. a bare ``cv2.error``).

    Annotation format and size, and label values, are checked by
    ``SegDataCheckHook``, which knows the model's class count.

    Args:
        config_key (str, optional): Where this dataset sits in the config,
            e.g. ``'train_dataloader.dataset'``, for the messages (a dataset
            does not know which dataloader holds it; the ADE20K configs set
            it). Default: None, which names all three.
        *args, **kwargs: Arguments of mmseg's ``ADE20KDataset``.
    """

    def __init__(self, *args, config_key: Optional[str] = None, **kwargs):
        # set before the parent's __init__, which lists the data
        self.config_key = config_key or '<train|val|test>_dataloader.dataset'
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        # mmseg's own test for "read the sample names from a list file"
        ann_file = (self.ann_file if self.ann_file
                    and not osp.isdir(self.ann_file) else '')
        folders = [(img_dir, 'image', 'img_path', self.img_suffix)]
        if ann_dir is not None:
            folders.append((ann_dir, 'annotation', 'seg_map_path',
                            self.seg_map_suffix))
        for folder, what, key, suffix in folders:
            # a list file may name a subset: then only the folder must exist
            check_split_folder(folder, what,
                               f'{self.config_key}.data_prefix.{key}',
                               self.data_root, None if ann_file else suffix,
                               self.backend_args)
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(f'The sample list {ann_file!r} (config key '
                             '`ann_file`) is empty.')
        if ann_dir is not None:
            check_image_annotation_pairs(data_list, img_dir, ann_dir,
                                         self.img_suffix,
                                         self.seg_map_suffix, ann_file,
                                         self.backend_args)
        return data_list
