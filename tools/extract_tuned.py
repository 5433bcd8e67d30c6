"""Extract the tuned-only part of a full checkpoint (the reverse of
tools/merge_tuned.py).

    python tools/extract_tuned.py FULL OUT --config CONFIG [--base FILE]

The config gives the model and its freeze policy; the base weights are the
file its backbone init_cfg names (or ``--base``). OUT keeps every tensor
that trains or that the base weights do not reproduce exactly, with
``meta['vpt_tuned']`` as training writes it, and no optimizer state; it
loads with ``tools/test.py CONFIG OUT``. FULL may also be a tuned training
checkpoint, which drops its optimizer state.
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
from mmseg_vpt.checkpoint import (TUNED_META_KEY, extract_tuned,  # noqa
                                  model_from_config)
from mmseg_vpt.utils.checkpoints import check_checkpoint_file  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the tuned-only checkpoint of a full checkpoint')
    parser.add_argument('full', help='full checkpoint')
    parser.add_argument('out', help='output checkpoint path')
    parser.add_argument('--config', required=True,
                        help='config of the model (freeze policy and base '
                        'weights)')
    parser.add_argument('--base', help='base weights file (default: the '
                        "config's backbone init_cfg checkpoint)")
    add_ignore_base_hash(parser, 'when FULL is itself tuned-only, load it')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_checkpoint_file(args.full, 'argument FULL')  # before building
    if args.base is not None:
        check_checkpoint_file(args.base, 'argument --base')
    model = model_from_config(args.config, args.base, args.cfg_options)
    tuned = extract_tuned(model, args.full, args.base,
                          not args.ignore_base_hash)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(tuned, args.out)
    meta = tuned['meta'][TUNED_META_KEY]
    print(f'Wrote {args.out}: {len(tuned["state_dict"])} tuned tensors '
          f'({os.path.getsize(args.out) / 2**20:.1f} MB); '
          f'{len(meta["omitted"])} tensors come from the base weights '
          f'{meta["base_checkpoint"]} (sha256 {meta["base_sha256"]})')


if __name__ == '__main__':
    main()
