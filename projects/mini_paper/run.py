"""A miniature VPT segmentation table on a CPU, on SYNTHETIC data.

    python projects/mini_paper/run.py [--quick] [--seeds 0 1 2] [--out-dir DIR]

Pretrains a small ViT to segment generated scenes by colour, then adapts it
to segmenting the same kind of scenes by another attribute with each
protocol of the paper (full fine-tuning, head-only, bias, VPT-shallow,
VPT-deep, VPT + Bias; Adapter and Partial-1; VPT with shared prompts and
with the Add, Prepend-pixel and Concat-channel locations) under the same
budget, plus a 3-seed VPT-deep prompt ensemble (one backbone pass per batch
for its three prompt sets), and writes to DIR (default
work_dirs/mini_paper): ``table.md``, ``results.json`` and
``mini_paper.png`` (mIoU against tunable parameters, log x). See
projects/mini_paper/__init__.py for the tasks and settings. ``--quick`` is
the shortened run used by the tests.
"""
import argparse
import json
import os
import os.path as osp
import sys

# the repository root, so that ``projects.mini_paper`` (and an mmseg_vpt
# checkout that is not pip-installed) can be imported
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='the shortened run (CI): fewer steps and images')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='seeds (default: 0 1 2; --quick: 0)')
    parser.add_argument('--protocols', nargs='+', default=None,
                        help='subset of: full head_only bias vpt_shallow '
                        'vpt_deep vpt_bias (the paper\'s segmentation rows), '
                        'adapter partial_1 (its other baselines), '
                        'vpt_deep_shared vpt_deep_add vpt_shallow_pixel '
                        'vpt_shallow_concat (its prompt ablations), '
                        'vpt_deep_token_init (prompts from patch tokens), '
                        'vpt_deep_bf16 (frozen weights in bfloat16), '
                        'vpt_deep_x3 (VPT-deep trained with 3 seeds, '
                        'evaluated as a prompt ensemble); default: all')
    parser.add_argument('--out-dir', default='work_dirs/mini_paper')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch intra-op threads (default 1: these '
                        'models are small)')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from projects.mini_paper import (ROWS, SYNTHETIC_NOTE, MiniPaperConfig,
                                     format_table, plot_results,
                                     run_mini_paper)
    cfg = MiniPaperConfig.quick() if args.quick else MiniPaperConfig()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    protocols = args.protocols or list(ROWS)
    unknown = [p for p in protocols if p not in ROWS]
    if unknown:
        print(f'error: unknown protocols {unknown}; choose from '
              f'{list(ROWS)}', file=sys.stderr)
        return 2
    print(f'NOTE: {SYNTHETIC_NOTE}')
    result = run_mini_paper(cfg, seeds, protocols,
                            log=lambda s: print(s, flush=True))
    os.makedirs(args.out_dir, exist_ok=True)
    table = format_table(result)
    with open(osp.join(args.out_dir, 'table.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.out_dir, 'results.json'), 'w') as f:
        json.dump(result, f, indent=1)
    plot = osp.join(args.out_dir, 'mini_paper.png')
    plot_results(result, plot)
    print()
    print(table)
    print(f'\n{len(seeds)} seed(s) in {result["seconds"]:.0f}s; wrote '
          f'{args.out_dir}/table.md, results.json and mini_paper.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
