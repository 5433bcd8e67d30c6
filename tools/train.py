"""Train a segmentor; same flags as mmseg 1.x's ``tools/train.py``.

``--resume`` alone resumes from the latest checkpoint in the work dir;
``--resume PATH`` resumes from PATH. A run killed at any moment and resumed
ends at the same weights as an uninterrupted one (ResumableCheckpointHook);
a second run in a work dir in use is refused (WorkDirLockHook).
"""
import argparse
import os
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

import mmseg_vpt  # noqa: E402,F401  (registers models, hooks, wrappers)
from mmseg_vpt.utils import (build_runner, enable_amp, load_config,  # noqa
                             set_resume)
from mmseg_vpt.utils.cli import (configure_exact_resume,  # noqa: E402
                                 configure_tuned_checkpoints)
from mmseg_vpt.utils.dist import finish_distributed  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='PATH',
        help='resume from PATH, or from the checkpoint the work dir\'s '
        'last_checkpoint names if no PATH is given (training starts from '
        'scratch if there is none yet)')
    parser.add_argument(
        '--ignore-base-hash', action='store_true',
        help='resume / load_from a tuned-only checkpoint even if the base '
        'weights file differs from the one it was saved with')
    parser.add_argument(
        '--load-partial', action='store_true',
        help='load_from: load only the checkpoint tensors that fit the model '
        '(others keep their initialisation) and log a summary, instead of '
        'stopping on a mismatch; not with --resume')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy format (e.g. '
        'model.backbone.prompt_length=10 or key="[a,b]")')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.load_partial and args.resume is not None:
        parser.error('--load-partial does not apply to --resume: a resumed '
                     'run needs the exact model its optimizer state is for')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    configure_exact_resume(cfg)
    configure_tuned_checkpoints(cfg, not args.ignore_base_hash,
                                args.load_partial)
    build_runner(cfg).train()
    finish_distributed()


if __name__ == '__main__':
    main()
