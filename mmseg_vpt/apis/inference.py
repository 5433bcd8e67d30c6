"""Run a trained segmentor on images: build, load, predict, draw.

The model is built from its config and loaded with
:func:`mmseg_vpt.checkpoint.load_tuned_checkpoint`, so tuned-only
checkpoints (prompts + heads, base weights from the config's
``init_cfg``) and full checkpoints both load, strictly. Prediction is
mmseg's own path: the config's test pipeline (minus annotation loading),
the model's data preprocessor and ``test_step``, so the config's
``test_cfg`` (``mode='whole'`` or sliding windows) applies and the label map
comes back at the image's original size.

    >>> from mmseg_vpt.apis import init_segmentor, inference, save_prediction
    >>> model = init_segmentor(CONFIG, 'work_dirs/demo/iter_400.pth')
    >>> result = inference(model, 'image.jpg')           # SegDataSample
    >>> label = result.pred_sem_seg.data[0].cpu().numpy()  # (H, W) class ids
    >>> save_prediction(model, 'image.jpg', result, 'out/')
"""
import copy
import glob
import os
import os.path as osp
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import Compose

from ..checkpoint import (TunedCheckpointError, load_tuned_checkpoint,
                          model_from_config, read_checkpoint)
from ..utils.config import read_config
from ..utils.logging_utils import mmengine_log_level

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')
ImageInput = Union[str, Path, np.ndarray]


class ImageReadError(OSError):
    """An input file is missing or is not a readable image."""


class CheckpointMismatchError(TunedCheckpointError):
    """A checkpoint does not fit the model its config builds."""


class CheckpointReadError(TunedCheckpointError):
    """A checkpoint file cannot be read."""


def ade20k_meta() -> dict:
    """ADE20K's 150 class names and palette (mmseg's ``ADE20KDataset``)."""
    from mmseg.datasets import ADE20KDataset
    meta = ADE20KDataset.METAINFO
    return dict(classes=tuple(meta['classes']),
                palette=[list(c) for c in meta['palette']])


def class_meta(meta: Optional[dict], num_classes: int) -> dict:
    """Class names and palette for a model of ``num_classes`` classes: a
    checkpoint's ``meta['dataset_meta']`` when it has both for that many
    classes, else ADE20K's for 150 classes, else numbered classes with a
    fixed random palette."""
    dataset_meta = (meta or {}).get('dataset_meta') or {}
    if 'classes' in dataset_meta and 'palette' in dataset_meta and \
            len(dataset_meta['palette']) == num_classes:
        return dict(classes=tuple(dataset_meta['classes']),
                    palette=[list(c) for c in dataset_meta['palette']])
    if num_classes == 150:
        return ade20k_meta()
    rng = np.random.default_rng(42)
    return dict(classes=tuple(f'class {i}' for i in range(num_classes)),
                palette=rng.integers(0, 256, (num_classes, 3)).tolist())


def init_segmentor(config: Union[str, Path, Config],
                   checkpoint: Optional[str] = None,
                   device: str = 'cpu',
                   cfg_options: Optional[dict] = None,
                   check_base_hash: bool = True,
                   load_partial: bool = False) -> nn.Module:
    """Build the segmentor of ``config`` and load ``checkpoint``.

    Args:
        config: Config file or ``Config``.
        checkpoint: A checkpoint written by ``tools/train.py`` (tuned-only
            or full), by ``tools/merge_tuned.py`` / ``extract_tuned.py``, or
            a bare state dict. ``None`` keeps the weights the config's
            ``init_cfg`` gives (pretrained base weights or random).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
        cfg_options: Config overrides, as ``--cfg-options`` (e.g.
            ``{'model.test_cfg.mode': 'whole'}``).
        check_base_hash: For tuned-only checkpoints, require the base
            weights file to be the one the checkpoint was saved with.
        load_partial: Load only the checkpoint's tensors that fit the model
            (the rest keep the config's initialisation; a summary is
            logged) instead of raising :class:`CheckpointMismatchError`.

    Returns:
        The model in eval mode on ``device``, with ``model.cfg`` (the config)
        and ``model.dataset_meta`` (class names and palette: from the
        checkpoint, else ADE20K's for 150 classes).

    Raises:
        FileNotFoundError: config, checkpoint or base weights file missing.
        CheckpointMismatchError: the checkpoint does not fit the model
            (missing, unexpected or differently shaped tensors, all named),
            or its base weights differ from the config's.
    """
    if str(device).startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device={device!r} but CUDA is not available; '
                           "use device='cpu'")
    cfg = read_config(config, cfg_options)
    cfg.model.train_cfg = None
    model = model_from_config(cfg)
    if not hasattr(model, 'decode_head'):
        raise TypeError(f'{config} builds a {type(model).__name__}, not a '
                        'segmentor with a decode_head')
    meta = {}
    if checkpoint is None:
        # without mmengine's per-parameter INFO log (hundreds of lines that
        # matter in training logs, not here)
        with mmengine_log_level():
            model.init_weights()
    else:
        try:
            ckpt = read_checkpoint(str(checkpoint))
        except (FileNotFoundError, TunedCheckpointError):
            raise
        except Exception as err:  # noqa: BLE001 - torch.load's many errors
            raise CheckpointReadError(
                f'Cannot read checkpoint {checkpoint}: {type(err).__name__}: '
                f'{err}') from err
        try:
            load_tuned_checkpoint(model, ckpt, check_base_hash,
                                  partial=load_partial)
        except TunedCheckpointError as err:
            cfg_name = config if isinstance(config, (str, Path)) else \
                'the given config'
            raise CheckpointMismatchError(
                f'Checkpoint {checkpoint} does not fit the model built from '
                f'{cfg_name}: {err}') from err
        meta = ckpt.get('meta') or {}
    model.dataset_meta = class_meta(meta, model.decode_head.num_classes)
    model.cfg = cfg
    model.to(device)
    model.eval()
    return model


