"""Convert a timm / official ViT or Swin checkpoint to this project's layout.

    python tools/model_converters/convert_weights.py SRC DST [--format F]

SRC may be ``.pth`` / ``.pt`` / ``.bin`` or ``.safetensors``; DST is written
with ``torch.save`` as a plain state dict that mmseg's
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` loads into
``VPTVisionTransformer`` / ``VPTSwinTransformer`` (and mmseg's own
``VisionTransformer`` / ``SwinTransformer``). Position embeddings and
relative-position tables are resized by mmseg when the model loads them.
"""
import argparse
import os
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmseg_vpt.models.convert import (FORMATS, ConversionInfo,  # noqa: E402
                                      convert_to_mmseg, load_checkpoint_file)
from mmseg_vpt.utils.checkpoints import check_checkpoint_file  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert timm ViT (incl. jx_vit_large_p16_384), timm '
        'Swin or official Swin checkpoints to the mmseg layout of '
        'VPTVisionTransformer / VPTSwinTransformer.')
    parser.add_argument('src', help='source checkpoint (.pth/.pt/.bin/'
                        '.safetensors)')
    parser.add_argument('dst', help='output path (.pth)')
    parser.add_argument(
        '--format', default='auto',
        choices=['auto', 'timm_vit', 'timm_swin', 'ms_swin', 'mmseg'],
        help='source layout (default: detect it from the keys)')
    parser.add_argument(
        '--weights-only', action='store_true',
        help='refuse checkpoints that need a full unpickle (torch.load '
        'weights_only=False); by default they are loaded with a warning')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    info = ConversionInfo(log=False)
    try:
        check_checkpoint_file(args.src, 'argument SRC')
        state_dict = load_checkpoint_file(
            args.src, allow_pickle=not args.weights_only, info=info)
        converted, fmt = convert_to_mmseg(state_dict, args.format, info=info)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    assert fmt in FORMATS

    print(f'Format: {fmt}' + (' (already mmseg layout, passed through)'
                              if fmt.startswith('mmseg_') else ''))
    if info.dropped:
        print(f'Dropped {len(info.dropped)} keys: ' + ', '.join(info.dropped))
    if info.added:
        print(f'Added {len(info.added)} keys: ' + ', '.join(info.added))
    for note in info.notes:
        print(f'Note: {note}')
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(dict(converted), args.dst)
    print(f'Wrote {len(converted)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
