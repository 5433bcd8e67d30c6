"""Bad data stops the run with an error naming the file (or folder) and
what is wrong, through tools/train.py and tools/test.py as users run them.

Each case copies a small clean synthetic ADE20K-layout dataset and breaks
one thing in it. Without the checks, mmseg trains on or silently drops
most of these, or fails with a message naming no file.
"""
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k

from .tools_helpers import (REPO, eval_cmd, metric_values, no_workers, run,
                            run_fails, short_schedule, train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
ADE = Path('data/synthetic_ade20k/ADEChallengeData2016')
NUM_TRAIN = 4  # one batch holds every training image


def _ann(split: str, i: int = 1) -> Path:
    prefix = 'train' if split == 'training' else 'val'
    return ADE / 'annotations' / split / f'ADE_{prefix}_{i:08d}.png'


def _img(split: str, i: int = 1) -> Path:
    prefix = 'train' if split == 'training' else 'val'
    return ADE / 'images' / split / f'ADE_{prefix}_{i:08d}.jpg'


@pytest.fixture(scope='module')
def clean(tmp_path_factory) -> Path:
    """A folder holding the clean data as ``data/synthetic_ade20k``."""
    root = tmp_path_factory.mktemp('clean')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k',
                          num_train=NUM_TRAIN, num_val=2, img_size=64,
                          show_progress=False)
    return root


@pytest.fixture
def case(clean, tmp_path) -> Path:
    """A copy of the clean data to break (the tools' working directory)."""
    shutil.copytree(clean / 'data', tmp_path / 'data')
    return tmp_path


@pytest.fixture(scope='module')
def checkpoint(clean) -> Path:
    """One training iteration and a validation on the clean data: the
    checks pass good data (and the checkpoint serves tools/test.py)."""
    work = clean / 'work'
    log = run(train_cmd(VIT_DEMO, work, '--cfg-options',
                        *short_schedule(1, NUM_TRAIN)), cwd=clean)
    assert len(metric_values(log)) == 1
    return work / 'iter_1.pth'


def _train_fails(case: Path, *options: str) -> str:
    return run_fails(
        train_cmd(VIT_DEMO, case / 'work', '--cfg-options',
                  *short_schedule(1, NUM_TRAIN), *options), cwd=case)


def _test_fails(case: Path, checkpoint: Path) -> str:
    return run_fails(
        eval_cmd(VIT_DEMO, checkpoint, case / 'work', '--cfg-options',
                 *no_workers()), cwd=case)


def _write_labels(case: Path, path: Path, fill: int, top_rows: int) -> None:
    """Set every label of ``path`` to ``fill``, and its top rows to 151
    (one past ADE20K's 150 classes)."""
    labels = cv2.imread(str(case / path), cv2.IMREAD_UNCHANGED)
    labels[:] = fill
    labels[:top_rows] = 151
    assert cv2.imwrite(str(case / path), labels)


def _label_error(path: Path) -> str:
    # stored 151 and 200 are labels 150 and 199 after reduce_zero_label
    return (f"The annotation '{path}' has label values outside [0, 150) "
            'that are not the ignore index 255: 150, 199 (stored in the '
            "file as 151, 200; the dataset's reduce_zero_label=True turns "
            'a stored value v into v - 1, and 0 into 255). num_classes = '
            '150 is the smallest of model.decode_head.num_classes (150), '
            'model.auxiliary_head.0.num_classes (150), '
            'model.auxiliary_head.1.num_classes (150) and the dataset\'s '
            "class count, len(metainfo['classes']) (150).")


# ---------------------------------------------------------------- labels
@pytest.mark.slow
def test_label_above_num_classes_stops_training_naming_file_and_values(
        case):
    _write_labels(case, _ann('training', 3), fill=200, top_rows=8)
    failure = _train_fails(case)
    assert _label_error(_ann('training', 3)) in failure
    assert 'out of bounds' not in failure  # the loss never saw it