def inference_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without annotation loading, taking images
    as arrays (``LoadImageFromNDArray``)."""
    pipeline = cfg.get('test_pipeline') or \
        cfg.test_dataloader.dataset.pipeline
    steps = [copy.deepcopy(dict(t)) for t in pipeline
             if t.get('type') != 'LoadAnnotations']
    if steps and steps[0].get('type') == 'LoadImageFromFile':
        steps[0] = dict(type='LoadImageFromNDArray')
    return Compose(steps)


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Read a colour image as BGR uint8 (as mmseg's ``LoadImageFromFile``
    does), or raise :class:`ImageReadError` naming the file."""
    path = str(path)
    if not osp.isfile(path):
        raise ImageReadError(f'{path}: no such file')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageReadError(
            f'{path}: cannot read it as an image (not an image file, '
            'corrupt or unsupported format)')
    return img


@torch.no_grad()
def preprocess(model: nn.Module, image: ImageInput) -> Tuple[torch.Tensor,
                                                          np.ndarray]:
    """What the model's backbone sees for ``image`` in ``mode='whole'``:
    the test pipeline and the data preprocessor's normalisation (and test
    padding). Returns the input batch (1, 3, H, W) on the model's device and
    the same image as RGB uint8 (H, W, 3), padded alike, for display."""
    img = image if isinstance(image, np.ndarray) else read_image(image)
    data = inference_pipeline(model.cfg)(dict(img=img))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        False)
    inputs = batch['inputs']
    shown = data['inputs'].permute(1, 2, 0).cpu().numpy()[..., ::-1]
    H, W = inputs.shape[-2:]
    canvas = np.zeros((H, W, 3), np.uint8)
    h, w = min(H, shown.shape[0]), min(W, shown.shape[1])
    canvas[:h, :w] = shown[:h, :w]
    return inputs, canvas


@torch.no_grad()
def _predict(model: nn.Module, pipeline: Compose, img: np.ndarray):
    """``model.test_step`` on one BGR image through ``pipeline``."""
    data = pipeline(dict(img=img))
    batch = defaultdict(list)
    batch['inputs'].append(data['inputs'])
    batch['data_samples'].append(data['data_samples'])
    return model.test_step(batch)[0]


@torch.no_grad()
def inference(model: nn.Module, images: Union[ImageInput,
                                              Sequence[ImageInput]]):
    """Predict ``images`` (paths, or BGR uint8 arrays as OpenCV reads them).

    Each image goes through the test pipeline and ``model.test_step``
    alone, so images may differ in size. Returns a ``SegDataSample`` (a list
    of them for a list input) whose ``pred_sem_seg`` has the image's
    original size; unreadable files raise :class:`ImageReadError`.
    """
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    pipeline = inference_pipeline(model.cfg)
    results = []
    for item in items:
        img = item if isinstance(item, np.ndarray) else read_image(item)
        result = _predict(model, pipeline, img)
        if not isinstance(item, np.ndarray):
            result.set_metainfo(dict(img_path=str(item)))
        results.append(result)
    return results[0] if single else results


# --------------------------------------------------------------------------
# drawing and saving
# --------------------------------------------------------------------------
def colorize(label: np.ndarray, palette: Sequence[Sequence[int]]
             ) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB uint8."""
    lut = np.zeros((256, 3), np.uint8)
    pal = np.asarray(palette, np.uint8)[:256]
    lut[:len(pal)] = pal
    return lut[label.astype(np.int64) % 256]


def overlay(image_bgr: np.ndarray, label: np.ndarray,
            palette: Sequence[Sequence[int]],
            opacity: float = 0.5) -> np.ndarray:
    """The image (BGR) with the label map's colours blended in (BGR)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    colors = colorize(label, palette)[..., ::-1].astype(np.float32)
    out = image_bgr.astype(np.float32) * (1 - opacity) + colors * opacity
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_label_png(label: np.ndarray, palette: Sequence[Sequence[int]],
                   path) -> None:
    """Write class ids as a palette PNG: pixel values are the class ids
    (readable as a label map) and viewers show the palette's colours.
    ``path``: a file name or a binary file object."""
    from PIL import Image
    if label.max(initial=0) > 255:
        raise ValueError('palette PNGs hold at most 256 classes')
    img = Image.fromarray(label.astype(np.uint8), mode='P')
    pal = np.zeros((256, 3), np.uint8)
    given = np.asarray(palette, np.uint8)[:256]
    pal[:len(given)] = given
    img.putpalette(pal.reshape(-1).tolist())
    img.save(path if hasattr(path, 'write') else str(path), format='PNG')


