"""Write randomly initialised base weights for a config's backbone.

    python tools/model_converters/random_base.py CONFIG OUT [--seed 0]

For demos and benchmarks without downloads (e.g. the multi-task serving
demo in docs/serving.md): the file is a plain state dict of the backbone with
prompts off, which ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``
loads like a converted release. Random weights give a frozen backbone
that passes colour and texture through, nothing more.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import mmseg_vpt  # noqa: E402,F401  (registers the backbones)
from mmseg_vpt.checkpoint.synthetic import random_base_state  # noqa: E402
from mmseg_vpt.utils.config import read_config  # noqa: E402
from mmseg_vpt.utils.files import save_atomically  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('out')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    cfg = read_config(args.config, key='argument CONFIG')
    state = random_base_state(cfg, args.seed)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    save_atomically(state, args.out)
    n = sum(v.numel() for v in state.values())
    print(f'wrote {args.out}: {cfg.model.backbone.type}, {n:,} values '
          f'(seed {args.seed})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