@pytest.mark.slow
def test_label_above_num_classes_stops_validation_in_training(case):
    # mmseg's IoUMetric would leave these pixels out of mIoU silently
    _write_labels(case, _ann('validation', 2), fill=200, top_rows=8)
    failure = _train_fails(case)
    assert _label_error(_ann('validation', 2)) in failure
    assert not metric_values(failure)


@pytest.mark.slow
def test_label_above_num_classes_stops_tools_test(case, checkpoint):
    _write_labels(case, _ann('validation', 2), fill=200, top_rows=8)
    failure = _test_fails(case, checkpoint)
    assert _label_error(_ann('validation', 2)) in failure
    assert not metric_values(failure)


def test_model_with_fewer_classes_than_the_dataset_bounds_the_labels(
        case):
    """num_classes is the smallest count: with 6 classes in the decode head
    the stored label 8 (class 7) is an error, though ADE20K has 150."""
    _write_labels(case, _ann('validation', 1), fill=8, top_rows=0)
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.model.decode_head.num_classes = 6
    with pytest.raises(ValueError) as err:
        _check_val_batch(cfg, case)
    assert str(err.value).startswith(
        f"The annotation '{case / _ann('validation', 1)}' has label values "
        'outside [0, 6) that are not the ignore index 255: 7 (stored in '
        'the file as 8; ')
    assert ('num_classes = 6 is the smallest of '
            'model.decode_head.num_classes (6), '
            'model.auxiliary_head.0.num_classes (150)') in str(err.value)


def test_reduce_zero_label_is_one_switch_and_the_check_follows_it(case):
    """With the dataset's reduce_zero_label=False (data whose label 0 is a
    class) a stored 0 is class 0 and a stored 150 is out of range; no
    pipeline entry has to change with it."""
    _write_labels(case, _ann('validation', 1), fill=0, top_rows=0)
    labels = cv2.imread(str(case / _ann('validation', 1)),
                        cv2.IMREAD_UNCHANGED)
    labels[:3] = 150
    cv2.imwrite(str(case / _ann('validation', 1)), labels)
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.merge_from_dict({'val_dataloader.dataset.reduce_zero_label': False})
    with pytest.raises(ValueError) as err:
        _check_val_batch(cfg, case)
    assert str(err.value).startswith(
        f"The annotation '{case / _ann('validation', 1)}' has label values "
        'outside [0, 150) that are not the ignore index 255: 150 (as '
        'stored in the file). num_classes = 150')


def test_test_time_augmentation_batches_are_checked_too(case):
    """tools/test.py --tta batches hold one list of samples per image."""
    from mmseg.registry import MODELS

    from mmseg_vpt.engine.data_checks import SegDataCheckHook
    _write_labels(case, _ann('validation', 1), fill=1, top_rows=4)
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    dataset = _dataset(cfg, case, 'test')
    batch = pseudo_collate([dataset[0]])
    assert isinstance(batch['data_samples'][0], (list, tuple))
    runner = SimpleNamespace(model=MODELS.build(cfg.model),
                             test_dataloader=SimpleNamespace(dataset=dataset))
    with pytest.raises(ValueError, match=(
            "has label values outside \\[0, 150\\) that are not the ignore "
            'index 255: 150 \\(stored in the file as 151;')):
        SegDataCheckHook().before_test_iter(runner, 0, batch)


def test_stored_values_map_like_mmseg_load_annotations(tmp_path):
    """The error's "stored in the file as" values come from mmseg's own
    label mapping."""
    from mmseg.datasets.transforms import LoadAnnotations

    from mmseg_vpt.datasets.checks import map_raw_labels
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / 'labels.png'
    cv2.imwrite(str(path), stored)
    for reduce_zero_label, label_map in ((True, None), (False, {3: 0}),
                                         (True, {0: 255, 5: 1})):
        results = dict(seg_map_path=str(path), seg_fields=[],
                       reduce_zero_label=reduce_zero_label,
                       label_map=label_map)
        LoadAnnotations()(results)
        np.testing.assert_array_equal(
            map_raw_labels(stored, reduce_zero_label, label_map),
            results['gt_seg_map'])


