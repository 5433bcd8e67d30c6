"""Write a small generated classification task in the VTAB-1k layout.

    python tools/dataset_converters/make_synthetic_vtab.py data/vtab-1k

writes ``data/vtab-1k/synthetic_shapes/{images/,train800.txt,val200.txt,
train800val200.txt,test.txt}``: one object per image whose shape and hue
give the label (``--cue shape``: shape only); sizes, positions and
backgrounds are random. Train a VTAB config on it with
``--cfg-options`` for the task (docs/vtab_fgvc.md, "VTAB-1k classification").
Running it again with the same arguments does nothing.
"""
import argparse
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_vpt.datasets.synthetic_vtab import (  # noqa: E402
    CUES, SHAPES, make_synthetic_vtab)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a VTAB-1k-layout classification task whose '
        'label is the shape of the object in the image')
    parser.add_argument('root', help='folder of task folders (data_root); '
                        'the task goes to ROOT/TASK')
    parser.add_argument('--task', default='synthetic_shapes',
                        help='task folder name (default: synthetic_shapes)')
    parser.add_argument('--num-classes', type=int, default=3,
                        help=f'2..{len(SHAPES)} (default: 3)')
    parser.add_argument('--num-train', type=int, default=800,
                        help='images listed in train800.txt (default: 800)')
    parser.add_argument('--num-val', type=int, default=200,
                        help='images listed in val200.txt (default: 200)')
    parser.add_argument('--num-test', type=int, default=300,
                        help='images listed in test.txt (default: 300)')
    parser.add_argument('--img-size', type=int, default=32,
                        help='square image size (default: 32)')
    parser.add_argument(
        '--cue', default=CUES[0], choices=CUES,
        help='what carries the label: the object\'s colour and shape '
        '(default), or its shape only')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--overwrite', action='store_true',
                        help='regenerate even if up to date, and replace '
                        'files this tool did not write')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        task_dir = make_synthetic_vtab(
            args.root, task=args.task, num_classes=args.num_classes,
            num_train=args.num_train, num_val=args.num_val,
            num_test=args.num_test, img_size=args.img_size, cue=args.cue,
            seed=args.seed,
            overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    print(f'task folder: {task_dir} ({args.num_classes} classes)')


if __name__ == '__main__':
    main()
