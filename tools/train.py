"""Train a segmentor; same flags as mmseg 1.x's ``tools/train.py``.

``--resume`` alone resumes from the latest checkpoint in the work dir;
``--resume PATH`` resumes from PATH. A run killed at any moment and resumed
ends at the same weights as an uninterrupted one (ResumableCheckpointHook);
a second run in a work dir in use is refused (WorkDirLockHook).
``--fsdp`` (with a launcher) shards the frozen backbone across the processes
(VPTFullyShardedWrapper).
"""
import argparse
import os
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmseg_vpt  # noqa: E402,F401  (registers models, hooks, wrappers)
from mmseg_vpt.apis.args import (add_cfg_options,  # noqa: E402
                                 add_ignore_base_hash, add_launcher,
                                 add_load_partial, apply_local_rank)
from mmseg_vpt.engine import (build_runner, configure_exact_resume,  # noqa
                              configure_tuned_checkpoints, enable_amp,
                              enable_fsdp, load_config, set_resume)
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
    add_ignore_base_hash(parser, 'resume / load_from a tuned-only checkpoint')
    add_load_partial(parser, 'for load_from, not with --resume')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--fsdp', action='store_true',
        help='shard the frozen backbone across the processes with torch '
        'FSDP, one unit per backbone layer; prompts and heads stay whole on '
        'every process, their gradients averaged (model_wrapper_cfg='
        "dict(type='VPTFullyShardedWrapper')). Needs a launcher "
        '(tools/dist_train.sh) and the backbone\'s Pretrained base weights')
    add_cfg_options(parser)
    add_launcher(parser)
    args = parser.parse_args()
    if args.load_partial and args.resume is not None:
        parser.error('--load-partial does not apply to --resume: a resumed '
                     'run needs the exact model its optimizer state is for')
    if args.fsdp and args.launcher == 'none':
        parser.error('--fsdp shards the backbone across processes: start '
                     'them with tools/dist_train.sh CONFIG NPROC --fsdp (or '
                     '--launcher pytorch / slurm / mpi)')
    apply_local_rank(args)
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.fsdp:
        enable_fsdp(cfg)
    set_resume(cfg, args.resume)
    configure_exact_resume(cfg)
    configure_tuned_checkpoints(cfg, not args.ignore_base_hash,
                                args.load_partial)
    build_runner(cfg).train()
    finish_distributed()


if __name__ == '__main__':
    main()
