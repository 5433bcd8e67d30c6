"""Test (and evaluate) a segmentor; same flags as mmseg 1.x's test tool.

Several checkpoints of the config (e.g. K training seeds of one task) are
evaluated as a prompt ensemble: the mean of their softmax outputs, their
prompt sets running as rows of one batch of the shared frozen backbone
(``mmseg_vpt.serving.PromptEnsembleSegmentor``).
"""
import argparse
import os
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

import mmseg_vpt  # noqa: E402,F401  (registers models, hooks, wrappers)
from mmseg_vpt.utils import (build_runner, enable_tta,  # noqa: E402
                             enable_visualization, load_config,
                             set_test_output)
from mmseg_vpt.utils.cli import configure_tuned_checkpoints  # noqa: E402
from mmseg_vpt.utils.dist import finish_distributed  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='+',
        help='checkpoint file; several: evaluate their prompt ensemble '
        '(mean softmax), each checked against the base weights')
    parser.add_argument(
        '--work-dir', help='where the evaluation results are dumped as json')
    parser.add_argument(
        '--out', help='directory for prediction PNGs (offline evaluation), '
        'or a .pkl file to dump raw results')
    parser.add_argument('--show', action='store_true',
                        help='show prediction results')
    parser.add_argument(
        '--show-dir', help='save painted images to '
        'SHOW_DIR/vis_data/vis_image')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--tta', action='store_true',
                        help='test time augmentation')
    parser.add_argument(
        '--ignore-base-hash', action='store_true',
        help='load a tuned-only checkpoint even if the base weights file '
        'differs from the one it was saved with (only a warning)')
    parser.add_argument(
        '--load-partial', action='store_true',
        help='load only the checkpoint tensors that fit the model (others '
        'keep the config\'s initialisation) and log what was loaded, '
        'skipped and missing, instead of stopping on a mismatch')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    if len(args.checkpoint) == 1:
        cfg.load_from = args.checkpoint[0]
    elif args.ignore_base_hash or args.load_partial:
        sys.exit('error: --ignore-base-hash and --load-partial apply to one '
                 'checkpoint; an ensemble shares one frozen backbone, so '
                 'every checkpoint must fit it and its base weights')
    else:
        cfg.model = dict(type='PromptEnsembleSegmentor', segmentor=cfg.model,
                         checkpoints=args.checkpoint,
                         test_pipeline=cfg.get('test_pipeline'))
        cfg.load_from = None
    configure_tuned_checkpoints(cfg, not args.ignore_base_hash,
                                args.load_partial)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        enable_tta(cfg)
    if args.out is not None:
        set_test_output(cfg, args.out)
    build_runner(cfg).test()
    finish_distributed()


if __name__ == '__main__':
    main()
