"""Write a small synthetic dataset in ADE20K's folder layout.

    python tools/dataset_converters/make_synthetic_ade20k.py \
        data/synthetic_ade20k

writes ``data/synthetic_ade20k/ADEChallengeData2016/{images,annotations}/
{training,validation}/``, readable by mmseg's ``ADE20KDataset``. Running it
again with the same arguments does nothing.
"""
import argparse
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_vpt.datasets.synthetic_ade20k import (  # noqa: E402
    ADE_NUM_CLASSES, make_synthetic_ade20k)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a synthetic ADE20K-layout dataset (coloured, '
        'textured shapes on textured backgrounds)')
    parser.add_argument(
        'out_dir',
        help='output root; data goes to OUT_DIR/ADEChallengeData2016')
    parser.add_argument('--num-train', type=int, default=200,
                        help='training images (default: 200)')
    parser.add_argument('--num-val', type=int, default=50,
                        help='validation images (default: 50)')
    parser.add_argument(
        '--img-size', type=int, nargs='+', default=[128], metavar='S',
        help='image size: S, or H W (default: 128)')
    parser.add_argument(
        '--num-classes', type=int, default=8,
        help=f'how many of the {ADE_NUM_CLASSES} ADE20K labels occur '
        '(labels 1..N; default: 8)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--overwrite', action='store_true',
                        help='regenerate even if up to date, and replace '
                        'ADE files this tool did not write')
    args = parser.parse_args(argv)
    if len(args.img_size) not in (1, 2):
        parser.error('--img-size takes one or two integers')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    img_size = (args.img_size[0] if len(args.img_size) == 1 else tuple(
        args.img_size))
    try:
        data_dir = make_synthetic_ade20k(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            img_size=img_size,
            num_classes_used=args.num_classes,
            seed=args.seed,
            overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    print(f'data_root: {data_dir}')


if __name__ == '__main__':
    main()
