"""Heat maps of prompt attention over an image, per layer, in one PNG.

    python tools/analysis/prompt_attention.py CONFIG CHECKPOINT IMAGE \
        --layers 0 5 11 --out attention.png [--device cpu] [--cfg-options ...]

For each selected layer of a VPT ViT or Swin backbone (Swin: blocks counted
over all stages), the grid shows the attention of every image token to the
prompts (summed over prompts, averaged over heads) and the attention of the
prompts to every image token (averaged over prompts and heads), over the
input image. The maps are recomputed from each layer's recorded input and
its own weights (forward hooks that only read), so the model's outputs are
unchanged. The backbone sees the image as in ``test_cfg.mode='whole'``
(test pipeline resize and normalisation, no sliding window).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import torch  # noqa: E402

from mmseg_vpt.analysis import (PromptAttentionRecorder,  # noqa: E402
                                render_attention_grid)
from mmseg_vpt.apis import ImageReadError, init_segmentor, preprocess  # noqa
from mmseg_vpt.apis.args import (add_cfg_options, add_device,  # noqa: E402
                                 add_ignore_base_hash)
from mmseg_vpt.checkpoint import TunedCheckpointError  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Prompt attention heat maps of a VPT backbone')
    parser.add_argument('config')
    parser.add_argument('checkpoint',
                        help="checkpoint (tuned-only or full); 'none' keeps "
                        "the config's init_cfg weights")
    parser.add_argument('image')
    parser.add_argument('--layers', type=int, nargs='+', default=[0, -1],
                        help='layer indices (negative: from the end); '
                        'default: first and last')
    parser.add_argument('--out', required=True, help='output PNG')
    add_device(parser)
    add_ignore_base_hash(parser)
    add_cfg_options(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()

    ckpt = None if args.checkpoint.lower() == 'none' else args.checkpoint
    try:
        model = init_segmentor(args.config, ckpt, args.device,
                               args.cfg_options,
                               check_base_hash=not args.ignore_base_hash)
        inputs, shown = preprocess(model, args.image)
        with PromptAttentionRecorder(model.backbone, args.layers) as rec:
            with torch.no_grad():
                model.backbone(inputs)
        maps = rec.maps()
    except (FileNotFoundError, ImageReadError, TunedCheckpointError,
            ValueError, TypeError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    skipped = [m.layer for m in maps if m.num_prompts == 0]
    if skipped:
        print(f'layers {skipped} have no prompts; left out of the grid')
    if len(skipped) == len(maps):
        print('error: none of the selected layers has prompts',
              file=sys.stderr)
        return 2
    for m in maps:
        if m.num_prompts:
            print(f'layer {m.layer:>2}: {m.hw[0]}x{m.hw[1]} tokens, '
                  f'{m.num_prompts} prompts; attention to prompts: mean '
                  f'{m.image_to_prompt.mean():.3f}, max '
                  f'{m.image_to_prompt.max():.3f}')
    backbone = type(model.backbone).__name__
    render_attention_grid(
        shown, maps, args.out,
        title=f'{backbone} prompt attention - {osp.basename(args.image)}')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
