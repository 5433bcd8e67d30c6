"""Inference on images with trained (tuned-only or full) checkpoints."""
from .inference import (CheckpointMismatchError, CheckpointReadError,
                        ImageReadError, colorize, find_images, infer_files,
                        inference, init_segmentor, overlay, preprocess,
                        read_image, save_label_png, save_prediction)

__all__ = [
    'CheckpointMismatchError', 'CheckpointReadError', 'ImageReadError',
    'colorize', 'find_images', 'infer_files', 'inference', 'init_segmentor',
    'overlay', 'preprocess', 'read_image', 'save_label_png',
    'save_prediction'
]
