"""Plot the loss and mIoU curves of a training run.

    python tools/analysis/plot_curves.py WORK_DIR [--out curves.png] \
        [--train-keys loss decode.loss_ce] [--val-keys mIoU aAcc]

Reads ``WORK_DIR/<timestamp>/vis_data/scalars.json``, which mmengine's
``LocalVisBackend`` (on in every config of this project) writes during
``tools/train.py``; all runs in WORK_DIR are joined in time order.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir',
                        help='--work-dir of a training run, or a '
                        'scalars.json file')
    parser.add_argument('--out', default=None,
                        help='output PNG (default: WORK_DIR/curves.png)')
    parser.add_argument('--train-keys', nargs='+', default=['loss'])
    parser.add_argument('--val-keys', nargs='+', default=['mIoU'])
    args = parser.parse_args()
    from mmseg_vpt.analysis.curves import plot_curves
    out = args.out or osp.join(
        args.work_dir if osp.isdir(args.work_dir) else
        osp.dirname(args.work_dir), 'curves.png')
    try:
        keys = plot_curves(args.work_dir, out, args.train_keys,
                           args.val_keys)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'plotted {", ".join(keys)} to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
