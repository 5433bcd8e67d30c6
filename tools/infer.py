"""Segment images with a trained checkpoint; write label maps and overlays.

    python tools/infer.py CONFIG CHECKPOINT IMAGES... --out-dir DIR \
        [--device cpu|cuda] [--opacity 0.5] [--cfg-options k=v ...]

IMAGES are files, folders (their image files) or glob patterns (quote them).
For each image it writes ``DIR/labels/NAME.png`` (a palette PNG whose pixel
values are the predicted class ids, shown in the dataset's colours; ADE20K's
150-class palette for the ADE20K configs) and ``DIR/overlays/NAME.png``
(the image with the prediction blended in). Tuned-only checkpoints take
their base weights from the config's ``init_cfg``; the config's
``test_cfg`` (whole image or sliding window) is used as in tools/test.py.

An image that cannot be read is reported and skipped; the exit status is
then 1 and the failures are listed at the end. A checkpoint that does not
fit the config (the error lists the keys and shapes; ``--load-partial``
loads what fits instead), or inputs without any image, stop with status 2.
"""
import argparse
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmseg_vpt.apis import find_images, infer_files, init_segmentor  # noqa
from mmseg_vpt.apis.args import (add_cfg_options, add_device,  # noqa: E402
                                 add_ignore_base_hash, add_load_partial)
from mmseg_vpt.checkpoint import TunedCheckpointError  # noqa: E402
from mmseg_vpt.utils.checkpoints import (CheckpointFileError,  # noqa: E402
                                         check_checkpoint_file)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Segment images with a trained checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint',
                        help='checkpoint (tuned-only or full)')
    parser.add_argument('images', nargs='+',
                        help='image files, folders or glob patterns')
    parser.add_argument('--out-dir', required=True,
                        help='where labels/ and overlays/ are written')
    add_device(parser)
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='weight of the label colours in the overlay, '
                        'in [0, 1] (default 0.5)')
    add_ignore_base_hash(parser)
    add_load_partial(parser)
    add_cfg_options(parser, 'override config settings, e.g. '
                    'model.test_cfg.mode=whole')
    args = parser.parse_args()
    if not 0.0 <= args.opacity <= 1.0:
        parser.error(f'--opacity must be in [0, 1], got {args.opacity}')
    return args


def main() -> int:
    args = parse_args()

    scan = find_images(args.images)
    for err in scan.errors:
        print(f'error: {err}', file=sys.stderr)
    if not scan.images:
        print('error: no images to segment', file=sys.stderr)
        return 2
    try:
        check_checkpoint_file(args.checkpoint, 'argument CHECKPOINT')
        model = init_segmentor(args.config, args.checkpoint, args.device,
                               args.cfg_options,
                               check_base_hash=not args.ignore_base_hash,
                               load_partial=args.load_partial)
    except (FileNotFoundError, CheckpointFileError, TunedCheckpointError,
            RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'Segmenting {len(scan.images)} image(s) into {args.out_dir} '
          f'(test_cfg mode: {model.test_cfg.get("mode", "whole")})')
    failures = scan.errors + infer_files(model, scan.images, args.out_dir,
                                         args.opacity)
    done = len(scan.images) - (len(failures) - len(scan.errors))
    print(f'Wrote {done} label map(s) to {osp.join(args.out_dir, "labels")} '
          f'and overlay(s) to {osp.join(args.out_dir, "overlays")}')
    if failures:
        print(f'{len(failures)} input(s) failed:', file=sys.stderr)
        for f in failures:
            print(f'  {f}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