# ---------------------------------------------------------- sizes, format
@pytest.mark.slow
def test_annotation_of_another_size_stops_training(case):
    ann = case / _ann('training', 2)
    labels = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(ann), labels[::2, ::2])  # 32x32 for a 64x64 image
    failure = _train_fails(case)
    assert (f"The annotation '{_ann('training', 2)}' is 32x32 (height x "
            f"width) but its image '{_img('training', 2)}' is 64x64; an "
            'annotation must have the size of its image.') in failure


@pytest.mark.slow
def test_annotation_of_another_size_stops_tools_test(case, checkpoint):
    ann = case / _ann('validation', 1)
    labels = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(ann), labels[:, :48])
    failure = _test_fails(case, checkpoint)
    assert (f"The annotation '{_ann('validation', 1)}' is 64x48 (height x "
            f"width) but its image '{_img('validation', 1)}' is 64x64"
            ) in failure
    assert 'IndexError' not in failure


def test_rgb_annotation_is_an_error(case):
    """mmseg would carry an (H, W, 3) "label map" on."""
    ann = case / _ann('validation', 1)
    labels = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(ann), np.stack([labels] * 3, axis=-1))
    with pytest.raises(ValueError) as err:
        _check_val_batch(Config.fromfile(REPO / VIT_DEMO), case)
    assert str(err.value).startswith(
        f"The annotation '{ann}' has 3 channels (Pillow mode 'RGB'); an "
        'annotation must be a single-channel image whose pixel values are '
        'class indices')


def test_16_bit_annotation_above_255_is_an_error_not_a_wrapped_label(
        case):
    """mmseg casts annotations to uint8: a stored 300 would train as label
    43 (300 % 256 - 1) without a word."""
    ann = case / _ann('validation', 1)
    labels = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    labels[:4] = 300
    labels[-4:] = 0
    cv2.imwrite(str(ann), labels)
    with pytest.raises(ValueError, match=(
            f"The annotation '{ann}' holds values from 0 to 300 "
            r"\(Pillow mode 'I;16'\), but mmseg reads annotations as 8-bit: "
            r'values outside 0..255 wrap around \(300 would become 44\)')):
        _check_val_batch(Config.fromfile(REPO / VIT_DEMO), case)


def test_jpeg_compressed_annotation_is_an_error(case):
    ann = case / _ann('validation', 1)
    labels = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    ok, jpeg = cv2.imencode('.jpg', labels)
    ann.write_bytes(jpeg.tobytes())  # still named .png
    with pytest.raises(ValueError, match=f"The annotation '{ann}' is "
                       'JPEG-compressed'):
        _check_val_batch(Config.fromfile(REPO / VIT_DEMO), case)


# --------------------------------------------------------- unreadable files
@pytest.mark.slow
def test_empty_image_file_is_named_through_dataloader_workers(case):
    (case / _img('training', 2)).write_bytes(b'')
    failure = _train_fails(case, 'train_dataloader.num_workers=1')
    assert 'DataLoader worker' in failure  # raised in a worker process
    assert (f"Cannot read the image file '{_img('training', 2)}': the file "
            'is empty (0 bytes).') in failure


