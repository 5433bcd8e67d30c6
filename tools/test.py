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

import mmseg_vpt  # noqa: E402,F401  (registers models, hooks, wrappers)
from mmseg_vpt.apis.args import (add_cfg_options,  # noqa: E402
                                 add_ignore_base_hash, add_launcher,
                                 add_load_partial, apply_local_rank)
from mmseg_vpt.engine import (build_runner,  # noqa: E402
                              configure_tuned_checkpoints, enable_tta,
                              enable_visualization, load_config,
                              set_test_output)
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
    add_cfg_options(parser)
    add_launcher(parser)
    parser.add_argument('--tta', action='store_true',
                        help='test time augmentation')
    add_ignore_base_hash(parser)
    add_load_partial(parser)
    args = parser.parse_args()
    apply_local_rank(args)
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
