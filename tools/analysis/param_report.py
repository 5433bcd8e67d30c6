"""Parameters and storage per config: total / tunable parameters, backbone
vs prompts vs heads, per-task checkpoint bytes and storage for N tasks, and
the memory options the config turns on (frozen weights' type, backbone
with_cp, checkpointed modules, AMP); with ``--ratio``, the VPT paper's
"Total params" (all 24 tasks' parameters in units of one backbone) beside
the paper's Table 1 value.

    python tools/analysis/param_report.py configs/vpt/setr_vit-l_pup_*.py \
        [--format markdown|csv|json] [--tasks N]
    python tools/analysis/param_report.py configs/vtab/_base_/vit-b16_*.py \
        --ratio --no-optimizer

Models are built on the CPU with random weights; nothing is downloaded or
loaded. See mmseg_vpt/analysis/param_report.py for what each column means.
Only the report goes to stdout (logs and warnings go to stderr), so
``--format json | python -m json.tool`` and ``--format csv > rows.csv`` work.
"""
import argparse
import os.path as osp
import sys
import warnings

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

warnings.filterwarnings('ignore', message='Fail to import')

import torch  # noqa: E402
from mmseg_vpt.analysis.param_report import (format_report,  # noqa: E402
                                             param_report)
from mmseg_vpt.apis.args import add_cfg_options  # noqa: E402
from mmseg_vpt.utils.logging_utils import stdout_to_stderr  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Parameter and storage report of segmentor and '
        'classifier configs')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--format', default='markdown',
                        choices=['markdown', 'csv', 'json'])
    parser.add_argument('--tasks', type=int, default=10,
                        help='number of tasks for the storage column')
    parser.add_argument('--no-optimizer', action='store_true',
                        help='skip the resumable-checkpoint column (builds '
                        'the optimizer and runs one step)')
    parser.add_argument('--ratio', action='store_true',
                        help="add the paper's Total params: (one shared "
                        "backbone + every task's tunable parameters) / one "
                        "backbone, over the paper's 24 tasks and their "
                        'class counts (classification configs)')
    parser.add_argument('--ratio-tasks', type=int, default=None,
                        help='with --ratio: N tasks with the config\'s own '
                        'heads instead of the paper\'s 24')
    add_cfg_options(parser, 'override settings of every config')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with stdout_to_stderr():  # building models and optimizers logs
        rows = [param_report(c, args.tasks, not args.no_optimizer,
                             args.cfg_options, args.ratio or bool(
                                 args.ratio_tasks), args.ratio_tasks)
                for c in args.configs]
    print(format_report(rows, args.format))


if __name__ == '__main__':
    main()