def test_empty_or_undecodable_files_are_named(case):
    (case / _img('validation', 1)).write_bytes(b'not an image' * 10)
    png = (case / _ann('validation', 2)).read_bytes()
    (case / _ann('validation', 2)).write_bytes(png[:len(png) // 2])
    (case / _ann('training', 1)).write_bytes(b'')
    dataset = _dataset(Config.fromfile(REPO / VIT_DEMO), case, 'val')
    with pytest.raises(ValueError, match=(
            f"Cannot read the image file '{case / _img('validation', 1)}': "
            'OpenCV cannot decode it')):
        dataset[0]
    with pytest.raises(ValueError, match=(
            'Cannot read the annotation file '
            f"'{case / _ann('validation', 2)}': Pillow cannot decode it "
            r'\(image file is truncated')):
        dataset[1]
    train = _dataset(Config.fromfile(REPO / VIT_DEMO), case, 'train')
    with pytest.raises(ValueError) as err:
        train[0]
    assert str(err.value) == (
        'Cannot read the annotation file '
        f"'{case / _ann('training', 1)}': the file is empty (0 bytes). "
        'Replace or remove it.')


def test_empty_vtab_image_is_named(tmp_path):
    """The VTAB classification dataset names the file too."""
    from mmpretrain.registry import DATASETS

    from mmseg_vpt.datasets.synthetic_vtab import make_synthetic_vtab
    task = make_synthetic_vtab(tmp_path, num_train=3, num_val=1,
                               num_test=1)
    (task / 'images/train/000001.png').write_bytes(b'')
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(dict(
        type='VTABDataset', task=task.name, data_root=str(tmp_path),
        num_classes=3, pipeline=Config.fromfile(
            REPO / 'configs/vtab/_base_/vit-b16_vpt-deep.py').pipeline))
    dataset[0]
    with pytest.raises(ValueError) as err:
        dataset[1]
    assert str(err.value) == (
        f"Cannot read the image file '{task / 'images/train/000001.png'}': "
        'the file is empty (0 bytes). Replace or remove it.')


# ------------------------------------------------------------------ folders
@pytest.mark.slow
def test_empty_image_folder_names_folder_and_config_key(case):
    folder = ADE / 'images/training'
    for image in (case / folder).iterdir():
        image.rename(image.with_suffix('.jpeg'))  # a wrong suffix
    failure = _train_fails(case)
    assert (f"The image folder '{folder}' (config key "
            '`train_dataloader.dataset.data_prefix.img_path`, '
            f"relative to `data_root` '{ADE}') holds no '*.jpg' files: it "
            f"holds {NUM_TRAIN} '*.jpeg'.") in failure


def test_missing_annotation_folder_names_folder_and_config_key(case):
    shutil.rmtree(case / ADE / 'annotations/validation')
    with pytest.raises(FileNotFoundError) as err:
        _dataset(Config.fromfile(REPO / VIT_DEMO), case, 'val')
    assert str(err.value) == (
        f"The annotation folder '{case / ADE / 'annotations/validation'}' "
        'does not exist (config key '
        '`<train|val|test>_dataloader.dataset.data_prefix.seg_map_path`, '
        f"relative to `data_root` '{case / ADE}').")


def test_image_without_annotation_is_listed(case):
    (case / _ann('training', 2)).unlink()
    with pytest.raises(FileNotFoundError) as err:
        _dataset(Config.fromfile(REPO / VIT_DEMO), case, 'train')
    assert str(err.value) == (
        f"1 of {NUM_TRAIN} images in '{case / ADE / 'images/training'}' "
        f"have no annotation in '{case / ADE / 'annotations/training'}' "
        "(mmseg pairs image 'x.jpg' with annotation 'x.png'): "
        f"'{case / _img('training', 2)} (expected "
        f"{case / _ann('training', 2)})'.")


def test_annotation_without_image_is_listed_not_left_out(case):
    (case / _img('training', 3)).unlink()
    with pytest.raises(FileNotFoundError) as err:
        _dataset(Config.fromfile(REPO / VIT_DEMO), case, 'train')
    assert str(err.value).startswith(
        f"1 annotations in '{case / ADE / 'annotations/training'}' have no "
        f"image in '{case / ADE / 'images/training'}', so they would be "
        f"left out: '{case / _ann('training', 3)}'.")


# ------------------------------------------------------------------ helpers
def _dataset(cfg: Config, root: Path, loader: str):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    dataset_cfg = cfg[f'{loader}_dataloader'].dataset
    dataset_cfg.data_root = str(root / ADE)
    return DATASETS.build(dataset_cfg)


def _check_val_batch(cfg: Config, root: Path) -> None:
    """Run ``SegDataCheckHook`` on the first validation batch of the
    config's dataset and pipeline, with the config's model."""
    from mmseg.registry import MODELS

    from mmseg_vpt.engine.data_checks import SegDataCheckHook
    dataset = _dataset(cfg, root, 'val')
    runner = SimpleNamespace(model=MODELS.build(cfg.model),
                             val_dataloader=SimpleNamespace(dataset=dataset))
    SegDataCheckHook().before_val_iter(runner, 0,
                                       pseudo_collate([dataset[0]]))
