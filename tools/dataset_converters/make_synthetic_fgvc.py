"""Write tiny generated datasets in the five FGVC release layouts.

    python tools/dataset_converters/make_synthetic_fgvc.py data/fgvc

writes data/fgvc/{CUB_200_2011,nabirds,oxford_flowers,stanford_dogs,
stanford_cars}/ with the releases' annotation files (text tables, MATLAB
.mat files) and small images whose label is the object's shape and hue.
Only --num-classes of each dataset's classes occur, so the FGVC configs
train on them as they are (docs/vtab_fgvc.md, "FGVC classification"). Running
it again with the same arguments does nothing.
"""
import argparse
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_vpt.datasets.synthetic_fgvc import make_synthetic_fgvc  # noqa
from mmseg_vpt.datasets.synthetic_vtab import SHAPES  # noqa: E402
from mmseg_vpt.fgvc.tasks import TASKS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate tiny datasets in the FGVC release layouts')
    parser.add_argument('root', help='data_root; each dataset goes to its '
                        'release folder below it')
    parser.add_argument('--datasets', nargs='+', default=list(TASKS),
                        choices=list(TASKS), metavar='NAME',
                        help='datasets to write (default: all five)')
    parser.add_argument('--num-classes', type=int, default=3,
                        help=f'classes that occur, 2..{len(SHAPES)} '
                        '(default: 3)')
    parser.add_argument('--num-train', type=int, default=30,
                        help='official training images (default: 30)')
    parser.add_argument('--num-val', type=int, default=9,
                        help="Oxford Flowers' official val images "
                        '(default: 9)')
    parser.add_argument('--num-test', type=int, default=12,
                        help='official test images (default: 12)')
    parser.add_argument('--img-size', type=int, default=32,
                        help='square image size (default: 32)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--overwrite', action='store_true',
                        help='regenerate even if up to date, and replace '
                        'folders this tool did not write')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        folders = make_synthetic_fgvc(
            args.root, args.datasets, num_classes=args.num_classes,
            num_train=args.num_train, num_val=args.num_val,
            num_test=args.num_test, img_size=args.img_size, seed=args.seed,
            overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    for name, folder in folders.items():
        print(f'{name}: {folder} ({args.num_classes} of '
              f'{TASKS[name].num_classes} classes)')


if __name__ == '__main__':
    main()
