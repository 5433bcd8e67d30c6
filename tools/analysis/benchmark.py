"""Time and peak memory of training steps or inference, one config or two
side by side.

    # VPT-deep vs full fine-tuning, 3 alternating pairs (A B A B A B)
    python tools/analysis/benchmark.py A.py --vs B.py --repeats 3
    # the same config with and without prompts, backbone inference only
    python tools/analysis/benchmark.py A.py --mode backbone \\
        --vs-cfg-options model.backbone.prompt_length=0 \\
        "model.backbone.frozen_exclude=[]"
    # memory options of B: bf16 frozen weights, checkpointed backbone
    # layers and heads (what tools/train.py does with the same config)
    python tools/analysis/benchmark.py FULL.py --vs VPT.py \\
        --vs-cfg-options model.backbone.frozen_dtype=bf16 \\
        model.backbone.with_cp=True \\
        "activation_checkpointing=[decode_head,auxiliary_head]"

Weights are random (``Pretrained`` init is dropped), inputs and labels are
random at the config's crop size (``model.data_preprocessor.size``), SyncBN
becomes BN. ``--cfg-options`` applies to both configs (e.g. to shrink them),
``--vs-cfg-options`` and ``--vs-amp`` to B only (B defaults to A's config).
Every run is a fresh process. See mmseg_vpt/analysis/benchmark.py for what is
measured and benchmarks/README.md for results.
"""
import argparse
import json
import os.path as osp
import sys
import warnings

# mmcv without compiled ops warns on import; irrelevant here
warnings.filterwarnings('ignore', category=UserWarning)
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from mmseg_vpt.analysis.benchmark import (MODES, compare,  # noqa: E402
                                          format_table, make_spec)
from mmseg_vpt.apis.args import add_cfg_options  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config A')
    parser.add_argument('--vs', metavar='CONFIG',
                        help='config B, run alternately with A')
    parser.add_argument('--mode', default='train', choices=MODES,
                        help='train: model.train_step (forward, backward, '
                        'optimizer step); train_backbone: the same for the '
                        'backbone alone (stand-in loss); infer: '
                        'model.test_step; backbone: backbone forward only '
                        '(no grad)')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=1,
                        help='fresh-process runs of each config')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision for A and B (what --amp of '
                        'tools/train.py sets: bf16 autocast on CPU)')
    parser.add_argument('--vs-amp', action='store_true',
                        help='mixed precision for B only')
    parser.add_argument('--device', default='auto',
                        help="'auto' (cuda if present), 'cpu', 'cuda:0'...")
    parser.add_argument('--threads', type=int,
                        help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--label', help='name of A in the table')
    parser.add_argument('--vs-label', help='name of B in the table')
    add_cfg_options(parser, 'overrides for both configs, key=value')
    add_cfg_options(parser, 'overrides for B only, applied after '
                    '--cfg-options', flag='--vs-cfg-options')
    parser.add_argument('--in-process', action='store_true',
                        help='measure in this process (peak memory then '
                        'mixes the runs)')
    parser.add_argument('--breakdown', action='store_true',
                        help='train modes: after the timed iterations, one '
                        'more step that reports bytes of parameters, '
                        'gradients, optimizer state and the activations '
                        'kept for backward per top-level module')
    parser.add_argument('--out', help='write all results as JSON here')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    common = dict(mode=args.mode, batch_size=args.batch_size,
                  warmup=args.warmup, iters=args.iters, amp=args.amp,
                  device=args.device, threads=args.threads,
                  breakdown=args.breakdown)
    spec_a = make_spec(config=args.config, cfg_options=args.cfg_options,
                       label=args.label, **common)
    spec_b = None
    if args.vs or args.vs_cfg_options or args.vs_amp:
        options = dict(args.cfg_options or {}, **(args.vs_cfg_options or {}))
        spec_b = make_spec(config=args.vs or args.config,
                           cfg_options=options or None,
                           label=args.vs_label or (None if args.vs else
                                                   spec_a['label'] + ' (B)'),
                           **dict(common, amp=args.amp or args.vs_amp))
    summary = compare(spec_a, spec_b, args.repeats,
                      isolated=not args.in_process)
    summary['command'] = ' '.join(['python', 'tools/analysis/benchmark.py'] +
                                  (argv if argv is not None else sys.argv[1:]))
    print(format_table(summary))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == '__main__':
    main()