def save_prediction(model: nn.Module, image: Union[str, np.ndarray], result,
                    out_dir: Union[str, Path], name: Optional[str] = None,
                    opacity: float = 0.5) -> Tuple[Path, Path]:
    """Write ``out_dir/labels/NAME.png`` (palette PNG of class ids) and
    ``out_dir/overlays/NAME.png`` (image with the prediction blended in).
    ``name`` defaults to the image file's stem."""
    img = image if isinstance(image, np.ndarray) else read_image(image)
    if name is None:
        if isinstance(image, np.ndarray):
            raise ValueError('name is needed for an array image')
        name = Path(image).stem
    label = result.pred_sem_seg.data[0].cpu().numpy()
    palette = model.dataset_meta['palette']
    out_dir = Path(out_dir)
    (out_dir / 'labels').mkdir(parents=True, exist_ok=True)
    (out_dir / 'overlays').mkdir(parents=True, exist_ok=True)
    label_path = out_dir / 'labels' / f'{name}.png'
    overlay_path = out_dir / 'overlays' / f'{name}.png'
    save_label_png(label, palette, label_path)
    if not cv2.imwrite(str(overlay_path),
                       overlay(img, label, palette, opacity)):
        raise OSError(f'could not write {overlay_path}')
    return label_path, overlay_path


# --------------------------------------------------------------------------
# many files
# --------------------------------------------------------------------------
@dataclass
class InputScan:
    """Images found in the command-line inputs, and inputs that gave none."""
    images: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


def find_images(inputs: Sequence[str]) -> InputScan:
    """Expand files, folders (their image files, sorted, not recursive) and
    glob patterns. A folder without images, a pattern matching nothing or a
    missing path is an error naming it; files are kept whatever their
    extension (reading them reports what is wrong)."""
    scan = InputScan()
    seen = set()

    def add(path: str) -> None:
        key = osp.abspath(path)
        if key not in seen:
            seen.add(key)
            scan.images.append(path)

    for entry in inputs:
        entry = str(entry)
        if osp.isdir(entry):
            found = sorted(
                osp.join(entry, f) for f in os.listdir(entry)
                if f.lower().endswith(IMAGE_EXTENSIONS)
                and osp.isfile(osp.join(entry, f)))
            if not found:
                scan.errors.append(
                    f'{entry}: folder has no images '
                    f'({", ".join(IMAGE_EXTENSIONS)})')
            for f in found:
                add(f)
        elif osp.exists(entry):
            add(entry)
        elif glob.has_magic(entry):
            found = sorted(f for f in glob.glob(entry, recursive=True)
                           if osp.isfile(f))
            if not found:
                scan.errors.append(f'{entry}: pattern matches no file')
            for f in found:
                add(f)
        else:
            scan.errors.append(f'{entry}: no such file or folder')
    return scan


def unique_names(paths: Sequence[str]) -> List[str]:
    """Output names (file stems), made unique with ``_2``, ``_3`` ... when
    two inputs share a stem."""
    counts: Dict[str, int] = defaultdict(int)
    names = []
    for p in paths:
        stem = Path(p).stem
        counts[stem] += 1
        names.append(stem if counts[stem] == 1 else f'{stem}_{counts[stem]}')
    return names


def infer_files(model: nn.Module, paths: Sequence[str],
                out_dir: Union[str, Path], opacity: float = 0.5,
                progress: bool = True) -> List[str]:
    """Predict and save every image of ``paths``; a file that fails is
    reported and skipped. Returns the failures (``'path: reason'``)."""
    from mmengine.utils import ProgressBar
    failures = []
    # built for the first readable image, so that a test pipeline that
    # cannot be built is reported as that image's failure
    pipeline = None
    bar = ProgressBar(len(paths)) if progress and len(paths) > 1 else None
    for path, name in zip(paths, unique_names(paths)):
        try:
            img = read_image(path)
            if pipeline is None:
                pipeline = inference_pipeline(model.cfg)
            result = _predict(model, pipeline, img)
            save_prediction(model, img, result, out_dir, name, opacity)
        except ImageReadError as err:
            failures.append(str(err))
            print(f'\nerror: {err}', flush=True)
        except Exception as err:  # noqa: BLE001 - keep going for the rest
            failures.append(f'{path}: {type(err).__name__}: {err}')
            print(f'\nerror: {path}: {type(err).__name__}: {err}',
                  flush=True)
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    return failures
