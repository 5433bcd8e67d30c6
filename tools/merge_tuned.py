"""Merge a tuned-only checkpoint with its base weights into a full one.

    python tools/merge_tuned.py CONFIG TUNED OUT
    python tools/merge_tuned.py BASE_WEIGHTS TUNED OUT [--config CONFIG]

With a config, the base weights are the file its backbone init_cfg names.
With a base weights file, the model comes from ``--config`` or, without it,
from the config stored in the tuned checkpoint (``meta['cfg']``). The base
file's SHA-256 must match the one recorded in TUNED (``--ignore-base-hash``
to merge anyway). OUT holds ``meta`` and the complete ``state_dict`` (no
optimizer state) and loads anywhere a full checkpoint does, e.g.
``tools/test.py CONFIG OUT``. ``tools/extract_tuned.py`` is the reverse.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

warnings.filterwarnings('ignore', message='Fail to import')

import torch  # noqa: E402
import mmseg_vpt  # noqa: E402,F401  (registers the backbones)
from mmseg_vpt.apis.args import (add_cfg_options,  # noqa: E402
                                 add_ignore_base_hash)
from mmseg_vpt.checkpoint import (TUNED_META_KEY,  # noqa: E402
                                  is_tuned_checkpoint, merge_tuned,
                                  model_from_config, read_checkpoint)
from mmseg_vpt.utils.checkpoints import check_checkpoint_file  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write a full standalone checkpoint from base weights '
        'and a tuned-only checkpoint')
    parser.add_argument('base_or_config',
                        help='a config (.py) whose backbone init_cfg names '
                        'the base weights, or the base weights file')
    parser.add_argument('tuned', help='tuned-only checkpoint')
    parser.add_argument('out', help='output checkpoint path')
    parser.add_argument('--config', help='config of the model (when the '
                        'first argument is a weights file; default: the '
                        'config stored in the tuned checkpoint)')
    add_ignore_base_hash(parser, 'merge')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    tuned = read_checkpoint(args.tuned, 'argument TUNED')
    if not is_tuned_checkpoint(tuned):
        sys.exit(f'{args.tuned} is not a tuned-only checkpoint (no '
                 f"meta['{TUNED_META_KEY}']); it is already full.")
    if args.base_or_config.endswith('.py'):
        config, base = args.base_or_config, None
    else:
        config, base = args.config, args.base_or_config
        check_checkpoint_file(base, 'argument BASE_OR_CONFIG')
        if config is None:
            config = tuned['meta'].get('cfg')
            if not config:
                sys.exit(f'{args.tuned} stores no config; pass --config')
    model = model_from_config(config, base, args.cfg_options)
    merged = merge_tuned(model, tuned, not args.ignore_base_hash)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(merged, args.out)
    print(f'Wrote {args.out}: {len(merged["state_dict"])} tensors '
          f'({os.path.getsize(args.out) / 2**20:.1f} MB) from '
          f'{len(tuned["state_dict"])} tuned tensors + base weights')


if __name__ == '__main__':
    main()
