"""Memory of a giant frozen backbone built on the meta device: building and
loading its base file, and one VPT training step, each in a fresh process.

    # DINOv3 ViT-7B/16: write a random bf16 base file (about 13.4 GB) if
    # there is none, then measure; --check fails on a missed target
    python tools/analysis/giant_memory.py \\
        configs/vpt_timm/upernet_dinov3-7b16_mln_vpt-deep-10_ade20k-512x512.py \\
        --base work_dirs/giant/dinov3-7b16_random_bf16.pth --check

The base file is written from the config's backbone with random weights in
its stored type (``frozen_dtype``), never built in float32; a real release
file works as well (``--base FILE`` of timm's layout). Targets: building and
loading peaks at <= 1.1x the file's bytes; one training step at the crop
size, batch 1 (UperNet + MultiLevelNeck, the config's optimizer) peaks at
<= 20 GB (whole-process resident memory on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU), and the prompts' gradient is
not zero. See mmseg_vpt/analysis/giant_memory.py for what is measured.
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

# mmcv without compiled ops warns on import; irrelevant here
warnings.filterwarnings('ignore', category=UserWarning)
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from mmseg_vpt.analysis.giant_memory import (check_targets,  # noqa: E402
                                             format_report, make_spec,
                                             run_isolated)
from mmseg_vpt.apis.args import add_cfg_options  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a config whose backbone sets '
                        'meta_init=True')
    parser.add_argument('--base', required=True,
                        help='base weights file; written (random, seeded) '
                        'when it does not exist')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--device', default='auto',
                        help="'auto' (cuda if present), 'cpu', 'cuda:0'...")
    parser.add_argument('--threads', type=int,
                        help="torch intra-op threads (default: torch's)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--skip-step', action='store_true',
                        help='measure building and loading only')
    parser.add_argument('--no-meta-init', action='store_true',
                        help='measure the ordinary build instead (float32 '
                        'first, then the file), for comparison')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--check', action='store_true',
                        help='exit with 1 when a target is missed')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = make_spec(config=args.config, cfg_options=args.cfg_options,
                     base=args.base, batch_size=args.batch_size,
                     device=args.device, threads=args.threads,
                     seed=args.seed, meta_init=not args.no_meta_init)
    results = {}
    if not osp.isfile(args.base):
        results['write'] = run_isolated('write', spec, out=args.base)
        print(f"wrote {args.base}: {results['write']['values']:,} values, "
              f"{results['write']['file_bytes'] / 1e9:.3f} GB", flush=True)
    results['load'] = run_isolated('load', spec)
    if not args.skip_step:
        results['step'] = run_isolated('step', spec)
    print(format_report(results['load'], results.get('step')))
    missed = check_targets(results['load'], results.get('step'))
    results['missed'] = missed
    for line in missed:
        print(f'missed: {line}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if args.check and missed else 0


if __name__ == '__main__':
    sys.exit(main())
