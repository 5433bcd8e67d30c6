"""Write randomly initialised base weights for a config's backbone.

    python tools/model_converters/random_base.py CONFIG OUT [--seed 0]

For demos and benchmarks without downloads (e.g. the multi-task serving
demo in README): the file is a plain state dict of the backbone with
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('out')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    import torch
    from mmengine.config import Config

    import mmseg_vpt  # noqa: F401
    from mmseg_vpt.checkpoint import model_from_config
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['all'],
                              init_cfg=None)
    torch.manual_seed(args.seed)
    backbone = model_from_config(cfg).backbone
    backbone.init_weights()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(backbone.state_dict(), args.out + '.tmp')
    os.replace(args.out + '.tmp', args.out)
    n = sum(v.numel() for v in backbone.state_dict().values())
    print(f'wrote {args.out}: {type(backbone).__name__}, {n:,} values '
          f'(seed {args.seed})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
